"""The native entropy-bound sampler on caller-supplied logits (one canvas)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._native import check, ffi, lib
from .errors import InvalidArgumentError


@dataclass
class SamplerStep:
    processed_logits: np.ndarray  # [C, V] raw logits divided by the step's temperature
    canvas: np.ndarray            # [C] the next canvas (accepted draws, the rest re-noised)
    argmax: np.ndarray            # [C]
    accepted: np.ndarray          # [C] bool
    stop: bool                    # stable-and-confident early stop


class Sampler:
    """dgemma_sampler: init_canvas() then step(n, logits) for n = N .. 1, canvas after canvas.

    `draws` (optional, tests): a table of raw 64-bit draws replacing the generator seeded with
    `seed` (the mapping from canvas, step, kind and position to an entry is in dgemma.h,
    "Randomness"). `fixed` (optional): a [C] mask of positions the sampler keeps as they are in
    the canvas (set them in `self.canvas` before init_canvas)."""

    def __init__(self, n_canvas: int, n_vocab: int, *, max_denoising_steps=48, t_min=0.4, t_max=0.8,
                 entropy_bound=0.1, stability_threshold=1, confidence_threshold=0.005, seed=0, draws=None,
                 fixed=None):
        p = ffi.new("dgemma_sampler_params *")
        p.max_steps, p.t_min, p.t_max = max_denoising_steps, t_min, t_max
        p.entropy_bound, p.stability_threshold, p.confidence_threshold = entropy_bound, stability_threshold, confidence_threshold
        p.seed = seed
        self.n_canvas, self.n_vocab = n_canvas, n_vocab
        table, n = ffi.NULL, 0
        if draws is not None:
            draws = np.ascontiguousarray(draws, dtype=np.uint64)
            table, n = ffi.from_buffer("uint64_t[]", draws), draws.size
        out = ffi.new("dgemma_sampler **")
        check(lib.dgemma_sampler_new(n_canvas, n_vocab, p, table, n, out))
        self._ptr = ffi.gc(out[0], lib.dgemma_sampler_free)
        self.canvas = np.zeros(n_canvas, dtype=np.int32)
        if fixed is not None:
            mask = np.ascontiguousarray(fixed, dtype=np.uint8)
            if mask.shape != (n_canvas,):
                raise InvalidArgumentError(f"fixed must have shape ({n_canvas},), got {mask.shape}")
            check(lib.dgemma_sampler_set_fixed(self._ptr, ffi.from_buffer("uint8_t[]", mask)))

    def init_canvas(self) -> np.ndarray:
        check(lib.dgemma_sampler_init_canvas(self._ptr, ffi.from_buffer("int32_t[]", self.canvas)))
        return self.canvas.copy()

    def step(self, n: int, logits: np.ndarray) -> SamplerStep:
        z = np.array(logits, dtype=np.float32, order="C")
        if z.shape != (self.n_canvas, self.n_vocab):
            raise InvalidArgumentError(f"logits must have shape {(self.n_canvas, self.n_vocab)}, got {z.shape}")
        amax = np.empty(self.n_canvas, dtype=np.int32)
        acc = np.empty(self.n_canvas, dtype=np.uint8)
        stop = ffi.new("int32_t *")
        check(lib.dgemma_sampler_step(self._ptr, n, ffi.from_buffer("float[]", z),
                                      ffi.from_buffer("int32_t[]", self.canvas), ffi.from_buffer("int32_t[]", amax),
                                      ffi.from_buffer("uint8_t[]", acc), stop))
        return SamplerStep(z, self.canvas.copy(), amax, acc.astype(bool), bool(stop[0]))
