"""Streaming GGUF writer.

The header (metadata and the tensor directory) is written first, so every tensor's type and shape
must be declared before data is streamed in the same order. Memory stays bounded by one tensor.
The file is written under a temporary name and renamed into place by `finish()`: a failed run
never leaves a partial file at the destination.
"""

from __future__ import annotations

import os
import struct
import tempfile

import numpy as np

from dgemma.gguf import DEFAULT_ALIGNMENT, GGUF_MAGIC, SCALAR_FORMATS, ValueType, tensor_nbytes

GGUF_VERSION = 3


def _string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


class GGUFWriter:
    def __init__(self, path: str | os.PathLike, alignment: int = DEFAULT_ALIGNMENT):
        self.path = os.fspath(path)
        self.alignment = alignment
        self._kv: list[bytes] = []
        self._keys: set[str] = set()
        self._tensors: list[tuple[str, tuple[int, ...], int, int]] = []  # name, shape, type, nbytes
        self._file = None
        self._tmp = None
        self._next = 0
        if alignment != DEFAULT_ALIGNMENT:
            self.add("general.alignment", alignment, ValueType.UINT32)

    # -- metadata --------------------------------------------------------------------------------
    def add(self, key: str, value, vtype: ValueType, element_type: ValueType | None = None) -> None:
        """Adds one key. Arrays take `element_type`; strings and numbers their own ValueType."""
        if key in self._keys:
            raise ValueError(f"duplicate GGUF key {key!r}")
        self._keys.add(key)
        out = [_string(key), struct.pack("<I", vtype)]
        if vtype == ValueType.ARRAY:
            values = list(value)
            out.append(struct.pack("<IQ", element_type, len(values)))
            if element_type == ValueType.STRING:
                out.extend(_string(v) for v in values)
            else:
                fmt = SCALAR_FORMATS[element_type]
                out.append(np.asarray(values, dtype=np.dtype(fmt)).tobytes())
        elif vtype == ValueType.STRING:
            out.append(_string(value))
        else:
            out.append(struct.pack(SCALAR_FORMATS[vtype], value))
        self._kv.append(b"".join(out))

    def add_string(self, key: str, value: str) -> None:
        self.add(key, value, ValueType.STRING)

    def add_u32(self, key: str, value: int) -> None:
        self.add(key, int(value), ValueType.UINT32)

    def add_i32(self, key: str, value: int) -> None:
        self.add(key, int(value), ValueType.INT32)

    def add_f32(self, key: str, value: float) -> None:
        self.add(key, float(value), ValueType.FLOAT32)

    def add_bool(self, key: str, value: bool) -> None:
        self.add(key, bool(value), ValueType.BOOL)

    def add_array(self, key: str, values, element_type: ValueType) -> None:
        self.add(key, values, ValueType.ARRAY, element_type)

    # -- tensors ---------------------------------------------------------------------------------
    def add_tensor_info(self, name: str, shape: tuple[int, ...], type_id: int) -> None:
        """Declares a tensor; `shape` in ggml order (row length first)."""
        if self._file is not None:
            raise RuntimeError("tensors must be declared before the header is written")
        if any(t[0] == name for t in self._tensors):
            raise ValueError(f"duplicate tensor {name!r}")
        self._tensors.append((name, tuple(int(d) for d in shape), type_id, tensor_nbytes(type_id, shape)))

    def write_header(self) -> None:
        directory = []
        offset = 0
        for name, shape, type_id, nbytes in self._tensors:
            directory.append(_string(name) + struct.pack("<I", len(shape)) +
                             struct.pack(f"<{len(shape)}Q", *shape) + struct.pack("<IQ", type_id, offset))
            offset += (nbytes + self.alignment - 1) // self.alignment * self.alignment
        head = GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(self._tensors), len(self._kv))
        blob = head + b"".join(self._kv) + b"".join(directory)
        directory_dir = os.path.dirname(os.path.abspath(self.path))
        fd, self._tmp = tempfile.mkstemp(prefix=".dgemma-", suffix=".gguf.partial", dir=directory_dir)
        self._file = os.fdopen(fd, "wb")
        self._file.write(blob)
        self._pad()

    def _pad(self) -> None:
        pos = self._file.tell()
        self._file.write(b"\0" * ((-pos) % self.alignment))

    def write_tensor_data(self, name: str, data) -> None:
        """Streams the next declared tensor's bytes (declaration order). `data` is an array, bytes,
        or an iterable of them (slices written as they come, so memory stays bounded)."""
        if self._file is None:
            self.write_header()
        expected_name, _, _, nbytes = self._tensors[self._next]
        if name != expected_name:
            raise RuntimeError(f"tensor {name!r} written out of order (expected {expected_name!r})")
        parts = [data] if isinstance(data, (np.ndarray, bytes, bytearray, memoryview)) else data
        written = 0
        for part in parts:
            buf = memoryview(np.ascontiguousarray(part)).cast("B") if isinstance(part, np.ndarray) else bytes(part)
            written += len(buf)
            if written > nbytes:
                break
            self._file.write(buf)
        if written != nbytes:
            raise ValueError(f"tensor {name!r}: {written} bytes given, {nbytes} declared")
        self._pad()
        self._next += 1

    def finish(self) -> None:
        """Checks every tensor was written, flushes and renames the file into place."""
        if self._file is None:
            self.write_header()
        if self._next != len(self._tensors):
            raise RuntimeError(f"only {self._next} of {len(self._tensors)} tensors were written")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self._tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
        os.replace(self._tmp, self.path)
        self._tmp = None

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tmp and os.path.exists(self._tmp):
            os.unlink(self._tmp)
        self._tmp = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.finish()
        else:
            self.abort()
