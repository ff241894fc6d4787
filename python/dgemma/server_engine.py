"""The server's engine: one model, one scheduler stepped by one thread, requests submitted from the
web handlers (any thread) with their events delivered to an asyncio queue.

Events of a request, in order: ("draft", step, tokens) per denoising step when drafts are asked for,
("canvas", tokens) per committed canvas, then ("done", Finished). A full engine (running + queued at
its limit) refuses new requests with EngineFull; cancel() stops one at the next step.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

from .generate import FINISH_REASONS, _tokenizer_or_none, _trim_at_stop, sampler_params
from .scheduler import Request, Scheduler


class EngineFull(Exception):
    """The bounded queue is full (HTTP 429)."""


@dataclass
class Finished:
    tokens: list[int]        # text tokens (pad dropped), cut before a stop string
    text: str | None         # None when the model has no tokenizer
    finish_reason: str       # "length", "eos", "stop" or "cancelled"
    steps: int
    prompt_tokens: int
    cached_tokens: int


class Metrics:
    """Counters and gauges for /metrics (Prometheus text format)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = {}            # (endpoint, status) -> count
        self.completion_tokens = 0
        self.prompt_tokens = 0
        self.step_seconds_sum = 0.0
        self.step_count = 0

    def count_request(self, endpoint: str, status: int) -> None:
        with self.lock:
            self.requests[(endpoint, status)] = self.requests.get((endpoint, status), 0) + 1


class Engine:
    def __init__(self, model, *, parallel: int = 8, queue: int = 32, prefix_cache: int = 16,
                 memory_budget: int = 0):
        self.model = model
        self.tok = _tokenizer_or_none(model)  # None: prompts and answers are token ids only
        self.parallel, self.queue_limit = parallel, queue
        self.sched = Scheduler(model, max_batch=parallel, prefix_cache=prefix_cache, memory_budget=memory_budget)
        self.metrics = Metrics()
        self._cv = threading.Condition()
        self._outstanding: set[Request] = set()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="dgemma-scheduler", daemon=True)
        self._thread.start()

    # --- requests -------------------------------------------------------------------------------
    def submit(self, ids: list[int], eos: list[int], *, max_new_tokens: int, seed: int | None, sampler: dict,
               stop: list[str], drafts: bool, loop: asyncio.AbstractEventLoop, events: asyncio.Queue) -> Request:
        """Queues a generation (raises EngineFull, or the core's typed error for a bad request). Stop
        strings need the tokenizer."""
        params = sampler_params(self.model, seed, **sampler)
        put = lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev)  # noqa: E731
        so_far: list[int] = []
        pad = self.tok.pad if self.tok is not None else None

        def on_canvas(tokens):
            so_far.extend(t for t in tokens if t != pad)
            put(("canvas", [t for t in tokens if t != pad]))
            return bool(stop) and _trim_at_stop(self.tok, so_far, stop)[2]

        def on_step(step, draft):
            if draft is not None:
                put(("draft", step, draft.tolist()))
            return False

        def on_done(req):
            with self._cv:
                self._outstanding.discard(req)
            r = req.result
            tokens = [t for t in req.tokens() if t != pad]
            finish = FINISH_REASONS[r.finish_reason]
            if stop:
                tokens, text, found = _trim_at_stop(self.tok, tokens, stop)
            else:
                text = self.tok.decode(tokens, skip_special=True) if self.tok is not None else None
                found = False
            if found:
                finish = "stop"
            with self.metrics.lock:
                self.metrics.completion_tokens += len(tokens)
                self.metrics.prompt_tokens += len(ids)
            put(("done", Finished(tokens, text, finish, r.n_steps, len(ids), r.n_prompt_cached)))

        with self._cv:
            if self._stopping:
                raise EngineFull("the server is shutting down")
            if len(self._outstanding) >= self.parallel + self.queue_limit:
                raise EngineFull(f"{len(self._outstanding)} requests are running or queued "
                                 f"(limit {self.parallel} + {self.queue_limit}); retry later")
            req = self.sched.submit(ids, params, max_new_tokens, eos, on_canvas=on_canvas,
                                    on_step=on_step if drafts else None, drafts=drafts, on_done=on_done)
            self._outstanding.add(req)
            self._cv.notify_all()
        return req

    def cancel(self, req: Request) -> None:
        if not req.done.is_set():
            self.sched.cancel(req)

    @property
    def queue_depth(self) -> int:
        return self.sched.stats()["waiting"]

    @property
    def outstanding(self) -> int:
        with self._cv:
            return len(self._outstanding)

    # --- the stepping thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._outstanding or self._stopping)
                if self._stopping and not self._outstanding:
                    return
            t0 = time.perf_counter()
            self.sched.step()
            with self.metrics.lock:
                self.metrics.step_seconds_sum += time.perf_counter() - t0
                self.metrics.step_count += 1

    def drain(self, timeout: float | None = None) -> None:
        """Refuses new requests, lets those in flight finish (cancelling them after `timeout`), stops."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            for req in list(self._outstanding):
                self.cancel(req)
            self._thread.join()
        self.sched.close()

    def prometheus(self) -> str:
        st = self.sched.stats()
        m = self.metrics
        with m.lock:
            lines = ["# HELP dgemma_requests_total HTTP requests by endpoint and status.",
                     "# TYPE dgemma_requests_total counter"]
            lines += [f'dgemma_requests_total{{endpoint="{e}",status="{s}"}} {n}' for (e, s), n in sorted(m.requests.items())]
            tpf = m.completion_tokens / st["decoder_passes"] if st["decoder_passes"] else 0.0
            rows = [
                ("dgemma_completion_tokens_total", "counter", "Tokens generated.", m.completion_tokens),
                ("dgemma_prompt_tokens_total", "counter", "Prompt tokens received.", m.prompt_tokens),
                ("dgemma_prompt_tokens_cached_total", "counter", "Prompt tokens reused from the prefix cache.", st["cached_tokens"]),
                ("dgemma_steps_total", "counter", "Denoising steps of all requests.", st["canvas_steps"]),
                ("dgemma_decoder_passes_total", "counter", "Decoder forward passes (shared by the requests in them).", st["decoder_passes"]),
                ("dgemma_tokens_per_forward", "gauge", "Generated tokens per decoder pass since start.", tpf),
                ("dgemma_queue_depth", "gauge", "Requests waiting for admission.", st["waiting"]),
                ("dgemma_running", "gauge", "Requests admitted.", st["running"]),
                ("dgemma_memory_bytes", "gauge", "KV cache and sampler state of running and cached requests.", st["memory_used"]),
                ("dgemma_step_seconds_sum", "counter", "Time in scheduler steps.", m.step_seconds_sum),
                ("dgemma_step_seconds_count", "counter", "Scheduler steps.", m.step_count),
            ]
        for name, kind, help_, value in rows:
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(lines) + "\n"
