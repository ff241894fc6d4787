"""Encoder prefill and decoder denoising against transformers, on random-weight models.

Scenario per configuration: prefill a prompt, denoise a canvas without and then with
self-conditioning, commit a canvas through prefill, denoise again, commit a second canvas, denoise
once more. Every decoder output is compared with the reference.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from test_quants import isa_params

from reference import (QuantizedActivations, ReferenceSequence, build_model, load_weights_from_gguf, save_checkpoint,
                       shared_config)

import dgemma
from dgemma.convert.hf_to_gguf import convert

# name -> (text config, prompt length). The prompts are shorter than the sliding window and several
# times longer than it; "mha" has as many KV heads as query heads and two full layers (index 5 by the
# 5:1 pattern and the last), each with two KV heads and no V projection.
CONFIGS = {
    "tiny-short": (shared_config("tiny"), 5),
    "tiny-long": (shared_config("tiny"), 37),
    "mha": (dict(vocab_size=640, hidden_size=48, intermediate_size=96, num_hidden_layers=7, num_attention_heads=2,
                 num_key_value_heads=2, head_dim=24, global_head_dim=32, num_global_key_value_heads=2,
                 sliding_window=6, num_experts=6, top_k_experts=3, moe_intermediate_size=24, canvas_length=12), 20),
    "gqa4": (dict(vocab_size=768, hidden_size=64, intermediate_size=64, num_hidden_layers=6, num_attention_heads=8,
                  num_key_value_heads=2, head_dim=8, global_head_dim=16, num_global_key_value_heads=1,
                  sliding_window=10, num_experts=4, top_k_experts=2, moe_intermediate_size=16, canvas_length=8), 23),
}

# Tolerance on max|ours - reference| relative to max|reference| (the bound is 1e-3).
# Float32 sums in a different order than PyTorch's agree to ~1e-6 relative per product; through a
# few layers of norms and softmaxes that stays below 1e-4 (measured: ~2e-6). Q8_0 weights are
# multiplied with activations rounded to Q8_0 (integer dot products, as ggml does); the reference
# rounds the same activations (QuantizedActivations), so results agree to ~1e-7 — except that an
# activation within float rounding of a Q8_0 rounding boundary may round one step (amax/127) the
# other way on one side; the random models amplify that, and when it happens in a cached token it
# moves every later logit a little (measured: worst 1.2e-2, median 1.7e-3; KL 2e-4).
# A wrong kernel gives errors of order 1. So Q8_0 holds 5e-2 on the worst logit, 5e-3 on the median.
REL_TOL = {"f32": 1e-4, "f16": 1e-4, "bf16": 1e-4, "q8_0": 5e-2}
MEDIAN_REL_TOL = {"f32": 1e-5, "f16": 1e-5, "bf16": 1e-5, "q8_0": 5e-3}


def scenario(prefill, denoise, rng_seed: int, vocab: int, canvas: int, prompt_len: int, feed=None,
             temperature: float = 0.7):
    """Runs the fixed scenario through `prefill`/`denoise` and returns all decoder logits.

    Self-conditioning inputs and committed canvases come from the step outputs — from `feed` (the
    reference's outputs) when given, so that both sides see identical inputs at every step and an
    error cannot compound from one step into the next."""
    rng = np.random.default_rng(rng_seed)
    outputs = []

    def source(i):
        return (feed if feed is not None else outputs)[i]

    prefill(rng.integers(0, vocab, prompt_len))
    outputs.append(denoise(rng.integers(0, vocab, canvas), None))
    outputs.append(denoise(rng.integers(0, vocab, canvas), source(0) / temperature))
    prefill(np.argmax(source(1), axis=-1))  # commit the first canvas
    outputs.append(denoise(rng.integers(0, vocab, canvas), source(1) / temperature))
    prefill(rng.integers(0, vocab, canvas // 2 + 1))  # a second, shorter commit
    outputs.append(denoise(rng.integers(0, vocab, canvas - 3), None))  # a canvas shorter than the model's
    return outputs


def kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    """Mean over rows of KL(softmax(p) || softmax(q))."""
    def log_softmax(z):
        z = z.astype(np.float64)
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    lp, lq = log_softmax(p_logits), log_softmax(q_logits)
    return float((np.exp(lp) * (lp - lq)).sum(axis=-1).mean())


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def checkpoint(request, workdir):
    name = request.param
    cfg, prompt_len = CONFIGS[name]
    model = build_model(cfg, seed=zlib.crc32(name.encode()) % 1000)
    path = save_checkpoint(model, workdir / f"hf-{name}")
    return name, cfg, prompt_len, model, path


def run_reference(model, cfg, prompt_len, seed):
    ref = ReferenceSequence(model)
    return scenario(ref.prefill, lambda c, sc: ref.denoise(c, sc), seed, cfg["vocab_size"], cfg["canvas_length"],
                    prompt_len)


def same_weight_reference(name, cfg, prompt_len, gguf_path, wtype, seed):
    """The reference on exactly the weights of `gguf_path` (dequantized); for Q8_0 with its
    activations rounded as our integer dot products round them."""
    model = build_model(cfg, seed=zlib.crc32(name.encode()) % 1000)
    load_weights_from_gguf(model, gguf_path)
    if wtype != "q8_0":
        return run_reference(model, cfg, prompt_len, seed=seed)
    # The converter keeps the router in F32 and matrices whose rows are not a multiple of 32 in F16.
    quantized = [p for n, p in model.named_parameters()
                 if p.ndim >= 2 and p.shape[-1] % 32 == 0 and "vision" not in n and "router" not in n]
    with QuantizedActivations(quantized):
        return run_reference(model, cfg, prompt_len, seed=seed)


def run_ours(gguf_path, cfg, prompt_len, seed, threads=2, feed=None):
    with dgemma.Model(gguf_path, threads=threads) as m:
        s = m.session()
        n_prompt_start = s.n_past
        outs = scenario(s.prefill, lambda c, sc: s.denoise(c, sc), seed, cfg["vocab_size"], cfg["canvas_length"],
                        prompt_len, feed)
        assert n_prompt_start == 0
        assert s.n_past == prompt_len + cfg["canvas_length"] + cfg["canvas_length"] // 2 + 1
        return outs


@pytest.mark.parametrize("wtype", ["f32", "f16", "bf16", "q8_0"])
def test_logits_match_transformers(checkpoint, wtype, workdir, record_property):
    name, cfg, prompt_len, model, path = checkpoint
    gguf_path = workdir / f"{name}-{wtype}.gguf"
    convert(path, gguf_path, wtype, progress=None)
    f32_reference = run_reference(model, cfg, prompt_len, seed=7) if wtype != "f32" else None
    # Same rounded weights on both sides: the comparison checks our kernels, not quantization.
    reference = (run_reference(model, cfg, prompt_len, seed=7) if wtype == "f32"
                 else same_weight_reference(name, cfg, prompt_len, gguf_path, wtype, seed=7))
    ours = run_ours(gguf_path, cfg, prompt_len, seed=7, feed=reference)
    worst = 0.0
    for step, (r, o) in enumerate(zip(reference, ours)):
        assert o.shape == r.shape and o.dtype == np.float32
        assert np.isfinite(o).all()
        scale = np.abs(r).max()
        rel = float(np.abs(o - r).max() / scale)
        worst = max(worst, rel)
        assert rel <= REL_TOL[wtype], f"{name}/{wtype} step {step}: max|d|/max|ref| = {rel:.2e}"
        median = float(np.median(np.abs(o - r)) / scale)
        assert median <= MEDIAN_REL_TOL[wtype], f"{name}/{wtype} step {step}: median|d|/max|ref| = {median:.2e}"
    record_property("max_rel_err", worst)
    if f32_reference is not None:
        k = max(kl(r, o) for r, o in zip(f32_reference, ours))
        record_property("kl_f32_vs_ours", k)
        print(f"{name}/{wtype}: max rel err {worst:.2e} vs same-weight reference, KL(f32 ref || ours) {k:.2e}")
    else:
        print(f"{name}/{wtype}: max rel err {worst:.2e}")


def test_denoise_leaves_cache_untouched(checkpoint, workdir):
    name, cfg, prompt_len, model, path = checkpoint
    gguf_path = workdir / f"{name}-cache.gguf"
    convert(path, gguf_path, "f32", progress=None)
    rng = np.random.default_rng(3)
    with dgemma.Model(gguf_path, threads=1) as m:
        s = m.session()
        s.prefill(rng.integers(0, cfg["vocab_size"], prompt_len))
        canvas = rng.integers(0, cfg["vocab_size"], cfg["canvas_length"])
        first = s.denoise(canvas)
        s.denoise(rng.integers(0, cfg["vocab_size"], cfg["canvas_length"]), first)
        assert s.n_past == prompt_len
        np.testing.assert_array_equal(s.denoise(canvas), first)
        # A second session is independent of the first.
        other = m.session()
        other.prefill(rng.integers(0, cfg["vocab_size"], 3))
        np.testing.assert_array_equal(s.denoise(canvas), first)


def test_thread_count_does_not_change_results(checkpoint, workdir):
    name, cfg, prompt_len, model, path = checkpoint
    gguf_path = workdir / f"{name}-threads.gguf"
    convert(path, gguf_path, "f32", progress=None)
    one = run_ours(gguf_path, cfg, prompt_len, seed=11, threads=1)
    three = run_ours(gguf_path, cfg, prompt_len, seed=11, threads=3)
    for a, b in zip(one, three):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(a).max())


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("wtype", ["f32", "q8_0"])
def test_every_instruction_set_matches_transformers(checkpoint, isa, wtype, workdir):
    """The float and integer kernels of each ISA (generic is the portable reference path)."""
    from dgemma import kernels

    name, cfg, prompt_len, model, path = checkpoint
    gguf_path = workdir / f"{name}-isa-{wtype}.gguf"
    convert(path, gguf_path, wtype, progress=None)
    reference = (run_reference(model, cfg, prompt_len, seed=5) if wtype == "f32"
                 else same_weight_reference(name, cfg, prompt_len, gguf_path, wtype, seed=5))
    kernels.set_cpu_isa(isa)
    try:
        ours = run_ours(gguf_path, cfg, prompt_len, seed=5, feed=reference)
    finally:
        kernels.set_cpu_isa("auto")
    for r, o in zip(reference, ours):
        scale = np.abs(r).max()
        assert np.abs(o - r).max() / scale <= REL_TOL[wtype]
        assert np.median(np.abs(o - r)) / scale <= MEDIAN_REL_TOL[wtype]


@pytest.mark.parametrize("isa", [p for p in isa_params() if getattr(p, "values", [p])[0] != "generic"])
@pytest.mark.parametrize("wtype", ["f16", "bf16", "Q4_0", "Q4_K_M", "Q5_K_M"])
def test_every_instruction_set_matches_the_generic_path(checkpoint, isa, wtype, workdir):
    """The same file under each instruction set against the generic path (vec_dot per pair, the
    reference kernels): on AVX-512 the F16/BF16/Q4_0 matrices, Q4_K_M's Q5_0/Q8_0 and Q5_K_M's Q5_1
    fallbacks are
    packed into panels at load and the products read the packs, which this checks end to end (layout,
    the fused experts' halves, every expert's offset). Activations are quantized by the same rules on
    both sides, so the bound is the quantized one: a misplaced panel is off by O(1)."""
    from dgemma import kernels
    from dgemma.convert.quantize_gguf import quantize_file

    name, cfg, prompt_len, model, path = checkpoint
    gguf_path = workdir / f"{name}-isa-{wtype}.gguf"
    if not gguf_path.exists():
        if wtype in ("f16", "bf16"):
            convert(path, gguf_path, wtype, progress=None)
        else:
            f32 = workdir / f"{name}-isa-f32-src.gguf"
            if not f32.exists():
                convert(path, f32, "f32", progress=None)
            quantize_file(f32, gguf_path, wtype, progress=None)
    kernels.set_cpu_isa("generic")
    try:
        generic = run_ours(gguf_path, cfg, prompt_len, seed=7)
        kernels.set_cpu_isa(isa)
        ours = run_ours(gguf_path, cfg, prompt_len, seed=7, feed=generic)
    finally:
        kernels.set_cpu_isa("auto")
    tol = "f16" if wtype in ("f16", "bf16") else "q8_0"
    for r, o in zip(generic, ours):
        scale = np.abs(r).max()
        assert np.abs(o - r).max() / scale <= REL_TOL[tol]
        assert np.median(np.abs(o - r)) / scale <= MEDIAN_REL_TOL[tol]


def test_rope_tables_follow_the_positions_across_calls(tmp_path):
    """The CPU backend keeps RoPE's (cos, sin) tables between layers and calls, found by the positions
    and frequencies they were made for. Two sessions at different positions decoding the same canvas
    in turn, on one model, must each get the logits a model of their own gives them."""
    from dgemma.convert.random_model import write_random_gguf

    path = tmp_path / "tiny.gguf"
    write_random_gguf(path, "tiny", "F32", seed=5)
    rng = np.random.default_rng(11)
    with dgemma.Model(path, threads=1) as m:
        vocab, canvas_len = m.config.n_vocab, m.config.canvas_length
    prompts = [rng.integers(0, vocab, 40), rng.integers(0, vocab, 90)]
    canvas = rng.integers(0, vocab, canvas_len)

    def alone(prompt):
        with dgemma.Model(path, threads=1) as m:
            s = m.session()
            s.prefill(prompt)
            return s.denoise(canvas)

    want = [alone(p) for p in prompts]
    with dgemma.Model(path, threads=1) as m:
        sessions = [m.session(), m.session()]
        for s, p in zip(sessions, prompts):
            s.prefill(p)
        for _ in range(2):
            for s, w in zip(sessions, want):
                np.testing.assert_array_equal(s.denoise(canvas), w)
