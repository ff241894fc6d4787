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
    """dgemma_sampler: init_canvas() then step(n, logits) for n = N .. 1.

    `random_source(kind, n)` (optional) supplies the randomness: kind 0 -> n token ids, kind 1 -> n
    uniforms in [0, 1); without it the built-in generator is seeded with `seed`."""

    def __init__(self, n_canvas: int, n_vocab: int, *, max_denoising_steps=48, t_min=0.4, t_max=0.8,
                 entropy_bound=0.1, stability_threshold=1, confidence_threshold=0.005, seed=0, random_source=None):
        p = ffi.new("dgemma_sampler_params *")
        p.max_steps, p.t_min, p.t_max = max_denoising_steps, t_min, t_max
        p.entropy_bound, p.stability_threshold, p.confidence_threshold = entropy_bound, stability_threshold, confidence_threshold
        p.seed = seed
        self.n_canvas, self.n_vocab = n_canvas, n_vocab
        self._error = None
        self._cb = ffi.NULL
        if random_source is not None:
            def fill(user, kind, n, dst):
                try:
                    v = np.ascontiguousarray(random_source(kind, n), dtype=np.int32 if kind == 0 else np.float32)
                    ffi.memmove(dst, v.tobytes(), min(v.nbytes, n * 4))
                except BaseException as e:
                    self._error = e
            self._cb = ffi.callback("dgemma_random_fn", fill)
        out = ffi.new("dgemma_sampler **")
        check(lib.dgemma_sampler_new(n_canvas, n_vocab, p, self._cb, ffi.NULL, out))
        self._ptr = ffi.gc(out[0], lib.dgemma_sampler_free)
        self.canvas = np.empty(n_canvas, dtype=np.int32)

    def _raise_callback_error(self):
        if self._error is not None:
            e, self._error = self._error, None
            raise e

    def init_canvas(self) -> np.ndarray:
        status = lib.dgemma_sampler_init_canvas(self._ptr, ffi.from_buffer("int32_t[]", self.canvas))
        self._raise_callback_error()
        check(status)
        return self.canvas.copy()

    def step(self, n: int, logits: np.ndarray) -> SamplerStep:
        z = np.array(logits, dtype=np.float32, order="C")
        if z.shape != (self.n_canvas, self.n_vocab):
            raise InvalidArgumentError(f"logits must have shape {(self.n_canvas, self.n_vocab)}, got {z.shape}")
        amax = np.empty(self.n_canvas, dtype=np.int32)
        acc = np.empty(self.n_canvas, dtype=np.uint8)
        stop = ffi.new("int32_t *")
        status = lib.dgemma_sampler_step(self._ptr, n, ffi.from_buffer("float[]", z),
                                         ffi.from_buffer("int32_t[]", self.canvas), ffi.from_buffer("int32_t[]", amax),
                                         ffi.from_buffer("uint8_t[]", acc), stop)
        self._raise_callback_error()
        check(status)
        return SamplerStep(z, self.canvas.copy(), amax, acc.astype(bool), bool(stop[0]))
