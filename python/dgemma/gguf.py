"""A small GGUF reader for the Python side (metadata, tensor directory, raw tensor bytes).

The native core has its own validating loader for inference; this module serves the tokenizer,
the quantizer and the tests, which need metadata and tensor bytes without running the model.

GGUF v2/v3 layout: magic "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv entries of
(string key, u32 value type, value); n_tensors entries of (string name, u32 n_dims, u64 ne[n_dims]
fastest-first, u32 ggml type, u64 offset from the data section); padding to `general.alignment`
(default 32); the data section. Strings are u64 length + UTF-8 bytes. Little-endian throughout.
"""

from __future__ import annotations

import enum
import mmap
import os
import struct
from dataclasses import dataclass

import numpy as np

from .errors import FileIOError, FormatError

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_ARRAY_DEPTH = 8  # arrays of arrays: as deep as the native reader follows
_U64 = struct.Struct("<Q")


class ValueType(enum.IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


SCALAR_FORMATS = {
    ValueType.UINT8: "<B", ValueType.INT8: "<b", ValueType.UINT16: "<H", ValueType.INT16: "<h",
    ValueType.UINT32: "<I", ValueType.INT32: "<i", ValueType.FLOAT32: "<f", ValueType.BOOL: "<?",
    ValueType.UINT64: "<Q", ValueType.INT64: "<q", ValueType.FLOAT64: "<d",
}
NUMPY_DTYPES = {
    ValueType.UINT8: np.uint8, ValueType.INT8: np.int8, ValueType.UINT16: np.uint16, ValueType.INT16: np.int16,
    ValueType.UINT32: np.uint32, ValueType.INT32: np.int32, ValueType.FLOAT32: np.float32, ValueType.BOOL: np.bool_,
    ValueType.UINT64: np.uint64, ValueType.INT64: np.int64, ValueType.FLOAT64: np.float64,
}


def _core_type_table() -> dict[int, tuple[str, int, int]]:
    """ggml type id -> (name, block size in elements, bytes per block), as the core knows them
    (native/src/quant/types.cpp is the one table; ids it does not know answer UNSUPPORTED)."""
    from ._native import ffi, lib

    block, size, name = ffi.new("int64_t *"), ffi.new("int64_t *"), ffi.new("const char **")
    table = {}
    for type_id in range(256):  # ggml type ids are small; 256 leaves room for the types ggml adds
        if lib.dgemma_type_info(type_id, block, size, name) == 0:
            table[type_id] = (ffi.string(name[0]).decode(), block[0], size[0])
    return table


GGML_TYPES = _core_type_table()
GGML_TYPE_IDS = {name: tid for tid, (name, _, _) in GGML_TYPES.items()}


def tensor_nbytes(type_id: int, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor with ggml dims `shape` (fastest first)."""
    name, block, size = GGML_TYPES[type_id]
    if shape[0] % block:
        raise FormatError(f"row length {shape[0]} is not a multiple of the {name} block size {block}")
    n = 1
    for d in shape:
        n *= d
    return n // block * size


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the fastest-varying (row length)
    type_id: int
    offset: int  # absolute offset of the data in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return GGML_TYPES[self.type_id][0]


class GGUFFile:
    """A memory-mapped GGUF file: `kv` (key -> value), `kv_types`, `tensors` (name -> TensorInfo)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    raise FormatError(f"{self.path}: empty file, not GGUF")
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise FileIOError(f"{self.path}: {e.strerror or e}") from e
        self._buf = memoryview(self._mm)
        self._pos = 0
        self.kv: dict[str, object] = {}
        self.kv_types: dict[str, tuple[ValueType, ValueType | None]] = {}
        self.tensors: dict[str, TensorInfo] = {}
        self._parse()

    def close(self) -> None:
        """Unmaps the file; while arrays from raw() or array() are still alive, the mapping lives on until they go."""
        self._buf.release()
        try:
            self._mm.close()
        except BufferError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- parsing ---------------------------------------------------------------------------------
    def _take(self, n: int, what: str) -> memoryview:
        if n < 0 or self._pos + n > len(self._buf):
            raise FormatError(f"{self.path}: truncated while reading {what} at byte {self._pos}")
        view = self._buf[self._pos:self._pos + n]
        self._pos += n
        return view

    def _scalar(self, fmt: str, what: str):
        return struct.unpack(fmt, self._take(struct.calcsize(fmt), what))[0]

    def _string(self, what: str) -> str:
        n = self._scalar("<Q", what)
        raw = self._take(n, what)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as e:
            raise FormatError(f"{self.path}: {what} is not valid UTF-8") from e

    def _strings(self, count: int, key: str) -> list[str]:
        """A string array, read in one tight loop (tokenizer vocabularies hold ~10^5-10^6 strings)."""
        if count > (len(self._buf) - self._pos) // 8:
            raise FormatError(f"{self.path}: array {key!r} claims more strings than the file holds")
        buf, pos, end = self._mm, self._pos, len(self._buf)
        unpack = _U64.unpack_from
        out = []
        append = out.append
        try:
            for _ in range(count):
                (n,) = unpack(buf, pos)
                pos += 8
                if n > end - pos:
                    raise FormatError(f"{self.path}: truncated while reading array {key!r}")
                append(buf[pos:pos + n].decode("utf-8"))
                pos += n
        except struct.error as e:
            raise FormatError(f"{self.path}: truncated while reading array {key!r}") from e
        except UnicodeDecodeError as e:
            raise FormatError(f"{self.path}: array {key!r} holds a string that is not valid UTF-8") from e
        self._pos = pos
        return out

    def _value(self, vtype: int, key: str, depth: int = 0):
        if vtype == ValueType.STRING:
            return self._string(f"value of {key!r}")
        if vtype == ValueType.ARRAY:
            etype = self._scalar("<I", f"array type of {key!r}")
            count = self._scalar("<Q", f"array length of {key!r}")
            if etype == ValueType.STRING:
                return self._strings(count, key)
            if etype == ValueType.ARRAY:  # legal GGUF, read as a list of lists; no key we use holds one
                if depth >= MAX_ARRAY_DEPTH:
                    raise FormatError(f"{self.path}: array {key!r} nests deeper than {MAX_ARRAY_DEPTH} levels")
                if count > (len(self._buf) - self._pos) // 12:
                    raise FormatError(f"{self.path}: array {key!r} claims more arrays than the file holds")
                return [self._value(ValueType.ARRAY, key, depth + 1) for _ in range(count)]
            if etype not in NUMPY_DTYPES:
                raise FormatError(f"{self.path}: key {key!r} has an array of unsupported type {etype}")
            dtype = np.dtype(NUMPY_DTYPES[ValueType(etype)]).newbyteorder("<")
            if count > len(self._buf):
                raise FormatError(f"{self.path}: array {key!r} claims {count} elements, more than the file holds")
            raw = self._take(count * dtype.itemsize, f"array {key!r}")
            return np.frombuffer(raw, dtype=dtype).copy()
        if vtype not in SCALAR_FORMATS:
            raise FormatError(f"{self.path}: key {key!r} has unknown value type {vtype}")
        return self._scalar(SCALAR_FORMATS[ValueType(vtype)], f"value of {key!r}")

    def _parse(self) -> None:
        if bytes(self._take(4, "magic")) != GGUF_MAGIC:
            raise FormatError(f"{self.path}: not a GGUF file (bad magic)")
        self.version = self._scalar("<I", "version")
        if self.version in (0x02000000, 0x03000000):  # 2 or 3 written by a big-endian writer
            raise FormatError(f"{self.path}: big-endian GGUF files are not supported (only little-endian)")
        if self.version not in (2, 3):
            raise FormatError(f"{self.path}: unsupported GGUF version {self.version}")
        n_tensors = self._scalar("<Q", "tensor count")
        n_kv = self._scalar("<Q", "key-value count")
        if n_tensors > len(self._buf) or n_kv > len(self._buf):
            raise FormatError(f"{self.path}: implausible counts ({n_tensors} tensors, {n_kv} keys)")
        for _ in range(n_kv):
            key = self._string("key")
            vtype = self._scalar("<I", f"type of {key!r}")
            etype = None
            if vtype == ValueType.ARRAY:
                etype = struct.unpack_from("<I", self._buf, self._pos)[0] if self._pos + 4 <= len(self._buf) else None
            if key in self.kv:
                raise FormatError(f"{self.path}: duplicate key {key!r}")
            self.kv[key] = self._value(vtype, key)
            self.kv_types[key] = (ValueType(vtype), None if etype is None else ValueType(etype))
        infos = []
        for _ in range(n_tensors):
            name = self._string("tensor name")
            n_dims = self._scalar("<I", f"dimension count of {name!r}")
            if not 1 <= n_dims <= 4:
                raise FormatError(f"{self.path}: tensor {name!r} has {n_dims} dimensions")
            shape = tuple(self._scalar("<Q", f"shape of {name!r}") for _ in range(n_dims))
            type_id = self._scalar("<I", f"type of {name!r}")
            offset = self._scalar("<Q", f"offset of {name!r}")
            if type_id not in GGML_TYPES:
                raise FormatError(f"{self.path}: tensor {name!r} has unknown type {type_id}")
            infos.append((name, shape, type_id, offset))
        alignment = self.kv.get("general.alignment", DEFAULT_ALIGNMENT)
        if "general.alignment" in self.kv and self.kv_types["general.alignment"][0] != ValueType.UINT32:
            raise FormatError(f"{self.path}: general.alignment must be a u32")
        if alignment < 8 or alignment & (alignment - 1):  # the GGUF specification: a multiple of 8
            raise FormatError(f"{self.path}: general.alignment {alignment} is not a power of two of at least 8")
        self.data_offset = (self._pos + alignment - 1) // alignment * alignment
        for name, shape, type_id, offset in infos:
            nbytes = tensor_nbytes(type_id, shape)
            start = self.data_offset + offset
            if start + nbytes > len(self._buf):
                raise FormatError(f"{self.path}: tensor {name!r} extends past the end of the file")
            if name in self.tensors:
                raise FormatError(f"{self.path}: duplicate tensor {name!r}")
            self.tensors[name] = TensorInfo(name, shape, type_id, start, nbytes)

    # -- data --------------------------------------------------------------------------------------
    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes (uint8, read-only view into the mapping)."""
        t = self.tensors[name]
        return np.frombuffer(self._mm, dtype=np.uint8, count=t.nbytes, offset=t.offset)

    def array(self, name: str) -> np.ndarray:
        """F32/F16/BF16 tensors as float32 in numpy order (reversed ggml shape); others as raw rows."""
        t = self.tensors[name]
        raw = self.raw(name)
        np_shape = tuple(reversed(t.shape))
        if t.type_name == "F32":
            return raw.view("<f4").reshape(np_shape)
        if t.type_name == "F16":
            return raw.view("<f2").astype(np.float32).reshape(np_shape)
        if t.type_name == "BF16":
            return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(np_shape)
        return raw.reshape(*np_shape[:-1], tensor_nbytes(t.type_id, t.shape[:1]))  # explicit: there may be no rows
