"""Hyperparameters and sizes read from a file are bounded at load, so that no later computation on
them narrows or overflows: positions (context, window, canvas) fit in int32, widths (embedding, heads
x head_dim, feed-forward, experts, vocabulary) in 2^30, floats are finite. Each case here loaded
before (as a wrong model, with a value silently cut to 32 bits) or overflowed later."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import pytest

from gguf_edit import rewrite

import dgemma
from dgemma.gguf import GGUFFile, ValueType

ARCH = "diffusion-gemma"
U64 = ValueType.UINT64
TWO_32 = 2**32


def load(path):
    return dgemma.Model(path, threads=1)


@pytest.mark.parametrize("key, value, vtype", [
    # 2^32 + v: a static_cast<int> would have read v and loaded a model of the wrong shape
    (f"{ARCH}.attention.key_length", TWO_32 + 32, U64),
    (f"{ARCH}.attention.key_length_swa", TWO_32 + 16, U64),
    (f"{ARCH}.rope.dimension_count", TWO_32 + 8, U64),
    (f"{ARCH}.attention.head_count_kv", [TWO_32 + 2] * 6, (ValueType.ARRAY, U64)),
    ("diffusion.eb_max_steps", TWO_32 + 48, U64),
    ("diffusion.eb_stability_threshold", TWO_32 + 1, U64),
    ("diffusion.eb_stability_threshold", -1, ValueType.INT32),
    # sizes that multiplied later (KV cache, workspace, logits) would overflow int64
    (f"{ARCH}.context_length", 2**31, U64),
    (f"{ARCH}.attention.sliding_window", 2**40, U64),
    ("diffusion.canvas_length", 2**31, U64),
    (f"{ARCH}.attention.head_count", 2**31, U64),
    (f"{ARCH}.feed_forward_length", 2**31, U64),
    (f"{ARCH}.expert_count", 2**31, U64),
])
def test_out_of_range_integer_is_refused(workdir, tiny_gguf, key, value, vtype):
    p = workdir / "bound.gguf"
    spec = (value, *vtype) if isinstance(vtype, tuple) else (value, vtype)
    rewrite(tiny_gguf, p, kv={key: spec})
    with pytest.raises(dgemma.ModelError, match=rf"'{key}(\[0\])?' is -?\d+, outside \["):
        load(p)


@pytest.mark.parametrize("key", ["diffusion.eb_t_min", "diffusion.eb_entropy_bound", f"{ARCH}.final_logit_softcapping",
                                 f"{ARCH}.attention.layer_norm_rms_epsilon"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_float_is_refused(workdir, tiny_gguf, key, value):
    p = workdir / "nonfinite.gguf"
    rewrite(tiny_gguf, p, kv={key: (value, ValueType.FLOAT32)})
    with pytest.raises(dgemma.ModelError, match=key):
        load(p)


def test_heads_times_head_dim_is_bounded(workdir, tiny_gguf):
    """Each factor in range, the product (a row of the query projection) not."""
    p = workdir / "qwidth.gguf"
    rewrite(tiny_gguf, p, kv={f"{ARCH}.attention.head_count": (2**16, ValueType.UINT32),
                              f"{ARCH}.attention.head_count_kv": ([2**15] * 6, ValueType.ARRAY, ValueType.UINT32),
                              f"{ARCH}.attention.key_length": (2**15, ValueType.UINT32),
                              f"{ARCH}.attention.value_length": (2**15, ValueType.UINT32)})
    with pytest.raises(dgemma.ModelError, match="do not fit"):
        load(p)


def test_vocabulary_over_2_30_is_refused(workdir, tiny_gguf):
    """token_embd.weight with 2^30 + 1 rows of one F32: a 4 GiB sparse file, never read. (The q_norm
    tensors stay: the loader checks head_dim against them before it binds token_embd.)"""
    p = workdir / "vocab.gguf"
    with GGUFFile(tiny_gguf) as f:
        others = [n for n in f.tensors if n != "token_embd.weight" and not n.endswith("attn_q_norm.weight")]
    rewrite(tiny_gguf, p, kv={f"{ARCH}.embedding_length": (1, ValueType.UINT32)}, drop_tensors=others,
            reshape={"token_embd.weight": (1, 8)})
    with GGUFFile(p) as f:
        data_start = f.tensors["token_embd.weight"].offset
    rows = 2**30 + 1
    with open(p, "r+b") as out:
        data = out.read()
        shape_at = data.index(b"token_embd.weight") + len("token_embd.weight") + 4  # after the name and n_dims
        assert struct.unpack_from("<QQ", data, shape_at) == (1, 8)
        out.seek(shape_at + 8)
        out.write(struct.pack("<Q", rows))
        out.truncate(data_start + rows * 4)
    try:
        with pytest.raises(dgemma.ModelError, match=f"token_embd.weight has {rows} rows"):
            load(p)
    finally:
        os.unlink(p)


def test_small_file_cannot_make_the_loader_allocate_by_head_dim(workdir, tiny_gguf):
    """head_dim and rope dimensions of 2^26 in a file of a few hundred KB: refused before the rope
    tables (6 layers x 2^25 floats, 768 MB) are built. Measured as the peak memory of a child process."""
    p = workdir / "huge-rope.gguf"
    big = 2**26
    rewrite(tiny_gguf, p, kv={f"{ARCH}.{k}": (big, ValueType.UINT32) for k in (
        "attention.key_length", "attention.value_length", "attention.key_length_swa", "attention.value_length_swa",
        "rope.dimension_count", "rope.dimension_count_swa")}, drop_tensors={"rope_freqs.weight"})
    # The child imports the dgemma this process runs (an editable install's hook would redirect it).
    code = ("import sys\n"
            "sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith('_editable')]\n"
            f"sys.path.insert(0, {os.path.dirname(os.path.dirname(dgemma.__file__))!r})\n"
            "import dgemma\n"
            "try:\n    dgemma.Model(sys.argv[1], threads=1)\nexcept dgemma.ModelError as e:\n    print('ModelError', e)\n"
            # VmHWM: this process's peak resident memory (ru_maxrss would include the parent's, kept over exec)
            "print('peak_kb', next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))\n")
    out = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, timeout=120)
    assert "ModelError" in out.stdout and "attn_q_norm.weight" in out.stdout, out.stdout + out.stderr
    peak_mb = int(out.stdout.split("peak_kb")[1]) / 1024
    assert peak_mb < 400, f"loading a small file peaked at {peak_mb:.0f} MB"
