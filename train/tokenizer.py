"""Train a small BPE sentencepiece tokenizer (byte fallback) on text from train/tasks.py.

Ids: <pad>=0 <eos>=1 <bos>=2 <unk>=3, then the user-defined symbols <mask>=4 <|turn>=5 <turn|>=6 "\\n"=7,
then byte pieces and merges. No dummy space prefix, digits split one per token (as in Gemma).
Usage: python train/tokenizer.py [--out train/out/tokenizer.model] [--vocab 960]
"""
import argparse
import io
import os

import sentencepiece as spm

from tasks import END_OF_TURN, TURN_START, render_prompt, train_set

USER_SYMBOLS = ["<mask>", TURN_START, END_OF_TURN, "\n"]


def train(out, vocab_size, n_examples=20000):
    text = [render_prompt(p) + a + END_OF_TURN for _, p, a in train_set(n_examples)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=model, model_type="bpe", vocab_size=vocab_size,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", user_defined_symbols=USER_SYMBOLS, byte_fallback=True, split_digits=True,
        add_dummy_prefix=False, remove_extra_whitespaces=False, normalization_rule_name="identity",
        character_coverage=1.0, max_sentence_length=4096, num_threads=1, minloglevel=2)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "wb") as f:
        f.write(model.getvalue())
    sp = spm.SentencePieceProcessor(model_file=out)
    assert [sp.id_to_piece(i) for i in range(8)] == ["<pad>", "<eos>", "<bos>", "<unk>", *USER_SYMBOLS]
    return sp


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out", "tokenizer.model"))
    ap.add_argument("--vocab", type=int, default=960)
    a = ap.parse_args()
    sp = train(a.out, a.vocab)
    s = render_prompt("What is 12 + 7?") + "19" + END_OF_TURN
    print(sp.get_piece_size(), sp.encode(s, out_type=str))
