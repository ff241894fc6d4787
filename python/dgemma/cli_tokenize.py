"""`dgemma tokenize -m MODEL.gguf TEXT`: token ids and pieces from the GGUF's tokenizer alone."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("tokenize", help="show the token ids and pieces of a text",
                              description="Tokenize TEXT (or stdin) with the tokenizer stored in a GGUF file.")
    p.add_argument("-m", "--model", required=True, help="GGUF file")
    p.add_argument("text", nargs="?", help="text to tokenize (default: read stdin)")
    p.add_argument("--bos", action="store_true", help="prepend the BOS token (with --chat: unless the template wrote it)")
    p.add_argument("--chat", action="store_true", help="format TEXT as one user message with the chat template")
    p.add_argument("--json", action="store_true", help="print {\"ids\": [...], \"pieces\": [...]} as JSON")
    p.set_defaults(func=run, parser=p)
    return p


def run(args: argparse.Namespace) -> int:
    from .tokenizer import Tokenizer

    tok = Tokenizer.from_gguf(args.model)
    text = sys.stdin.read() if args.text is None else args.text
    add_bos = args.bos
    if args.chat:
        text = tok.apply_chat_template([{"role": "user", "content": text}])
        # The template writes its own <bos>: --bos must not add a second one.
        add_bos = add_bos and not (tok.bos is not None and text.startswith(tok.tokens[tok.bos]))
    ids = tok.encode(text, add_bos=add_bos)
    pieces = [tok.token_to_piece(i) for i in ids]
    if args.json:
        print(json.dumps({"ids": ids, "pieces": pieces}, ensure_ascii=False))
    else:
        for i, piece in zip(ids, pieces):
            print(f"{i:>8} {json.dumps(piece, ensure_ascii=False)}")
        print(f"{len(ids)} token{'' if len(ids) == 1 else 's'}", file=sys.stderr)
    return 0
