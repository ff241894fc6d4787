"""The `dgemma` command."""

from __future__ import annotations

import argparse
import sys

from .cli_args import Parser, int_in, model_placement, name_flags, placement_args, positive_int, warn_threads
from .errors import DgemmaError, InvalidArgumentError


def _cmd_convert(args) -> int:
    from .convert.hf_to_gguf import convert

    convert(args.hf_dir, args.output, args.type, progress=None if args.quiet else sys.stderr)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _cmd_demo(args) -> int:
    """Offline smoke run: a random-weight model built here, encoder prefill and decoder steps timed."""
    import os
    import tempfile

    from .convert.random_model import write_random_blocks_gguf, write_random_gguf

    warn_threads(args.threads)
    if args.write_only and not args.output:
        raise InvalidArgumentError("--write-only needs --output FILE (the file to keep)")
    if args.output and os.path.exists(args.output):
        raise InvalidArgumentError(f"--output: {args.output} exists; choose a new file name (nothing is overwritten)")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.output or f"{tmp}/random-{args.config}.gguf"
        print(f"building a random-weight '{args.config}' model, {args.type} (no download; its text is noise) ...",
              file=sys.stderr)
        if args.type == "F32":  # drawn and tamed, then the core's quantizers (convert/random_model.py)
            write_random_gguf(path, args.config, "F32", seed=args.seed)
        else:  # random blocks in the recipe's mix of types: fast at any size
            write_random_blocks_gguf(path, args.config, args.type, seed=args.seed)
        if args.output:
            print(f"wrote {path} ({os.path.getsize(path) / 2**30:.2f} GiB)", file=sys.stderr)
        if not args.write_only:
            _time_demo(path, args)
    return 0


def _time_demo(path: str, args) -> None:
    import time

    import numpy as np

    from .model import Model

    with Model(path, threads=args.threads, **model_placement(args, path)) as m:
        c = m.config
        rng = np.random.default_rng(args.seed)
        s = m.session()
        prompt = rng.integers(0, c.n_vocab, args.prompt_tokens)
        t0 = time.perf_counter()
        s.prefill(prompt)
        t_prefill = time.perf_counter() - t0
        canvas = rng.integers(0, c.n_vocab, c.canvas_length)
        sc = None
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            logits = s.denoise(canvas, sc)
            times.append(time.perf_counter() - t0)
            sc = logits / c.sampler.t_max
            canvas = logits.argmax(axis=-1)
        print(f"device: {m.device}")
        print(f"model: {c.n_layer} layers, n_embd {c.n_embd}, {c.n_expert} experts, vocab {c.n_vocab}")
        print(f"prefill: {args.prompt_tokens} tokens in {t_prefill * 1e3:.1f} ms "
              f"({args.prompt_tokens / t_prefill:.0f} tokens/s)")
        print(f"denoise: {args.steps} steps over a {c.canvas_length}-token canvas, median "
              f"{np.median(times) * 1e3:.1f} ms/step")
        print(f"canvas after {args.steps} greedy steps: {canvas[:16].tolist()} ...")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = Parser(prog="dgemma", description="Run Google's DiffusionGemma locally.")
    p.add_argument("--version", action="version", version=f"dgemma {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert a Hugging Face checkpoint to GGUF")
    c.add_argument("hf_dir", help="checkpoint directory (config.json, *.safetensors, tokenizer files)")
    c.add_argument("-o", "--output", required=True, help="GGUF file to write")
    c.add_argument("--type", default="bf16", choices=["f32", "f16", "bf16", "q8_0"], help="weight type (default bf16)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    c.set_defaults(func=_cmd_convert, parser=c)

    from .convert.quantize_gguf import RECIPES
    from .convert.random_model import PRESETS

    d = sub.add_parser("demo", help="offline smoke run on a random-weight model built on the spot")
    d.add_argument("--config", "--preset", dest="config", default="mini", choices=list(PRESETS),
                   help="model shapes (bench/models.json; full = the released 26B-A4B)")
    d.add_argument("--type", type=str.upper, default="F32", choices=["F32", *RECIPES], metavar="TYPE",
                   help=f"F32 (drawn weights) or a quantize recipe written as random blocks: {', '.join(RECIPES)}")
    d.add_argument("-o", "--output", default=None, help="keep the model file here (never overwritten)")
    d.add_argument("--write-only", action="store_true", help="write --output and stop (no timing run)")
    d.add_argument("--steps", type=positive_int, default=8, help="decoder steps to time (8)")
    d.add_argument("--prompt-tokens", type=positive_int, default=128, help="prompt length (128)")
    d.add_argument("--threads", type=positive_int, default=None, help="threads (default: one per core)")
    d.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0)
    placement_args(d)
    d.set_defaults(func=_cmd_demo, parser=d)

    from . import cli_chat, cli_generate, cli_info, cli_infill, cli_pull, cli_quantize, cli_serve, cli_tokenize

    cli_generate.register(sub)
    cli_infill.register(sub)
    cli_chat.register(sub)
    cli_serve.register(sub)
    cli_info.register(sub)
    cli_tokenize.register(sub)
    cli_quantize.register(sub)
    cli_pull.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "model", None):  # OWNER/REPO[:TYPE] names a model `dgemma pull` cached
            from .hub import resolve_model

            args.model = resolve_model(args.model)
        return args.func(args)
    except DgemmaError as e:
        # The core and the API name their parameters; the user typed flags.
        print(f"dgemma {args.command}: error: {name_flags(str(e), args.parser, argv)}", file=sys.stderr)
        return 2 if isinstance(e, InvalidArgumentError) else 1
    except KeyboardInterrupt:
        print("dgemma: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
