"""Expert offload for GPUs smaller than the model: how many layers' experts stay in host memory.

`Model(path, host_expert_layers=N)` keeps the experts of the last N layers in host memory (the core's
seam: docs/backends.md), and `expert_offload` says how they run: "cpu", computed by a CPU backend
beside the GPU (their rows copied across), or "stream", copied to the GPU for each pass and computed
there, in two staging slots of device memory (one layer computes from one while the next is copied
into the other). `dgemma generate --n-cpu-moe N` sets N, `--moe-offload` the mode, and
`--gpu-memory GB` chooses the smallest N whose device share fits (without either, the commands
choose it for the GPU's free memory when the model does not fit there, cli_args.model_placement):
the weights, one session's KV cache at PLAN_CONTEXT tokens and one canvas's workspace (the core's
accounting, `Model.memory()`), less the offloaded experts' bytes, plus the staging slots when
streaming.
"""

from __future__ import annotations

import os

from .errors import InvalidArgumentError, OutOfMemoryError


def layer_expert_bytes(path: str | os.PathLike) -> list[int]:
    """Bytes of the expert matrices (`blk.I.*_exps.weight`, what the core places on the host backend:
    its small per-expert scales stay) of each layer I, in layer order."""
    from .gguf import GGUFFile

    per_layer: dict[int, int] = {}
    with GGUFFile(path) as f:
        for name, t in f.tensors.items():
            if name.startswith("blk.") and name.endswith("_exps.weight"):
                layer = int(name.split(".")[1])
                per_layer[layer] = per_layer.get(layer, 0) + t.nbytes
    return [per_layer.get(i, 0) for i in range(max(per_layer, default=-1) + 1)]


# The context one session's KV cache is planned for, or the model's if shorter (the issue's "one
# sequence with an 8k context"): a model's own context can be 128k tokens and more, whose cache alone
# would offload experts that a few thousand tokens never need. A longer conversation reserves its
# cache as it grows, and a device too small for it then says so.
PLAN_CONTEXT = 8192

# The alignment of each weight in a staging slot (native/src/weight_stream.h, WeightStream::kAlign).
STAGING_ALIGN = 256
# The order the core places a layer's expert tensors in (model.cpp), which is their order in a slot.
_EXPERT_ORDER = ("ffn_gate_up_exps.weight", "ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight")


def layer_staged_bytes(path: str | os.PathLike) -> list[int]:
    """Bytes one layer's experts take in a staging slot when streamed, in layer order: its expert
    tensors in the core's order, each at a multiple of STAGING_ALIGN (weight_stream.h)."""
    from .gguf import GGUFFile

    per_layer: dict[int, int] = {}
    with GGUFFile(path) as f:
        layers = sorted({int(n.split(".")[1]) for n in f.tensors if n.startswith("blk.")})
        for layer in layers:
            end = 0
            for name in _EXPERT_ORDER:
                t = f.tensors.get(f"blk.{layer}.{name}")
                if t is not None:
                    end = -(-end // STAGING_ALIGN) * STAGING_ALIGN + t.nbytes
            per_layer[layer] = end
    return [per_layer.get(i, 0) for i in range(max(per_layer, default=-1) + 1)]


def stream_staging_bytes(path: str | os.PathLike, host_expert_layers: int) -> int:
    """Device bytes that stage the streamed experts of the last `host_expert_layers` layers: one slot
    of the largest such layer's experts, two slots from two layers on (weight_stream.h)."""
    return _staging(layer_staged_bytes(path)[::-1][:host_expert_layers])


def _staging(staged: list[int]) -> int:
    return min(len(staged), 2) * max(staged, default=0)


def device_bytes_needed(path: str | os.PathLike, host_expert_layers: int = 0, expert_offload: str | None = None,
                        n_batch: int = 1) -> int:
    """What the device holds for one session of PLAN_CONTEXT tokens and the workspace of `n_batch`
    canvases decoded together, with the last `host_expert_layers` layers' experts in host memory,
    run as `expert_offload` says ("cpu", "stream", None: the core's default). More sessions' caches
    are what a server's --memory-mb bounds."""
    return _device_bytes(path, expert_offload, n_batch)(host_expert_layers)


def host_expert_layers_for(path: str | os.PathLike, gpu_bytes: int, expert_offload: str | None = None,
                           n_batch: int = 1) -> int:
    """The smallest N such that device_bytes_needed(path, N, expert_offload, n_batch) fits in
    `gpu_bytes`; OutOfMemoryError, naming the shortfall, when even every layer's experts on the host
    do not make it fit."""
    if gpu_bytes <= 0:
        raise InvalidArgumentError(f"gpu_memory must be positive, got {gpu_bytes}")
    needed = _device_bytes(path, expert_offload, n_batch)
    for n in range(len(layer_expert_bytes(path)) + 1):
        need = needed(n)
        if need <= gpu_bytes:
            return n
    raise OutOfMemoryError(f"the model needs {need / 1e9:.2f} GB on the GPU even with every layer's experts in host "
                           f"memory; {gpu_bytes / 1e9:.2f} GB were given ({(need - gpu_bytes) / 1e9:.2f} GB short)")


def plan_context(model) -> int:
    """Tokens of one session's KV cache the planner sizes for: PLAN_CONTEXT, or the model's context."""
    return min(PLAN_CONTEXT, model.config.n_ctx)


def _device_bytes(path: str | os.PathLike, expert_offload: str | None, n_batch: int):
    """device_bytes_needed(path, N, expert_offload, n_batch) as a function of N, the model's accounting
    read once."""
    from .model import Model, expert_offload_mode

    expert_offload = expert_offload_mode(expert_offload)
    with Model(path, backend="plan") as m:  # the accounting alone: nothing read, packed or placed
        mem = m.memory(n_ctx_tokens=plan_context(m), n_batch=n_batch, n_sessions=1)
    full = mem["weights_mapped"] + mem["per_session"] + mem["per_batch"]
    experts = layer_expert_bytes(path)[::-1]  # the last layer first: those are offloaded first
    staged = layer_staged_bytes(path)[::-1] if expert_offload == "stream" else []

    def needed(n: int) -> int:
        return full - sum(experts[:n]) + _staging(staged[:n])
    return needed
