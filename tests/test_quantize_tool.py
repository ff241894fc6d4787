"""`dgemma quantize` (convert/quantize_gguf.py): types chosen, rounding error, end-to-end logits, bad files, CLI."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import dgemma
from dgemma import cli, kernels
from dgemma.convert.quantize_gguf import RECIPES, dequantize_file, quantize_file
from dgemma.convert.random_model import write_random_gguf
from dgemma.errors import DgemmaError, FormatError, ModelError
from dgemma.gguf import GGUFFile
from gguf_edit import relayout, rewrite

# Small, but with rows of 256 where K-quants apply (hidden, dense MLP, the full layer's attention
# output) and of 64 or 128 where they fall back (expert down projection, the sliding layer's output).
KQ_PRESET = dict(vocab_size=512, hidden_size=256, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=64, global_head_dim=128, num_global_key_value_heads=1,
                 sliding_window=8, num_experts=4, top_k_experts=2, moe_intermediate_size=64, canvas_length=16)

# Relative RMS rounding error of Gaussian rows per stored type: the K-quant bounds of test_quants.py
# (the estimate from each grid's step plus ~25%); Q8_0: step 2*amax/255 with amax ~2.1 over 32 values,
# D/sqrt(12) = 0.0048; Q4_0: 16 symmetric levels, D ~ 2.1/8, 0.076; Q5_0 / Q5_1: 32 levels, ~0.038.
RMS_BOUND = {"Q2_K": 0.36, "Q3_K": 0.17, "Q4_K": 0.095, "Q5_K": 0.047, "Q6_K": 0.022, "Q8_0": 0.006,
             "Q4_0": 0.095, "Q5_0": 0.047, "Q5_1": 0.047, "F16": 1e-3, "F32": 0.0}


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    path = tmp_path_factory.mktemp("quantize") / "kq-f32.gguf"
    write_random_gguf(path, KQ_PRESET, "F32", seed=5, max_position_embeddings=256)
    return path


def logits(path, seed=0):
    """Decoder logits after a prefill, without and with self-conditioning (fed the same inputs)."""
    with dgemma.Model(path, threads=2) as m:
        rng = np.random.default_rng(seed)
        s = m.session()
        s.prefill(rng.integers(0, m.config.n_vocab, 20))
        first = s.denoise(rng.integers(0, m.config.n_vocab, m.config.canvas_length))
        return np.concatenate([first, s.denoise(rng.integers(0, m.config.n_vocab, m.config.canvas_length), first / 0.8)])


def kl(p, q):
    def log_softmax(z):
        z = z.astype(np.float64) - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    lp, lq = log_softmax(p), log_softmax(q)
    return (np.exp(lp) * (lp - lq)).sum(axis=-1)


@pytest.mark.parametrize("type_name", list(RECIPES))
def test_types_and_rounding_error(master, tmp_path, type_name):
    out = tmp_path / "q.gguf"
    types = quantize_file(master, out, type_name, progress=None)
    recipe = RECIPES[type_name]
    with GGUFFile(master) as ref, GGUFFile(out) as q:
        assert q.kv["general.file_type"] == recipe.file_type and q.kv["general.quantization_version"] == 2
        assert list(q.tensors) == list(ref.tensors)  # the source order is kept
        for name, t in q.tensors.items():
            assert t.type_name == types[name]
            if len(ref.array(name).shape) == 1 or name.endswith("ffn_gate_inp.weight"):
                assert t.type_name == "F32" and np.array_equal(q.array(name), ref.array(name))
                continue
            if t.shape[0] % 256 == 0:
                assert t.type_name in (recipe.base, recipe.promoted)
            x = ref.array(name).astype(np.float64).reshape(-1)
            y = kernels.dequantize_row(t.type_id, q.raw(name))
            rel = np.sqrt(np.mean((x - y) ** 2) / np.mean(x ** 2))
            assert rel <= RMS_BOUND[t.type_name], f"{name} ({t.type_name}): relative RMS error {rel:.4f}"
    assert types["token_embd.weight"] == (recipe.promoted or recipe.base)
    assert types["blk.0.ffn_down_exps.weight"] != recipe.base or recipe.base in ("Q8_0", "Q4_0")  # 64-long rows


def test_quantize_rows_is_thread_count_independent():
    x = np.random.default_rng(0).standard_normal((37, 512)).astype(np.float32)
    one = kernels.quantize_rows("Q4_K", x, threads=1)
    assert np.array_equal(one, kernels.quantize_rows("Q4_K", x, threads=3))
    assert np.array_equal(one[5], kernels.quantize_row("Q4_K", x[5]))


# A file mixing eight types over its tensors (gate and up experts of different types) against F32.
# Measured on this model, mean KL of the whole file in one type: Q8_0 3e-5, Q6_K 3e-4, Q5_K 1e-3,
# Q4_K 3.4e-3, Q4_0 4.2e-3, Q3_K 1.4e-2, Q2_K 3.2e-2; the mix (nothing below Q3_K) measures 2.8e-3.
# No tensor below Q3_K, so the mix cannot cost much more than Q3_K everywhere: bound 0.02. One tensor
# read with a wrong layout (Q4_K bytes read as Q6_K) costs 0.07 in attn_v and 6 (= log 512, noise) in
# the MLPs, so the bound catches it.
MIX = ["Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q5_1", "Q4_0", "Q5_0"]


def test_mixed_type_file_against_f32(master, tmp_path):
    out = tmp_path / "mixed.gguf"
    with GGUFFile(master) as f:
        mats = [t for t in f.tensors.values() if len(t.shape) > 1 and "gate_inp" not in t.name]
    rows = []  # (name after the split, row length)
    for t in mats:
        parts = ("gate", "up") if "gate_up_exps" in t.name else (None,)
        rows += [(t.name.replace("gate_up", p) if p else t.name, t.shape[0]) for p in parts]
    types = {}
    for i, (name, n) in enumerate(rows):
        fits = [m for m in MIX if n % kernels.type_info(m).block_size == 0]
        types[name] = fits[i % len(fits)]
    relayout(master, out, split_experts=True, types=types)
    with GGUFFile(out) as f:
        assert len({t.type_name for t in f.tensors.values()}) >= 7
    ref, got = logits(master), logits(out)
    d = kl(ref, got)
    print(f"mixed types: mean KL {d.mean():.4f}, max {d.max():.4f}")
    assert d.mean() < 0.02 and (ref.argmax(-1) == got.argmax(-1)).mean() > 0.9


# ---- malformed quantized files: a clear error from the loader, never a crash ----

@pytest.fixture(scope="module")
def q4k(master, tmp_path_factory):
    path = tmp_path_factory.mktemp("q4k") / "kq-q4_k_m.gguf"
    quantize_file(master, path, "Q4_K_M", progress=None)
    return path


def test_dequantize_file_holds_each_weights_dequantized_value(q4k, tmp_path):
    """The float model a quantized file stands for: the CUDA tests' reference (tests/test_cuda.py)."""
    out = tmp_path / "dq.gguf"
    dequantize_file(q4k, out)
    with GGUFFile(q4k) as q, GGUFFile(out) as f:
        assert f.kv["general.file_type"] == 0
        assert set(f.kv) == set(q.kv)
        assert all(np.array_equal(f.kv[k], q.kv[k]) for k in q.kv if k != "general.file_type")
        assert list(f.tensors) == list(q.tensors)
        assert len({t.type_name for t in q.tensors.values()}) >= 3  # Q4_K, Q6_K, a fallback, F32
        for name, t in q.tensors.items():
            assert f.tensors[name].type_name == "F32" and f.tensors[name].shape == t.shape
            want = kernels.dequantize_row(t.type_id, q.raw(name))
            assert np.array_equal(f.array(name).reshape(-1), want.reshape(-1)), name
    with dgemma.Model(out, threads=2) as m:
        assert m.config.n_vocab == KQ_PRESET["vocab_size"]


def patch_shape(path, name, ne):
    """Overwrites a tensor's dimensions in the directory (the writer refuses to write impossible shapes)."""
    data = bytearray(path.read_bytes())
    key = struct.pack("<Q", len(name)) + name.encode()
    at = data.index(key) + len(key)
    n_dims = struct.unpack_from("<I", data, at)[0]
    assert n_dims == len(ne)
    struct.pack_into(f"<{n_dims}Q", data, at + 4, *ne)
    path.write_bytes(bytes(data))


def test_row_length_not_a_multiple_of_the_block(q4k, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(q4k.read_bytes())
    with GGUFFile(q4k) as f:
        t = f.tensors["blk.0.attn_q.weight"]
    assert t.type_name == "Q4_K"
    patch_shape(bad, t.name, (t.shape[0] // 2 + 32, t.shape[1]))
    with pytest.raises(FormatError, match=r"blk\.0\.attn_q\.weight.*not a multiple of the Q4_K block size 256"):
        dgemma.Model(bad)


def test_truncated_data(q4k, tmp_path):
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(q4k.read_bytes()[:-1000])
    with pytest.raises(FormatError, match="truncated file: data of tensor"):
        dgemma.Model(bad)


def test_shape_inconsistent_with_hparams(q4k, tmp_path):
    bad = tmp_path / "reshaped.gguf"
    rewrite(q4k, bad, reshape={"blk.1.ffn_up.weight": (256, 128)})
    with pytest.raises(ModelError, match=r"blk\.1\.ffn_up\.weight.*shape \[256, 128\], expected \[256, 256\]"):
        dgemma.Model(bad)


# ---- the command ----

def test_cli(master, tmp_path, capsys):
    out = tmp_path / "cli.gguf"
    assert cli.main(["quantize", str(master), str(out), "q4_k_m", "--threads", "2"]) == 0
    assert "wrote" in capsys.readouterr().err
    with dgemma.Model(out) as m:
        assert m.config.token_embd_type == "Q6_K"
    assert cli.main(["quantize", str(tmp_path / "missing.gguf"), str(tmp_path / "x.gguf"), "Q8_0"]) == 1
    assert "missing.gguf" in capsys.readouterr().err
    not_gguf = tmp_path / "not.gguf"
    not_gguf.write_bytes(b"nope" * 64)
    assert cli.main(["quantize", str(not_gguf), str(tmp_path / "y.gguf"), "Q8_0", "-q"]) == 1
    assert "bad magic" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["quantize", str(master), str(tmp_path / "z.gguf"), "Q7_X"])
    assert e.value.code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.gguf", "not.gguf"]  # no partial files left


def test_errors_are_dgemma_errors(tmp_path):
    with pytest.raises(DgemmaError, match="unknown quantization type"):
        quantize_file(tmp_path / "in.gguf", tmp_path / "out.gguf", "Q4_K_XL", progress=None)
