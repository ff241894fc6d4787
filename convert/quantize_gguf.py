"""GGUF -> GGUF re-quantization (`dgemma quantize IN.gguf OUT.gguf TYPE`).

Each tensor is read from the mapped input, dequantized to float32 by the core, quantized row by row
with the core's reference quantizers (ggml's rules, no importance matrix: what llama.cpp's
llama-quantize does without --imatrix) and streamed to a temporary file renamed into place on success.
Memory stays near one slice of one tensor (SLICE_BYTES of float32).

Which tensors get which type (docs/quantization.md has the measurements behind it):
  - 1-D tensors (norms, scales, rope_freqs) and the router `ffn_gate_inp.weight` stay F32;
  - the _M mixes keep MIX_PROMOTED tensors at a higher type (Q6_K);
  - a row length that is not a multiple of the type's block size falls back as llama.cpp does
    (FALLBACK, then F16), with a note.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass

import numpy as np

from dgemma import kernels
from dgemma.errors import InvalidArgumentError
from dgemma.gguf import GGML_TYPE_IDS, GGML_TYPES, GGUFFile, ValueType

from .gguf_writer import GGUFWriter


@dataclass(frozen=True)
class Recipe:
    base: str               # type of the weight matrices
    file_type: int          # llama.cpp's LLAMA_FTYPE_MOSTLY_* number (general.file_type)
    promoted: str | None = None  # type of the MIX_PROMOTED tensors (the _M mixes)


RECIPES = {
    "Q8_0": Recipe("Q8_0", 7), "Q6_K": Recipe("Q6_K", 18),
    "Q5_K_M": Recipe("Q5_K", 17, "Q6_K"), "Q5_K_S": Recipe("Q5_K", 16), "Q5_K": Recipe("Q5_K", 16),
    "Q4_K_M": Recipe("Q4_K", 15, "Q6_K"), "Q4_K_S": Recipe("Q4_K", 14), "Q4_K": Recipe("Q4_K", 14),
    "Q3_K": Recipe("Q3_K", 11), "Q2_K": Recipe("Q2_K", 10), "Q4_0": Recipe("Q4_0", 2),
}
# Tensors the _M mixes keep at `promoted`: attn_v, attn_output and the tied token embedding / lm_head,
# the groups whose promotion bought the most KL per extra byte (measured: docs/quantization.md).
MIX_PROMOTED = re.compile(r"^(token_embd\.weight|blk\.\d+\.attn_(v|output)\.weight)$")
# llama.cpp's substitutes when a row is not a multiple of 256 (it uses IQ4_NL for Q2_K/Q3_K; we have Q4_0).
FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
SLICE_BYTES = 64 << 20  # float32 bytes quantized at once


def tensor_type(name: str, shape: tuple[int, ...], recipe: Recipe, promote: re.Pattern | None = MIX_PROMOTED) -> tuple[str, str | None]:
    """(type, note) for a tensor of ggml `shape`; note says why a fallback was taken."""
    if sum(d > 1 for d in shape) <= 1 or name.endswith("ffn_gate_inp.weight"):
        return "F32", None
    wanted = recipe.promoted if recipe.promoted and promote is not None and promote.match(name) else recipe.base
    t = wanted
    if shape[0] % GGML_TYPES[GGML_TYPE_IDS[t]][1]:
        t = FALLBACK.get(t, t)
        if shape[0] % GGML_TYPES[GGML_TYPE_IDS[t]][1]:
            t = "F16"
        return t, f"row length {shape[0]} is not a multiple of the {wanted} block size: {t}"
    return t, None


def _slices(src: GGUFFile, name: str, out_type: str, threads: int | None):
    """Yields the tensor in `out_type`, a slice of rows at a time."""
    info = src.tensors[name]
    raw = src.raw(name)
    n_cols = info.shape[0]
    n_rows = int(np.prod(info.shape[1:], dtype=np.int64))
    in_row = info.nbytes // max(n_rows, 1)
    step = max(1, SLICE_BYTES // (4 * n_cols))
    for r0 in range(0, n_rows, step):
        r1 = min(n_rows, r0 + step)
        x = kernels.dequantize_row(info.type_id, raw[r0 * in_row:r1 * in_row]).reshape(r1 - r0, n_cols)
        if out_type == "F32":
            yield x
        elif out_type == "F16":
            yield x.astype(np.float16)
        else:
            yield kernels.quantize_rows(out_type, x, threads)


def quantize_file(src_path, dst_path, type_name: str, *, threads: int | None = None, progress=sys.stderr,
                  promote: re.Pattern | None = MIX_PROMOTED) -> dict[str, str]:
    """Writes `src_path` re-quantized to `type_name` (a RECIPES key) at `dst_path`; returns name -> type.
    `promote` overrides which tensors an _M mix promotes (for measurements; None promotes nothing)."""
    if type_name.upper() not in RECIPES:
        raise InvalidArgumentError(f"unknown quantization type {type_name!r}; choose one of {', '.join(RECIPES)}")
    recipe = RECIPES[type_name.upper()]
    return _rewrite(src_path, dst_path, recipe.file_type, lambda name, shape: tensor_type(name, shape, recipe, promote),
                    threads, progress)


def dequantize_file(src_path, dst_path, *, progress=None) -> dict[str, str]:
    """Writes every tensor of `src_path` as F32 at `dst_path`: the float model that a quantized file
    stands for, exactly (each weight is its dequantized value). Kernels that multiply dequantized
    weights by float activations (CUDA) are compared against the CPU running this file."""
    return _rewrite(src_path, dst_path, 0, lambda name, shape: ("F32", None), None, progress)  # 0: ALL_F32


def _rewrite(src_path, dst_path, file_type: int, type_of, threads: int | None, progress) -> dict[str, str]:
    """Copies the metadata of `src_path` and each tensor converted to type_of(name, shape)[0]."""
    types: dict[str, str] = {}
    with GGUFFile(src_path) as src:
        alignment = int(src.kv.get("general.alignment", 32))
        with GGUFWriter(dst_path, alignment=alignment) as w:
            for key, value in src.kv.items():
                if key in ("general.file_type", "general.quantization_version", "general.alignment"):
                    continue
                vtype, etype = src.kv_types[key]
                if vtype == ValueType.ARRAY:
                    w.add_array(key, list(value), etype)
                else:
                    w.add(key, value, vtype)
            w.add_u32("general.file_type", file_type)
            w.add_u32("general.quantization_version", 2)
            for info in src.tensors.values():
                t, note = type_of(info.name, info.shape)
                if note and progress is not None:
                    print(f"note: {info.name}: {note}", file=progress)
                types[info.name] = t
                w.add_tensor_info(info.name, info.shape, GGML_TYPE_IDS[t])
            w.write_header()
            start = time.time()
            for i, info in enumerate(src.tensors.values()):
                t = types[info.name]
                data = src.raw(info.name) if t == info.type_name else _slices(src, info.name, t, threads)
                w.write_tensor_data(info.name, data)
                if progress is not None:
                    print(f"\r[{i + 1}/{len(src.tensors)}] {info.name:<36} {info.type_name:>6} -> {t:<6} "
                          f"{time.time() - start:6.1f}s", end="", file=progress, flush=True)
            if progress is not None:
                print(file=progress)
    return types
