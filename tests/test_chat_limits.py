"""A chat template is untrusted code from a GGUF: rendering it is bounded in time and size
(python/dgemma/chat_limits.py) and a template past the bounds raises TemplateLimitError, while real
templates render exactly as transformers renders them.

Each attack runs in a child process with a 2 GiB address-space limit and a wall-clock timeout, so
that a regression fails the test (a MemoryError, an untyped error or a timeout) instead of hanging
the suite or taking the machine's memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tokenizer_corpus import GEMMA4_STYLE_CHAT_TEMPLATE
from transformers.utils.chat_template_utils import render_jinja_template

import dgemma
from dgemma.chat import render_chat
from dgemma.gguf import GGUFFile

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 1.0  # the child shortens MAX_RENDER_SECONDS to this, to keep the time attacks quick
SIZE_DEADLINE_S = 30.0  # ... and lengthens it for the size attacks: a loaded machine must not turn them into time outs

CHILD = r"""
import json, resource, sys, time
from dgemma import chat_limits
from dgemma.chat import render_chat
chat_limits.MAX_RENDER_SECONDS = float(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
start = time.monotonic()
try:
    render_chat(sys.argv[1], [{"role": "user", "content": "hi"}], bos_token="<bos>")
    outcome = {"error": None}
except Exception as e:
    outcome = {"error": type(e).__name__, "message": str(e)}
outcome["seconds"] = time.monotonic() - start
print(json.dumps(outcome))
"""

BIG = "{% set s = 'a' * 1000000 %}"  # a 1 MB string, under the limit; the attacks below multiply it
TIME_ATTACKS = {
    "nested loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "exponential recursion": "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}",
}
SIZE_ATTACKS = {
    "doubling with ~": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
                       "{% endfor %}{{ ns.s|length }}",
    "doubling with +": "{% set ns = namespace(s=['ab']) %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
                       "{% endfor %}{{ ns.s|length }}",
    "output flood": BIG + "{% for i in range(100000) %}{{ s }}{% endfor %}",
    "repetition": "{{ ('a' * 10**10)|length }}",
    "power": "{{ 10 ** (10 ** 10) }}",
    "%-format width": "{{ ('%9999999999s' % 'x')|length }}",
    "format filter width": "{{ ('%9999999999s'|format('x'))|length }}",
    "str.format width": "{{ '{:>{}}'.format('x', 9999999999)|length }}",
    "str.ljust": "{{ 'x'.ljust(9999999999)|length }}",
    "center filter": "{{ 'x'|center(9999999999)|length }}",
    "join of repeated text": BIG + "{{ ([s] * 100000)|join|length }}",
    "str.join of repeated text": BIG + "{{ ''.join([s] * 100000)|length }}",
    "repeated text as output": BIG + "{{ [s] * 100000 }}",
    "tojson of repeated text": BIG + "{{ ([s] * 100000)|tojson|length }}",
    "integer squaring": "{% set ns = namespace(x=10**100000) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}"
                        "{% endfor %}{{ ns.x > 0 }}",
    "integer power": "{{ (7 ** 100000000) > 0 }}",
    "lipsum": "{{ lipsum(10**7, max=1000)|length }}",
    "wordwrap by text": BIG + "{{ s|wordwrap(1, wrapstring=s)|length }}",
    "urlize with a long target": BIG + "{{ ('http://a.b ' * 500000)|urlize(target=s)|length }}",
    "str.format_map width": "{{ '{x:>{w}}'.format_map({'x': 1, 'w': 9999999999})|length }}",
    "join of a generator": BIG + "{{ ([s] * 100000)|map('string')|join|length }}",
    "str.join of a generator": BIG + "{{ ''.join(([s] * 100000)|map('string'))|length }}",
    "replace filter": BIG + "{{ s|replace('a', s)|length }}",
    "indent by text": "{% set s = 'a\n' * 1000000 %}{{ s|indent(s)|length }}",
}


def run_child(template: str, deadline_s: float) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")])}
    # The child runs Python only (no native code); a preloaded ASan runtime (CI's sanitizer run)
    # reserves terabytes of shadow memory, which the address-space limit would refuse.
    env.pop("LD_PRELOAD", None)
    done = subprocess.run([sys.executable, "-c", CHILD, template, str(deadline_s)], env=env, capture_output=True,
                          text=True, timeout=2 * SIZE_DEADLINE_S)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("template", TIME_ATTACKS.values(), ids=TIME_ATTACKS.keys())
def test_template_that_runs_for_hours_is_stopped_at_the_deadline(template):
    outcome = run_child(template, DEADLINE_S)
    assert outcome["error"] == "TemplateLimitError", outcome
    assert "the chat template" in outcome["message"] and f"longer than {DEADLINE_S:g} s" in outcome["message"]
    assert DEADLINE_S <= outcome["seconds"] < DEADLINE_S + 5


@pytest.mark.parametrize("template", SIZE_ATTACKS.values(), ids=SIZE_ATTACKS.keys())
def test_template_that_builds_gigabytes_is_stopped_before_allocating_them(template):
    outcome = run_child(template, SIZE_DEADLINE_S)  # under 2 GiB of address space: a MemoryError means it allocated them
    assert outcome["error"] == "TemplateLimitError", outcome
    assert "the chat template was stopped" in outcome["message"] and "over the limit of" in outcome["message"]


def test_limit_error_names_the_file_template():
    tok = dgemma.Tokenizer.from_gguf(dgemma.demo_model_path())
    tok.chat_template = SIZE_ATTACKS["repetition"]
    with pytest.raises(dgemma.TemplateLimitError, match="the file's tokenizer.chat_template was stopped"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])


# Real templates render as transformers renders them, a long conversation included (2 MB of text,
# so the size bound stays far from legitimate input).
LONG = [{"role": r, "content": f"{r} turn {i}: " + "words " * 200}
        for i in range(1000) for r in ("user", "assistant")]
CONVERSATIONS = {
    "one turn": [{"role": "user", "content": "Hello there!"}],
    "system and turns": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"},
                         {"role": "assistant", "content": "4"}, {"role": "user", "content": "中文 😀"}],
    "long": LONG,
}
TEMPLATES = {"gemma": GEMMA4_STYLE_CHAT_TEMPLATE,
             "demo": GGUFFile(dgemma.demo_model_path()).kv["tokenizer.chat_template"]}


@pytest.mark.parametrize("template", TEMPLATES.values(), ids=TEMPLATES.keys())
@pytest.mark.parametrize("messages", CONVERSATIONS.values(), ids=CONVERSATIONS.keys())
def test_real_templates_render_as_transformers_renders_them(template, messages):
    start = time.monotonic()
    got = render_chat(template, messages, bos_token="<bos>")
    assert time.monotonic() - start < 5  # far inside the deadline, even on a loaded machine
    expected = render_jinja_template(conversations=[messages], chat_template=template, add_generation_prompt=True,
                                     bos_token="<bos>")[0][0]
    assert got == expected
