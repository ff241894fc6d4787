"""Expert offload sizing (dgemma/offload.py) and its CLI flags, --n-cpu-moe and --gpu-memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import dgemma
from dgemma.convert.random_model import write_random_gguf
from dgemma.gguf import GGUFFile
from dgemma.offload import device_bytes_needed, host_expert_layers_for, layer_expert_bytes


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    path = tmp_path_factory.mktemp("offload") / "mini-q8.gguf"
    write_random_gguf(path, "mini", "Q8_0", seed=3)
    return path


def test_the_device_share_drops_by_the_offloaded_layers_experts(mini):
    with GGUFFile(mini) as f:
        by_layer = {}
        for name, t in f.tensors.items():
            if name.endswith(("ffn_gate_up_exps.weight", "ffn_down_exps.weight")):
                by_layer[int(name.split(".")[1])] = by_layer.get(int(name.split(".")[1]), 0) + t.nbytes
    per_layer = layer_expert_bytes(mini)
    assert per_layer == [by_layer[i] for i in range(len(per_layer))] and len(per_layer) == 6
    with dgemma.Model(mini, threads=1) as m:
        mem = m.memory()
    full = mem["weights_mapped"] + mem["per_session"] + mem["per_batch"]
    assert device_bytes_needed(mini, 0, "cpu") == full
    assert device_bytes_needed(mini, 2, "cpu") == full - per_layer[5] - per_layer[4]
    # The core's own accounting of an offloaded model names the same bytes as on the host.
    with dgemma.Model(mini, threads=1, backend="opaque", host_expert_layers=2, expert_offload="cpu") as m:
        assert m.memory()["weights_on_host"] == per_layer[5] + per_layer[4]


def test_the_planner_sizes_one_session_for_plan_context_not_the_models_whole_context(tmp_path):
    """A model of a 64k context: its cache at 64k would push experts off the GPU that an 8k session
    never needs; the planner sizes for PLAN_CONTEXT (8192) tokens."""
    from dgemma.offload import PLAN_CONTEXT

    path = tmp_path / "long.gguf"
    write_random_gguf(path, "mini", "Q8_0", seed=3, max_position_embeddings=65536)
    with dgemma.Model(path, backend="plan") as m:
        assert m.config.n_ctx == 65536
        planned, whole = m.memory(n_ctx_tokens=PLAN_CONTEXT, n_batch=1), m.memory(n_batch=1)
    assert planned["per_session"] < whole["per_session"]
    assert device_bytes_needed(path, 0) == planned["weights_mapped"] + planned["per_session"] + planned["per_batch"]


def test_gpu_memory_chooses_the_fewest_layers_that_fit(mini):
    """Experts computed by the CPU (streaming's staging: the next test)."""
    need = [device_bytes_needed(mini, n, "cpu") for n in range(7)]
    assert need == sorted(need, reverse=True) and need[0] > need[6]
    assert host_expert_layers_for(mini, need[0], "cpu") == 0
    assert host_expert_layers_for(mini, need[0] - 1, "cpu") == 1
    assert host_expert_layers_for(mini, need[3], "cpu") == 3
    assert host_expert_layers_for(mini, need[6], "cpu") == 6
    with pytest.raises(dgemma.OutOfMemoryError, match=r"even with every layer's experts in host memory; .* GB short"):
        host_expert_layers_for(mini, need[6] - 1, "cpu")
    with pytest.raises(dgemma.InvalidArgumentError, match="gpu_memory must be positive"):
        host_expert_layers_for(mini, 0, "cpu")


def test_streaming_needs_the_staging_slots_and_chooses_by_them(mini):
    """Streamed experts leave their bytes on the host but take two staging slots (one with a single
    layer) of the largest offloaded layer; --gpu-memory's choice counts them."""
    from dgemma.offload import layer_staged_bytes, stream_staging_bytes

    per_layer, staged = layer_expert_bytes(mini), layer_staged_bytes(mini)
    assert all(0 <= s - b < 256 * 2 for s, b in zip(staged, per_layer))  # two tensors, each aligned
    assert stream_staging_bytes(mini, 0) == 0
    assert stream_staging_bytes(mini, 1) == staged[5]
    assert stream_staging_bytes(mini, 4) == 2 * max(staged[2:])
    for n in range(7):
        assert device_bytes_needed(mini, n, "stream") == device_bytes_needed(mini, n, "cpu") + stream_staging_bytes(mini, n)
    need = [device_bytes_needed(mini, n, "stream") for n in range(7)]
    for cap in (need[0], need[2], need[6], need[0] - 1):
        n = host_expert_layers_for(mini, cap, "stream")
        assert need[n] <= cap and all(need[m] > cap for m in range(n))
    with pytest.raises(dgemma.InvalidArgumentError, match="expert_offload must be one of cpu, stream"):
        device_bytes_needed(mini, 1, "disk")
    # A server decoding 8 canvases together holds 8 canvases' workspace (its logits above all).
    with dgemma.Model(mini, backend="plan") as m:
        extra = m.memory(n_batch=8)["per_batch"] - m.memory(n_batch=1)["per_batch"]
    assert extra > 0 and device_bytes_needed(mini, 2, "stream", n_batch=8) == device_bytes_needed(mini, 2, "stream") + extra
    assert host_expert_layers_for(mini, device_bytes_needed(mini, 2, "cpu", n_batch=8), "cpu", n_batch=8) == 2


def test_a_gpu_too_small_gets_the_offload_gpu_memory_would_choose(mini, capsys):
    """No offload flag, a GPU the model does not fit: the N --gpu-memory would choose for its free
    memory, said; too small even so: the CPU under --device auto, an error naming the shortfall under
    --device cuda."""
    from dgemma.cli_args import fit_experts

    need = [device_bytes_needed(mini, n, "cpu") for n in range(7)]
    assert fit_experts(str(mini), "cuda:0", need[0], "cpu", fall_back=False) == 0
    assert capsys.readouterr().err == ""
    assert fit_experts(str(mini), "cuda:0", need[2], "cpu", fall_back=False) == 2
    assert capsys.readouterr().err.strip() == (
        f"cuda:0: the model needs {need[0] / 1e9:.1f} GB and {need[2] / 1e9:.1f} GB can be used: the experts of the "
        f"last 2 layers stay in host memory (--n-cpu-moe N chooses, 0 for none)")
    with pytest.raises(dgemma.OutOfMemoryError, match=r"^cuda:0: the model needs .* GB short\); --device cpu runs it on "
                                                      r"the CPU$"):
        fit_experts(str(mini), "cuda:0", need[6] - 1, "cpu", fall_back=False)
    assert fit_experts(str(mini), "cuda:0", need[6] - 1, "cpu", fall_back=True) is None
    assert capsys.readouterr().err.strip().endswith("GB short); running on the CPU")


def test_placement_fits_the_model_to_the_gpus_free_memory(mini, monkeypatch, capsys):
    """model_placement (every command's --device and offload flags) against a GPU whose free memory
    is given: the accounting's choice, or the CPU under --device auto when nothing fits."""
    import argparse

    from dgemma import cli_args, devices
    from dgemma.devices import CudaDevice

    need = [device_bytes_needed(mini, n) for n in range(7)]
    free = {"bytes": 0}
    monkeypatch.setattr(devices, "resolve_device", lambda d: "cuda" if d == "auto" else d)
    monkeypatch.setattr(devices, "cuda_devices", lambda: [CudaDevice(0, "test GPU", 2 * need[0], free["bytes"], (9, 0))])

    def place(**flags):
        args = argparse.Namespace(device="auto", n_cpu_moe=None, gpu_memory=None, moe_offload=None)
        vars(args).update(flags)
        return cli_args.model_placement(args, str(mini))

    free["bytes"] = need[0] * 2
    assert place() == dict(device="cuda", host_expert_layers=0, expert_offload=None)
    free["bytes"] = int(need[3] / cli_args.AUTO_FIT_SHARE) + 1
    assert place() == dict(device="cuda", host_expert_layers=3, expert_offload=None)
    assert place(n_cpu_moe=1) == dict(device="cuda", host_expert_layers=1, expert_offload=None)  # the flag decides
    free["bytes"] = need[6] // 2
    assert place() == dict(device="cpu", host_expert_layers=0, expert_offload=None)
    assert "running on the CPU" in capsys.readouterr().err
    with pytest.raises(dgemma.OutOfMemoryError, match="--device cpu runs it on the CPU"):
        place(device="cuda:0")


def test_info_says_what_expert_offload_keeps_on_the_host_for_a_small_gpu(mini):
    """`dgemma info`'s line for a GPU the model does not fit: --gpu-memory's choice both ways, or why
    offload cannot help."""
    from dgemma.cli_info import offload_advice

    need = [device_bytes_needed(mini, n, "cpu") for n in range(7)]
    cap = need[2]
    n_stream = host_expert_layers_for(mini, cap, "stream")
    assert offload_advice(str(mini), cap) == (
        f"with --gpu-memory {cap / 1e9:.1f}: 2 layers' experts in host memory (computed by the CPU); or {n_stream} "
        f"layers' experts in host memory (streamed to the GPU, --moe-offload stream)")
    assert offload_advice(str(mini), need[6] - 1).startswith("expert offload cannot make it fit: the model needs ")


def _cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(dgemma.__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "dgemma.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


COMMANDS = {  # every command that runs a model takes --device and the offload flags
    "generate": ["Copy: a b"], "chat": [], "serve": ["--port", "1"], "infill": ["--prefix", "a", "--suffix", "b"],
    "demo": ["--config", "tiny"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("flags", [["--n-cpu-moe", "2"], ["--gpu-memory", "0.5"]])
def test_offload_flags_on_the_cpu_are_a_clear_error(command, flags):
    r = _cli(command, *COMMANDS[command], "--device", "cpu", *flags)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (f"dgemma {command}: error: {flags[0]} moves experts off a GPU, and this "
                                                 f"run is on the CPU (--device cpu)")


def test_offload_flags_exclude_each_other():
    r = _cli("generate", "Copy: a b", "--n-cpu-moe", "1", "--gpu-memory", "4")
    assert r.returncode == 2 and "not allowed with argument" in r.stderr


def test_moe_offload_on_the_cpu_is_a_clear_error():
    r = _cli("generate", "Copy: a b", "--device", "cpu", "--moe-offload", "stream")
    assert r.returncode == 2
    assert r.stderr.strip() == ("dgemma generate: error: --moe-offload says how experts offloaded from a GPU run, and this "
                                "run is on the CPU (--device cpu)")
