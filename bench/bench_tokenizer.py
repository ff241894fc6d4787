"""Tokenizer speed: dgemma's GGUF tokenizer against transformers' GemmaTokenizer, same run, same data.

Rows: loading a Gemma-sized vocabulary (262,144 tokens, 500,000 merges; GGUF vs tokenizer.json),
encoding 1 MB of mixed text as one string and as ~lines, decoding it. Best of --repeat runs.

    PYTHONPATH=python python bench/bench_tokenizer.py
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import sentencepiece
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tokenizer_corpus import parity_corpus, synthetic_vocabulary, training_lines  # noqa: E402

from dgemma.convert import tokenizer as convert_tokenizer  # noqa: E402
from dgemma.convert.gguf_writer import GGUFWriter  # noqa: E402
from dgemma.gguf import ValueType  # noqa: E402
from dgemma.tokenizer import Tokenizer, gemma_backend  # noqa: E402

TOKENIZER_CONFIG = {"tokenizer_class": "GemmaTokenizer", "clean_up_tokenization_spaces": False}


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def trained_checkpoint(root: Path, vocab_size: int) -> tuple[Path, Path]:
    """A sentencepiece BPE trained on local text, as a checkpoint dir and a metadata-only GGUF."""
    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(training_lines(12000)), model_writer=buf, model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, character_coverage=0.995, normalization_rule_name="identity", add_dummy_prefix=False,
        remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True, pad_id=0, eos_id=1,
        bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        control_symbols=["<mask>", "<|turn>", "<turn|>"], num_threads=2, max_sentence_length=100_000, minloglevel=2)
    (root / "tokenizer.model").write_bytes(buf.getvalue())
    ckpt = root / "trained"
    ckpt.mkdir()
    (ckpt / "tokenizer.json").write_text(convert_tokenizer.spm_to_tokenizer_json(root / "tokenizer.model"))
    (ckpt / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG))
    writer = GGUFWriter(root / "trained.gguf")
    convert_tokenizer.add_tokenizer_metadata(writer, ckpt)
    writer.finish()
    return ckpt, root / "trained.gguf"


def big_checkpoint(root: Path) -> tuple[Path, Path]:
    tokens, merges = synthetic_vocabulary()
    ckpt = root / "big"
    ckpt.mkdir()
    backend = gemma_backend(tokens, [tuple(m.split(" ")) for m in merges], [(i, True) for i in range(7)], "<unk>")
    (ckpt / "tokenizer.json").write_text(backend.to_str())
    (ckpt / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG))
    writer = GGUFWriter(root / "big.gguf")
    writer.add_string("tokenizer.ggml.model", "gemma4")
    writer.add_array("tokenizer.ggml.tokens", tokens, ValueType.STRING)
    writer.add_array("tokenizer.ggml.token_type", [3] * 7 + [1] * (len(tokens) - 7), ValueType.INT32)
    writer.add_array("tokenizer.ggml.merges", merges, ValueType.STRING)
    writer.add_u32("tokenizer.ggml.unknown_token_id", 3)
    writer.finish()
    return ckpt, root / "big.gguf"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megabytes", type=float, default=1.0)
    ap.add_argument("--vocab", type=int, default=8000, help="vocabulary of the trained tokenizer")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    lines, size = [], 0
    for s in parity_corpus(200_000):
        lines.append(s)
        size += len(s.encode("utf-8")) + 1
        if size >= args.megabytes * 1e6:
            break
    text = "\n".join(lines)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        big_dir, big_gguf = big_checkpoint(root)
        ckpt, gguf = trained_checkpoint(root, args.vocab)
        rows = [("load 262k vocab + 500k merges",
                 best(lambda: Tokenizer.from_gguf(big_gguf), args.repeat),
                 best(lambda: transformers.AutoTokenizer.from_pretrained(big_dir), args.repeat))]
        ours, ref = Tokenizer.from_gguf(gguf), transformers.AutoTokenizer.from_pretrained(ckpt)
        ids = ours.encode(text)
        assert ids == ref.encode(text, add_special_tokens=False), "encodings differ"
        mb = f"{size / 1e6:.2f} MB"
        rows += [
            (f"encode {mb}, one string", best(lambda: ours.encode(text), args.repeat),
             best(lambda: ref.encode(text, add_special_tokens=False), args.repeat)),
            (f"encode {mb}, {len(lines)} strings", best(lambda: [ours.encode(s) for s in lines], args.repeat),
             best(lambda: [ref.encode(s, add_special_tokens=False) for s in lines], args.repeat)),
            (f"decode {len(ids)} ids", best(lambda: ours.decode(ids), args.repeat),
             best(lambda: ref.decode(ids), args.repeat)),
        ]

    print(f"{'operation':<40} {'dgemma s':>10} {'transformers s':>15} {'speedup':>8}")
    for name, a, b in rows:
        print(f"{name:<40} {a:>10.3f} {b:>15.3f} {b / a:>7.2f}x")


if __name__ == "__main__":
    main()
