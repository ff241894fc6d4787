"""The entropy-bound sampler with fixed positions in numpy, written from the model contract
(diffusiongemma.md, "Generation") and the infill rules of issue 14, independently of the core:

  fixed positions are set at canvas start and never re-noised; their argmax is their token; they
  take no part in the entropy budget or the stop test (the mean entropy is over the free ones); a
  canvas with no free position stops at once; every draw is consumed whatever the mask.

The draws come from a `DrawTable` (reference.py), the mapping dgemma.h states."""

from __future__ import annotations

import numpy as np


class MaskedSampler:
    def __init__(self, table, fixed_tokens: np.ndarray, *, max_steps: int, t_min: float, t_max: float,
                 entropy_bound: float, stability_threshold: int, confidence_threshold: float):
        self.table, self.N = table, max_steps
        self.fixed = np.asarray(fixed_tokens) >= 0
        self.fixed_tokens = np.asarray(fixed_tokens)
        self.t_min, self.t_max, self.bound = t_min, t_max, entropy_bound
        self.S, self.confidence = stability_threshold, confidence_threshold

    def init_canvas(self, canvas_no: int) -> np.ndarray:
        self.canvas_no, self.history = canvas_no, []
        fresh = self.table.ids(canvas_no, 0, 0)
        return np.where(self.fixed, self.fixed_tokens, fresh)

    def step(self, n: int, z: np.ndarray, canvas: np.ndarray):
        """-> (processed logits, next canvas, argmax, stop) for the step counting down n."""
        s = self.N - n + 1
        t_min, t_max = np.float32(self.t_min), np.float32(self.t_max)  # the sampler's float32 order (sampler.h)
        t = t_min + np.float32(np.float64(t_max) - np.float64(t_min)) * (np.float32(n) / np.float32(self.N))
        y = (z / t).astype(np.float32)
        u = self.table.uniforms(self.canvas_no, s)
        renoise = self.table.ids(self.canvas_no, s, 1)
        y64 = y.astype(np.float64)
        m = y64.max(axis=1, keepdims=True)
        e = np.exp(y64 - m)
        S = e.sum(axis=1)
        H = np.log(S) - (e * (y64 - m)).sum(axis=1) / S
        draw = (np.cumsum(e, axis=1) > (u * S)[:, None]).argmax(axis=1)
        amax = np.where(self.fixed, self.fixed_tokens, y.argmax(axis=1))
        free = np.flatnonzero(~self.fixed)
        order = free[np.lexsort((free, H[free]))]  # by (entropy, position)
        nxt = canvas.copy()
        cum = 0.0
        for i in order:
            cum += H[i]
            nxt[i] = draw[i] if cum - H[i] <= self.bound else renoise[i]
        stable = len(self.history) >= self.S and all(np.array_equal(amax, h) for h in self.history[-self.S:]) \
            if self.S else True
        self.history.append(amax)
        stop = free.size == 0 or (stable and H[free].mean() < self.confidence)
        return y, nxt, amax, bool(stop)
