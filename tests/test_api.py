"""The C API surface: the Python bindings declare exactly what the header exports."""

import re
from pathlib import Path

import dgemma
from dgemma import _native

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


def test_version_and_errors():
    assert _native.lib.dgemma_api_version() == _native.API_VERSION
    assert issubclass(dgemma.OutOfRangeError, dgemma.DgemmaError)
    assert issubclass(dgemma.InvalidArgumentError, ValueError)
    assert _native.last_error() == "" or isinstance(_native.last_error(), str)
