"""Weight encodings the converter writes: F32, F16, BF16 and Q8_0, in numpy.

Q8_0 (ggml): blocks of 32 values, d = max|x| / 127 stored as f16, q = round(x / d) (half away from
zero) as int8; 34 bytes per block.
"""

from __future__ import annotations

import numpy as np

from dgemma.gguf import GGML_TYPE_IDS

QK8_0 = 32


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, round to nearest even (NaN kept quiet)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    """Rows of x (last axis a multiple of 32) -> Q8_0 bytes, shape [..., n/32*34]."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    blocks = x.reshape(-1, QK8_0)
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    v = blocks * inv
    q = (np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))).astype(np.int8)
    out = np.concatenate([d.astype(np.float16).view(np.uint8), q.view(np.uint8)], axis=1)
    return out.reshape(*x.shape[:-1], -1)


def encode(x: np.ndarray, type_name: str) -> np.ndarray:
    """float32 -> the bytes (or typed array) GGUF stores for `type_name`."""
    if type_name == "F32":
        return np.ascontiguousarray(x, dtype=np.float32)
    if type_name == "F16":
        return np.ascontiguousarray(x, dtype=np.float32).astype(np.float16)
    if type_name == "BF16":
        return to_bf16_bits(x)
    if type_name == "Q8_0":
        return quantize_q8_0(x)
    raise ValueError(f"the converter cannot write {type_name}")


TYPE_IDS = {name: GGML_TYPE_IDS[name] for name in ("F32", "F16", "BF16", "Q8_0")}
