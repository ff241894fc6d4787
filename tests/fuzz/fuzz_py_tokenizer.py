"""atheris harness for the tokenizer built from GGUF metadata (python/dgemma/tokenizer.py).

The input is read as a GGUF file; its metadata builds a Tokenizer, which then encodes and decodes
text and ids taken from the input's tail. Seeds are the demo model's header (a real tokenizer), so
mutations explore broken vocabularies, merges, token types and special ids.
Usage: python fuzz_py_tokenizer.py [libFuzzer flags] CORPUS..."""

import os
import sys
import tempfile

import atheris

import atheris_common  # noqa: F401

with atheris.instrument_imports():
    from dgemma.errors import DgemmaError
    from dgemma.gguf import GGUFFile
    from dgemma.tokenizer import Tokenizer

PATH = os.path.join(tempfile.mkdtemp(prefix="fuzz-py-tok-"), "input.gguf")


def test_one_input(data: bytes) -> None:
    with open(PATH, "wb") as f:
        f.write(data)
    tail = atheris.FuzzedDataProvider(data[-64:])
    try:
        with GGUFFile(PATH) as g:
            kv = dict(g.kv)
        tok = Tokenizer.from_gguf_metadata(kv)
        ids = tok.encode(tail.ConsumeUnicodeNoSurrogates(32), add_bos=tail.ConsumeBool())
        assert tok.decode(ids) is not None
        some = [tail.ConsumeIntInRange(0, tok.vocab_size - 1) for _ in range(4)]
        decoder = tok.stream_decoder(skip_special=tail.ConsumeBool())
        assert decoder.push(some) + decoder.flush() == tok.decode(some, skip_special=decoder._skip)
        tok.token_to_piece(some[0])
    except DgemmaError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
