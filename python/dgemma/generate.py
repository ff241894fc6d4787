"""Text generation on top of the native sampler: prompts in, `Generation` out, or a stream.

The sampler and the multi-canvas loop run in the core (dgemma_session_generate); this module turns
prompts into ids, maps the sampler options, watches for stop strings and detokenizes.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ._native import ffi, lib
from .errors import DgemmaError, InvalidArgumentError, TokenizerError

FINISH_REASONS = {0: "length", 1: "eos", 2: "stop", 3: "cancelled"}
SAMPLER_FIELDS = {"max_denoising_steps": "max_steps", "t_min": "t_min", "t_max": "t_max",
                  "entropy_bound": "entropy_bound", "stability_threshold": "stability_threshold",
                  "confidence_threshold": "confidence_threshold"}


@dataclass
class Generation:
    """One sequence's result."""

    text: str | None          # None when the model file has no tokenizer
    tokens: list[int]         # the text's ids: pad dropped, stopped before the first EOS (or the stop string)
    steps: int                # decoder steps run
    canvases: int             # canvases denoised
    finish_reason: str        # "length", "eos", "stop" or "cancelled"
    prompt_tokens: int
    prefill_seconds: float
    decode_seconds: float
    sample_seconds: float
    commit_seconds: float
    total_seconds: float
    eos_generated: bool = field(default=False, repr=False)

    @property
    def n_generated(self) -> int:
        """Generated non-pad tokens: the text's tokens plus the EOS that ended it, if one did."""
        return len(self.tokens) + int(self.eos_generated)

    @property
    def tokens_per_forward(self) -> float:
        """Generated non-pad tokens (`n_generated`: the EOS counts, pad does not) per decoder step,
        the figure diffusion papers quote and the model contract defines."""
        return self.n_generated / self.steps if self.steps else 0.0

    @property
    def ms_per_step(self) -> float:
        return 1e3 * (self.decode_seconds + self.sample_seconds) / self.steps if self.steps else 0.0

    def as_dict(self) -> dict:
        return {"text": self.text, "tokens": self.tokens, "generated_tokens": self.n_generated, "steps": self.steps,
                "canvases": self.canvases,
                "tokens_per_forward": self.tokens_per_forward, "finish_reason": self.finish_reason,
                "prompt_tokens": self.prompt_tokens,
                "timings": {"prefill_s": self.prefill_seconds, "decode_s": self.decode_seconds,
                            "sample_s": self.sample_seconds, "commit_s": self.commit_seconds,
                            "total_s": self.total_seconds, "ms_per_step": self.ms_per_step}}


@dataclass
class Draft:
    """A live view of the canvas being denoised (stream(..., drafts=True))."""

    canvas: int
    step: int
    tokens: list[int]
    text: str | None


def sampler_params(model, seed: int | None, **overrides) -> "ffi.CData":
    """The GGUF's sampler defaults with per-call overrides (None keeps the default)."""
    with model._gate.use() as ptr:
        p = ffi.new("dgemma_sampler_params *", lib.dgemma_model_sampler_defaults(ptr))
    for name, value in overrides.items():
        if name not in SAMPLER_FIELDS:
            raise InvalidArgumentError(f"unknown sampler option {name!r}")
        if value is None:
            continue
        if name in ("max_denoising_steps", "stability_threshold"):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise InvalidArgumentError(f"{name} must be an integer, got {value!r}")
        elif not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, bool):
            raise InvalidArgumentError(f"{name} must be a number, got {value!r}")
        setattr(p, SAMPLER_FIELDS[name], value)
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidArgumentError(f"seed must be a non-negative integer, got {seed!r}")
    p.seed = int(seed) & (2**64 - 1)
    return p


class _Prompt:
    """A prompt as ids plus the EOS set that applies to it."""

    def __init__(self, model, prompt, eos_ids):
        tok = _tokenizer_or_none(model)
        chat = isinstance(prompt, Sequence) and not isinstance(prompt, str) and len(prompt) > 0 \
            and isinstance(prompt[0], dict)
        if isinstance(prompt, str):
            if tok is None:
                raise TokenizerError("text prompts need a tokenizer, and this GGUF has none: pass token ids")
            self.ids = tok.encode(prompt, add_bos=tok.add_bos and tok.bos is not None)
        elif chat:
            if tok is None:
                raise TokenizerError("chat prompts need a tokenizer, and this GGUF has none")
            text = tok.apply_chat_template(list(prompt), add_generation_prompt=True)
            self.ids = tok.encode(text, add_bos=False)
        else:
            arr = np.asarray(prompt)
            if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
                raise InvalidArgumentError("prompt must be text, a list of token ids, or a list of chat messages")
            self.ids = [int(i) for i in arr]
        if not self.ids:
            raise InvalidArgumentError("the prompt is empty")
        if eos_ids is None:
            eos = list(tok.eos) if tok is not None else []
            if chat and tok.end_of_turn is not None and tok.end_of_turn not in eos:
                eos.append(tok.end_of_turn)
        else:
            eos = [int(e) for e in eos_ids]
        self.eos = eos


def _tokenizer_or_none(model):
    try:
        return model.tokenizer
    except (TokenizerError, KeyError):
        return None


def _trim_at_stop(tok, tokens: list[int], stop: Sequence[str]) -> tuple[list[int], str, bool]:
    """(tokens, text) cut before the first stop string, and whether one was found."""
    text = tok.decode(tokens, skip_special=True)
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    if not cuts:
        return tokens, text, False
    cut = min(cuts)
    text = text[:cut]
    lo, hi = 0, len(tokens)  # the longest token prefix whose text stays within the cut text
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(tok.decode(tokens[:mid], skip_special=True)) <= cut:
            lo = mid
        else:
            hi = mid - 1
    return tokens[:lo], text, True


def run(model, prompt, **kwargs) -> Generation:
    """One generation (see run_batch for the options)."""
    return run_batch(model, [prompt], **kwargs)[0]


def run_batch(model, prompts: Sequence, *, max_new_tokens: int = 256, seed: int | None = None,
              stop: Sequence[str] | None = None, eos_ids: Sequence[int] | None = None,
              draws: np.ndarray | None = None, fixed_canvas: np.ndarray | None = None,
              on_canvas: Callable[[list[int]], None] | None = None,
              on_step: Callable[[int, np.ndarray | None], bool] | None = None, drafts: bool = False,
              **sampler) -> list[Generation]:
    """Generations for several prompts as one batch: each denoising step decodes every canvas still
    denoising in one pass. Each sequence stops on its own and gets what it would get alone (same
    seed, same tokens). Callbacks (single prompts only): on_canvas(new tokens) after each canvas;
    on_step(step, draft) after each denoising step, returning True to cancel; draft is the step's
    argmax canvas when `drafts` is set (a copy to the host per step), else None. `draws` (tests):
    raw 64-bit draws replacing the seeded generator (dgemma.h, "Randomness"). `fixed_canvas` (single
    prompts): the first canvas's fixed positions, [canvas_length] ids with -1 at the free positions
    (the holes); EOS counts only inside holes (dgemma.h, dgemma_generate_options.fixed)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens <= 0:
        raise InvalidArgumentError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if len(prompts) > 1 and (on_canvas or on_step or draws is not None or fixed_canvas is not None):
        raise InvalidArgumentError("callbacks, draws and fixed_canvas apply to a single prompt")
    if fixed_canvas is not None:
        fixed_canvas = _as_fixed_canvas(model, fixed_canvas)
    if draws is not None:
        draws = np.ascontiguousarray(draws, dtype=np.uint64)
        if draws.ndim != 1:
            raise InvalidArgumentError("draws must be a 1-D array of raw 64-bit values")
    if isinstance(stop, str):
        stop = [stop]
    stop = [s for s in (stop or []) if s]
    base = sampler_params(model, seed, **sampler)
    parsed = [_Prompt(model, p, eos_ids) for p in prompts]
    tok = _tokenizer_or_none(model)
    if stop and tok is None:
        raise TokenizerError("stop strings need a tokenizer, and this GGUF has none")
    with model._gate.use():  # Model.close() waits for this call; the step callbacks see it closing
        return _run_parsed(model, parsed, base, tok, stop, max_new_tokens, on_canvas, on_step, drafts, draws,
                           fixed_canvas)


def _run_parsed(model, parsed, base, tok, stop, max_new_tokens, on_canvas, on_step, drafts, draws, fixed_canvas):
    from .scheduler import Scheduler

    t_start = time.perf_counter()
    with Scheduler(model, max_batch=len(parsed)) as sched:
        reqs = []
        for i, p in enumerate(parsed):
            reqs.append(sched.submit(
                p.ids, base, max_new_tokens, p.eos,
                on_canvas=_canvas_callback([], on_canvas if i == 0 else None, stop, tok),
                # Every step returns to Python: Ctrl-C (a KeyboardInterrupt raised in the callback) and
                # Model.close() from another thread stop the work at the next step, not the next canvas.
                on_step=_step_callback(on_step if i == 0 else None, model),
                drafts=bool(drafts and on_step is not None and i == 0), draws=draws if i == 0 else None,
                fixed_canvas=fixed_canvas if i == 0 else None))
        sched.run()
    for r in reqs:  # a callback failed: its exception, not the stop it caused
        if r.error is not None:
            raise r.error
    total = time.perf_counter() - t_start
    gens = []
    for p, req in zip(parsed, reqs):
        r = req.result
        tokens = req.tokens()
        if tok is not None and tok.pad is not None:  # pad is not text (a prompt out of the model's format)
            tokens = [t for t in tokens if t != tok.pad]
        finish = FINISH_REASONS[r.finish_reason]
        text = None
        if tok is not None:
            if stop:
                tokens, text, found = _trim_at_stop(tok, tokens, stop)
                finish = "stop" if found else finish
            else:
                text = tok.decode(tokens, skip_special=True)
        gens.append(Generation(text=text, tokens=tokens, steps=r.n_steps, canvases=r.n_canvases,
                               finish_reason=finish, prompt_tokens=len(p.ids),
                               prefill_seconds=r.prefill_seconds, decode_seconds=r.decode_seconds,
                               sample_seconds=r.sample_seconds, commit_seconds=r.commit_seconds,
                               total_seconds=total, eos_generated=finish == "eos"))
    return gens


def _as_fixed_canvas(model, fixed_canvas) -> np.ndarray:
    arr = np.asarray(fixed_canvas)
    C = model.config.canvas_length
    if arr.shape != (C,) or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise InvalidArgumentError(f"fixed_canvas must hold {C} integer ids (-1 at free positions), got shape {arr.shape}")
    if arr.min() < -1 or arr.max() >= model.config.n_vocab:
        raise InvalidArgumentError(f"fixed_canvas holds an id outside -1..{model.config.n_vocab - 1}")
    return arr.astype(np.int64)


def _canvas_callback(out_so_far: list[int], on_canvas, stop, tok):
    """After each canvas: the user's on_canvas, then whether a stop string has appeared."""
    def cb(tokens):
        out_so_far.extend(tokens)
        if on_canvas is not None:
            on_canvas(tokens)
        return bool(stop) and _trim_at_stop(tok, out_so_far, stop)[2]
    return cb


def _step_callback(on_step, model):
    def cb(step, draft):
        return model._gate.closing or (on_step is not None and bool(on_step(step, draft)))
    return cb


def stream(model, prompt, *, drafts: bool = False, **kwargs) -> Iterator[str | Draft | Generation]:
    """Yields each committed canvas's new text (str; token id lists without a tokenizer) as it is
    committed, each step's Draft when `drafts` is set, and finally the Generation. The texts joined
    equal Generation.text. Closing the iterator cancels the work."""
    events: queue.Queue = queue.Queue()
    cancel = threading.Event()
    tok = _tokenizer_or_none(model)
    decoder = tok.stream_decoder(skip_special=True) if tok is not None else None
    stop = kwargs.get("stop") or []
    stop = [stop] if isinstance(stop, str) else [s for s in stop if s]
    holdback = max((len(s) for s in stop), default=1) - 1  # a stop string may straddle two canvases
    canvas_no = [0]

    def on_canvas(tokens):
        canvas_no[0] += 1
        events.put(decoder.push(tokens) if decoder is not None else list(tokens))

    def on_step(step, draft):
        if drafts:
            text = tok.decode(draft.tolist(), skip_special=True) if tok is not None else None
            events.put(Draft(canvas=canvas_no[0], step=step, tokens=draft.tolist(), text=text))
        return cancel.is_set()

    def work():
        try:
            events.put(run(model, prompt, on_canvas=on_canvas, on_step=on_step, drafts=drafts, **kwargs))
        except BaseException as e:
            events.put(e)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    full, emitted = "", 0
    try:
        while True:
            item = events.get()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Draft):
                yield item
            elif isinstance(item, Generation):
                if item.text is not None and len(item.text) > emitted:
                    yield item.text[emitted:]
                yield item
                return
            elif isinstance(item, list):
                if item:
                    yield item
            else:
                full += item
                cuts = [i for i in (full.find(s) for s in stop) if i >= 0]
                safe = min(cuts) if cuts else max(emitted, len(full) - holdback)
                if safe > emitted:
                    yield full[emitted:safe]
                    emitted = safe
    finally:
        cancel.set()
        worker.join()
