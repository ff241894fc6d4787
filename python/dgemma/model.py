"""The Python face of the native core: Model (a loaded GGUF file) and Session (a sequence)."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ._gate import Gate
from ._native import check, ffi, lib
from .errors import InvalidArgumentError


@dataclass(frozen=True)
class LayerConfig:
    sliding: bool
    head_dim: int
    n_head_kv: int
    has_v: bool
    n_rot: int


@dataclass(frozen=True)
class SamplerDefaults:
    max_steps: int
    t_min: float
    t_max: float
    entropy_bound: float
    stability_threshold: int
    confidence_threshold: float


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters read from the GGUF file (see dgemma_model_config_json)."""

    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_ff: int
    n_expert: int
    n_expert_used: int
    n_ff_exp: int
    n_ctx: int
    sliding_window: int
    canvas_length: int
    rms_norm_eps: float
    final_logit_softcapping: float
    token_embd_type: str
    sampler: SamplerDefaults
    layers: tuple[LayerConfig, ...] = field(repr=False)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        d = json.loads(text)
        d.pop("architecture", None)
        d["sampler"] = SamplerDefaults(**d["sampler"])
        d["layers"] = tuple(LayerConfig(**layer) for layer in d["layers"])
        return cls(**d)


def _as_ids(ids, what: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise InvalidArgumentError(f"{what} must be a 1-D sequence of token ids, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidArgumentError(f"{what} must hold integers, got {arr.dtype}")
    if arr.size and (arr.min() < -2**31 or arr.max() >= 2**31):
        raise InvalidArgumentError(f"{what} holds ids outside the int32 range")
    return np.ascontiguousarray(arr, dtype=np.int32)


def _is_batch(prompt) -> bool:
    """A list of prompts (texts, id lists or conversations), as opposed to one prompt."""
    if isinstance(prompt, (str, np.ndarray)) or not isinstance(prompt, (list, tuple)) or not prompt:
        return False
    first = prompt[0]
    return isinstance(first, (str, list, tuple, np.ndarray))


# KV cache element types by name: ggml type ids.
KV_TYPES = {"f32": 0, "f16": 1, "bf16": 30}
# How offloaded experts run (dgemma_model_params.expert_offload; dgemma/offload.py).
EXPERT_OFFLOAD = {"cpu": 0, "stream": 1}


def expert_offload_mode(name: str | None) -> str:
    """`name` checked, or the core's default (dgemma_model_default_params) when None."""
    if name is None:
        code = lib.dgemma_model_default_params().expert_offload
        return next(k for k, v in EXPERT_OFFLOAD.items() if v == code)
    if name not in EXPERT_OFFLOAD:
        raise InvalidArgumentError(f"expert_offload must be one of {', '.join(EXPERT_OFFLOAD)}, got {name!r}")
    return name


class Model:
    """A DiffusionGemma GGUF file, memory-mapped and validated by the native core.

    >>> with dgemma.Model("model.gguf") as model:
    ...     s = model.session(); s.prefill(ids); logits = s.denoise(canvas)
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None, kv_type: str = "f32",
                 device: str = "auto", backend: str | None = None, host_expert_layers: int = 0,
                 expert_offload: str | None = None):
        """`kv_type`: the KV cache's element type, "f32", "f16" or "bf16". `device`: "auto" (a CUDA
        device when one can be used, else the CPU), "cpu", "cuda" or "cuda:N"; the device in use is
        `model.device`. `backend` replaces `device` with a backend by name: "plan" opens the model for
        `memory()` alone (the CPU backend's plan, no weight read or packed; it runs nothing), and, for
        tests, "opaque" is the backend whose memory the host cannot read (it counts transfers).
        `threads`: CPU threads.
        `host_expert_layers`: expert offload, the experts of the last N layers stay in host memory;
        `expert_offload` says how they run: "cpu" (computed by a CPU backend) or "stream" (copied to
        the device for each pass and computed there; dgemma/offload.py); None: the core's default."""
        from .devices import resolve_device

        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise InvalidArgumentError(f"threads must be a positive integer or None, got {threads!r}")
        if kv_type not in KV_TYPES:
            raise InvalidArgumentError(f"kv_type must be one of {', '.join(KV_TYPES)}, got {kv_type!r}")
        if backend is not None and not isinstance(backend, str):
            raise InvalidArgumentError(f"backend must be a string, got {backend!r}")
        if backend is not None and device != "auto":
            raise InvalidArgumentError("give device or backend, not both")
        backend = backend if backend is not None else resolve_device(device)
        self.device = backend
        self.path = os.fspath(path)
        params = ffi.new("dgemma_model_params *", lib.dgemma_model_default_params())
        params.n_threads = threads or 0
        params.kv_type = KV_TYPES[kv_type]
        backend_name = ffi.new("char[]", backend.encode())
        params.backend = backend_name
        if isinstance(host_expert_layers, bool) or not isinstance(host_expert_layers, int) or host_expert_layers < 0:
            raise InvalidArgumentError(f"host_expert_layers must be a non-negative integer, got {host_expert_layers!r}")
        params.host_expert_layers = host_expert_layers
        params.expert_offload = EXPERT_OFFLOAD[expert_offload_mode(expert_offload)]
        out = ffi.new("dgemma_model **")
        check(lib.dgemma_model_load(self.path.encode(), params, out))
        self._gate = Gate(out[0], "model")
        self._sessions: list = []
        self._schedulers: list = []  # closed before the model, like the sessions
        self.config = ModelConfig.from_json(ffi.string(lib.dgemma_model_config_json(out[0])).decode())
        self._tokenizer = None
        self._metadata = None

    @property
    def metadata(self) -> dict:
        """The GGUF file's key-value metadata (read on first use)."""
        if self._metadata is None:
            from .gguf import GGUFFile

            with GGUFFile(self.path) as f:
                self._metadata = dict(f.kv)
        return self._metadata

    @property
    def prompt_format(self) -> str:
        """How the file wants plain prompts (its `dgemma.prompt_format` key): "chat" — pass them
        as chat messages, [{"role": "user", "content": text}], as `dgemma generate` does — or "raw"."""
        from .metadata import prompt_format

        return prompt_format(self.metadata)

    @property
    def tokenizer(self):
        """The tokenizer stored in the GGUF file (loaded on first use)."""
        if self._tokenizer is None:
            from .tokenizer import Tokenizer

            self._tokenizer = Tokenizer.from_gguf(self.path)
        return self._tokenizer

    def memory(self, n_ctx_tokens: int | None = None, n_batch: int = 1, n_sessions: int = 1) -> dict:
        """Bytes the weights, `n_sessions` sessions of `n_ctx_tokens` positions (default: the full
        context) and a batch of `n_batch` canvases need: weights_mapped, weights_owned, weights_on_host
        (offloaded experts), per_session, per_batch, total."""
        out = ffi.new("dgemma_memory *")
        n_ctx = self.config.n_ctx if n_ctx_tokens is None else n_ctx_tokens
        with self._gate.use() as ptr:
            check(lib.dgemma_model_memory(ptr, n_ctx, n_batch, n_sessions, out))
        return {k: getattr(out, k) for k in ("weights_mapped", "weights_owned", "weights_on_host", "per_session", "per_batch", "total")}

    def transfers(self) -> dict:
        """Bytes and calls that crossed between the host and the backend since load (the "opaque"
        test backend counts them; the CPU backend reports zeros)."""
        out = ffi.new("dgemma_transfers *")
        with self._gate.use() as ptr:
            check(lib.dgemma_model_transfers(ptr, out))
        return {k: getattr(out, k) for k in ("bytes_to_host", "bytes_to_device", "downloads", "uploads")}

    def generate(self, prompt, *, max_new_tokens: int = 256, seed: int | None = None, max_denoising_steps=None,
                 t_min=None, t_max=None, entropy_bound=None, stability_threshold=None, confidence_threshold=None,
                 stop=None, eos_ids=None, draws=None):
        """Generates after `prompt` — text, a list of token ids, or a list of chat messages
        ({"role", "content"}) — or after each of several prompts (a list of those), returning a
        `Generation` (a list of them: one batch, each denoising step decoding all canvases in one
        pass). Sampler options default to the GGUF's `diffusion.*` values.
        The same seed gives the same output. `draws` is a test hook: a table of raw 64-bit draws
        replacing the seeded generator (the mapping is in dgemma.h, "Randomness")."""
        from . import generate as g

        kwargs = dict(max_new_tokens=max_new_tokens, seed=seed, stop=stop, eos_ids=eos_ids,
                      draws=draws, max_denoising_steps=max_denoising_steps, t_min=t_min,
                      t_max=t_max, entropy_bound=entropy_bound, stability_threshold=stability_threshold,
                      confidence_threshold=confidence_threshold)
        if _is_batch(prompt):
            return g.run_batch(self, list(prompt), **kwargs)
        return g.run(self, prompt, **kwargs)

    def stream(self, prompt, *, drafts: bool = False, **kwargs):
        """Like generate() for one prompt, as an iterator: each committed canvas's new text, each
        step's `Draft` when `drafts` is set, and last the `Generation`. Closing it cancels the work."""
        from . import generate as g

        return g.stream(self, prompt, drafts=drafts, **kwargs)

    def infill(self, prefix: str, suffix: str, *, max_hole_tokens: int | None = None, prompt=None,
               hole_length: str = "eos", seed: int | None = None, eos_ids=None, **sampler):
        """The text between `prefix` and `suffix` (an `Infill`; `.fills[0]` is the hole's text). The
        prefix is read in encoder mode after `prompt` (text or chat messages, optional); the canvas
        holds a hole of `max_hole_tokens` (default: half a canvas) and the suffix, fixed.
        `hole_length`: "eos" (the hole ends at the EOS the model writes in it), "scored" (every
        length tried, the likeliest canvas kept; one hole only; see dgemma.infill). Sampler options
        as in generate()."""
        from . import infill as f

        parts = f.infill_parts(prefix, suffix, f.default_hole_tokens(self, max_hole_tokens))
        return f.run(self, prompt, parts, hole_length=hole_length, seed=seed, eos_ids=eos_ids, **sampler)

    def edit(self, text: str, spans, *, max_hole_tokens: int | None = None, prompt=None, hole_length: str = "eos",
             seed: int | None = None, eos_ids=None, **sampler):
        """`text` with each character span (start, end) rewritten, everything else fixed (an `Infill`).
        `spans`: one (start, end) pair or a list of them, not overlapping."""
        from . import infill as f

        parts = f.edit_parts(text, f.spans_from(spans), f.default_hole_tokens(self, max_hole_tokens))
        return f.run(self, prompt, parts, hole_length=hole_length, seed=seed, eos_ids=eos_ids, **sampler)

    def fill(self, template: str, *, prompt=None, seed: int | None = None, eos_ids=None, **sampler):
        """A template with typed holes, `{{name:N}}` for at most N tokens, filled (an `Infill`:
        `.text`, and `.values` by name). The text around the holes is kept as it is."""
        from . import infill as f

        return f.run(self, prompt, f.template_parts(template), seed=seed, eos_ids=eos_ids, **sampler)

    def session(self) -> "Session":
        """A new sequence with an empty KV cache."""
        return Session(self)

    def close(self) -> None:
        """Frees the model and every session still open on it. Calls in flight in other threads
        finish first (a generation stops at its next step, finish reason "cancelled"); later calls
        raise InvalidArgumentError. Not from inside one of the model's own callbacks."""
        def free(ptr):
            for sched in list(self._schedulers):
                sched.close()
            for s in list(self._sessions):
                s.close()
            lib.dgemma_model_free(ptr)

        self._gate.close(free)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Session:
    """One sequence: a KV cache filled by `prefill` (encoder mode) and read by `denoise` (decoder mode)."""

    def __init__(self, model: Model):
        out = ffi.new("dgemma_session **")
        with model._gate.use() as ptr:
            check(lib.dgemma_session_new(ptr, out))
            self._gate = Gate(out[0], "session")
            self.model = model
            model._sessions.append(self)

    @contextmanager
    def _use(self):
        """The session's handle for one call, counted on the session and on its model."""
        with self.model._gate.use(), self._gate.use() as ptr:
            yield ptr

    @property
    def n_past(self) -> int:
        """Tokens in the KV cache."""
        with self._use() as ptr:
            return int(lib.dgemma_session_n_past(ptr))

    def prefill(self, ids) -> None:
        """Encoder mode over new tokens (the prompt, or a finished canvas to commit)."""
        arr = _as_ids(ids, "ids")
        with self._use() as ptr:
            check(lib.dgemma_session_prefill(ptr, ffi.from_buffer("int32_t[]", arr), arr.size))

    def denoise(self, canvas_ids, sc_logits: np.ndarray | None = None, *, out: np.ndarray | None = None) -> np.ndarray:
        """One decoder step: float32 logits [len(canvas_ids), vocab]. The cache is not modified.

        `sc_logits` are the previous step's processed logits (same shape) for self-conditioning.
        `out` may supply the result array (C-contiguous float32 of that shape) to avoid an allocation.
        """
        canvas = _as_ids(canvas_ids, "canvas_ids")
        shape = (canvas.size, self.model.config.n_vocab)
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous or not out.flags.writeable:
            raise InvalidArgumentError(f"out must be a writeable C-contiguous float32 array of shape {shape}")
        sc_ptr = ffi.NULL
        if sc_logits is not None:
            sc = np.ascontiguousarray(sc_logits, dtype=np.float32)
            if sc.shape != shape:
                raise InvalidArgumentError(f"sc_logits must have shape {shape}, got {sc.shape}")
            if np.shares_memory(sc, out):
                raise InvalidArgumentError("sc_logits and out must not share memory")
            sc_ptr = ffi.from_buffer("float[]", sc)
        with self._use() as ptr:
            check(lib.dgemma_session_denoise(ptr, ffi.from_buffer("int32_t[]", canvas), canvas.size, sc_ptr,
                                             ffi.from_buffer("float[]", out)))
        return out

    def close(self) -> None:
        """Frees the session after any call in flight on it returns (not from its own callback)."""
        self._gate.close(lib.dgemma_session_free)
        if self in self.model._sessions:
            self.model._sessions.remove(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
