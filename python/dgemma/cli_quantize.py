"""`dgemma quantize IN.gguf OUT.gguf TYPE`: re-quantize a GGUF file (convert/quantize_gguf.py)."""

from __future__ import annotations

import argparse
import os
import sys

from .cli_args import positive_int, warn_threads


def register(subparsers) -> argparse.ArgumentParser:
    from .convert.quantize_gguf import RECIPES

    p = subparsers.add_parser("quantize", help="re-quantize a GGUF file (Q8_0, Q6_K, Q5_K_M, Q4_K_M, ...)",
                              description="Quantize the weight matrices of a GGUF file. Norms, scales and the "
                                          "router stay F32; the _M mixes keep attn_v, attn_output and the token "
                                          "embedding (the lm_head) at Q6_K.")
    p.add_argument("input", help="GGUF file to read (F32, F16, BF16 or any readable quantized type)")
    p.add_argument("output", help="GGUF file to write (written under a temporary name, renamed on success)")
    p.add_argument("type", type=str.upper, choices=list(RECIPES), metavar="TYPE",
                   help=f"one of {', '.join(RECIPES)}")
    p.add_argument("--threads", type=positive_int, default=None, help="quantizer threads (default: one per core)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run, parser=p)
    return p


def run(args: argparse.Namespace) -> int:
    from .convert.quantize_gguf import quantize_file

    if os.path.exists(args.output) and os.path.exists(args.input) and os.path.samefile(args.input, args.output):
        args.parser.error(f"OUTPUT {args.output} is the input file: write the quantized model to another file")
    warn_threads(args.threads)
    # Its progress redraws one line with \r: only on a terminal, never into a log file.
    live = not args.quiet and sys.stderr.isatty()
    quantize_file(args.input, args.output, args.type, threads=args.threads, progress=sys.stderr if live else None)
    print(f"wrote {args.output} ({os.path.getsize(args.output) / 1e6:.1f} MB)", file=sys.stderr)
    return 0
