"""Infill, edit and template fill: fixed text in the canvas, only the holes denoised (issue 14).

A document is a list of parts: fixed text (str) and holes (`Hole`, at most `max_tokens` tokens).
Everything before the first hole is the prefix, read in encoder mode after the prompt. The canvas
then holds the holes as free positions and the text between and after them as fixed positions, as
much as fits; when the document ends inside the canvas, the end marker (end of turn after a chat
prompt, else EOS) and padding follow it, fixed, as in training. Holes that do not fit the canvas
go to the next one, whose prefix is everything before them with the earlier holes filled.

Each fixed text part is tokenized on its own, so the ids of the fixed text decode to that text
whatever the neighbouring tokens would have merged with; the returned text is assembled from the
caller's own strings and the holes' decoded tokens, so the fixed text comes back byte for byte.

A hole's length: with `hole_length="eos"` (the default) the hole has `max_tokens` positions and its
text ends at the first EOS the model writes in it (the core drops the rest of the hole); with
"scored", every length 1..max_tokens is denoised exactly and the canvas with the highest decoder
log-likelihood wins (single-hole documents only: one generation and one decoder pass per length).
EOS is the default because a model trained to end its holes (the demo model, train/units.py) does
as well with it, at a fraction of the steps: on held-out holes that only the text after them
determines, EOS filled 87-100% per task and scoring 70-100%, with 6 to 17 times the steps
(train/evaluate_infill.py, README "Infill and edit"). Before that training, scoring was the better
choice (one-word holes: scoring 23-100% per task, EOS 10-40%).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidArgumentError, OutOfRangeError, TokenizerError

HOLE_LENGTHS = ("eos", "scored")
TEMPLATE_HOLE = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*):([0-9]+)\}\}")


@dataclass(frozen=True)
class Hole:
    max_tokens: int
    name: str | None = None


@dataclass
class Infill:
    """The filled document."""

    text: str                    # the whole text: fixed parts as given, holes filled
    fills: list[str]             # each hole's text, in document order
    fill_tokens: list[list[int]]  # each hole's token ids (EOS and what followed it dropped)
    names: list[str | None]      # each hole's name (templates), else None
    steps: int                   # decoder steps run (all canvases, all scored lengths)
    canvases: int                # canvases denoised
    generated_tokens: int        # hole tokens written, plus one per hole ended by EOS
    total_seconds: float

    @property
    def values(self) -> dict[str, str]:
        """Template holes by name."""
        return {n: f for n, f in zip(self.names, self.fills) if n is not None}

    @property
    def tokens_per_forward(self) -> float:
        return self.generated_tokens / self.steps if self.steps else 0.0

    def as_dict(self) -> dict:
        return {"text": self.text, "fills": self.fills, "fill_tokens": self.fill_tokens, "names": self.names,
                "steps": self.steps, "canvases": self.canvases, "generated_tokens": self.generated_tokens,
                "tokens_per_forward": self.tokens_per_forward, "total_s": self.total_seconds}


@dataclass
class _Canvas:
    """One canvas's layout: ids (-1 at free positions) and where each hole lies."""

    ids: np.ndarray
    holes: list[tuple[int, int, int]] = field(default_factory=list)  # (part index, start, length)


def _check_hole_size(n, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise InvalidArgumentError(f"{what} must be a positive integer, got {n!r}")
    return int(n)


def template_parts(template: str) -> list:
    """`{{name:N}}` marks a hole of at most N tokens; everything else is fixed text."""
    if not isinstance(template, str):
        raise InvalidArgumentError(f"template must be a string, got {type(template).__name__}")
    parts, pos, names = [], 0, set()
    for m in TEMPLATE_HOLE.finditer(template):
        parts.append(template[pos:m.start()])
        name, n = m.group(1), int(m.group(2))
        if name in names:
            raise InvalidArgumentError(f"template hole {{{{{name}:{n}}}}} repeats the name {name!r}")
        names.add(name)
        parts.append(Hole(_check_hole_size(n, f"the size of template hole {name!r}"), name))
        pos = m.end()
    parts.append(template[pos:])
    if not any(isinstance(p, Hole) for p in parts):
        raise InvalidArgumentError("the template has no hole: mark one as {{name:N}} (N tokens at most)")
    return parts


def edit_parts(text: str, spans, max_hole_tokens: int) -> list:
    """The text with each (start, end) character span replaced by a hole."""
    if not isinstance(text, str):
        raise InvalidArgumentError(f"text must be a string, got {type(text).__name__}")
    if not spans:
        raise InvalidArgumentError("no span to edit: give at least one (start, end)")
    checked = []
    for span in spans:
        try:
            start, end = span
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"a span is a (start, end) pair of character offsets, got {span!r}") from None
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in (start, end)):
            raise InvalidArgumentError(f"span {span!r} must hold integer character offsets")
        if not 0 <= start < end <= len(text):
            raise InvalidArgumentError(f"span {start}:{end} is outside the text (0:{len(text)}) or empty")
        checked.append((int(start), int(end)))
    checked.sort()
    for (a0, a1), (b0, b1) in zip(checked, checked[1:]):
        if b0 < a1:
            raise InvalidArgumentError(f"spans {a0}:{a1} and {b0}:{b1} overlap")
    parts, pos = [], 0
    for start, end in checked:
        parts += [text[pos:start], Hole(max_hole_tokens)]
        pos = end
    parts.append(text[pos:])
    return parts


class _Document:
    """Parts tokenized once: fixed text ids per part; holes filled as the canvases finish."""

    def __init__(self, model, prompt, parts: list, eos_ids):
        from .generate import _Prompt, _tokenizer_or_none

        tok = _tokenizer_or_none(model)
        if tok is None:
            raise TokenizerError("infill needs a tokenizer, and this GGUF has none")
        self.model, self.tok, self.parts = model, tok, parts
        C = model.config.canvas_length
        for p in parts:
            if isinstance(p, Hole) and p.max_tokens > C:
                what = f"template hole {p.name!r} ({p.max_tokens} tokens)" if p.name else f"max_hole_tokens {p.max_tokens}"
                raise InvalidArgumentError(f"{what}: a hole cannot be longer than a canvas ({C} tokens)")
        if prompt is None:
            self.prompt_ids = [tok.bos] if tok.add_bos and tok.bos is not None else []
            self.eos = list(tok.eos) if eos_ids is None else [int(e) for e in eos_ids]
            chat = False
        else:
            p = _Prompt(model, prompt, eos_ids)
            self.prompt_ids, self.eos = p.ids, p.eos
            chat = not isinstance(prompt, str) and bool(prompt) and isinstance(prompt[0], dict)
        if not self.eos:
            raise TokenizerError("infill needs an EOS id (the end of a hole), and this GGUF names none")
        self.end_marker = tok.end_of_turn if chat and tok.end_of_turn is not None else self.eos[0]
        self.pad = tok.pad if tok.pad is not None else self.end_marker
        self.ids = [tok.encode(p) if isinstance(p, str) else None for p in parts]  # holes: filled later
        self.fill_tokens: dict[int, list[int]] = {}

    def hole_indices(self) -> list[int]:
        return [i for i, p in enumerate(self.parts) if isinstance(p, Hole)]

    def prefix_ids(self, upto: int) -> list[int]:
        out = list(self.prompt_ids)
        for i in range(upto):
            out += self.fill_tokens[i] if isinstance(self.parts[i], Hole) else self.ids[i]
        return out

    def layout(self, first: int, hole_len: int | None = None) -> _Canvas:
        """The canvas that starts at hole `first`: the holes that fit whole, the text around them."""
        C = self.model.config.canvas_length
        ids = np.full(C, -1, dtype=np.int64)
        canvas, pos = _Canvas(ids), 0
        for i in range(first, len(self.parts)):
            part = self.parts[i]
            if isinstance(part, Hole):
                n = hole_len if hole_len is not None else part.max_tokens
                if pos + n > C:
                    return canvas  # the next canvas takes it
                if pos + n == C and i + 1 < len(self.parts) and self.parts[i + 1]:
                    if not canvas.holes:
                        raise InvalidArgumentError(
                            f"a hole of {n} tokens fills the whole canvas ({C} tokens), leaving no room for the text "
                            f"after it (the suffix): give the hole at most {C - 1} tokens (max_hole_tokens)")
                    return canvas
                canvas.holes.append((i, pos, n))
                pos += n
            else:
                take = self.ids[i][:C - pos]
                ids[pos:pos + len(take)] = take
                pos += len(take)
                if pos == C:
                    return canvas
        ids[pos:pos + 1] = self.end_marker  # the document ends inside this canvas
        ids[pos + 1:] = self.pad
        return canvas

    def text(self) -> str:
        return "".join(p if isinstance(p, str) else self.tok.decode(self.fill_tokens[i], skip_special=True)
                       for i, p in enumerate(self.parts))


def run(model, prompt, parts: list, *, hole_length: str = "eos", seed: int | None = None, eos_ids=None,
        on_draft: Callable[[list[int], np.ndarray], None] | None = None, **sampler) -> Infill:
    """Fills the holes of `parts` (see the module docstring). on_draft(argmax canvas, fixed mask)
    after every denoising step (the CLI's --visual)."""
    from . import generate as g

    n_holes = sum(isinstance(p, Hole) for p in parts)
    if hole_length not in HOLE_LENGTHS:
        raise InvalidArgumentError(f"hole_length must be one of {', '.join(HOLE_LENGTHS)}, got {hole_length!r}")
    t0 = time.perf_counter()
    doc = _Document(model, prompt, parts, eos_ids)
    holes = doc.hole_indices()
    if hole_length == "scored" and n_holes != 1:
        raise InvalidArgumentError(f'hole_length="scored" fills one hole at a time; this text has {n_holes}')
    C, n_ctx = model.config.canvas_length, model.config.n_ctx
    stats = {"steps": 0, "canvases": 0, "generated": 0}

    def denoise(first: int, hole_len: int | None):
        canvas = doc.layout(first, hole_len)
        prefix = doc.prefix_ids(first)
        if len(prefix) + C > n_ctx:
            raise OutOfRangeError(f"the prompt and the text before the hole ({len(prefix)} tokens) leave no room "
                                  f"for a {C}-token canvas in this model's context of {n_ctx} tokens")
        fixed = canvas.ids >= 0
        last = [None]

        def on_step(step, draft):
            last[0] = draft
            if on_draft is not None:
                on_draft(draft.tolist(), fixed)
            return False

        gen = g.run(model, prefix, max_new_tokens=C, seed=seed, eos_ids=doc.eos, fixed_canvas=canvas.ids,
                    on_step=on_step, drafts=True, **sampler)
        stats["steps"] += gen.steps
        stats["canvases"] += gen.canvases
        fills = {}
        for i, start, n in canvas.holes:
            hole = last[0][start:start + n].tolist()
            cut = next((k for k, t in enumerate(hole) if t in doc.eos), None)
            fills[i] = hole if cut is None else hole[:cut]
            stats["generated"] += len(fills[i]) + (cut is not None)
        return canvas, last[0], fills

    first_pending = 0
    while first_pending < len(holes):
        first = holes[first_pending]
        if hole_length == "scored":
            best = None
            for n in range(1, doc.parts[first].max_tokens + 1):
                canvas, committed, fills = denoise(first, n)
                score = _canvas_log_likelihood(model, doc.prefix_ids(first), committed)
                if best is None or score > best[0]:
                    best = (score, fills)
            fills = best[1]
        else:
            canvas, _, fills = denoise(first, None)
        doc.fill_tokens.update(fills)
        first_pending += len(fills)
    return Infill(text=doc.text(), fills=[doc.tok.decode(doc.fill_tokens[i], skip_special=True) for i in holes],
                  fill_tokens=[doc.fill_tokens[i] for i in holes], names=[doc.parts[i].name for i in holes],
                  steps=stats["steps"], canvases=stats["canvases"], generated_tokens=stats["generated"],
                  total_seconds=time.perf_counter() - t0)


def _canvas_log_likelihood(model, prefix: list[int], canvas: np.ndarray) -> float:
    """Sum over the canvas of log p(token) in one decoder pass over the committed canvas."""
    with model.session() as s:
        s.prefill(prefix)
        z = s.denoise(canvas).astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(logp[np.arange(len(canvas)), canvas].sum())


def infill_parts(prefix: str, suffix: str, max_hole_tokens: int) -> list:
    for name, v in (("prefix", prefix), ("suffix", suffix)):
        if not isinstance(v, str):
            raise InvalidArgumentError(f"{name} must be a string, got {type(v).__name__}")
    return [prefix, Hole(max_hole_tokens), suffix]


def default_hole_tokens(model, max_hole_tokens) -> int:
    if max_hole_tokens is None:
        return max(1, model.config.canvas_length // 2)
    return _check_hole_size(max_hole_tokens, "max_hole_tokens")


def spans_from(spans) -> Sequence:
    """One (start, end) pair or a list of them."""
    if isinstance(spans, tuple) and len(spans) == 2 and all(isinstance(v, (int, np.integer)) for v in spans):
        return [spans]
    return list(spans) if spans is not None else []
