"""numpy wrappers over the core's tensor-type kernels (the "Tensor types and kernels" section of dgemma.h).

Types are ggml type ids (``gguf.GGMLQuantizationType`` members work) or their names ("Q4_K"). A quantized
row is a 1-D uint8 array of ``n // block_size * type_size`` bytes in ggml's block layout.
"""

from __future__ import annotations

from typing import NamedTuple, Union

import numpy as np

from ._native import check, ffi, lib
from .errors import InvalidArgumentError
from .gguf import GGML_TYPE_IDS

ISAS = ("generic", "avx2", "avxvnni", "avx512")

TypeLike = Union[int, str]


class TypeInfo(NamedTuple):
    block_size: int  # elements per block
    type_size: int   # bytes per block
    name: str


def _type_id(t: TypeLike) -> int:
    if isinstance(t, str):
        if t.upper() not in GGML_TYPE_IDS:
            raise InvalidArgumentError(f"unknown tensor type {t!r}")
        return GGML_TYPE_IDS[t.upper()]
    return int(t)


def type_info(t: TypeLike) -> TypeInfo:
    bs, ts, name = ffi.new("int64_t *"), ffi.new("int64_t *"), ffi.new("const char **")
    check(lib.dgemma_type_info(_type_id(t), bs, ts, name))
    return TypeInfo(bs[0], ts[0], ffi.string(name[0]).decode())


def row_bytes(t: TypeLike, n: int) -> int:
    info = type_info(t)
    return n // info.block_size * info.type_size


def quantize_row(t: TypeLike, x: np.ndarray) -> np.ndarray:
    """Quantizes a 1-D float array with the type's reference quantizer; returns the row's bytes."""
    x = _as_floats(x).reshape(-1)
    out = np.empty(row_bytes(t, x.size) if x.size % type_info(t).block_size == 0 else 0, dtype=np.uint8)
    check(lib.dgemma_quantize_row(_type_id(t), ffi.from_buffer("float[]", x), x.size, ffi.from_buffer(out)))
    return out


def quantize_rows(t: TypeLike, x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Quantizes the rows of a 2-D float array on `threads` threads (None: one per core); uint8 [rows, row_bytes]."""
    x = _as_floats(x)
    if x.ndim != 2:
        raise InvalidArgumentError(f"expected a 2-D array of rows, got shape {x.shape}")
    out = np.empty((x.shape[0], row_bytes(t, x.shape[1]) if x.shape[1] % type_info(t).block_size == 0 else 0), np.uint8)
    check(lib.dgemma_quantize_rows(_type_id(t), ffi.from_buffer("float[]", x), x.shape[0], x.shape[1],
                                   ffi.from_buffer(out), threads or 0))
    return out


def _row_length(t: TypeLike, data: np.ndarray) -> int:
    info = type_info(t)
    if data.size % info.type_size:
        raise InvalidArgumentError(f"{data.size} bytes is not a whole number of {info.name} blocks ({info.type_size} bytes)")
    return data.size // info.type_size * info.block_size


# Buffers go to the core at whatever address they have (a slice of a byte buffer may sit at an odd
# one): the kernel functions of the C API take any alignment.
def _as_bytes(data) -> np.ndarray:
    a = np.ascontiguousarray(np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data)
    return a.view(np.uint8)


def _as_floats(x) -> np.ndarray:
    return np.require(x, dtype=np.float32, requirements="C")


def dequantize_row(t: TypeLike, data) -> np.ndarray:
    """Dequantizes a quantized row (bytes or uint8 array) to float32."""
    data = _as_bytes(data).reshape(-1)
    out = np.empty(_row_length(t, data), dtype=np.float32)
    check(lib.dgemma_dequantize_row(_type_id(t), ffi.from_buffer(data), out.size, ffi.from_buffer("float[]", out)))
    return out


def vec_dot(t: TypeLike, w_row, x: np.ndarray) -> float:
    """dot(w_row, x) as the CPU backend computes it: x quantized to Q8_0 / Q8_K, the active ISA's kernel."""
    w = _as_bytes(w_row).reshape(-1)
    x = _as_floats(x).reshape(-1)
    if x.size != _row_length(t, w):
        raise InvalidArgumentError(f"x has {x.size} elements, the weight row {_row_length(t, w)}")
    out = ffi.new("float *")
    check(lib.dgemma_vec_dot(_type_id(t), ffi.from_buffer(w), ffi.from_buffer("float[]", x), x.size, out))
    return float(out[0])


def matvec(t: TypeLike, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """w @ x for a quantized matrix w (uint8 [n_rows, row_bytes]), single-threaded, x quantized once."""
    w = _as_bytes(np.asarray(w, dtype=np.uint8))
    x = _as_floats(x).reshape(-1)
    if w.ndim != 2 or w.shape[1] != row_bytes(t, x.size) or x.size % type_info(t).block_size:
        raise InvalidArgumentError(f"weight shape {w.shape} does not fit {x.size} {type_info(t).name} elements per row")
    out = np.empty(w.shape[0], dtype=np.float32)
    check(lib.dgemma_matvec(_type_id(t), ffi.from_buffer(w), w.shape[0], ffi.from_buffer("float[]", x), x.size,
                            ffi.from_buffer("float[]", out)))
    return out


def set_cpu_isa(isa: str) -> None:
    """Selects "auto", "generic", "avx2", "avxvnni" or "avx512" for the whole process; UnsupportedError if the CPU lacks it."""
    check(lib.dgemma_set_cpu_isa(isa.encode()))


def cpu_isa() -> str:
    return ffi.string(lib.dgemma_cpu_isa()).decode()


def cpu_features() -> str:
    return ffi.string(lib.dgemma_cpu_features()).decode()


def gemm(t: TypeLike, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x @ w.T for a matrix w of type t (uint8 [n_rows, row_bytes]) and float rows x [n_tokens, n]: float32
    [n_tokens, n_rows], each x row quantized (kept as is for F32/F16/BF16), the active ISA's register-blocked
    kernel, single-threaded."""
    w = np.ascontiguousarray(w, dtype=np.uint8)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or w.ndim != 2 or w.shape[1] != row_bytes(t, x.shape[1]) or x.shape[1] % type_info(t).block_size:
        raise InvalidArgumentError(f"weight shape {w.shape} does not fit activations of shape {x.shape} ({type_info(t).name})")
    out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
    check(lib.dgemma_gemm(_type_id(t), ffi.from_buffer(w), w.shape[0], ffi.from_buffer("float[]", x), x.shape[0],
                          x.shape[1], ffi.from_buffer("float[]", out)))
    return out
