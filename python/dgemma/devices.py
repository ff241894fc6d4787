"""Where a model runs: the CPU or a CUDA device. The CUDA backend is a separate library the core
loads on first use, so everything here works (and says why CUDA is unavailable) on machines
without the CUDA runtime, a driver or a GPU."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._native import check, ffi, lib
from .errors import InvalidArgumentError, UnsupportedError

DEVICES = '"auto", "cpu", "cuda" or "cuda:N"'


@dataclass(frozen=True)
class CudaDevice:
    index: int
    name: str
    total_memory: int  # bytes
    free_memory: int   # bytes, when asked
    compute_capability: tuple[int, int]

    @property
    def device(self) -> str:
        return f"cuda:{self.index}"


def cuda_devices() -> list[CudaDevice]:
    """The CUDA devices this build can use; raises UnsupportedError saying what is missing (the
    CUDA backend library, the driver, a GPU)."""
    count = ffi.new("int32_t *")
    check(lib.dgemma_cuda_device_count(count))
    out = []
    for i in range(count[0]):
        d = ffi.new("dgemma_cuda_device *")
        check(lib.dgemma_cuda_device_info(i, d))
        out.append(CudaDevice(i, ffi.string(d.name).decode("utf-8", "replace"), d.total_memory, d.free_memory,
                              (d.major, d.minor)))
    return out


def cuda_unavailable_reason() -> str | None:
    """None when a CUDA device can be used, else why not."""
    try:
        cuda_devices()
        return None
    except UnsupportedError as e:
        return str(e)


def resolve_device(device: str) -> str:
    """The core's backend name for `device`: "auto" is "cuda" when a CUDA device can be used, else "cpu"."""
    if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d{1,4}", device)):
        raise InvalidArgumentError(f"device must be {DEVICES}, got {device!r}")
    if device == "auto":
        return "cuda" if cuda_unavailable_reason() is None else "cpu"
    return device
