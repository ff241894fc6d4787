"""The `dgemma` command."""

from __future__ import annotations

import argparse
import sys

from .errors import DgemmaError


def _cmd_convert(args) -> int:
    from .convert.hf_to_gguf import convert

    convert(args.hf_dir, args.output, args.type, progress=None if args.quiet else sys.stderr)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _cmd_info(args) -> int:
    from .model import Model

    with Model(args.model) as m:
        c = m.config
        print(f"{args.model}: {c.n_layer} layers, n_embd {c.n_embd}, vocab {c.n_vocab}, {c.n_expert} experts "
              f"(top {c.n_expert_used}), canvas {c.canvas_length}, context {c.n_ctx}, token_embd {c.token_embd_type}")
    return 0


def _cmd_demo(args) -> int:
    """Offline smoke run: a random-weight model built here, encoder prefill and decoder steps timed."""
    import tempfile
    import time

    import numpy as np

    from .convert.random_model import write_random_gguf
    from .model import Model

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/random-{args.preset}.gguf"
        print(f"building a random-weight '{args.preset}' model (no download; its text is noise) ...", file=sys.stderr)
        write_random_gguf(path, args.preset, "F32", seed=args.seed)
        with Model(path, threads=args.threads) as m:
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
            print(f"model: {c.n_layer} layers, n_embd {c.n_embd}, {c.n_expert} experts, vocab {c.n_vocab}")
            print(f"prefill: {args.prompt_tokens} tokens in {t_prefill * 1e3:.1f} ms "
                  f"({args.prompt_tokens / t_prefill:.0f} tokens/s)")
            print(f"denoise: {args.steps} steps over a {c.canvas_length}-token canvas, median "
                  f"{np.median(times) * 1e3:.1f} ms/step")
            print(f"canvas after {args.steps} greedy steps: {canvas[:16].tolist()} ...")
    return 0


def _cmd_generate(args) -> int:
    import json

    from .generate import Draft, Generation
    from .model import Model

    from . import demo_model_path

    demo = args.model is None
    model_path = demo_model_path() if demo else args.model
    prompt = args.prompt if args.prompt is not None else (args.text or sys.stdin.read())
    if args.chat or demo:  # the demo model only knows the chat format it was trained on
        prompt = [{"role": "user", "content": prompt}]
    sampler = {k: getattr(args, k) for k in ("max_denoising_steps", "t_min", "t_max", "entropy_bound",
                                              "stability_threshold", "confidence_threshold")}
    tty = sys.stderr.isatty()
    with Model(model_path, threads=args.threads) as m:
        result = None
        printed_draft = False
        for item in m.stream(prompt, drafts=args.visual or tty, max_new_tokens=args.n, seed=args.seed,
                             stop=args.stop, **sampler):
            if isinstance(item, Generation):
                result = item
            elif isinstance(item, Draft):
                if args.visual:  # the canvas settling, redrawn in place
                    text = item.text if item.text is not None else " ".join(map(str, item.tokens))
                    print(f"\x1b[2J\x1b[H[canvas {item.canvas + 1} step {item.step}]\n{text}", end="",
                          file=sys.stderr, flush=True)
                    printed_draft = True
                elif tty:
                    print(f"\rcanvas {item.canvas + 1}, step {item.step} ", end="", file=sys.stderr, flush=True)
            elif not args.json:
                if tty and not args.visual:
                    print("\r\x1b[K", end="", file=sys.stderr)
                print(item if isinstance(item, str) else " ".join(map(str, item)), end="", flush=True)
        if printed_draft:
            print("\x1b[2J\x1b[H", end="", file=sys.stderr)
        if tty and not args.visual:
            print("\r\x1b[K", end="", file=sys.stderr)
        if args.json:
            print(json.dumps(result.as_dict(), ensure_ascii=False))
        else:
            if args.visual and result.text is not None:
                print(result.text, end="")
            print()
            print(f"[{len(result.tokens)} tokens, {result.steps} steps, {result.tokens_per_forward:.2f} tokens/forward, "
                  f"{result.ms_per_step:.1f} ms/step, {result.finish_reason}]", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dgemma", description="Run Google's DiffusionGemma locally.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert a Hugging Face checkpoint to GGUF")
    c.add_argument("hf_dir", help="checkpoint directory (config.json, *.safetensors, tokenizer files)")
    c.add_argument("-o", "--output", required=True, help="GGUF file to write")
    c.add_argument("--type", default="bf16", choices=["f32", "f16", "bf16", "q8_0"], help="weight type (default bf16)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    c.set_defaults(func=_cmd_convert)

    i = sub.add_parser("info", help="print a GGUF model's hyperparameters")
    i.add_argument("model")
    i.set_defaults(func=_cmd_info)

    g = sub.add_parser("generate", help="generate text with the entropy-bound diffusion sampler")
    g.add_argument("text", nargs="?", help="the prompt (or -p; read from stdin when neither is given)")
    g.add_argument("-m", "--model", help="GGUF model file (default: the small demo model in the package)")
    g.add_argument("-p", "--prompt", help="the prompt")
    g.add_argument("-n", "--max-new-tokens", dest="n", type=int, default=256, help="at most this many tokens (256)")
    g.add_argument("--seed", type=int, default=None, help="random seed (same seed, same output)")
    g.add_argument("--steps", dest="max_denoising_steps", type=int, default=None, help="max denoising steps per canvas")
    g.add_argument("--t-min", type=float, default=None)
    g.add_argument("--t-max", type=float, default=None)
    g.add_argument("--entropy-bound", type=float, default=None)
    g.add_argument("--stability-threshold", type=int, default=None)
    g.add_argument("--confidence-threshold", type=float, default=None)
    g.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    g.add_argument("--chat", action="store_true", help="wrap the prompt as a user turn of the chat template")
    g.add_argument("--visual", action="store_true", help="show the canvas settling step by step")
    g.add_argument("--json", action="store_true", help="print text, tokens, steps, tokens/forward and timings as JSON")
    g.add_argument("--threads", type=int, default=None)
    g.set_defaults(func=_cmd_generate)

    d = sub.add_parser("demo", help="offline smoke run on a random-weight model built on the spot")
    d.add_argument("--preset", default="mini", choices=["tiny", "mini", "medium"])
    d.add_argument("--steps", type=int, default=8)
    d.add_argument("--prompt-tokens", type=int, default=128)
    d.add_argument("--threads", type=int, default=None)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)

    from . import cli_pull, cli_quantize, cli_tokenize

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
        print(f"dgemma: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dgemma: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
