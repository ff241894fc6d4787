"""Copies a GGUF file with edits, to make malformed or inconsistent test files."""

from __future__ import annotations

from dgemma.convert.gguf_writer import GGUFWriter
from dgemma.gguf import GGUFFile, ValueType


def rewrite(src, dst, *, kv=None, drop_tensors=(), reshape=None, retype=None) -> None:
    """kv: {key: (value, ValueType[, element type])} to set (value None deletes the key);
    drop_tensors: names to leave out; reshape: {name: new ggml shape} (data truncated or padded);
    retype: {name: ggml type id} (data reinterpreted, size adapted)."""
    kv = kv or {}
    reshape = reshape or {}
    retype = retype or {}
    with GGUFFile(src) as f, GGUFWriter(dst) as w:
        for key, value in f.kv.items():
            if key in kv:
                continue
            vtype, etype = f.kv_types[key]
            if vtype == ValueType.ARRAY:
                w.add_array(key, list(value), etype)
            else:
                w.add(key, value, vtype)
        for key, spec in kv.items():
            if spec[0] is not None:
                w.add(key, *spec)
        kept = [t for t in f.tensors.values() if t.name not in drop_tensors]
        for t in kept:
            w.add_tensor_info(t.name, reshape.get(t.name, t.shape), retype.get(t.name, t.type_id))
        w.write_header()
        for t, (_, _, _, nbytes) in zip(kept, w._tensors):
            data = bytes(f.raw(t.name))
            data = (data + b"\0" * nbytes)[:nbytes]
            w.write_tensor_data(t.name, data)
