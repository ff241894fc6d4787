"""Turns a trained checkpoint into the GGUF that ships inside the package.

    python train/ship.py [train/out/final] [-o python/dgemma/models/demo.gguf]

Adds the chat template the examples were rendered with (tasks.render_prompt), converts with dgemma's
converter (F32: 9 MB, inside the 20 MB budget, no quantization error) and checks that the template
reproduces the training prompt token for token.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tasks import render_prompt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", nargs="?", default=str(HERE / "out" / "final"))
    ap.add_argument("-o", "--output", default=str(HERE.parent / "python" / "dgemma" / "models" / "demo.gguf"))
    args = ap.parse_args()

    import sentencepiece as spm

    from dgemma.convert.hf_to_gguf import convert
    from dgemma.tokenizer import Tokenizer

    ckpt = Path(args.checkpoint)
    shutil.copy(HERE / "chat_template.jinja", ckpt / "chat_template.jinja")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    convert(ckpt, out, "f32", progress=None)

    tok = Tokenizer.from_gguf(out)
    sp = spm.SentencePieceProcessor(model_file=str(ckpt / "tokenizer.model"))
    prompt = "Copy: red green blue"
    ours = tok.encode(tok.apply_chat_template([{"role": "user", "content": prompt}]))
    trained = [sp.bos_id()] + sp.encode(render_prompt(prompt))
    if ours != trained:
        raise SystemExit(f"chat template does not reproduce the training prompt:\n{ours}\n{trained}")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
