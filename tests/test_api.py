"""The C API surface: the Python bindings declare exactly what the header exports."""

import re
from pathlib import Path

import pytest

import dgemma
from dgemma import _native
from dgemma.errors import error_for_status

HEADER = Path(__file__).resolve().parents[1] / "native" / "include" / "dgemma.h"


def exported(text: str) -> set[str]:
    return set(re.findall(r"DGEMMA_API\s+[\w\s\*]+?\b(dgemma_\w+)\s*\(", text))


def test_bindings_cover_the_header():
    in_header = exported(HEADER.read_text())
    cdef = _native.CDEF + "\n".join(_native.CDEF_EXTRA)
    in_cdef = set(re.findall(r"\b(dgemma_\w+)\s*\(", cdef))
    assert in_header, "no exported functions found in the header"
    assert in_header == in_cdef, f"header only: {in_header - in_cdef}; bindings only: {in_cdef - in_header}"
    for name in in_header:
        getattr(_native.lib, name)  # resolvable in the built library


# dgemma_status names in the header -> the exception Python raises for them
STATUS_CLASSES = {
    "INVALID_ARGUMENT": dgemma.InvalidArgumentError, "IO": dgemma.FileIOError, "FORMAT": dgemma.FormatError,
    "UNSUPPORTED": dgemma.UnsupportedError, "MODEL": dgemma.ModelError, "OUT_OF_RANGE": dgemma.OutOfRangeError,
    "OUT_OF_MEMORY": dgemma.OutOfMemoryError, "INTERNAL": dgemma.InternalError,
}


def test_version():
    assert _native.lib.dgemma_api_version() == _native.API_VERSION


def test_every_status_maps_to_its_exception():
    """Each DGEMMA_ERR_* code of the header raises its own typed exception, carrying the message."""
    codes = dict(re.findall(r"DGEMMA_ERR_(\w+)\s*=\s*(\d+)", HEADER.read_text()))
    assert set(codes) == set(STATUS_CLASSES), "a status was added or renamed: map it here and in errors.py"
    for name, code in codes.items():
        err = error_for_status(int(code), f"message {name}")
        assert type(err) is STATUS_CLASSES[name] and str(err) == f"message {name}"
        assert err.status == int(code)


def test_last_error_is_set_by_a_failure_and_cleared_by_a_success():
    lib = _native.lib
    assert lib.dgemma_type_info(987654, _native.ffi.NULL, _native.ffi.NULL, _native.ffi.NULL) == 4
    assert _native.last_error() == "unknown tensor type id 987654"
    with pytest.raises(dgemma.UnsupportedError, match="unknown tensor type id 987654"):
        _native.check(lib.dgemma_type_info(987654, _native.ffi.NULL, _native.ffi.NULL, _native.ffi.NULL))
    assert lib.dgemma_type_info(0, _native.ffi.NULL, _native.ffi.NULL, _native.ffi.NULL) == 0
    assert _native.last_error() == ""
