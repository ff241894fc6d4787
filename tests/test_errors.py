"""Bad input of every kind gives a typed DgemmaError with a message that names the problem, never a
crash. A crash here would kill the test process, so each passing test is also a no-crash check."""

from __future__ import annotations

import numpy as np
import pytest

from gguf_edit import rewrite

import dgemma
from dgemma.gguf import ValueType


def load(path):
    return dgemma.Model(path, threads=1)


def test_missing_file(workdir):
    with pytest.raises(dgemma.FileIOError, match="cannot open"):
        load(workdir / "does-not-exist.gguf")


def test_empty_and_tiny_files(workdir):
    for size in (0, 3, 23):
        p = workdir / f"short-{size}.gguf"
        p.write_bytes(b"GGUF"[:size] + b"\0" * max(0, size - 4))
        with pytest.raises(dgemma.FormatError):
            load(p)


def test_wrong_magic(workdir, tiny_gguf):
    p = workdir / "magic.gguf"
    data = bytearray(tiny_gguf.read_bytes())
    data[:4] = b"GGML"
    p.write_bytes(bytes(data))
    with pytest.raises(dgemma.FormatError, match="bad magic"):
        load(p)


@pytest.mark.parametrize("fraction", [0.001, 0.01, 0.2, 0.5, 0.999])
def test_truncated_file(workdir, tiny_gguf, fraction):
    data = tiny_gguf.read_bytes()
    p = workdir / f"trunc-{fraction}.gguf"
    p.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(dgemma.FormatError, match="truncated"):
        load(p)


def test_random_corruption_never_crashes(workdir, tiny_gguf):
    """Flipped bytes in the header region: each load either succeeds or raises DgemmaError."""
    data = tiny_gguf.read_bytes()
    rng = np.random.default_rng(0)
    header_end = 4096
    for i in range(60):
        corrupted = bytearray(data)
        for pos in rng.integers(0, header_end, size=3):
            corrupted[pos] = rng.integers(0, 256)
        p = workdir / "corrupt.gguf"
        p.write_bytes(bytes(corrupted))
        try:
            load(p).close()
        except dgemma.DgemmaError as e:
            assert str(e)


def test_unknown_architecture(workdir, tiny_gguf):
    p = workdir / "arch.gguf"
    rewrite(tiny_gguf, p, kv={"general.architecture": ("llama", ValueType.STRING)})
    with pytest.raises(dgemma.UnsupportedError, match="architecture 'llama'"):
        load(p)


def test_missing_tensor(workdir, tiny_gguf):
    p = workdir / "missing.gguf"
    rewrite(tiny_gguf, p, drop_tensors={"blk.2.ffn_up.weight"})
    with pytest.raises(dgemma.ModelError, match="blk.2.ffn_up.weight"):
        load(p)


def test_shape_mismatch(workdir, tiny_gguf):
    p = workdir / "shape.gguf"
    rewrite(tiny_gguf, p, reshape={"blk.1.attn_q.weight": (64, 32)})
    with pytest.raises(dgemma.ModelError, match=r"blk.1.attn_q.weight.*shape \[64, 32\].*expected \[64, 64\]"):
        load(p)


def test_missing_hyperparameter(workdir, tiny_gguf):
    p = workdir / "nokey.gguf"
    rewrite(tiny_gguf, p, kv={"diffusion-gemma.expert_count": (None, ValueType.UINT32)})
    with pytest.raises(dgemma.ModelError, match="expert_count"):
        load(p)


def test_inconsistent_hyperparameters(workdir, tiny_gguf):
    p = workdir / "kv.gguf"
    rewrite(tiny_gguf, p, kv={"diffusion-gemma.expert_used_count": (99, ValueType.UINT32)})
    with pytest.raises(dgemma.ModelError, match="expert_used_count"):
        load(p)


def test_unreadable_tensor_type_is_named(workdir, tiny_gguf):
    p = workdir / "type.gguf"
    rewrite(tiny_gguf, p, retype={"blk.0.attn_q.weight": 9})  # Q8_1: an activation type, no dequantizer
    with pytest.raises(dgemma.UnsupportedError, match="blk.0.attn_q.weight.*Q8_1"):
        load(p)


def test_token_ids_out_of_range(tiny_gguf):
    with load(tiny_gguf) as m:
        s = m.session()
        with pytest.raises(dgemma.OutOfRangeError, match="outside the vocabulary"):
            s.prefill([1, 2, m.config.n_vocab])
        with pytest.raises(dgemma.OutOfRangeError):
            s.prefill([-1])
        assert s.n_past == 0  # a failed prefill leaves the cache as it was
        with pytest.raises(dgemma.OutOfRangeError, match="canvas token 3"):
            s.denoise([0, 1, 2, m.config.n_vocab + 5])
        with pytest.raises(dgemma.InvalidArgumentError):
            s.prefill([2**40])
        with pytest.raises(dgemma.InvalidArgumentError):
            s.prefill([[1, 2]])


def test_prompt_past_context(tiny_gguf):
    with load(tiny_gguf) as m:
        assert m.config.n_ctx == 64
        s = m.session()
        with pytest.raises(dgemma.OutOfRangeError, match="context length 64"):
            s.prefill(np.zeros(65, dtype=np.int32))
        s.prefill(np.zeros(60, dtype=np.int32))
        with pytest.raises(dgemma.OutOfRangeError, match="context length"):
            s.prefill(np.zeros(5, dtype=np.int32))
        with pytest.raises(dgemma.OutOfRangeError, match="context length"):
            s.denoise(np.zeros(m.config.canvas_length, dtype=np.int32))
        assert s.n_past == 60


def test_canvas_length_limits(tiny_gguf):
    with load(tiny_gguf) as m:
        s = m.session()
        s.prefill([1, 2, 3])
        c = m.config.canvas_length
        with pytest.raises(dgemma.OutOfRangeError, match="canvas length"):
            s.denoise(np.zeros(c + 1, dtype=np.int32))
        with pytest.raises(dgemma.OutOfRangeError):
            s.denoise(np.zeros(0, dtype=np.int32))
        with pytest.raises(dgemma.InvalidArgumentError, match="sc_logits"):
            s.denoise(np.zeros(c, dtype=np.int32), np.zeros((c, 3), dtype=np.float32))
        out = np.empty((c, m.config.n_vocab), dtype=np.float32)
        with pytest.raises(dgemma.InvalidArgumentError, match="share memory"):
            s.denoise(np.zeros(c, dtype=np.int32), out, out=out)


def test_closed_objects(tiny_gguf):
    m = load(tiny_gguf)
    s = m.session()
    m.close()
    with pytest.raises(dgemma.InvalidArgumentError, match="closed"):
        s.prefill([1])
    with pytest.raises(dgemma.InvalidArgumentError, match="closed"):
        m.session()
    with pytest.raises(dgemma.InvalidArgumentError):
        dgemma.Model(tiny_gguf, threads=0)
