"""Streaming safetensors reader: memory-maps each shard and hands out one tensor at a time as
numpy, BF16 included, without PyTorch.

Format: u64 header length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, ...,
"__metadata__": {...}}, then the data (offsets relative to the end of the header).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dgemma.errors import ConversionError

_DTYPES = {
    "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    path: Path
    start: int  # absolute byte offset in the shard
    nbytes: int


class SafetensorsCheckpoint:
    """All tensors of a (possibly sharded) checkpoint directory, by name."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        shards = sorted(self.directory.glob("*.safetensors"))
        if not shards:
            raise ConversionError(f"{self.directory}: no *.safetensors files")
        self.entries: dict[str, TensorEntry] = {}
        for shard in shards:
            for entry in self._read_header(shard):
                if entry.name in self.entries:
                    raise ConversionError(f"tensor {entry.name!r} appears in both {self.entries[entry.name].path.name} "
                                          f"and {shard.name}")
                self.entries[entry.name] = entry
        self._maps: dict[Path, mmap.mmap] = {}

    @staticmethod
    def _read_header(path: Path) -> list[TensorEntry]:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ConversionError(f"{path}: truncated safetensors file")
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8:
                raise ConversionError(f"{path}: header length {n} exceeds the file")
            try:
                header = json.loads(f.read(n))
            except ValueError as e:
                raise ConversionError(f"{path}: unreadable safetensors header: {e}") from e
        base = 8 + n
        out = []
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            dtype = info["dtype"]
            if dtype not in _DTYPES:
                raise ConversionError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
            shape = tuple(int(d) for d in info["shape"])
            expected = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype].itemsize
            if end - begin != expected or base + end > size:
                raise ConversionError(f"{path}: tensor {name!r} has inconsistent offsets")
            out.append(TensorEntry(name, dtype, shape, path, base + begin, end - begin))
        return out

    def _map(self, path: Path) -> mmap.mmap:
        if path not in self._maps:
            with open(path, "rb") as f:
                self._maps[path] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._maps[path]

    def raw(self, name: str) -> np.ndarray:
        """The tensor in its stored dtype (BF16 as uint16), a read-only view into the mapping."""
        e = self.entries[name]
        dt = _DTYPES[e.dtype]
        return np.frombuffer(self._map(e.path), dtype=dt, count=e.nbytes // dt.itemsize, offset=e.start).reshape(e.shape)

    def float32(self, name: str, rows: slice | None = None) -> np.ndarray:
        """The tensor (or a slice of its first axis) as float32."""
        a = self.raw(name)
        if rows is not None:
            a = a[rows]
        if self.entries[name].dtype == "BF16":
            return (a.astype(np.uint32) << 16).view(np.float32)
        return a.astype(np.float32)

    def release(self, name: str) -> None:
        """Drops the tensor's pages from this process's memory (they stay in the page cache): mapped pages
        once read count toward the resident set until unmapped, so a converter that reads every tensor
        would otherwise end up holding the whole checkpoint."""
        e = self.entries[name]
        m = self._maps.get(e.path)
        if m is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        begin = e.start // mmap.PAGESIZE * mmap.PAGESIZE
        end = min(len(m), e.start + e.nbytes)
        if end > begin:
            m.madvise(mmap.MADV_DONTNEED, begin, end - begin)

    def close(self) -> None:
        for m in self._maps.values():
            m.close()
        self._maps.clear()
