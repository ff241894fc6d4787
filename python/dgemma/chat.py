"""Chat templates rendered the way transformers' `apply_chat_template(tokenize=False)` renders them.

Same sandbox (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loop controls, the
`{% generation %}` tag; here with a time and a size bound, chat_limits.py), the same globals (`raise_exception`, `strftime_now`, `dict`, a namespace
that refuses underscore names), the same `tojson` filter and the same message clean-up (keys whose
value is None are dropped; `reasoning` / `thinking` / `reasoning_content` alias one another).
"""

from __future__ import annotations

import functools
import json
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols

from .chat_limits import BoundedEnvironment, LimitExceeded, deadline
from .errors import TemplateLimitError, TokenizerError

_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class _GenerationTag(Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for training masks; rendering
    only needs its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


class _Namespace(jinja2.utils.Namespace):
    def __init__(*args, **kwargs):  # jinja's signature trick, so `namespace(self=...)` works
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set {name!r} on a namespace")


class _TemplateDict:
    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@functools.lru_cache(maxsize=8)
def compile_template(source: str) -> jinja2.Template:
    env = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, loopcontrols])
    env.add_filter("tojson", _tojson)
    env.globals.update(raise_exception=_raise_exception, dict=_TemplateDict(), namespace=_Namespace,
                       strftime_now=lambda fmt: datetime.now().strftime(fmt))
    try:
        return env.from_string(source)
    except (jinja2.TemplateError, RecursionError) as e:  # deep nesting overflows jinja's parser
        raise TokenizerError(f"the chat template does not compile: {e}") from None


def _clean(message: dict) -> dict:
    if not isinstance(message, dict):
        raise TokenizerError(f"chat messages must be dicts, got {message!r}")
    message = {k: v for k, v in message.items() if v is not None}
    reasoning = next((message[k] for k in _REASONING_FIELDS if k in message), None)
    if reasoning is not None:
        message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
    return message


def render_chat(template: str, messages: list[dict], add_generation_prompt: bool = True,
                tools: list[dict] | None = None, documents: list[dict] | None = None,
                template_name: str = "the chat template", **variables) -> str:
    """Renders `messages` (dicts with "role" and "content") with `template`; `variables` (special token
    strings such as bos_token, and template switches such as enable_thinking) are visible to it.
    `template_name` says in errors where the template came from. A template that runs past
    chat_limits.MAX_RENDER_SECONDS or builds text past chat_limits.MAX_LENGTH raises TemplateLimitError."""
    if not messages:
        raise TokenizerError("cannot format an empty conversation")
    if not isinstance(template, str):
        raise TokenizerError(f"{template_name} is a {type(template).__name__}, not text")
    messages = [_clean(m) for m in messages]
    try:
        with deadline():
            return compile_template(template).render(messages=messages, tools=tools, documents=documents,
                                                     add_generation_prompt=add_generation_prompt, **variables)
    except TokenizerError:  # from compile_template
        raise
    except LimitExceeded as e:
        raise TemplateLimitError(f"{template_name} was stopped: {e}") from None
    except jinja2.TemplateError as e:
        raise TokenizerError(f"{template_name} failed: {e}") from None
    except Exception as e:  # a template is code from the file: whatever it raises is its failure, not ours
        raise TokenizerError(f"{template_name} failed: {type(e).__name__}: {e}") from None
