"""Checks, before training, that the training data is what dgemma will show the model.

    python train/check_units.py [MODEL.gguf] [--n 300]

1. out/tokenizer.model, as the converter writes it, has exactly the GGUF's vocabulary (tokens, types, merges);
2. rendered training examples (tasks.py, infill_tasks whole and cut into parts) encode to the same ids
   with sentencepiece and with dgemma's tokenizer;
3. infill units (units.layout) equal what python/dgemma/infill.py lays out for the same document
   (`_Document.layout`, hole_length="eos"): encoder ids, canvas ids at fixed positions, which positions
   are free; with and without a chat prompt, one and two holes.
"""
import argparse
import json
import random
import sys
from pathlib import Path

import sentencepiece as spm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import infill_tasks  # noqa: E402
from tasks import render_prompt, train_set  # noqa: E402
from units import encode_document, hole_lengths, layout  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    import dgemma
    from dgemma.convert.tokenizer import _vocabulary, spm_to_tokenizer_json
    from dgemma.gguf import GGUFFile
    from dgemma.infill import Hole, _Document

    path = args.model or dgemma.demo_model_path()
    sp_path = HERE / "out" / "tokenizer.model"
    sp = spm.SentencePieceProcessor(model_file=str(sp_path))
    tokens, types, merges = _vocabulary(json.loads(spm_to_tokenizer_json(sp_path)), sp_path)
    g = GGUFFile(path)
    assert list(g.kv["tokenizer.ggml.tokens"]) == tokens, "tokens differ"
    assert list(g.kv["tokenizer.ggml.token_type"]) == types, "token types differ"
    assert list(g.kv["tokenizer.ggml.merges"]) == merges, "merges differ"
    g.close()
    print(f"vocabulary: {len(tokens)} tokens, types and {len(merges)} merges equal the GGUF's")

    docs = infill_tasks.train_documents(args.n)
    texts = [render_prompt(p) + a for _, p, a in train_set(args.n)]
    texts += [render_prompt(d.prompt) + d.text for d in docs]
    texts += [t for d in docs for t in sum(d.parts(set(d.holes())), [])]
    with dgemma.Model(path, threads=1) as m:
        tok = m.tokenizer
        bad = [t for t in texts if tok.encode(t) != sp.encode(t)]
        assert not bad, f"{len(bad)} texts encode differently, e.g. {bad[0]!r}"
        print(f"encoding: {len(texts)} rendered texts, sentencepiece ids == dgemma ids")

        r, n_units, n_two = random.Random(0), 0, 0
        for i, d in enumerate(docs):
            holes = d.holes()
            pick = {d.key} if i % 2 else set(r.sample(holes, min(2, len(holes))))
            texts_, fills = d.parts(pick)
            prompt = None if i % 3 == 0 else d.prompt
            prompt_ids, text_ids, fill_ids, end = encode_document(sp, prompt, texts_, fills)
            lengths = hole_lengths(r, fill_ids, sum(map(len, text_ids[1:])), m.config.canvas_length)
            u = layout(prompt_ids, text_ids, fill_ids, lengths, end, sp.eos_id(), sp.pad_id(), m.config.canvas_length)
            if u is None:
                continue
            enc, canvas, free = u
            parts = [texts_[0]]
            for n, t in zip(lengths, texts_[1:]):
                parts += [Hole(n), t]
            msgs = None if prompt is None else [{"role": "user", "content": prompt}]
            doc = _Document(m, msgs, parts, None)
            ref = doc.layout(1)
            assert enc == doc.prefix_ids(1), (d, enc, doc.prefix_ids(1))
            assert [bool(x) for x in ref.ids < 0] == list(free), (d, ref.ids, free)
            assert all(c == x for c, x, f in zip(canvas, ref.ids, free) if not f), (d, ref.ids, canvas)
            assert len(ref.holes) == len(fills)
            n_units, n_two = n_units + 1, n_two + (len(fills) == 2)
        print(f"layout: {n_units} infill units ({n_two} with two holes) equal dgemma.infill's layout")


if __name__ == "__main__":
    main()
