"""generate / stream end to end: identical tokens to transformers' generate when both sides are
driven by the same random draws; EOS, lengths, stop strings, batches, cancellation, bad parameters."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

from reference import DrawTable, build_model, save_checkpoint, shared_config
from test_tokenizer import GENERATION_CONFIG, TOKENIZER_CONFIG, train_spm
from tokenizer_corpus import GEMMA4_STYLE_CHAT_TEMPLATE

import dgemma
from dgemma.convert import tokenizer as convert_tokenizer
from dgemma.convert.hf_to_gguf import convert

# Random models rarely keep a whole argmax canvas stable while the re-noised canvas changes, so the
# end-to-end runs stop on confidence alone (stability 0); test_sampler covers stability > 0.
SAMPLER = dict(max_denoising_steps=12, t_min=0.4, t_max=0.8, entropy_bound=0.5, stability_threshold=0,
               confidence_threshold=1.0)


@pytest.fixture(scope="module")
def decisive(workdir):
    """A random model with peaked output distributions (so both sides agree on every argmax) and
    its F32 GGUF; no tokenizer."""
    cfg = shared_config("tiny")
    model = build_model(cfg, seed=77, embed_std=8.0)
    path = save_checkpoint(model, workdir / "hf-decisive")
    gguf = workdir / "decisive.gguf"
    convert(path, gguf, "f32", progress=None)
    return model, gguf, cfg


@pytest.fixture(scope="module")
def with_tokenizer(workdir):
    """A random model with a real (small, trained here) tokenizer and chat template in its GGUF."""
    cfg = dict(shared_config("tiny"), vocab_size=3000)
    path = save_checkpoint(build_model(cfg, seed=78, embed_std=6.0), workdir / "hf-tok")
    spm = train_spm(workdir / "gen-tokenizer.model")
    (path / "tokenizer.json").write_text(convert_tokenizer.spm_to_tokenizer_json(spm), encoding="utf-8")
    (path / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG))
    (path / "chat_template.jinja").write_text(GEMMA4_STYLE_CHAT_TEMPLATE)
    gen = dict(GENERATION_CONFIG, max_denoising_steps=8)
    (path / "generation_config.json").write_text(json.dumps(gen))
    gguf = workdir / "with-tokenizer.gguf"
    convert(path, gguf, "f32", progress=None)
    return gguf


def draw_table(seed, vocab, max_new_tokens):
    C = shared_config("tiny")["canvas_length"]
    return DrawTable(seed, vocab, C, SAMPLER["max_denoising_steps"], n_canvases=-(-max_new_tokens // C))


def reference_generate(model, prompt, max_new_tokens, eos, seed, monkeypatch):
    draw_table(seed, model.config.text_config.vocab_size, max_new_tokens).patch_torch(monkeypatch)
    p = dict(SAMPLER)
    out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=0,
                         sampler_config=EntropyBoundSamplerConfig(entropy_bound=p.pop("entropy_bound")), **p)
    monkeypatch.undo()
    new = out.sequences[0, len(prompt):].tolist()
    if eos is not None:
        for i, t in enumerate(new):
            if t in eos:
                new = new[:i]
                break
    return new[:max_new_tokens], float(out.tokens_per_forward[0])


def ours_generate(gguf, prompt, max_new_tokens, eos, seed, vocab):
    with dgemma.Model(gguf, threads=2) as m:
        return m.generate(prompt, max_new_tokens=max_new_tokens, eos_ids=eos or [],
                          draws=draw_table(seed, vocab, max_new_tokens).raw, **SAMPLER)


@pytest.mark.parametrize("max_new_tokens", [48, 37])
def test_tokens_match_transformers_over_several_canvases(decisive, max_new_tokens, monkeypatch):
    model, gguf, cfg = decisive
    prompt = list(np.random.default_rng(4).integers(0, cfg["vocab_size"], 11))
    ref, ref_tpf = reference_generate(model, prompt, max_new_tokens, None, 9, monkeypatch)
    ours = ours_generate(gguf, prompt, max_new_tokens, None, 9, cfg["vocab_size"])
    assert len(ours.tokens) == max_new_tokens and ours.finish_reason == "length"
    assert ours.canvases == 3
    assert ours.tokens == ref
    if max_new_tokens % cfg["canvas_length"] == 0:
        assert ours.tokens_per_forward == pytest.approx(ref_tpf)
    assert ours.steps < 3 * SAMPLER["max_denoising_steps"], "the early stop never fired"


def test_eos_matches_transformers(decisive, monkeypatch):
    model, gguf, cfg = decisive
    prompt = list(np.random.default_rng(5).integers(0, cfg["vocab_size"], 7))
    free, _ = reference_generate(model, prompt, 48, None, 13, monkeypatch)
    eos = [free[20], free[40]]  # ends inside the second canvas
    cut = free.index(eos[0]) if eos[0] in free else None
    ref, ref_tpf = reference_generate(model, prompt, 48, eos, 13, monkeypatch)
    ours = ours_generate(gguf, prompt, 48, eos, 13, cfg["vocab_size"])
    assert ours.tokens == ref == free[:cut]
    assert ours.finish_reason == "eos"
    assert ours.canvases == 2
    assert ours.tokens_per_forward == pytest.approx(ref_tpf)


def test_same_seed_same_output_and_batches(decisive):
    _, gguf, cfg = decisive
    with dgemma.Model(gguf, threads=2) as m:
        a = m.generate([1, 2, 3], max_new_tokens=20, seed=11)
        b = m.generate([1, 2, 3], max_new_tokens=20, seed=11)
        c = m.generate([1, 2, 3], max_new_tokens=20, seed=12)
        assert a.tokens == b.tokens and a.tokens != c.tokens
        assert len(a.tokens) == 20 and a.steps >= 2 and a.prompt_tokens == 3
        # A batch: each sequence as if alone, finishing in its own canvas.
        free = m.generate([4, 5], max_new_tokens=40, seed=3)
        C = cfg["canvas_length"]  # an EOS that first appears in the second canvas
        eos = [next(t for t in free.tokens[C:2 * C] if t not in free.tokens[:C])]
        batch = m.generate([[1, 2, 3], [4, 5]], max_new_tokens=40, seed=3, eos_ids=eos)
        alone = [m.generate(p, max_new_tokens=40, seed=3, eos_ids=eos) for p in ([1, 2, 3], [4, 5])]
        assert [g.tokens for g in batch] == [g.tokens for g in alone]
        assert batch[1].finish_reason == "eos" and batch[1].canvases == 2
        assert batch[0].canvases != batch[1].canvases or batch[0].finish_reason != batch[1].finish_reason


def test_cancellation(decisive):
    _, gguf, _ = decisive
    with dgemma.Model(gguf, threads=2) as m:
        from dgemma.generate import run

        calls = []
        g = run(m, [1, 2], max_new_tokens=64, seed=1, on_step=lambda step, draft: calls.append(step) or len(calls) >= 3)
        assert g.finish_reason == "cancelled" and g.steps == 3 and g.tokens == []
        it = m.stream([1, 2], max_new_tokens=64, seed=1, drafts=True)
        first = next(it)
        assert isinstance(first, dgemma.generate.Draft) and first.step == 1
        it.close()  # stops the work; the model stays usable
        assert len(m.generate([1, 2], max_new_tokens=16, seed=1).tokens) == 16


def test_bad_parameters(decisive):
    _, gguf, cfg = decisive
    with dgemma.Model(gguf, threads=1) as m:
        for bad in (dict(t_min=0.9, t_max=0.8), dict(t_min=0.5, t_max=0.5), dict(max_denoising_steps=0),
                    dict(max_denoising_steps=-3), dict(entropy_bound=-1.0), dict(confidence_threshold=-0.1),
                    dict(stability_threshold=-1), dict(max_new_tokens=0), dict(max_new_tokens=-5),
                    dict(seed=-1), dict(max_denoising_steps=2.5), dict(t_min="x")):
            with pytest.raises(dgemma.InvalidArgumentError):
                m.generate([1, 2], **{"max_new_tokens": 8, **bad})
        with pytest.raises(dgemma.OutOfRangeError, match="context length"):
            m.generate([1, 2], max_new_tokens=10**6)
        with pytest.raises(dgemma.OutOfRangeError):
            m.generate([1, 2], max_new_tokens=8, eos_ids=[cfg["vocab_size"]])
        with pytest.raises(dgemma.OutOfRangeError):
            m.generate([1, cfg["vocab_size"]], max_new_tokens=8)
        with pytest.raises(dgemma.InvalidArgumentError):
            m.generate([], max_new_tokens=8)
        with pytest.raises(dgemma.TokenizerError, match="tokenizer"):
            m.generate("text needs a tokenizer", max_new_tokens=8)


def test_text_chat_stop_strings_and_stream(with_tokenizer):
    with dgemma.Model(with_tokenizer, threads=2) as m:
        tok = m.tokenizer
        assert m.config.sampler.max_steps == 8
        g = m.generate("The quick brown fox", max_new_tokens=40, seed=5)
        assert g.text == tok.decode(g.tokens, skip_special=True) and len(g.tokens) <= 40
        # Stop strings: the text is cut where the string starts (here in a later canvas than the
        # first, since canvases are 16 tokens); tokens keep the longest prefix within that text.
        start = next(k for k in range(len(g.text) // 2, len(g.text) - 3) if g.text[k:k + 3].strip() == g.text[k:k + 3])
        target = g.text[start:start + 3]
        s = m.generate("The quick brown fox", max_new_tokens=40, seed=5, stop=[target, "never appears"])
        assert s.finish_reason == "stop" and s.text == g.text[:g.text.find(target)]
        assert s.text.startswith(tok.decode(s.tokens, skip_special=True))
        assert s.tokens == g.tokens[:len(s.tokens)]
        parts = list(m.stream("The quick brown fox", max_new_tokens=40, seed=5, stop=[target]))
        assert "".join(p for p in parts if isinstance(p, str)) == s.text
        # Streaming yields the same text as generate, canvas by canvas.
        parts = list(m.stream("The quick brown fox", max_new_tokens=40, seed=5))
        assert isinstance(parts[-1], dgemma.generate.Generation)
        assert "".join(p for p in parts[:-1]) == g.text
        # Chat: the end-of-turn token joins the EOS set.
        c = m.generate([{"role": "user", "content": "hello"}], max_new_tokens=16, seed=2)
        assert tok.end_of_turn not in c.tokens


def test_cli_generate_json(with_tokenizer, capsys):
    from dgemma.cli import main

    assert main(["generate", "-m", str(with_tokenizer), "-p", "Hello", "-n", "20", "--seed", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"text", "tokens", "steps", "tokens_per_forward", "timings"} and len(out["tokens"]) <= 20
    assert main(["generate", "-m", str(with_tokenizer), "-p", "Hello", "--t-min", "2", "--t-max", "1"]) == 2  # a usage error
