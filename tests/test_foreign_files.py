"""GGUF files as other tools write them load, and files no tool should write fail at load with a
FormatError that says why: unknown keys of every value type (arrays of arrays included), big-endian
files, alignments GGUF does not allow, a data section one byte short. Alignments other than 32 and 64 and tensors in any order are
covered by tests/test_interop.py (identical logits after a relayout)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from gguf_edit import relayout, rewrite

import dgemma
from dgemma.gguf import GGUFFile, ValueType

HEADER_BYTES = 24  # magic, version, tensor count, key count


def load(path):
    return dgemma.Model(path, threads=1)


def denoised(path) -> np.ndarray:
    with load(path) as m:
        s = m.session()
        s.prefill([1, 2, 3])
        return s.denoise(np.arange(m.config.canvas_length) % m.config.n_vocab)


def string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def nested_array_entry(key: str) -> bytes:
    """A key holding [[7, 8] as u32, ["x"]]: an array of arrays, which GGUF allows."""
    inner = struct.pack("<IQ2I", ValueType.UINT32, 2, 7, 8) + struct.pack("<IQ", ValueType.STRING, 1) + string("x")
    return string(key) + struct.pack("<IIQ", ValueType.ARRAY, ValueType.ARRAY, 2) + inner


def insert_key(data: bytes, make_entry, alignment: int = 32) -> bytes:
    """`data` with one more key-value entry in front of the others. The key name is padded so that
    the entry's length is a multiple of the alignment: the data section moves by whole alignment
    units and every tensor offset stays valid."""
    for pad in range(alignment):
        entry = make_entry("x.nested" + "_" * pad)
        if len(entry) % alignment == 0:
            break
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    return data[:8] + struct.pack("<QQ", n_tensors, n_kv + 1) + entry + data[HEADER_BYTES:]


def test_unknown_keys_of_every_type_are_ignored(workdir, tiny_gguf):
    p = workdir / "extra-keys.gguf"
    scalars = {f"vendor.{t.name.lower()}": (1, t) for t in ValueType if t not in (ValueType.STRING, ValueType.ARRAY)}
    rewrite(tiny_gguf, p, kv={**scalars, "vendor.text": ("anything", ValueType.STRING),
                              "vendor.words": (["a", "b"], ValueType.ARRAY, ValueType.STRING),
                              "vendor.numbers": ([1.5, 2.5], ValueType.ARRAY, ValueType.FLOAT64)})
    nested = workdir / "nested-array.gguf"
    nested.write_bytes(insert_key(p.read_bytes(), nested_array_entry))
    with GGUFFile(nested) as f:
        assert f.kv["vendor.text"] == "anything" and f.kv["vendor.uint64"] == 1
        assert [list(a) for a in next(v for k, v in f.kv.items() if k.startswith("x.nested"))] == [[7, 8], ["x"]]
    np.testing.assert_array_equal(denoised(nested), denoised(tiny_gguf))


def test_arrays_nested_too_deep_are_refused(workdir, tiny_gguf):
    def deep(key):
        levels = 20
        body = struct.pack("<IQ", ValueType.UINT8, 0)
        for _ in range(levels):
            body = struct.pack("<IQ", ValueType.ARRAY, 1) + body
        return string(key) + struct.pack("<I", ValueType.ARRAY) + body

    p = workdir / "deep-array.gguf"
    p.write_bytes(insert_key(tiny_gguf.read_bytes(), deep))
    with pytest.raises(dgemma.FormatError, match="nests deeper"):
        load(p)
    with pytest.raises(dgemma.FormatError, match="nests deeper"):
        GGUFFile(p)


def test_big_endian_file_is_refused_clearly(workdir, tiny_gguf):
    data = bytearray(tiny_gguf.read_bytes())
    data[4:8] = struct.pack(">I", 3)  # what a big-endian writer puts there
    p = workdir / "big-endian.gguf"
    p.write_bytes(bytes(data))
    with pytest.raises(dgemma.FormatError, match="big-endian"):
        load(p)
    with pytest.raises(dgemma.FormatError, match="big-endian"):
        GGUFFile(p)


def test_data_section_one_byte_short_fails_at_load(workdir, tiny_gguf):
    with GGUFFile(tiny_gguf) as f:
        end = max(t.offset + t.nbytes for t in f.tensors.values())
        last = max(f.tensors.values(), key=lambda t: t.offset + t.nbytes).name
    p = workdir / "one-byte-short.gguf"
    p.write_bytes(tiny_gguf.read_bytes()[:end - 1])
    with pytest.raises(dgemma.FormatError, match=f"truncated file: data of tensor '{last}'"):
        load(p)
    with pytest.raises(dgemma.FormatError, match=last):
        GGUFFile(p)
    p.write_bytes(tiny_gguf.read_bytes()[:end])  # the same file, not cut: loads
    load(p).close()


@pytest.mark.parametrize("alignment", [1, 2, 4, 24])
def test_alignment_gguf_does_not_allow_is_refused(workdir, tiny_gguf, alignment):
    """GGUF asks for a power of two of at least 8: at alignment 1 the F16 scales of a quantized block
    sat at odd addresses (undefined behaviour in the kernels, found by the sanitizer run)."""
    p = workdir / f"align-{alignment}.gguf"
    relayout(tiny_gguf, p, alignment=alignment)
    with pytest.raises(dgemma.FormatError, match=f"general.alignment {alignment} is not a power of two of at least 8"):
        load(p)
    with pytest.raises(dgemma.FormatError, match=f"general.alignment {alignment} is not a power of two of at least 8"):
        GGUFFile(p)
