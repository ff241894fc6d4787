"""`dgemma pull NAME [--type TYPE]`: a model from the Hugging Face Hub into the local cache (dgemma.hub)."""

from __future__ import annotations

import argparse


def register(subparsers) -> argparse.ArgumentParser:
    from .cli_args import positive_int
    from .hub import DEFAULT_TYPE

    p = subparsers.add_parser(
        "pull", help="download a model from the Hugging Face Hub, ready to run (-m NAME then finds it)",
        description="OWNER/REPO holding a safetensors checkpoint: download, convert and quantize it to TYPE. "
                    "OWNER/REPO:TYPE holding GGUF files: fetch the file whose name carries TYPE. The cached "
                    "GGUF's path is printed; afterwards `-m OWNER/REPO:TYPE` runs it. See docs/pull.md.")
    p.add_argument("name", metavar="NAME", help="OWNER/REPO or OWNER/REPO:TYPE")
    p.add_argument("--type", default=None, type=str.upper, metavar="TYPE",
                   help=f"quantization type (default {DEFAULT_TYPE}; or the :TYPE of NAME)")
    p.add_argument("--threads", type=positive_int, default=None, help="quantizer threads (default: one per core)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run, parser=p)
    return p


def run(args: argparse.Namespace) -> int:
    from .hub import pull

    print(pull(args.name, type=args.type, progress=not args.quiet, threads=args.threads))
    return 0
