"""atheris harness for chat template rendering (python/dgemma/chat.py).

The input is a template and a conversation separated by a NUL byte: the template from a GGUF is
untrusted text, and so are the messages a server receives. The conversation is JSON (a list of
messages); input that is not JSON becomes one user message holding the text.
Usage: python fuzz_py_chat.py [libFuzzer flags] CORPUS..."""

import json
import sys

import atheris

import atheris_common  # noqa: F401

with atheris.instrument_imports():
    from dgemma.chat import render_chat
    from dgemma.errors import DgemmaError


def test_one_input(data: bytes) -> None:
    template, _, conversation = data.decode("utf-8", "replace").partition("\0")
    try:
        messages = json.loads(conversation)
    except (ValueError, RecursionError):
        messages = [{"role": "user", "content": conversation}]
    try:
        assert isinstance(render_chat(template, messages if isinstance(messages, list) else [messages],
                                      bos_token="<bos>"), str)
    except DgemmaError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
