"""`dgemma generate`: text from a model (the bundled demo model by default), streamed as canvases commit."""

from __future__ import annotations

import argparse
import json
import sys

from .cli_args import (finite_float, int_in, model_placement, nonnegative_float, placement_args, positive_int, typed_flag,
                       warn_threads)

SAMPLER_OPTIONS = ("max_denoising_steps", "t_min", "t_max", "entropy_bound", "stability_threshold",
                   "confidence_threshold")


def add_sampler_flags(p: argparse.ArgumentParser) -> None:
    """The sampler options (SAMPLER_OPTIONS), defaulting to the file's diffusion.* keys."""
    p.add_argument("--steps", dest="max_denoising_steps", type=positive_int, default=None,
                   help="max denoising steps per canvas")
    p.add_argument("--t-min", type=finite_float, default=None)
    p.add_argument("--t-max", type=finite_float, default=None)
    p.add_argument("--entropy-bound", type=finite_float, default=None)
    p.add_argument("--stability-threshold", type=int_in(0), default=None)
    p.add_argument("--confidence-threshold", type=finite_float, default=None)


def register(subparsers) -> argparse.ArgumentParser:
    g = subparsers.add_parser("generate", help="generate text with the entropy-bound diffusion sampler")
    g.add_argument("text", nargs="?", help="the prompt (or -p; else read from stdin, without its final newline)")
    g.add_argument("-m", "--model", help="GGUF model file (default: the small demo model in the package)")
    g.add_argument("-p", "--prompt", help="the prompt")
    g.add_argument("-n", "--max-new-tokens", dest="max_new_tokens", type=positive_int, default=256,
                   help="at most this many tokens (256); more than the context holds after the prompt is an error")
    g.add_argument("--seed", type=int_in(0, 2**64 - 1), default=None, help="random seed (same seed, same output)")
    add_sampler_flags(g)
    g.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    fmt = g.add_mutually_exclusive_group()
    fmt.add_argument("--chat", action="store_true", help="wrap the prompt as a user turn of the chat template "
                                                         "(the default when the file's dgemma.prompt_format is chat)")
    fmt.add_argument("--raw", action="store_true", help="pass the prompt as it is, even to a chat-format model")
    g.add_argument("--visual", action="store_true", help="show the canvas settling step by step (on a terminal)")
    g.add_argument("--visual-delay", type=nonnegative_float, default=0.05, metavar="SECONDS",
                   help="pause after each --visual frame (default 0.05)")
    g.add_argument("--json", action="store_true", help="print text, tokens, steps, tokens/forward and timings as JSON")
    g.add_argument("--threads", type=positive_int, default=None, help="threads (default: one per core)")
    placement_args(g)
    g.set_defaults(func=run, parser=g)
    return g


def _read_prompt(args) -> str:
    if args.prompt is not None and args.text is not None:
        args.parser.error("give the prompt once: as TEXT or with -p/--prompt")
    if args.prompt is not None or args.text is not None:
        return args.prompt if args.prompt is not None else args.text
    if sys.stdin is None:
        args.parser.error("no prompt: give TEXT, -p, or pipe it to standard input")
    if sys.stdin.isatty():
        print("reading the prompt from standard input; end with Ctrl-D", file=sys.stderr)
    text = sys.stdin.read()
    return text[:-1] if text.endswith("\n") else text  # the newline that ends a typed or echoed line


def _check_room(args, m, prompt) -> None:
    """-n past the context is an error that states the limit (never a silent cap)."""
    from .generate import _Prompt

    c = m.config
    n_prompt = len(_Prompt(m, prompt, None).ids)
    room = (c.n_ctx - n_prompt) // c.canvas_length * c.canvas_length
    if args.max_new_tokens > room:
        flag = typed_flag(["-n", "--max-new-tokens"])
        if room <= 0:
            args.parser.error(f"the {n_prompt}-token prompt leaves no room for a {c.canvas_length}-token canvas "
                              f"in this model's context of {c.n_ctx} tokens")
        args.parser.error(f"{flag} {args.max_new_tokens}: at most {room} new tokens fit after this {n_prompt}-token "
                          f"prompt (context {c.n_ctx}, canvases of {c.canvas_length})")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _stats(result) -> str:
    tokens = _plural(len(result.tokens), "token") + (" + EOS" if result.eos_generated else "")
    return (f"[{tokens}, {_plural(result.steps, 'step')}, {result.tokens_per_forward:.2f} tokens/forward, "
            f"{result.ms_per_step:.1f} ms/step, {result.finish_reason}]")


def _nothing_came(result) -> str:
    why = ("it ended its answer at once" if result.eos_generated else
           "it produced only padding, which means the prompt is not in a format it knows; "
           "`dgemma info` shows the model's prompt format and examples")
    return f"(the model produced no text: {why})"


def run(args: argparse.Namespace) -> int:
    from . import demo_model_path
    from .cli_terminal import CanvasView, ProgressLine
    from .generate import Draft, Generation
    from .model import Model

    warn_threads(args.threads)
    prompt = _read_prompt(args)
    sampler = {k: getattr(args, k) for k in SAMPLER_OPTIONS}
    out, err = sys.stdout, sys.stderr
    path = args.model or demo_model_path()
    with Model(path, threads=args.threads, **model_placement(args, path)) as m:
        if args.chat or (m.prompt_format == "chat" and not args.raw):
            prompt = [{"role": "user", "content": prompt}]
        _check_room(args, m, prompt)
        view = CanvasView(err, args.visual_delay) if args.visual and err.isatty() else None
        progress = ProgressLine(err, shares_screen=out.isatty()) if view is None else None
        streamed = not args.json and not args.visual  # --visual writes the final text once, at the end
        result, committed, wrote = None, "", False
        stream = m.stream(prompt, drafts=view is not None or (progress is not None and progress.enabled),
                          max_new_tokens=args.max_new_tokens, seed=args.seed, stop=args.stop, **sampler)
        try:
            for item in stream:
                if isinstance(item, Generation):
                    result = item
                elif isinstance(item, Draft):
                    if view is not None:
                        draft = item.text if item.text is not None else " ".join(map(str, item.tokens))
                        view.draw(f"[canvas {item.canvas + 1}, step {item.step}]", committed + draft)
                    else:
                        progress.step(item.canvas + 1, item.step)
                else:
                    piece = item if isinstance(item, str) else " ".join(map(str, item)) + " "
                    committed += piece
                    if streamed and piece:
                        progress.before_text()
                        out.write(piece)
                        out.flush()
                        wrote = True
        finally:
            stream.close()
            if view is not None:
                view.erase()
            if progress is not None:
                progress.clear()
    if args.json:
        print(json.dumps(result.as_dict(), ensure_ascii=False))
        return 0
    if not streamed:
        text = result.text if result.text is not None else " ".join(map(str, result.tokens))
        out.write(text)
        wrote = bool(text)
    if wrote:
        out.write("\n")
        out.flush()
    if not result.tokens:
        print(_nothing_came(result), file=err)
    print(_stats(result), file=err)
    return 0
