"""The backend seam (docs/backends.md): a generation on the host-opaque test backend, whose tensors
the host cannot dereference, gives the CPU backend's tokens while only the contract's bytes cross
to the host; the KV cache types; and the memory accounting."""

from __future__ import annotations

import os

import numpy as np
import pytest

import dgemma
from dgemma.convert.random_model import write_random_gguf

PROMPT = "Write a sentence: red car, runs"


@pytest.fixture(scope="module")
def tiny_random(workdir):
    path = workdir / "seam-tiny.gguf"
    write_random_gguf(str(path), "tiny", "Q8_0", seed=3)
    return path


@pytest.fixture(scope="module")
def tiny_f32(workdir):
    path = workdir / "seam-tiny-f32.gguf"
    write_random_gguf(str(path), "tiny", "F32", seed=4)
    return path


def generate_ids(path, backend, prompt_ids, **kw):
    with dgemma.Model(path, threads=2, backend=backend) as m:
        before = m.transfers()
        g = m.generate(prompt_ids, **kw)
        after = m.transfers()
        moved = {k: after[k] - before[k] for k in after}
        return g, moved, m.config.canvas_length


@pytest.mark.parametrize("drafts", [False, True])
def test_opaque_backend_generates_the_cpu_tokens_with_only_flags_and_ids_crossing(drafts):
    path = dgemma.demo_model_path()
    with dgemma.Model(path) as m:
        ids = m.tokenizer.encode(m.tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}],
                                                                 add_generation_prompt=True))
    cpu, _, C = generate_ids(path, "cpu", ids, max_new_tokens=96, seed=5)
    steps_seen = []
    with dgemma.Model(path, threads=2, backend="opaque") as m:
        from dgemma.generate import run

        def on_step(step, draft):
            steps_seen.append(draft)
            return False

        before = m.transfers()
        g = run(m, ids, max_new_tokens=96, seed=5, on_step=on_step, drafts=drafts)
        moved = {k: m.transfers()[k] - before[k] for k in before}
    assert g.tokens == cpu.tokens and g.steps == cpu.steps and g.canvases == cpu.canvases
    # Device to host: a 4-byte stop flag per step and the argmax ids once per canvas (the committed
    # ids) or, when drafts are asked for, once per step (the draft; the last step's is the committed
    # canvas), nothing else.
    argmax_copies = g.steps if drafts else g.canvases
    assert moved["bytes_to_host"] == g.steps * 4 + argmax_copies * 4 * C
    assert moved["downloads"] == g.steps + argmax_copies
    assert all((d is not None) == drafts for d in steps_seen)


def test_opaque_backend_batch_and_denoise_match_cpu(tiny_random):
    prompts = [[1, 2, 3, 4, 5], [9, 8, 7]]
    cpu, _, _ = generate_ids(tiny_random, "cpu", prompts, max_new_tokens=40, seed=2)
    opaque, moved, C = generate_ids(tiny_random, "opaque", prompts, max_new_tokens=40, seed=2)
    assert [g.tokens for g in opaque] == [g.tokens for g in cpu]
    assert moved["bytes_to_host"] == sum(g.steps * 4 + g.canvases * 4 * C for g in opaque)
    # The step-level API: logits downloaded once, bit-identical to the CPU backend's.
    canvas = np.random.default_rng(0).integers(0, 1024, C)
    out = []
    for backend in ("cpu", "opaque"):
        with dgemma.Model(tiny_random, threads=2, backend=backend) as m:
            s = m.session()
            s.prefill(list(range(1, 30)))
            z = s.denoise(canvas)
            out.append((z, s.denoise(canvas, z / 0.7)))
    for a, b in zip(out[0], out[1]):
        np.testing.assert_array_equal(a, b)


# Measured on this model: F16 2.1e-4, BF16 1.3e-3 of the largest logit; the bounds leave ~5-8x.
@pytest.mark.parametrize("kv_type,bound", [("f16", 1e-3), ("bf16", 1e-2)])
def test_kv_cache_types(tiny_f32, kv_type, bound):
    """A narrower cache rounds the cached keys and values; the logits move by about that rounding
    (F16: 2^-11 relative, BF16: 2^-8, amplified through the layers) and not more."""
    canvas = np.random.default_rng(1).integers(0, 1024, 16)
    prompt = list(np.random.default_rng(2).integers(0, 1024, 40))  # past the sliding window (8)
    res = {}
    for kv in ("f32", kv_type):
        with dgemma.Model(tiny_f32, threads=2, kv_type=kv) as m:
            s = m.session()
            s.prefill(prompt)
            res[kv] = s.denoise(canvas)
            per_session = m.memory(n_ctx_tokens=64)["per_session"]
            res[kv + "-mem"] = per_session
    err = np.abs(res[kv_type] - res["f32"]).max() / np.abs(res["f32"]).max()
    assert 0 < err <= bound, err
    assert res[kv_type + "-mem"] * 2 == res["f32-mem"]
    with pytest.raises(dgemma.InvalidArgumentError):
        dgemma.Model(tiny_f32, kv_type="q8_0")


def test_memory_accounting(tiny_random):
    """per_session counts a ring of window - 1 slots in sliding layers and every position in full
    layers, K and V, at the cache type's size (computed here from the config, independently)."""
    with dgemma.Model(tiny_random, threads=2) as m:
        c = m.config
        expect = sum(2 * 4 * layer.n_head_kv * layer.head_dim * (c.sliding_window - 1 if layer.sliding else 100)
                     for layer in c.layers)
        one = m.memory(n_ctx_tokens=100, n_batch=1)
        four = m.memory(n_ctx_tokens=100, n_batch=4, n_sessions=4)
        assert one["per_session"] == expect
        assert four["per_batch"] > one["per_batch"] >= 4 * c.canvas_length * c.n_vocab  # the logits at least
        assert four["total"] == four["weights_mapped"] + four["weights_owned"] + 4 * four["per_session"] + four["per_batch"]
        assert one["weights_mapped"] == tiny_random.stat().st_size
        with pytest.raises(dgemma.InvalidArgumentError):
            m.memory(n_ctx_tokens=-1)


def test_unknown_backend_is_a_clear_error(tiny_random):
    with pytest.raises(dgemma.InvalidArgumentError, match="unknown backend"):
        dgemma.Model(tiny_random, backend="tpu")


def test_expert_offload_runs_the_experts_on_a_host_backend(tiny_random):
    """The experts of the last two layers on a CPU backend beside the (opaque) main one: the same
    logits bit for bit and the same tokens as all on the CPU; their MoE rows cross explicitly each
    pass (input rows, expert ids and weights out, the result back); the accounting names their bytes."""
    from dgemma.gguf import GGUFFile

    canvas = np.random.default_rng(5).integers(0, 1024, 16)
    prompt = list(range(3, 40))
    logits = {}
    for name, kw in (("cpu", {}), ("offload", dict(backend="opaque", host_expert_layers=2, expert_offload="cpu"))):
        with dgemma.Model(tiny_random, threads=2, **kw) as m:
            s = m.session()
            s.prefill(prompt)
            before = m.transfers()
            logits[name] = s.denoise(canvas)
            moved = {k: m.transfers()[k] - before[k] for k in before}
            gen = m.generate(prompt, max_new_tokens=32, seed=4)
            logits[name + "-tokens"] = gen.tokens
            mem = m.memory()
            c = m.config
    np.testing.assert_array_equal(logits["cpu"], logits["offload"])
    assert logits["cpu-tokens"] == logits["offload-tokens"]
    E, k, C, V = c.n_embd, c.n_expert_used, c.canvas_length, c.n_vocab
    # One decoder pass: per offloaded layer x, ids and weights down; the logits once.
    assert moved["bytes_to_host"] == 2 * C * (4 * E + 4 * k + 4 * k) + 4 * C * V
    f = GGUFFile(str(tiny_random))
    n = c.n_layer
    expert_bytes = sum(t.nbytes for name, t in f.tensors.items()
                       if "_exps.weight" in name and int(name.split(".")[1]) >= n - 2)
    assert mem["weights_on_host"] == expert_bytes > 0
    with pytest.raises(dgemma.InvalidArgumentError):
        dgemma.Model(tiny_random, host_expert_layers=-1)


@pytest.mark.parametrize("weight_type", ["F32", "Q8_0", "Q4_K_M"])
def test_the_plan_backend_gives_the_cpu_backends_memory_plan_and_runs_nothing(workdir, weight_type):
    """backend="plan" (what `dgemma info` and the offload planner open): the CPU backend's memory plan
    to the byte (its packed copies counted, not made), offloaded experts included, and a clear error
    for anything that computes."""
    from dgemma.convert.quantize_gguf import quantize_file

    path = workdir / f"plan-mini-{weight_type}.gguf"
    if not path.exists():
        if weight_type == "Q4_K_M":  # the recipe's mix of types (K-quants, and their fallbacks)
            write_random_gguf(str(workdir / "plan-mini-src.gguf"), "mini", "F32", seed=6)
            quantize_file(str(workdir / "plan-mini-src.gguf"), str(path), weight_type, progress=None)
        else:
            write_random_gguf(str(path), "mini", weight_type, seed=6)
    for kw in ({}, dict(host_expert_layers=2, expert_offload="cpu"), dict(host_expert_layers=2, expert_offload="stream")):
        plans = {}
        for backend in ("cpu", "plan"):
            with dgemma.Model(path, threads=1, backend=backend, **kw) as m:
                plans[backend] = [m.memory(), m.memory(n_ctx_tokens=300, n_batch=3, n_sessions=2)]
        assert plans["plan"] == plans["cpu"], kw
    if weight_type == "Q8_0":  # a type the CPU packs on this machine's instruction sets
        from dgemma import kernels
        if "avx512f" in kernels.cpu_features().split():
            assert plans["plan"][0]["weights_owned"] > 0
    with dgemma.Model(path, backend="plan") as m:
        s = m.session()
        with pytest.raises(dgemma.UnsupportedError, match=r"opened for its memory plan only \(backend 'plan'\): it runs "
                                                          r"nothing \(embed\)"):
            s.prefill([1, 2, 3])
        with pytest.raises(dgemma.UnsupportedError, match="memory plan only"):
            m.generate([1, 2, 3], max_new_tokens=8)


def test_weight_stream_plan_stages_every_use_with_its_groups_bytes(tmp_path):
    """weight_stream.h, the plan the opaque and CUDA backends stream weights by, run as a backend
    would on random groups (tests/weight_stream_check.cpp): every use reads its group's bytes, in
    order and out of it; an in-order pass copies each group once, ahead of its use; a copy never
    goes into the slot the previous use computes from; misuse is an internal error."""
    import shutil
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    assert compiler, "a C++ compiler is needed for the host check of the weight stream"
    exe = tmp_path / "weight_stream_check"
    subprocess.run([compiler, "-std=c++17", "-O1", "-I", str(root / "native" / "src"), "-I", str(root / "native" / "include"),
                    str(root / "tests" / "weight_stream_check.cpp"), "-o", str(exe)], check=True)
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout
    assert r.stdout.split()[0] == "ok" and int(r.stdout.split()[-1]) > 10_000  # uses checked


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_streamed_experts_give_the_cpu_logits_and_cross_once_a_pass(tiny_random, layers):
    """Expert offload by streaming (weight_stream.h): the experts of the last `layers` layers stay in
    host memory and the opaque backend copies them into its staging slots as the plan says, then
    computes from there. The logits are the CPU's bit for bit and the tokens the same; a decoder
    pass after another copies each streamed layer's experts once (from three layers on: with one or
    two, the slots hold them all and nothing crosses again); no activation row crosses (unlike
    offload to a CPU backend); the accounting names the bytes on the host and the staging, the
    bytes dgemma/offload.py plans with."""
    from dgemma.gguf import GGUFFile
    from dgemma.offload import stream_staging_bytes

    rng = np.random.default_rng(11)
    prompt, canvas = list(rng.integers(0, 1024, 37)), rng.integers(0, 1024, 16)
    out = {}
    for name, kw in (("cpu", {}), ("opaque", dict(backend="opaque")),
                     ("host", dict(backend="opaque", host_expert_layers=layers, expert_offload="cpu")),
                     ("stream", dict(backend="opaque", host_expert_layers=layers, expert_offload="stream")),
                     # the CPU backend has nothing to stream: its weights are host memory already
                     ("cpu-stream", dict(host_expert_layers=layers, expert_offload="stream"))):
        with dgemma.Model(tiny_random, threads=2, **kw) as m:
            s = m.session()
            s.prefill(prompt)
            z = s.denoise(canvas)
            before = m.transfers()
            z2 = s.denoise(canvas, z / 0.7)
            moved = {k: m.transfers()[k] - before[k] for k in before}
            tokens = m.generate(prompt, max_new_tokens=32, seed=4).tokens
            out[name] = dict(z=z, z2=z2, moved=moved, tokens=tokens, mem=m.memory(), n_layer=m.config.n_layer)
    for name in ("opaque", "stream", "cpu-stream"):
        np.testing.assert_array_equal(out[name]["z"], out["cpu"]["z"])
        np.testing.assert_array_equal(out[name]["z2"], out["cpu"]["z2"])
        assert out[name]["tokens"] == out["cpu"]["tokens"]
    f = GGUFFile(str(tiny_random))
    n = out["cpu"]["n_layer"]
    expert_bytes = sum(t.nbytes for name, t in f.tensors.items()
                       if "_exps.weight" in name and int(name.split(".")[1]) >= n - layers)
    plain, stream = out["opaque"]["moved"], out["stream"]["moved"]
    assert stream["bytes_to_host"] == plain["bytes_to_host"] and stream["downloads"] == plain["downloads"]
    assert stream["bytes_to_device"] - plain["bytes_to_device"] == (expert_bytes if layers > 2 else 0)
    assert out["stream"]["mem"]["weights_on_host"] == out["cpu-stream"]["mem"]["weights_on_host"] == expert_bytes > 0
    assert out["cpu-stream"]["moved"]["bytes_to_device"] == 0
    staging = out["stream"]["mem"]["weights_owned"] - out["host"]["mem"]["weights_owned"]
    assert staging == stream_staging_bytes(tiny_random, layers) >= min(layers, 2) * expert_bytes // layers


def test_unknown_expert_offload_mode_is_a_clear_error(tiny_random):
    from dgemma import _native

    with pytest.raises(dgemma.InvalidArgumentError, match="expert_offload must be one of cpu, stream"):
        dgemma.Model(tiny_random, host_expert_layers=1, expert_offload="gpu")
    params = _native.ffi.new("dgemma_model_params *", _native.lib.dgemma_model_default_params())
    assert params.expert_offload == 1  # DGEMMA_EXPERT_OFFLOAD_STREAM, the default
    params.expert_offload = 7
    out = _native.ffi.new("dgemma_model **")
    status = _native.lib.dgemma_model_load(str(tiny_random).encode(), params, out)
    assert status == dgemma.InvalidArgumentError.status
    assert out[0] == _native.ffi.NULL
    assert "expert offload mode must be 0 (computed by the CPU) or 1 (streamed), got 7" in \
        _native.ffi.string(_native.lib.dgemma_last_error()).decode()


def test_recorded_passes_replay_to_the_cpu_logits(tiny_random, capfd, monkeypatch):
    """The opaque backend records each pass the model brackets and replays the recording for an equal
    key, as the CUDA backend's graphs do (Backend::record_pass_begin). The self-conditioned steps of
    one canvas replay the first one's recording; a prefill and a step after it are new keys. Every
    logit is the CPU backend's, bit for bit, which a key missing anything the ops read would break
    (a replayed step would attend at a stale position, or read another tensor)."""
    monkeypatch.setenv("DGEMMA_PASS_STATS", "1")
    rng = np.random.default_rng(8)
    prompt = list(rng.integers(0, 1024, 40))
    canvases = [rng.integers(0, 1024, 16) for _ in range(4)]
    out = {}
    for backend in ("cpu", "opaque"):
        with dgemma.Model(tiny_random, threads=2, backend=backend) as m:
            s = m.session()
            s.prefill(prompt)
            z = s.denoise(canvases[0])
            zs = [z]
            for c in canvases[1:]:
                z = s.denoise(c, z / 0.7)
                zs.append(z)
            s.prefill(canvases[-1])
            zs.append(s.denoise(canvases[0], z / 0.7))
            s.close()
            out[backend] = zs
    assert "dgemma opaque backend: 5 passes recorded, 2 replayed" in capfd.readouterr().err
    for a, b in zip(out["cpu"], out["opaque"]):
        np.testing.assert_array_equal(a, b)
