"""The converter: every tensor round-trips (exactly for F32), both config spellings, the
dialect's keys, atomic writes. The gguf package's reader and gguf.quants are the oracle."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from gguf import GGUFReader
from gguf.quants import dequantize, quantize
from gguf.constants import GGMLQuantizationType as Q

import dgemma
from dgemma.convert.random_model import PRESETS
from dgemma.gguf import GGUFFile
from dgemma.convert.hf_to_gguf import convert, gguf_name
from dgemma.convert.safetensors_reader import SafetensorsCheckpoint


def hf_tensors(directory):
    ckpt = SafetensorsCheckpoint(directory)
    try:
        return {name: ckpt.float32(name).copy() for name in ckpt.entries}
    finally:
        ckpt.close()


def read(path):
    reader = GGUFReader(str(path))
    return reader, {t.name: t for t in reader.tensors}


def field(reader, key):
    f = reader.fields[key]
    if len(f.data) == 1:
        v = f.parts[f.data[0]]
        return bytes(v).decode() if f.types[0].name == "STRING" else v[0]
    return [f.parts[i][0] for i in f.data]


@pytest.mark.parametrize("wtype", ["f32", "f16", "bf16", "q8_0"])
def test_every_tensor_round_trips(workdir, tiny_checkpoint, wtype):
    out = workdir / f"rt-{wtype}.gguf"
    convert(tiny_checkpoint, out, wtype, progress=None)
    reader, tensors = read(out)
    source = hf_tensors(tiny_checkpoint)
    mapped = {gguf_name(n): n for n in source if gguf_name(n) is not None}
    assert set(tensors) == set(mapped) | {"rope_freqs.weight"}
    for name, t in tensors.items():
        if name == "rope_freqs.weight":
            continue
        want = source[mapped[name]].reshape(-1)
        got = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(-1)
        kind = t.tensor_type
        if kind == Q.F32:
            np.testing.assert_array_equal(got, want, err_msg=name)
        elif kind == Q.F16:
            np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32), err_msg=name)
        elif kind == Q.BF16:
            expect = np.asarray(dequantize(quantize(want, Q.BF16), Q.BF16), dtype=np.float32).reshape(-1)
            np.testing.assert_array_equal(got, expect, err_msg=name)
        elif kind == Q.Q8_0:
            rows = want.reshape(-1, t.shape[0] if len(t.shape) else want.size)
            np.testing.assert_array_equal(np.asarray(t.data).reshape(-1), quantize(rows, Q.Q8_0).reshape(-1),
                                          err_msg=name)
        else:
            pytest.fail(f"unexpected type {kind} for {name}")
    # Norms and the router stay float32 whatever the requested type.
    assert tensors["blk.0.attn_norm.weight"].tensor_type == Q.F32
    assert tensors["blk.0.ffn_gate_inp.weight"].tensor_type == Q.F32


def test_dialect_keys_and_rope_freqs(workdir, tiny_gguf):
    reader, tensors = read(tiny_gguf)
    a = "diffusion-gemma"
    assert field(reader, "general.architecture") == a
    assert field(reader, f"{a}.block_count") == 6
    assert list(field(reader, f"{a}.attention.head_count_kv")) == [2, 2, 2, 2, 2, 1]
    assert [bool(v) for v in field(reader, f"{a}.attention.sliding_window_pattern")] == [True] * 5 + [False]
    assert field(reader, f"{a}.attention.key_length") == 32
    assert field(reader, f"{a}.attention.key_length_swa") == 16
    assert field(reader, f"{a}.attention.sliding_window") == 8
    assert bool(field(reader, f"{a}.attention.causal")) is False
    assert field(reader, "diffusion.canvas_length") == 16
    assert field(reader, "diffusion.eb_max_steps") == 48
    assert abs(field(reader, "diffusion.eb_t_min") - 0.4) < 1e-7
    freqs = np.asarray(tensors["rope_freqs.weight"].data)
    # head_dim 32, partial rotary 0.25: int(0.25 * 32 / 2) = 4 rotated pairs of 16
    np.testing.assert_array_equal(freqs, np.array([1.0] * 4 + [1e30] * 12, dtype=np.float32))
    assert "blk.5.attn_v.weight" not in tensors and "blk.4.attn_v.weight" in tensors
    assert not any("vision" in n for n in tensors)
    assert tensors["blk.0.ffn_gate_up_exps.weight"].shape.tolist() == [64, 64, 8]


def test_released_config_spelling_gives_the_same_file(workdir, tiny_checkpoint, tiny_gguf):
    """The released config.json spells global_head_dim / num_global_key_value_heads instead of
    per_layer_config; both must convert to the same hyperparameters."""
    released = workdir / "hf-released-spelling"
    shutil.copytree(tiny_checkpoint, released, dirs_exist_ok=True)
    cfg = json.loads((released / "config.json").read_text())
    tc = cfg["text_config"]
    tc.pop("per_layer_config")
    tc["global_head_dim"] = 32
    tc["num_global_key_value_heads"] = 1
    (released / "config.json").write_text(json.dumps(cfg))
    gen = {"max_denoising_steps": 24, "t_min": 0.3, "t_max": 0.9, "stability_threshold": 2,
           "confidence_threshold": 0.01, "sampler_config": {"entropy_bound": 0.2}}
    (released / "generation_config.json").write_text(json.dumps(gen))
    out = workdir / "released.gguf"
    convert(released, out, "f32", progress=None)
    with dgemma.Model(out, threads=1) as a, dgemma.Model(tiny_gguf, threads=1) as b:
        assert a.config.layers == b.config.layers
        s = a.config.sampler
        assert (s.max_steps, s.stability_threshold) == (24, 2)
        assert abs(s.t_min - 0.3) < 1e-6 and abs(s.t_max - 0.9) < 1e-6
        assert abs(s.entropy_bound - 0.2) < 1e-6 and abs(s.confidence_threshold - 0.01) < 1e-6


def test_failed_conversion_leaves_nothing(workdir, tiny_checkpoint):
    broken = workdir / "hf-broken"
    shutil.copytree(tiny_checkpoint, broken, dirs_exist_ok=True)
    shard = next(broken.glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    out = workdir / "broken.gguf"
    with pytest.raises(dgemma.ConversionError):
        convert(broken, out, "f16", progress=None)
    assert not out.exists()
    assert not list(workdir.glob(".dgemma-*"))


def test_not_a_diffusion_gemma_checkpoint(workdir, tiny_checkpoint):
    other = workdir / "hf-llama"
    shutil.copytree(tiny_checkpoint, other, dirs_exist_ok=True)
    cfg = json.loads((other / "config.json").read_text())
    cfg["model_type"] = "llama"
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(dgemma.ConversionError, match="llama"):
        convert(other, workdir / "x.gguf", "f16", progress=None)


def test_cli_convert(workdir, tiny_checkpoint):
    from dgemma.cli import main

    out = workdir / "cli.gguf"
    assert main(["convert", str(tiny_checkpoint), "-o", str(out), "--type", "f16", "-q"]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the 0600 of the temporary file
    with dgemma.Model(out, threads=1) as m:
        assert m.config.token_embd_type == "F16"
    assert main(["convert", str(workdir / "nope"), "-o", str(out), "-q"]) == 1


@pytest.mark.parametrize("wtype", ["F32", "BF16", "Q8_0"])
def test_random_model_and_demo(workdir, wtype, capsys):
    from dgemma.cli import main
    from dgemma.convert.random_model import write_random_gguf

    path = workdir / f"random-{wtype}.gguf"
    write_random_gguf(path, "tiny", wtype, seed=3)
    with dgemma.Model(path, threads=2) as m:
        s = m.session()
        s.prefill(np.arange(20))
        z = s.denoise(np.arange(m.config.canvas_length))
        assert z.shape == (16, 1024) and np.isfinite(z).all() and np.abs(z).max() <= 30.0
    assert main(["demo", "--preset", "tiny", "--steps", "2", "--prompt-tokens", "9"]) == 0
    assert "ms/step" in capsys.readouterr().out


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"])
def test_random_blocks_hold_finite_weights_of_the_asked_size(type_name):
    """Read back by gguf.quants (llama.cpp's reference): a scale written at the wrong offset would give
    NaN, inf or values orders of magnitude off."""
    from dgemma.convert.random_model import random_blocks

    blocks = random_blocks(type_name, 512, 0.05, np.random.default_rng(1))
    x = dequantize(blocks, Q[type_name]).astype(np.float64)
    assert np.isfinite(x).all()
    rms = float(np.sqrt(np.mean(x ** 2)))
    assert 0.035 < rms < 0.07, f"{type_name}: rms {rms}"
    assert abs(float(x.mean())) < 0.3 * rms  # centred (the minimum of the _1 and K types)


def test_random_blocks_file_has_the_recipes_types_and_runs(workdir):
    from dgemma.convert.quantize_gguf import RECIPES, tensor_type
    from dgemma.convert.random_model import write_random_blocks_gguf

    preset = dict(PRESETS["mini"], moe_intermediate_size=96)  # expert rows of 96: the Q5_0 fallback
    path = workdir / "blocks-q4_k_m.gguf"
    types = write_random_blocks_gguf(path, preset, "q4_k_m", seed=2, progress=None)
    with GGUFFile(path) as f:
        for name, t in f.tensors.items():
            if name != "rope_freqs.weight":
                assert t.type_name == types[name] == tensor_type(name, t.shape, RECIPES["Q4_K_M"])[0], name
        assert {"Q4_K", "Q6_K", "Q5_0", "F32"} <= {t.type_name for t in f.tensors.values()}
        assert f.kv["general.file_type"] == RECIPES["Q4_K_M"].file_type
    with dgemma.Model(path, threads=2) as m:
        s = m.session()
        s.prefill(np.arange(1, 40))
        z = s.denoise(np.arange(m.config.canvas_length))
        assert np.isfinite(z).all() and 0.1 < float(z.std()) < 30


def test_demo_keeps_its_file_only_where_asked_and_never_overwrites(workdir, capsys):
    from dgemma.cli import main

    out = workdir / "demo-q8.gguf"
    assert main(["demo", "--config", "tiny", "--type", "Q8_0", "-o", str(out), "--write-only"]) == 0
    before = out.read_bytes()
    with dgemma.Model(out) as m:
        assert m.config.n_vocab == PRESETS["tiny"]["vocab_size"]
    assert main(["demo", "--config", "tiny", "--type", "Q4_0", "-o", str(out)]) == 2
    assert "--output: " in capsys.readouterr().err and out.read_bytes() == before
    assert main(["demo", "--write-only"]) == 2
    assert main(["demo", "--config", "mini", "--type", "Q3_K", "--steps", "1"]) == 2  # rows of 256: Q3_K itself
    assert "random blocks of Q3_K are not supported" in capsys.readouterr().err
