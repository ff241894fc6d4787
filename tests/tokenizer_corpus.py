"""Deterministic text for the tokenizer tests: sentencepiece training lines and a parity corpus of
prose, source code, whitespace runs, digits, emoji, CJK, combining marks, scripts, special-token
look-alikes and escaped invalid sequences."""

from __future__ import annotations

import itertools
import random

WORDS = """the of and to in is was for on that with as by at from it this be are or an have not which
his but they had you were their one all we can has there been if more when will would who so no what
out up about into than them time could some its then new only other any these two may first do like
over such our man also most me even very after where made did many before must through back years
much way well down should because each just those people how too little state good world very still
own see men work long here get both between life being under never day same another know while last
might us great old year off come since against go came right used take three himself few house use
during without again place around however home small found mrs thought went say part once general
high upon school every don't does got united left number course war until always away something fact
though water less public put think almost hand enough far took head yet government system better set
told nothing night end why called didn't eyes find going look asked later knew point next program
city business give group toward young let room president side social given present several order
national possible rather second face per among form important often things looked early white case
john become large big need four within felt along children saw best church ever least power
development light thing seemed family interest want members others mind country area done turned
although open god service certain kind problem began different door thus help sense means whole
matter perhaps itself york it's times law human line above name example action company hands local
show""".split()

SCRIPTS = {
    "cjk": (0x4E00, 0x9FFF), "hiragana": (0x3041, 0x3096), "katakana": (0x30A1, 0x30FA),
    "hangul": (0xAC00, 0xD7A3), "cyrillic": (0x0410, 0x044F), "greek": (0x0391, 0x03C9),
    "arabic": (0x0621, 0x064A), "hebrew": (0x05D0, 0x05EA), "devanagari": (0x0905, 0x0939),
    "thai": (0x0E01, 0x0E2E), "emoji": (0x1F600, 0x1F64F), "symbols": (0x2190, 0x21FF),
    "math": (0x1D400, 0x1D433),
}
COMBINING = ["\u0301", "\u0300", "\u0308", "\u0327", "\u0303", "\u20dd", "\u0332", "\u093f", "\u0e31"]
EMOJI_SEQUENCES = ["👨\u200d👩\u200d👧\u200d👦", "🇫🇷", "🇯🇵", "👍🏽", "❤️", "🏳️\u200d🌈", "🧑🏿\u200d💻", "✌🏻"]
SPECIAL_LOOKALIKES = ["<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "<|turn>", "<turn|>", "<|turn>user\n",
                      "<|turn>model\n", "<|think|>", "<|channel>", "<channel|>", "<|tur", "turn|>", "<<bos>>",
                      "<0x41>", "<0xZZ>", "▁", "▁▁x", "<|turn><turn|>", "<bos><bos>", "</s>", "<s>"]
ESCAPED_INVALID = ["\\ud800", "\\udfff", "\\ud83d\\ude00", "\\xff\\xfe", "%C3%28", "\\u0000", "\ufffd",
                   "\u200b", "\ufeff", "\x00", "\x1b[31m", "\x7f", "\u00a0", "\u3000", "\u2028", "\r\n"]
WHITESPACE = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", " \n", "\t \n", "\r\n", "        "]

CODE = [
    "def {a}({b}, {c}=None):\n    if {b} is None:\n        return {c}\n    return [{b} * i for i in range({n})]\n",
    "int {a}(int {b}, const char *{c}) {{\n\tfor (int i = 0; i < {n}; ++i) {{\n\t\t{b} += {c}[i];\n\t}}\n\treturn {b};\n}}\n",
    "const {a} = async ({b}) => {{\n  const {c} = await fetch(`/api/${{{b}}}`);\n  return {c}.json();\n}};\n",
    "fn {a}(&mut self, {b}: &[u8]) -> Result<usize, Error> {{\n    let {c} = {b}.len() * {n};\n    Ok({c})\n}}\n",
    "func {a}({b} []string) ({c} int, err error) {{\n\tfor _, s := range {b} {{\n\t\t{c} += len(s)\n\t}}\n\treturn\n}}\n",
    "SELECT {a}.id, COUNT(*) AS {c} FROM {a} JOIN {b} ON {a}.id = {b}.{a}_id WHERE {c} > {n} GROUP BY 1;\n",
    "<div class=\"{a}\">\n  <span id='{b}'>{c} &amp; {n}</span>\n</div>\n",
    "{{\"{a}\": [{n}, {n}.5, -1e-9], \"{b}\": {{\"{c}\": null, \"ok\": true}}}}\n",
    "for f in *.{a}; do\n  echo \"$f\" | sed -e 's/{b}/{c}/g' >> out_{n}.log\ndone\n",
    "#include <stdio.h>\n#define {a}({b}) (({b}) << {n})\n/* {c} */\n",
    "class {a}(nn.Module):\n    def forward(self, {b}: Tensor) -> Tensor:  # {c}\n        return self.{c}({b}) @ W[:, :{n}]\n",
]


def _word(rng: random.Random) -> str:
    w = rng.choice(WORDS)
    r = rng.random()
    return w.capitalize() if r < 0.15 else w.upper() if r < 0.18 else w


def _ident(rng: random.Random) -> str:
    parts = [_word(rng).replace("'", "") for _ in range(rng.randint(1, 3))]
    return rng.choice(["_", ""]).join(parts) if rng.random() < 0.5 else parts[0] + "".join(p.title() for p in parts[1:])


def _script_text(rng: random.Random, script: str, n: int) -> str:
    lo, hi = SCRIPTS[script]
    return "".join(chr(rng.randint(lo, hi)) for _ in range(n))


def _number(rng: random.Random) -> str:
    return rng.choice([str(rng.randint(0, 10 ** rng.randint(1, 12))), f"{rng.uniform(-1e4, 1e4):.{rng.randint(0, 6)}f}",
                       f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/{rng.randint(1900, 2099)}",
                       f"+1 ({rng.randint(200, 999)}) {rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
                       f"{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}"])


def _sentence(rng: random.Random) -> str:
    words = [_word(rng) for _ in range(rng.randint(3, 18))]
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), _number(rng))
    return " ".join(words).capitalize() + rng.choice([".", ".", "!", "?", ",", ";", ":", "...", " —"])


def _code(rng: random.Random) -> str:
    return rng.choice(CODE).format(a=_ident(rng), b=_ident(rng), c=_ident(rng), n=rng.randint(0, 4096))


def _fragment(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.30:
        return _sentence(rng)
    if kind < 0.45:
        return _code(rng)
    if kind < 0.60:
        return _script_text(rng, rng.choice(list(SCRIPTS)), rng.randint(1, 12))
    if kind < 0.67:
        return _number(rng)
    if kind < 0.74:
        return rng.choice(WHITESPACE) * rng.randint(1, 3)
    if kind < 0.80:
        base = (_script_text(rng, rng.choice(["cyrillic", "greek", "devanagari", "thai"]), 1)
                if rng.random() < 0.3 else rng.choice("aeiouny"))
        return base + "".join(rng.choice(COMBINING) for _ in range(rng.randint(1, 3)))
    if kind < 0.86:
        return rng.choice(EMOJI_SEQUENCES) * rng.randint(1, 2)
    if kind < 0.93:
        return rng.choice(SPECIAL_LOOKALIKES)
    return rng.choice(ESCAPED_INVALID)


def training_lines(n: int = 4000, seed: int = 1) -> list[str]:
    """Varied text for training a small sentencepiece BPE (prose and code dominate, like real data)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        r = rng.random()
        lines.append(_code(rng) if r < 0.25 else " ".join(_sentence(rng) for _ in range(rng.randint(1, 4)))
                     if r < 0.8 else _fragment(rng) + " " + _fragment(rng))
    return lines


def parity_corpus(n: int = 5000, seed: int = 2) -> list[str]:
    """`n` random mixtures of fragments plus a fixed list of edge cases (the empty string first)."""
    rng = random.Random(seed)
    fixed = ["", " ", "  ", "\n", "\t", " \t\n", "a", "A", "0", "00000", "1234567890", "3.14159", "▁", "▁▁",
             "hello world", " hello", "hello ", "  leading and trailing  ", "x" * 300, " " * 64, "\n" * 20,
             "中文", "日本語のテキスト", "한국어", "Ελληνικά", "Русский текст", "עברית", "العربية", "हिन्दी", "ไทย",
             "é", "e\u0301", "\u0301", "😀", "👨\u200d👩\u200d👧", "🇫🇷🇩🇪", "𝐀𝐁𝐂", "\U0010FFFF", "\u0080",
             "<bos>hello<eos>", "<|turn>user\nHi<turn|>\n<|turn>model\n", "<mask><mask>", "a<pad>b",
             "<unk>", "<0x0A>", "<0x41><0x42>", "<|channel>thought<channel|>", "<<|turn>>", "<turn|><|turn>"]
    fixed += SPECIAL_LOOKALIKES + ESCAPED_INVALID + WHITESPACE + EMOJI_SEQUENCES
    out = list(fixed)
    while len(out) < n + len(fixed):
        out.append(rng.choice(["", " ", "\n"]).join(_fragment(rng) for _ in range(rng.randint(1, 6))))
    return out


def synthetic_vocabulary(n_tokens: int = 262_144, n_merges: int = 500_000) -> tuple[list[str], list[str]]:
    """A Gemma-sized vocabulary (specials, byte pieces, characters, every string of 2..5 letters over a
    small alphabet until `n_tokens`) with its merges ("left right", every two-piece split) for timing."""
    alphabet = "▁etaoinshrdlucmfwypg"
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<|turn>", "<turn|>"]
    tokens += [f"<0x{b:02X}>" for b in range(256)] + list(alphabet) + [chr(0x4E00 + i) for i in range(3000)]
    merges = []
    for length in range(2, 6):
        for chars in itertools.product(alphabet, repeat=length):
            if len(tokens) == n_tokens:
                return tokens, merges[:n_merges]
            t = "".join(chars)
            tokens.append(t)
            merges.extend(f"{t[:k]} {t[k:]}" for k in range(1, length) if len(merges) < n_merges)
    return tokens, merges


# A chat template in the style of Gemma 4's (turn markers, optional system turn with a thinking switch,
# tool declarations, thought channels stripped from earlier model turns); written for the tests.
GEMMA4_STYLE_CHAT_TEMPLATE = r"""
{%- macro render_content(content) -%}
    {%- if content is string -%}
        {{- content | trim -}}
    {%- else -%}
        {%- for part in content if part['type'] == 'text' -%}
            {{- part['text'] | trim -}}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{%- macro strip_thinking(text) -%}
    {%- set ns = namespace(out='') -%}
    {%- for chunk in text.split('<channel|>') -%}
        {%- set ns.out = ns.out + chunk.split('<|channel>')[0] -%}
    {%- endfor -%}
    {{- ns.out | trim -}}
{%- endmacro -%}
{{- bos_token -}}
{%- set loop_messages = messages -%}
{%- set thinking = enable_thinking is defined and enable_thinking -%}
{%- if thinking or tools or messages[0]['role'] in ['system', 'developer'] -%}
    {{- '<|turn>system\n' -}}
    {%- if thinking -%}
        {{- '<|think|>\n' -}}
    {%- endif -%}
    {%- if messages[0]['role'] in ['system', 'developer'] -%}
        {{- render_content(messages[0]['content']) -}}
        {%- set loop_messages = messages[1:] -%}
    {%- endif -%}
    {%- for tool in tools or [] -%}
        {{- '\n<|tool>' + tool | tojson + '<tool|>' -}}
    {%- endfor -%}
    {%- if add_date is defined and add_date -%}
        {{- '\nToday is ' + strftime_now('%Y-%m-%d') + '.' -}}
    {%- endif -%}
    {{- '<turn|>\n' -}}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if message['role'] not in ['user', 'assistant'] -%}
        {{- raise_exception('Unsupported role: ' + message['role']) -}}
    {%- endif -%}
    {%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}
    {{- '<|turn>' + role + '\n' -}}
    {%- if role == 'model' -%}
        {{- strip_thinking(render_content(message['content'])) -}}
    {%- else -%}
        {{- render_content(message['content']) -}}
    {%- endif -%}
    {{- '<turn|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|turn>model\n' -}}
{%- endif -%}
"""
