"""Continuous batching from Python: the core's scheduler (dgemma.h, "Scheduler").

Requests join and leave between decoder steps; each step is one forward pass over every canvas being
denoised, the canvases being committed and one chunk of a newcomer's prompt. `generate` with several
prompts runs one to completion; the server keeps one running and submits to it from other threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np

from ._native import check, ffi, lib
from .errors import InvalidArgumentError

STATS = ("passes", "decoder_passes", "canvas_steps", "prefill_tokens", "cached_tokens", "waiting", "running",
         "cached", "memory_used")


class Request:
    """One submitted generation. `done` is set once `result` (a dgemma_generate_result) and
    `tokens()` are final; `error` holds what a callback raised (the request was stopped by it)."""

    def __init__(self, n_out: int):
        self.id = -1
        self.out = np.empty(n_out, dtype=np.int32)
        self.result = ffi.new("dgemma_generate_result *")
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.on_done: Callable[[Request], None] | None = None
        self._keep: list = []  # buffers and callbacks the core points to until done

    def tokens(self) -> list[int]:
        return self.out[:self.result.n_tokens].tolist()


class Scheduler:
    """`max_batch` canvases per decoder pass; `prefill_chunk` prompt tokens per pass; requests admitted
    while `memory_budget` bytes hold their KV caches (0: no limit); `prefix_cache` finished
    conversations kept so that a prompt extending one prefills only its new tokens."""

    def __init__(self, model, *, max_batch: int = 8, prefill_chunk: int = 256, memory_budget: int = 0,
                 prefix_cache: int = 0):
        for name, value, lo in (("max_batch", max_batch, 1), ("prefill_chunk", prefill_chunk, 1),
                                ("memory_budget", memory_budget, 0), ("prefix_cache", prefix_cache, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise InvalidArgumentError(f"{name} must be an integer >= {lo}, got {value!r}")
        p = ffi.new("dgemma_scheduler_params *", lib.dgemma_scheduler_default_params())
        p.max_batch, p.prefill_chunk, p.memory_budget, p.prefix_cache = max_batch, prefill_chunk, memory_budget, prefix_cache
        out = ffi.new("dgemma_scheduler **")
        self.model = model
        with model._gate.use() as mptr:
            check(lib.dgemma_scheduler_new(mptr, p, out))
        self._ptr = out[0]
        self._lock = threading.Lock()
        self._pending: dict[int, Request] = {}
        model._schedulers.append(self)

    def submit(self, prompt_ids: Sequence[int], params, max_new_tokens: int, eos_ids: Sequence[int] = (), *,
               on_canvas: Callable[[list[int]], bool] | None = None,
               on_step: Callable[[int, np.ndarray | None], bool] | None = None, drafts: bool = False,
               draws: np.ndarray | None = None, fixed_canvas: np.ndarray | None = None,
               on_done: Callable[[Request], None] | None = None) -> Request:
        """Queues one generation (thread-safe). `params`: a dgemma_sampler_params (generate.sampler_params).
        Callbacks run in the thread calling step(): on_canvas(new tokens) -> True stops after this
        canvas; on_step(step, draft) -> True cancels; on_done(request) once finished. `fixed_canvas`:
        the first canvas's fixed ids, -1 at free positions (generate._as_fixed_canvas checks it)."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens <= 0:
            raise InvalidArgumentError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        req = Request(int(max_new_tokens))
        req.on_done = on_done
        ids = np.ascontiguousarray(prompt_ids, dtype=np.int32)
        eos = np.ascontiguousarray(list(eos_ids), dtype=np.int32)
        opts = ffi.new("dgemma_generate_options *")
        opts.eos_ids = ffi.from_buffer("int32_t[]", eos) if eos.size else ffi.NULL
        opts.n_eos = eos.size
        req._keep += [ids, eos, opts]
        if on_canvas is not None:
            cb = _callback("dgemma_canvas_fn", lambda user, t, n: int(bool(on_canvas([t[i] for i in range(n)]))), req)
            opts.on_canvas = cb
            req._keep.append(cb)
        if on_step is not None:
            def step_cb(user, step, draft, n):
                d = None if draft == ffi.NULL else np.frombuffer(ffi.buffer(draft, n * 4), dtype=np.int32).copy()
                return int(bool(on_step(step, d)))
            cb = _callback("dgemma_step_fn", step_cb, req)
            opts.on_step = cb
            opts.drafts = int(bool(drafts))
            req._keep.append(cb)
        if draws is not None:
            draws = np.ascontiguousarray(draws, dtype=np.uint64)
            if draws.ndim != 1:
                raise InvalidArgumentError("draws must be a 1-D array of raw 64-bit values")
            opts.draws = ffi.from_buffer("uint64_t[]", draws)
            opts.n_draws = draws.size
            req._keep.append(draws)
        if fixed_canvas is not None:
            mask = np.ascontiguousarray(np.asarray(fixed_canvas) >= 0, dtype=np.uint8)
            fixed_tokens = np.ascontiguousarray(np.maximum(fixed_canvas, 0), dtype=np.int32)
            opts.fixed = ffi.from_buffer("uint8_t[]", mask)
            opts.fixed_tokens = ffi.from_buffer("int32_t[]", fixed_tokens)
            req._keep += [mask, fixed_tokens]
        done_cb = ffi.callback("dgemma_done_fn", lambda user, result: self._finished(req))
        opts.on_done = done_cb
        req._keep.append(done_cb)
        rid = ffi.new("int64_t *")
        with self._lock, self.model._gate.use():
            check(lib.dgemma_scheduler_submit(self._handle(), ffi.from_buffer("int32_t[]", ids), ids.size, params,
                                              int(max_new_tokens), opts, ffi.from_buffer("int32_t[]", req.out),
                                              req.result, rid))
            req.id = int(rid[0])
            self._pending[req.id] = req
        return req

    def _finished(self, req: Request) -> None:
        with self._lock:
            self._pending.pop(req.id, None)
        req.done.set()
        if req.on_done is not None:
            try:
                req.on_done(req)
            except BaseException as e:  # never unwind through C
                req.error = req.error or e

    def cancel(self, req: Request) -> None:
        """Stops a request at the next step (finish reason "cancelled")."""
        with self.model._gate.use():
            check(lib.dgemma_scheduler_cancel(self._handle(), req.id))

    def step(self) -> bool:
        """One pass; whether requests remain."""
        pending = ffi.new("int32_t *")
        with self.model._gate.use():
            check(lib.dgemma_scheduler_step(self._handle(), pending))
        return bool(pending[0])

    def run(self) -> None:
        """Steps until no request remains; a closing model cancels what is left."""
        while self.step():
            if self.model._gate.closing:
                for req in list(self._pending.values()):
                    self.cancel(req)

    def stats(self) -> dict:
        out = ffi.new("dgemma_scheduler_stats *")
        check(lib.dgemma_scheduler_stats_get(self._handle(), out))
        return {k: int(getattr(out, k)) for k in STATS}

    def _handle(self):
        if self._ptr is None:
            raise InvalidArgumentError("the scheduler is closed")
        return self._ptr

    def close(self) -> None:
        """Frees the scheduler; requests not finished are dropped."""
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            lib.dgemma_scheduler_free(ptr)
            if self in self.model._schedulers:
                self.model._schedulers.remove(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _callback(ctype: str, fn, req: Request):
    """A C callback that never unwinds through C: what `fn` raises (also a KeyboardInterrupt delivered
    on entry) is kept in req.error and answered with 1, which stops the request."""
    def onerror(exc_type, exc, tb):
        if req.error is None:
            req.error = exc
        return 1
    return ffi.callback(ctype, fn, onerror=onerror)
