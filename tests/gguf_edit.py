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


def relayout(src, dst, *, order=None, alignment=32, split_experts=False, types=None, kv=None) -> None:
    """Copies a GGUF file in another layout, as llama.cpp may write the same weights: tensors in
    `order` (a key function of the name; default the source order), data aligned to `alignment`
    (general.alignment), fused `ffn_gate_up_exps` split into `ffn_gate_exps` / `ffn_up_exps` (a byte
    split: quantized rows stay whole), `types` ({name: type name}) re-quantizing tensors, and `kv`
    ({key: (value, ValueType)}) replacing keys."""
    import numpy as np

    from dgemma import kernels
    from dgemma.gguf import GGML_TYPE_IDS

    types = types or {}
    kv = kv or {}
    with GGUFFile(src) as f:
        tensors = []  # (name, ggml shape, type id, bytes)
        for t in f.tensors.values():
            data = bytes(f.raw(t.name))
            if split_experts and t.name.endswith("ffn_gate_up_exps.weight"):
                n_cols, two_f, n_exp = t.shape
                per_expert = np.frombuffer(data, np.uint8).reshape(n_exp, 2, -1)
                for i, part in enumerate(("gate", "up")):
                    name = t.name.replace("gate_up", part)
                    tensors.append((name, (n_cols, two_f // 2, n_exp), t.type_id, per_expert[:, i].tobytes()))
            else:
                tensors.append((t.name, t.shape, t.type_id, data))
        for i, (name, shape, type_id, data) in enumerate(tensors):
            if name in types:
                x = kernels.dequantize_row(type_id, np.frombuffer(data, np.uint8)).reshape(-1, shape[0])
                new = types[name]
                out = x.astype(np.float16) if new == "F16" else x if new == "F32" else kernels.quantize_rows(new, x)
                tensors[i] = (name, shape, GGML_TYPE_IDS[new], out.tobytes())
        if order is not None:
            tensors.sort(key=lambda t: order(t[0]))
        with GGUFWriter(dst, alignment=alignment) as w:
            for key, value in f.kv.items():
                if key == "general.alignment":
                    continue
                vtype, etype = f.kv_types[key]
                if key in kv:
                    value, vtype = kv[key]
                w.add(key, list(value) if vtype == ValueType.ARRAY else value, vtype, etype)
            for name, shape, type_id, _ in tensors:
                w.add_tensor_info(name, shape, type_id)
            for name, _, _, data in tensors:
                w.write_tensor_data(name, data)
