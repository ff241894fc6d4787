"""Every input the fuzzers found a bug with (tests/fuzz/regressions/<harness>/) now gives a clean typed
error. Each was a crash, a hang, an untyped exception or an excessive allocation before its fix;
docs/robustness.md says which. native/: dgemma.Model (the core's loader and model binding);
py_gguf/: the Python GGUF reader; tokenizer/: the tokenizer built from a file's metadata; chat/: a
chat template, a NUL byte and a conversation (JSON), as tests/fuzz/fuzz_py_chat.py splits them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import dgemma
from dgemma.chat import render_chat
from dgemma.gguf import GGUFFile
from dgemma.tokenizer import Tokenizer

REGRESSIONS = Path(__file__).parent / "fuzz" / "regressions"


def load_native(path):
    dgemma.Model(path, threads=1).close()


def load_python_reader(path):
    GGUFFile(path).close()


def build_tokenizer(path):
    Tokenizer.from_gguf(path)


def render(path):
    template, _, conversation = path.read_bytes().decode("utf-8", "replace").partition("\0")
    try:
        messages = json.loads(conversation)
    except ValueError:
        messages = [{"role": "user", "content": conversation}]
    render_chat(template, messages if isinstance(messages, list) else [messages], bos_token="<bos>")


# harness folder -> (what runs the input, the error it must raise)
HARNESSES = {
    "native": (load_native, dgemma.DgemmaError),
    "py_gguf": (load_python_reader, dgemma.FormatError),
    "tokenizer": (build_tokenizer, dgemma.DgemmaError),
    "chat": (render, dgemma.TokenizerError),
}
CASES = sorted(p for p in REGRESSIONS.glob("*/*") if p.is_file())


def test_regressions_are_known_harnesses():
    assert CASES and {p.parent.name for p in CASES} <= set(HARNESSES)


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_regression_gives_a_typed_error(path):
    run, error = HARNESSES[path.parent.name]
    with pytest.raises(error):
        run(path)


@pytest.mark.parametrize("type_name, row_bytes", [("Q8_0", 34), ("Q4_0", 18)])
def test_python_reader_reads_a_tensor_with_no_rows(tmp_path, type_name, row_bytes):
    """A tensor of 32-element rows and zero rows is legal GGUF. Found by py_gguf: `array` of a
    quantized one asked numpy to infer a row length from zero bytes and raised ValueError."""
    from dgemma.convert.gguf_writer import GGUFWriter
    from dgemma.gguf import GGML_TYPE_IDS

    path = tmp_path / "empty.gguf"
    with GGUFWriter(path) as w:
        w.add_tensor_info("t", (32, 0), GGML_TYPE_IDS[type_name])
        w.write_tensor_data("t", b"")
    with GGUFFile(path) as f:
        assert f.raw("t").size == 0
        a = f.array("t")
        assert a.shape == (0, row_bytes) and a.dtype == np.uint8  # raw rows of 32 elements


@pytest.mark.parametrize("key, value", [
    ("tokenizer.ggml.token_type", 1), ("tokenizer.ggml.token_type", "11"), ("tokenizer.ggml.token_type", [1.0, 1.0]),
    ("tokenizer.ggml.scores", 0.5), ("tokenizer.ggml.scores", np.array(0.5)),
    ("dgemma.eos_token_ids", 1), ("dgemma.eos_token_ids", ["1"]),
])
def test_tokenizer_array_keys_of_another_type_are_refused(key, value):
    """tokenizer/token-type-not-an-array.gguf (py_tokenizer) held a scalar where an array belongs:
    a TypeError escaped. The other array keys took scalars, strings and floats the same way."""
    from dgemma.tokenizer import MODEL_NAME

    kv = {"tokenizer.ggml.model": MODEL_NAME, "tokenizer.ggml.tokens": ["a", "b"], "tokenizer.ggml.merges": []}
    Tokenizer.from_gguf_metadata(kv)  # sound without the key
    with pytest.raises(dgemma.TokenizerError, match=key):
        Tokenizer.from_gguf_metadata({**kv, key: value})
