"""Infill, edit and template fill (issue 14): fixed positions end to end, EOS only inside holes,
the numpy reference of the masked sampler step for step, tokenization at span boundaries, the
invariants, bad input, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from masked_reference import MaskedSampler
from reference import DrawTable
from test_cli import run_cli

import dgemma
import dgemma.generate as g
from dgemma.infill import HOLE_LENGTHS

COPY = [{"role": "user", "content": "Copy: cat dog sun moon"}]
SAMPLER = dict(max_denoising_steps=8, t_min=0.4, t_max=0.8, entropy_bound=0.1, stability_threshold=1,
               confidence_threshold=0.005)


@pytest.fixture(scope="module")
def demo():
    with dgemma.Model(dgemma.demo_model_path(), threads=2) as m:
        yield m


def last_draft(model, prompt, fixed_canvas, **kw):
    """A generation with every step's draft: (Generation, drafts)."""
    drafts = []
    gen = g.run(model, prompt, fixed_canvas=fixed_canvas, drafts=True,
                on_step=lambda step, d: drafts.append(d) and False, **kw)
    return gen, drafts


def test_eos_counts_only_inside_holes(demo):
    """A fixed EOS is text; an EOS in a hole drops the rest of that hole only; the fixed text after
    it is written once; the masked canvas consumes max_new_tokens by position."""
    C = demo.config.canvas_length
    tok = demo.tokenizer
    fixed = np.full(C, -1)
    fixed[10:20] = tok.encode(" sun moon sun moon")[:10] + [0] * max(0, 10 - len(tok.encode(" sun moon sun moon")))
    turn = tok.end_of_turn
    fixed[15] = turn
    prompt = g._Prompt(demo, COPY, None).ids
    plain, drafts = last_draft(demo, prompt, fixed, max_new_tokens=C, seed=3, eos_ids=[turn])
    canvas = drafts[-1]
    np.testing.assert_array_equal(canvas[10:20], fixed[10:20])
    eos = int(canvas[4])  # an id of the first hole becomes an EOS: the hole ends at its first occurrence
    gen, drafts2 = last_draft(demo, prompt, fixed, max_new_tokens=C, seed=3, eos_ids=[turn, eos])
    np.testing.assert_array_equal(drafts2[-1], canvas)  # EOS ids do not change the sampling

    def hole(lo, hi):
        h = canvas[lo:hi].tolist()
        return next((h[:k] for k, t in enumerate(h) if t in (turn, eos)), h)
    expected = hole(0, 10) + fixed[10:20].tolist() + hole(20, C)
    ends = any(t in (turn, eos) for t in canvas[20:])
    assert gen.tokens == [t for t in expected if t != tok.pad]
    assert gen.canvases == 1
    assert gen.finish_reason == ("eos" if ends else "length")
    assert turn in gen.tokens  # the fixed EOS was written, once
    assert gen.tokens.count(turn) == 1


def test_masked_generation_matches_the_numpy_reference_step_for_step(demo):
    C, V, N = demo.config.canvas_length, demo.config.n_vocab, SAMPLER["max_denoising_steps"]
    tok = demo.tokenizer
    fixed = np.full(C, -1)
    suffix = tok.encode(" sun moon") + [tok.end_of_turn]
    fixed[3:3 + len(suffix)] = suffix
    fixed[3 + len(suffix):] = tok.pad
    fixed[0] = tok.encode("cat")[0]
    prompt = g._Prompt(demo, COPY, None).ids
    for seed in range(3):
        table = DrawTable(seed, V, C, N)
        gen, drafts = last_draft(demo, prompt, fixed, max_new_tokens=C, draws=table.raw,
                                 eos_ids=[tok.end_of_turn], **SAMPLER)
        ref = MaskedSampler(table, fixed, max_steps=N, **{k: v for k, v in SAMPLER.items() if k != "max_denoising_steps"})
        with demo.session() as s:
            s.prefill(prompt)
            canvas, sc, ref_drafts = ref.init_canvas(0), None, []
            for n in range(N, 0, -1):
                y, canvas, amax, stop = ref.step(n, s.denoise(canvas, sc), canvas)
                sc = y
                ref_drafts.append(amax)
                assert not np.any(canvas[fixed >= 0] != fixed[fixed >= 0])  # never re-noised
                if stop:
                    break
        assert len(drafts) == len(ref_drafts) == gen.steps
        for ours, theirs in zip(drafts, ref_drafts):
            np.testing.assert_array_equal(ours, theirs)
            np.testing.assert_array_equal(ours[fixed >= 0], fixed[fixed >= 0])  # no draft changes a fixed position


def test_all_fixed_canvas_returns_itself_in_one_step(demo):
    C = demo.config.canvas_length
    fixed = np.arange(10, 10 + C)
    gen, drafts = last_draft(demo, [2, 5, 7], fixed, max_new_tokens=C, seed=0, eos_ids=[1])
    assert gen.steps == 1 and gen.canvases == 1
    assert gen.tokens == fixed.tolist()


def test_span_boundaries_inside_tokens_keep_the_fixed_text(demo):
    """"hello world" tokenizes as h ell o ▁w or ld: the span 6:8 ("wo") starts inside "▁w" and
    ends inside "or", the spans 1:3 and 8:10 cut "ell" and "or". Cutting the whole text's ids at
    such a boundary would change the fixed text; tokenizing each fixed part alone keeps it."""
    tok = demo.tokenizer
    text = "hello world"
    pieces, ends, pos = tok.encode(text), [], 0
    for t in pieces:
        pos += len(tok.decode([t]))
        ends.append(pos)
    assert not {3, 6, 8} & set(ends)  # these boundaries fall inside tokens
    for spans in [(6, 8), [(1, 3), (8, 10)]]:
        r = demo.edit(text, spans, max_hole_tokens=3, seed=0)
        cut = [spans] if isinstance(spans, tuple) else spans
        rebuilt, prev = [], 0
        for (a, b), fill in zip(cut, r.fills):
            rebuilt += [text[prev:a], fill]
            prev = b
        rebuilt.append(text[prev:])
        assert r.text == "".join(rebuilt)
        assert r.text.startswith(text[:cut[0][0]]) and r.text.endswith(text[cut[-1][1]:])


def test_infill_fills_a_copy_answer_with_the_fixed_text_kept(demo):
    """Both ways of finding the hole's length return the fixed text around a hole of at most 3
    tokens; scoring finds the copy task's answer (train/evaluate_infill.py measures both)."""
    for method in HOLE_LENGTHS:
        r = demo.infill("cat", " sun moon", prompt=COPY, max_hole_tokens=3, hole_length=method, seed=0)
        assert r.text == "cat" + r.fills[0] + " sun moon"
        assert len(r.fill_tokens[0]) <= 3 and r.canvases >= 1 and r.steps >= r.canvases
    assert demo.infill("cat", " sun moon", prompt=COPY, max_hole_tokens=3, hole_length="scored", seed=0).fills == [" dog"]


def test_fill_keeps_the_template_and_names_the_values(demo):
    template = '{"name": "{{name:3}}", "city": "{{city:2}}"}'
    r = demo.fill(template, seed=1)
    assert r.names == ["name", "city"]
    assert r.text == '{"name": "' + r.values["name"] + '", "city": "' + r.values["city"] + '"}'


def test_holes_past_one_canvas_go_to_the_next(demo):
    """Two 20-token holes cannot share a 32-token canvas: the second is denoised after the first
    is committed, with the filled text as its prefix."""
    r = demo.fill("a {{x:20}} b {{y:20}} c", seed=0)
    assert r.canvases == 2 and r.text == "a " + r.values["x"] + " b " + r.values["y"] + " c"


@pytest.mark.parametrize("call, error, match", [
    (lambda m: m.edit("abc", (2, 5)), dgemma.InvalidArgumentError, "outside the text"),
    (lambda m: m.edit("abcdef", [(0, 3), (2, 4)]), dgemma.InvalidArgumentError, "overlap"),
    (lambda m: m.edit("abc", []), dgemma.InvalidArgumentError, "no span"),
    (lambda m: m.infill("a", "b", max_hole_tokens=33), dgemma.InvalidArgumentError, "longer than a canvas"),
    (lambda m: m.infill("a", "b", max_hole_tokens=32), dgemma.InvalidArgumentError, "no room for the text after"),
    (lambda m: m.infill("a", "b", max_hole_tokens=0), dgemma.InvalidArgumentError, "max_hole_tokens"),
    (lambda m: m.infill("a", 3), dgemma.InvalidArgumentError, "suffix must be a string"),
    (lambda m: m.infill("a", "b", hole_length="guess"), dgemma.InvalidArgumentError, "hole_length"),
    (lambda m: m.edit("abcdef", [(0, 1), (3, 4)], hole_length="scored"), dgemma.InvalidArgumentError, "one hole"),
    (lambda m: m.fill("no holes"), dgemma.InvalidArgumentError, "no hole"),
    (lambda m: m.fill("{{a:1}} {{a:2}}"), dgemma.InvalidArgumentError, "repeats"),
    (lambda m: m.infill("x " * 1100, "b", max_hole_tokens=2), dgemma.OutOfRangeError, "context"),
])
def test_bad_input_is_a_clear_error(demo, call, error, match):
    with pytest.raises(error, match=match):
        call(demo)


def test_fixed_canvas_must_fit_the_canvas(demo):
    with pytest.raises(dgemma.InvalidArgumentError, match="fixed_canvas"):
        g.run(demo, [2, 3], fixed_canvas=np.zeros(5, int), max_new_tokens=32)
    with pytest.raises(dgemma.InvalidArgumentError, match="outside"):
        g.run(demo, [2, 3], fixed_canvas=np.full(32, demo.config.n_vocab), max_new_tokens=32)


# -- CLI --------------------------------------------------------------------------------------------
def test_cli_infill_json_and_visual():
    r = run_cli("infill", "--prompt", "Copy: cat dog sun moon", "--prefix", "cat", "--suffix", " sun moon",
                "--max-hole-tokens", "3", "--seed", "0", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["text"] == "cat" + out["fills"][0] + " sun moon"
    r = run_cli("infill", "--prompt", "Copy: cat dog sun moon", "--prefix", "cat", "--suffix", " sun moon",
                "--max-hole-tokens", "3", "--seed", "0", "--visual")
    assert r.returncode == 0 and r.stdout == out["text"] + "\n"
    frames = [line for line in r.stderr.splitlines() if line.startswith("[step ")]
    assert frames and all("⟦" in f and f.endswith(" sun moon<turn|>") for f in frames)  # holes bracketed, fixed text plain


def test_cli_edit_leaves_the_file_alone(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("The red car runs.", encoding="utf-8")
    r = run_cli("edit", f, "--span", "7:11", "--prompt", "Write a sentence: red bus, runs", "--max-hole-tokens", "3",
                "--seed", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("The red") and r.stdout.endswith(" runs.\n")
    assert f.read_text(encoding="utf-8") == "The red car runs."


@pytest.mark.parametrize("args, message", [
    (["--span", "5-9"], "--span 5-9: expected START:END"),
    (["--span", "7:99"], "span 7:99 is outside the text"),
    (["--span", "7:11", "--max-hole-tokens", "99"], "--max-hole-tokens 99: a hole cannot be longer"),
])
def test_cli_edit_usage_errors(tmp_path, args, message):
    f = tmp_path / "s.txt"
    f.write_text("The red car runs.", encoding="utf-8")
    r = run_cli("edit", f, *args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_cli_edit_missing_file(tmp_path):
    r = run_cli("edit", tmp_path / "none.txt", "--span", "0:1")
    assert r.returncode == 2 and "cannot read" in r.stderr and "Traceback" not in r.stderr
