"""Expert offload for GPUs smaller than the model: how many layers' experts stay in host memory.

`Model(path, host_expert_layers=N)` keeps the experts of the last N layers on a CPU backend (the core's
seam: docs/backends.md); `dgemma generate --n-cpu-moe N` sets N, and `--gpu-memory GB` chooses the
smallest N whose device share fits: the weights, one session's KV cache at full context and one
canvas's workspace (the core's accounting, `Model.memory()`), less the offloaded experts' bytes.
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


def device_bytes_needed(path: str | os.PathLike, host_expert_layers: int = 0) -> int:
    """What the device holds for one sequence at full context with the last `host_expert_layers`
    layers' experts on the host."""
    from .model import Model

    with Model(path, threads=1, device="cpu") as m:  # reads the accounting; places nothing
        mem = m.memory(n_batch=1, n_sessions=1)
    on_host = sum(layer_expert_bytes(path)[::-1][:host_expert_layers])
    return mem["weights_mapped"] + mem["per_session"] + mem["per_batch"] - on_host


def host_expert_layers_for(path: str | os.PathLike, gpu_bytes: int) -> int:
    """The smallest N such that device_bytes_needed(path, N) fits in `gpu_bytes`; OutOfMemoryError,
    naming the shortfall, when even every layer's experts on the host do not make it fit."""
    if gpu_bytes <= 0:
        raise InvalidArgumentError(f"gpu_memory must be positive, got {gpu_bytes}")
    experts = layer_expert_bytes(path)[::-1]  # the last layer first: those are offloaded first
    need = device_bytes_needed(path, 0)
    for n in range(len(experts) + 1):
        if need <= gpu_bytes:
            return n
        if n < len(experts):
            need -= experts[n]
    raise OutOfMemoryError(f"the model needs {need / 1e9:.2f} GB on the GPU even with every layer's experts in host "
                           f"memory; {gpu_bytes / 1e9:.2f} GB were given ({(need - gpu_bytes) / 1e9:.2f} GB short)")
