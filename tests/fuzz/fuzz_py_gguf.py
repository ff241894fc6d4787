"""atheris harness for the Python GGUF reader (python/dgemma/gguf.py): parse arbitrary bytes and read
every tensor's bytes. Usage: python fuzz_py_gguf.py [libFuzzer flags] CORPUS..."""

import os
import sys
import tempfile

import atheris

import atheris_common  # noqa: F401  (puts the package on the path)

with atheris.instrument_imports():
    from dgemma.errors import DgemmaError
    from dgemma.gguf import GGUFFile

PATH = os.path.join(tempfile.mkdtemp(prefix="fuzz-py-gguf-"), "input.gguf")


def test_one_input(data: bytes) -> None:
    with open(PATH, "wb") as f:
        f.write(data)
    try:
        with GGUFFile(PATH) as g:
            for name in g.tensors:
                g.raw(name)
                g.array(name)
    except DgemmaError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
