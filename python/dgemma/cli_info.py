"""`dgemma info MODEL.gguf`: what a model file holds and what running it costs."""

from __future__ import annotations

import argparse
import os
from collections import Counter



def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("info", help="describe a GGUF model: hyperparameters, prompt format, sampler, "
                                           "tensor types, memory")
    p.add_argument("model", nargs="?", help="GGUF file (default: the small demo model in the package)")
    p.set_defaults(func=run, parser=p)
    return p


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
    from .offload import plan_context

    path = args.model or demo_model_path()
    with Model(path, backend="plan") as m:  # the accounting alone (the CPU backend's): no weight read or packed
        c = m.config
        mem = m.memory(n_ctx_tokens=c.n_ctx, n_batch=1, n_sessions=1)
        gpu_ctx = plan_context(m)
        gpu_mem = m.memory(n_ctx_tokens=gpu_ctx, n_batch=1, n_sessions=1)
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
    owned = f", {_size(mem['weights_owned'])} held by the backend" if mem["weights_owned"] else ""
    print(f"memory: {_size(mem['weights_mapped'])} file, memory-mapped (pages are read as used){owned}; "
          f"per session: KV cache at full context {_size(mem['per_session'])}; "
          f"per generating canvas: workspace and logits {_size(mem['per_batch'])}")
    _print_gpus(path, gpu_mem, gpu_ctx)
    return 0


def _print_gpus(path: str, mem: dict, n_ctx: int) -> None:
    """The CUDA devices, their free memory and what this model needs there (the CUDA backend holds
    the weights, one session's KV cache at n_ctx tokens and one canvas's workspace: `mem`); for a GPU
    it does not fit, what expert offload would keep in host memory."""
    from .devices import cuda_devices
    from .errors import UnsupportedError

    try:
        gpus = cuda_devices()
    except UnsupportedError as e:
        print(f"GPU: none usable ({e})")
        return
    need = mem["weights_mapped"] + mem["per_session"] + mem["per_batch"]
    for g in gpus:
        fits = "fits" if need <= g.free_memory else "does NOT fit"
        print(f"GPU {g.device}: {g.name} (compute {g.compute_capability[0]}.{g.compute_capability[1]}), "
              f"{_size(g.free_memory)} free of {_size(g.total_memory)}; this model needs about {_size(need)} there "
              f"with a {n_ctx}-token context: {fits}")
        if need > g.free_memory:
            print(f"  {offload_advice(path, g.free_memory)}")


def offload_advice(path: str, gpu_bytes: int) -> str:
    """One line: what --gpu-memory would choose for `gpu_bytes` of GPU memory, each way of running the
    offloaded experts (dgemma/offload.py), or why nothing fits."""
    from .errors import OutOfMemoryError
    from .offload import host_expert_layers_for

    gb = gpu_bytes / 1e9
    parts = []
    for mode, how in (("cpu", "computed by the CPU"), ("stream", "streamed to the GPU, --moe-offload stream")):
        try:
            n = host_expert_layers_for(path, gpu_bytes, mode)
        except OutOfMemoryError as e:
            return f"expert offload cannot make it fit: {e}"
        parts.append(f"{n} layers' experts in host memory ({how})")
    return f"with --gpu-memory {gb:.1f}: " + "; or ".join(parts)
