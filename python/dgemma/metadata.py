"""dgemma's own GGUF keys that tell a user (and the CLI) how a model wants its prompts.

`dgemma.prompt_format`: "chat" (wrap a plain prompt as a user turn of `tokenizer.chat_template`) or
"raw" (feed the text as it is). A file without the key is "raw": it makes no claim.
`dgemma.prompt_examples`: prompts the model was trained to answer (the demo model's task formats).
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import FormatError

PROMPT_FORMAT_KEY = "dgemma.prompt_format"
PROMPT_EXAMPLES_KEY = "dgemma.prompt_examples"
PROMPT_FORMATS = ("chat", "raw")


def prompt_format(kv: Mapping) -> str:
    value = kv.get(PROMPT_FORMAT_KEY, "raw")
    if value not in PROMPT_FORMATS:
        raise FormatError(f"{PROMPT_FORMAT_KEY} is {value!r}; expected one of {', '.join(PROMPT_FORMATS)}")
    if value == "chat" and not kv.get("tokenizer.chat_template"):
        raise FormatError(f"{PROMPT_FORMAT_KEY} is 'chat' but the file has no tokenizer.chat_template")
    return value


def prompt_examples(kv: Mapping) -> list[str]:
    value = kv.get(PROMPT_EXAMPLES_KEY, [])
    if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
        raise FormatError(f"{PROMPT_EXAMPLES_KEY} must be an array of strings")
    return value
