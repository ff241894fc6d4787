"""`dgemma info MODEL.gguf`: what a model file holds and what running it costs."""

from __future__ import annotations

import argparse
import os
from collections import Counter

FLOAT_BYTES = 4  # the CPU backend keeps the KV cache, activations and logits in float32


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("info", help="describe a GGUF model: hyperparameters, prompt format, sampler, "
                                           "tensor types, memory")
    p.add_argument("model", nargs="?", help="GGUF file (default: the small demo model in the package)")
    p.set_defaults(func=run, parser=p)
    return p


def session_bytes(c) -> dict[str, int]:
    """Estimated bytes one session allocates (as native/src/session.cpp sizes them): the KV cache at
    the full context, the forward workspace, and the two [canvas, vocab] logits buffers."""
    kv = 0
    for layer in c.layers:
        slots = c.sliding_window - 1 if layer.sliding else c.n_ctx
        kv += 2 * slots * layer.n_head_kv * layer.head_dim
    rows = max(c.canvas_length, 512)  # the workspace holds a canvas or one 512-token encoder chunk
    q = max(c.n_head * layer.head_dim for layer in c.layers)
    kv_row = max(layer.n_head_kv * layer.head_dim for layer in c.layers)
    per_row = 7 * c.n_embd + 2 * q + 2 * kv_row + 2 * c.n_ff + c.n_expert + c.n_expert_used
    return {"KV cache at full context": kv * FLOAT_BYTES, "workspace": rows * per_row * FLOAT_BYTES,
            "logits": 2 * c.canvas_length * c.n_vocab * FLOAT_BYTES}


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def run(args: argparse.Namespace) -> int:
    from . import demo_model_path
    from .gguf import GGUFFile
    from .metadata import prompt_examples, prompt_format
    from .model import Model

    path = args.model or demo_model_path()
    with Model(path, threads=1) as m:
        c = m.config
    with GGUFFile(path) as f:
        kv = f.kv
        types = Counter(t.type_name for t in f.tensors.values())
        type_bytes = Counter()
        for t in f.tensors.values():
            type_bytes[t.type_name] += t.nbytes
    print(f"{path}: {c.n_layer} layers, n_embd {c.n_embd}, vocab {c.n_vocab}, {c.n_expert} experts "
          f"(top {c.n_expert_used}), canvas {c.canvas_length}, context {c.n_ctx}, token_embd {c.token_embd_type}")
    has_template = bool(kv.get("tokenizer.chat_template"))
    fmt = prompt_format(kv)
    print(f"prompt format: {fmt} ({'plain prompts are wrapped as a user turn' if fmt == 'chat' else 'prompts as given'})"
          f"; chat template: {'present' if has_template else 'none'}")
    examples = prompt_examples(kv)
    if examples:
        print("prompts it was trained on:")
        for e in examples:
            print(f"  {e}")
    s = c.sampler
    print(f"sampler defaults: max steps {s.max_steps}, t_min {s.t_min:g}, t_max {s.t_max:g}, "
          f"entropy bound {s.entropy_bound:g}, stability threshold {s.stability_threshold}, "
          f"confidence threshold {s.confidence_threshold:g}")
    print(f"tensors: {sum(types.values())}")
    for name in sorted(types, key=lambda t: -type_bytes[t]):
        print(f"  {name:<7} {types[name]:>5} tensors {_size(type_bytes[name]):>10}")
    file_bytes = os.path.getsize(path)
    parts = session_bytes(c)
    print(f"memory: {_size(file_bytes)} file, memory-mapped (pages are read as used); per session, estimated: "
          f"{_size(sum(parts.values()))} (" + ", ".join(f"{k} {_size(v)}" for k, v in parts.items()) + ")")
    return 0
