"""Time and size bounds on rendering a chat template.

A GGUF's `tokenizer.chat_template` is code from a stranger. jinja2's sandbox keeps it away from
Python's internals and caps a single `range` at 100 000 items, but nested loops still run for hours
and a string doubled in a loop (or `'a' * 10**10`) takes all the memory. `BoundedEnvironment` adds:

- a deadline (`MAX_RENDER_SECONDS`), checked on every loop iteration (each `{% for %}` iterates
  through `paced_iter`), every call (macros, methods, recursive loops), every filter and every
  piece of output;
- a length cap (`MAX_LENGTH` characters for text, items for lists) on every value a template can
  grow: checked *before* the operations that build a large value in one step (`*`, `**`, `%`, `~`,
  `+`, the padding, joining, replacing, wrapping and formatting filters and str methods, `lipsum`,
  and the rendering of a value as text), and on the result of every other call and filter, and on
  the whole output; and a cap on integers (`MAX_INT_BITS`) made by `*` and `**`.

Every check raises `LimitExceeded`; `render_chat` turns it into a `TemplateLimitError`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
import string
import time
from collections.abc import Iterator

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, optimizeconst
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, _PassArg

#: A rendering that runs longer than this is stopped. Real templates take milliseconds (Gemma's
#: renders a 1 000-message conversation in well under a second on a loaded 2-core machine).
MAX_RENDER_SECONDS = 5.0
#: Longest text (characters) or list (items) a template may build, and the longest output: 16 Mi,
#: far above any conversation a model's context can hold.
MAX_LENGTH = 1 << 24
#: Largest integer (bits) a product or power may make. Python prints at most 4 300 digits anyway;
#: the bound is on time: multiplying two integers of millions of digits takes seconds in one step.
MAX_INT_BITS = 1 << 16

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("chat_template_deadline", default=None)


class LimitExceeded(jinja2.exceptions.SecurityError):
    """A template went past MAX_RENDER_SECONDS or MAX_LENGTH."""


@contextlib.contextmanager
def deadline(seconds: float = None):
    """Bounds the templates compiled and rendered inside this block to `seconds` (default
    MAX_RENDER_SECONDS) from now."""
    token = _deadline.set(time.monotonic() + (MAX_RENDER_SECONDS if seconds is None else seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def _check_time() -> None:
    end = _deadline.get()
    if end is not None and time.monotonic() > end:
        raise LimitExceeded(f"rendering took longer than {MAX_RENDER_SECONDS:g} s")


def _check_length(n: int, what: str, limit: int = None) -> None:
    limit = MAX_LENGTH if limit is None else limit
    if n > limit:
        raise LimitExceeded(f"{what} would be {n} long, over the limit of {limit}")


def rendered_size(value, budget: int = MAX_LENGTH) -> int:
    """An upper estimate of len(str(value)), counting a value as often as a container refers to it
    (which is what rendering does); stops counting once past `budget`, so it costs at most
    O(budget) however the value is built."""
    total = 0
    stack = [value]
    while stack and total <= budget:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v)
        elif isinstance(v, (bool, type(None), float)):
            total += 25
        elif isinstance(v, int):
            total += v.bit_length() // 3 + 2
        elif isinstance(v, dict):
            total += 2 + 4 * len(v)
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple, set, frozenset)):
            total += 2 + 2 * len(v)
            stack.extend(v)
        elif isinstance(v, Namespace):  # may hold itself: the cost per visit ends such a cycle soon
            total += 100
            stack.append(v._Namespace__attrs)
        else:  # an Undefined, a macro, a loop: their text is short
            total += 100
    return total


def _check_rendered(values, what: str, extra: int = 0) -> None:
    _check_length(sum(rendered_size(v) for v in values) + extra, what)


_FORMAT_NUMBER = re.compile(r"\d+")


def _check_format_spec(spec: str, what: str) -> None:
    """Widths and precisions written into a format string (`%9999999999s`, `{:>9999999999}`)."""
    for number in _FORMAT_NUMBER.findall(spec):
        _check_length(int(number), what)


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_percent_format(fmt: str, args) -> None:
    for spec in _PERCENT_SPEC.finditer(fmt):
        _check_format_spec(spec.group(0), "a %-format width")
    values = args if isinstance(args, (tuple, list)) else [args]
    if "*" in fmt:  # widths taken from the arguments
        for v in values:
            if isinstance(v, int):
                _check_length(abs(v), "a %-format width")
    _check_rendered([fmt, *values], "a %-formatted string")


def _check_brace_format(fmt: str, args, kwargs) -> None:
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises the same error itself
    for _, _, spec, _ in fields:
        if spec:
            _check_format_spec(spec, "a format width")
            if "{" in spec:  # a nested field: the width comes from the arguments
                for v in (*args, *kwargs.values()):
                    if isinstance(v, int):
                        _check_length(abs(v), "a format width")
    _check_rendered([fmt, *args, *kwargs.values()], "a formatted string")


def _bounded_list(items, what: str) -> list:
    """list(items) for an iterator (a `map`, `select` ...): made one item at a time, stopped once
    the items' rendered size passes the limit, so that what consumes it is measured first."""
    out, total = [], 0
    for item in items:
        _check_time()
        total += rendered_size(item)
        _check_length(total, what)
        out.append(item)
    return out


def _check_int_args(args, what: str) -> None:
    for v in args:
        if isinstance(v, int):
            _check_length(abs(v), what)


def _replaced_size(s, old, new, count=-1) -> int:
    if not all(isinstance(x, str) for x in (s, old, new)):
        return 0
    n = len(s) + 1 if old == "" else s.count(old)
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    return len(s) + n * len(new)


def _check_str_method(name: str, text: str, args, kwargs) -> None:
    """Checks for the str methods that build a long string from short arguments."""
    if name in ("ljust", "rjust", "center", "zfill"):
        _check_int_args(args[:1], f"str.{name}'s width")
    elif name == "expandtabs":
        _check_int_args(args[:1], "str.expandtabs' tab size")
        if args and isinstance(args[0], int):
            _check_length(len(text) + text.count("\t") * abs(args[0]), "str.expandtabs' result")
    elif name == "replace":
        _check_length(_replaced_size(text, *args[:3]), "str.replace's result")
    elif name == "join" and args and isinstance(args[0], (list, tuple, str)):  # call() made it a list
        _check_rendered([args[0]], "str.join's result", len(text) * len(args[0]))
    elif name == "format":
        _check_brace_format(text, args, kwargs)
    elif name == "format_map" and args and isinstance(args[0], dict):
        _check_brace_format(text, (), args[0])


def _filter_check(name: str):
    """Pre-checks of the filters that build a long value from short arguments: (value, *args)."""
    def indent(value, width=4, *rest, **kw):
        lines = value.count("\n") + 1 if isinstance(value, str) else 1
        per_line = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        _check_length(rendered_size(value) + lines * abs(per_line), "the indent filter's result")

    def wordwrap(value, width=79, break_long_words=True, wrapstring=None, *rest, **kw):
        _check_int_args([width], "the wordwrap filter's width")
        if isinstance(value, str) and isinstance(wrapstring, str) and isinstance(width, int):
            lines = len(value) // max(1, width) + value.count(" ") + value.count("\n") + 1
            _check_length(len(value) + lines * len(wrapstring), "the wordwrap filter's result")

    def urlize(value, trim_url_limit=None, nofollow=False, target=None, rel=None, *rest, **kw):
        if isinstance(value, str):  # each word may become a link holding it twice, escaped, and the attributes
            words = value.count(" ") + value.count("\n") + 1
            extra = sum(len(x) for x in (target, rel) if isinstance(x, str)) + 64
            _check_length(6 * len(value) + words * extra, "the urlize filter's result")

    checks = {
        "center": lambda value, width=80, *a, **kw: _check_int_args([width], "the center filter's width"),
        "indent": indent,
        "format": lambda value, *args, **kwargs: _check_percent_format(
            value if isinstance(value, str) else "", kwargs or args),
        "join": lambda value, d="", *a, **kw: _check_rendered(
            [value], "the join filter's result",
            (len(d) if isinstance(d, str) else 0) * (len(value) if isinstance(value, (list, tuple)) else 0)),
        "replace": lambda value, old="", new="", count=None, *a, **kw: _check_length(
            _replaced_size(value, old, new, -1 if count is None else count), "the replace filter's result"),
        "batch": lambda value, linecount=1, *a, **kw: _check_int_args([linecount], "the batch filter's size"),
        "slice": lambda value, slices=1, *a, **kw: _check_int_args([slices], "the slice filter's count"),
        "wordwrap": wordwrap,
        "urlize": urlize,
        "truncate": lambda value, length=255, *a, **kw: _check_int_args([length], "the truncate filter's length"),
    }
    # Filters that render their whole input as text (or concatenate it): its rendered size bounds theirs.
    for renders in ("string", "tojson", "pprint", "list", "sum", "xmlattr", "e", "escape",
                    "forceescape", "urlencode"):
        checks[renders] = lambda value, *a, _n=renders, **kw: _check_rendered([value], f"the {_n} filter's result")
    return checks.get(name)


def _result_length(value) -> int:
    return len(value) if isinstance(value, (str, list, tuple, dict)) else 0


# Filters that consume all of an iterator they are given (and hold it, or what they build from it).
_CONSUMING = frozenset(["join", "sum", "list", "sort", "unique", "reverse", "max", "min", "slice", "groupby"])


def _bounded_filter(name: str, func):
    check = _filter_check(name)
    skip = 1 if _PassArg.from_obj(func) is not None else 0  # the context / environment jinja passes first

    @functools.wraps(func)
    def bounded(*args, **kwargs):
        _check_time()
        if name in _CONSUMING and len(args) > skip and isinstance(args[skip], Iterator):
            args = (*args[:skip], _bounded_list(args[skip], f"the {name} filter's input"), *args[skip + 1:])
        if check is not None:
            check(*args[skip:], **kwargs)
        result = func(*args, **kwargs)
        _check_length(_result_length(result), f"the {name} filter's result")
        return result
    return bounded


def _bounded_lipsum(lipsum):
    """jinja's `lipsum(n, html, min, max)` writes n paragraphs of up to `max` words in a loop of its own."""
    @functools.wraps(lipsum)
    def bounded(n=5, html=True, min=20, max=100):
        _check_length(abs(n) * abs(max) * 16, "lipsum's text")  # a word and its separator: under 16 characters
        return lipsum(n, html, min, max)
    return bounded


def _paced_iter(iterable):
    """What every `{% for %}` iterates: the items of `iterable`, with the deadline checked before each."""
    for item in iterable:
        _check_time()
        yield item


class _BoundedCodeGenerator(CodeGenerator):
    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame) -> None:  # `a ~ b`, checked before joining
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox with the time and size bounds above."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset(["*", "**", "+", "%"])

    def __init__(self, **options):
        super().__init__(finalize=self._finalize, **options)
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.paced_iter = _paced_iter
        self.globals["lipsum"] = _bounded_lipsum(self.globals["lipsum"])

    def add_filter(self, name: str, func) -> None:
        self.filters[name] = _bounded_filter(name, func)

    def _parse(self, source, name, filename):
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.EnvironmentAttribute("paced_iter"), [loop.iter], [], None, None,
                                   lineno=loop.iter.lineno)
        return tree

    # -- the checks jinja calls ---------------------------------------------------------------------
    @staticmethod
    def _finalize(value):  # every `{{ value }}`, before it becomes text
        _check_time()
        _check_rendered([value], "an output value")
        return value

    @staticmethod
    def concat(parts) -> str:  # every output buffer: the whole rendering, macros, blocks
        total = 0
        pieces = []
        for piece in parts:
            _check_time()
            total += len(piece)
            _check_length(total, "the rendered text")
            pieces.append(piece)
        return "".join(pieces)

    @staticmethod
    def bounded_concat(parts) -> str:
        _check_rendered(parts, "a `~` concatenation")
        return "".join(map(str, parts))

    def call_binop(self, context, operator, left, right):
        _check_time()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                    _check_length(len(seq) * n, "a repeated sequence")
            if isinstance(left, int) and isinstance(right, int):
                _check_length(left.bit_length() + right.bit_length(), "a product of integers (bits)", MAX_INT_BITS)
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                _check_length(left.bit_length() * right, "a power of integers (bits)", MAX_INT_BITS)
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                _check_length(len(left) + len(right), "a sum of sequences")
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's signature)
        _check_time()
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        text = getattr(method, "__self__", None)
        if isinstance(text, str):
            if method.__name__ == "join" and args and isinstance(args[0], Iterator):
                args = (_bounded_list(args[0], "str.join's items"), *args[1:])
            _check_str_method(method.__name__, text, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        _check_length(_result_length(result), "a call's result")
        return result
