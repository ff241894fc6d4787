"""`dgemma chat`: an interactive chat in the terminal. The conversation stays in the scheduler's
prefix cache, so each turn prefills only its new tokens; Ctrl-C stops the answer, not the program;
/reset starts over, /exit (or Ctrl-D) leaves."""

from __future__ import annotations

import argparse
import sys

from .cli_args import int_in, model_placement, placement_args, positive_int, warn_threads
from .cli_generate import SAMPLER_OPTIONS, add_sampler_flags

HELP = "commands: /reset (new conversation), /exit (or Ctrl-D); Ctrl-C stops an answer"


def register(subparsers) -> argparse.ArgumentParser:
    c = subparsers.add_parser("chat", help="chat with the model in the terminal (multi-turn)")
    c.add_argument("-m", "--model", help="GGUF model file (default: the small demo model in the package)")
    c.add_argument("-n", "--max-new-tokens", dest="max_new_tokens", type=positive_int, default=256,
                   help="at most this many tokens per answer (256)")
    c.add_argument("--seed", type=int_in(0, 2**64 - 1), default=None, help="random seed of the first answer "
                                                                           "(the next answers use seed+1, ...)")
    add_sampler_flags(c)
    c.add_argument("--visual", action="store_true", help="show the canvas settling step by step")
    c.add_argument("--threads", type=positive_int, default=None, help="threads (default: one per core)")
    placement_args(c)
    c.set_defaults(func=run, parser=c)
    return c


def answer(m, sched, messages, args, seed, view, out) -> str | None:
    """One turn: streams the answer's text to `out`; None when Ctrl-C stopped it."""
    from .generate import _Prompt, sampler_params

    prompt = _Prompt(m, messages, None)
    tok = m.tokenizer
    decoder = tok.stream_decoder(skip_special=True)
    pieces: list[str] = []
    c = m.config
    room = (c.n_ctx - len(prompt.ids)) // c.canvas_length * c.canvas_length
    if room <= 0:
        print("(the conversation fills the model's context: /reset to start over)", file=sys.stderr)
        return ""

    def on_canvas(tokens):
        piece = decoder.push(tokens)
        if view is not None:
            view.erase()
        out.write(piece)
        out.flush()
        pieces.append(piece)
        return False

    def on_step(step, draft):  # returns to Python every step, so that Ctrl-C is seen at once
        if view is not None and draft is not None:
            view.draw(f"[step {step}]", "".join(pieces) + tok.decode(draft.tolist(), skip_special=True))
        return False

    sampler = {k: getattr(args, k) for k in SAMPLER_OPTIONS}
    req = sched.submit(prompt.ids, sampler_params(m, seed, **sampler), min(args.max_new_tokens, room), prompt.eos,
                       on_canvas=on_canvas, on_step=on_step, drafts=view is not None)
    sched.run()
    if view is not None:
        view.erase()
    out.write("\n")
    if isinstance(req.error, KeyboardInterrupt):
        print("(stopped)", file=sys.stderr)
        return None
    if req.error is not None:
        raise req.error
    r = req.result
    print(f"[{r.n_tokens} tokens, {r.n_steps} steps; prompt {len(prompt.ids)} tokens, {r.n_prompt_cached} "
          f"of them from the previous turns' cache]", file=sys.stderr)
    return "".join(pieces)


def run(args) -> int:
    import random

    from . import demo_model_path
    from .cli_terminal import CanvasView
    from .model import Model
    from .scheduler import Scheduler

    warn_threads(args.threads)
    seed = args.seed if args.seed is not None else random.getrandbits(63)
    path = args.model or demo_model_path()
    with Model(path, threads=args.threads, **model_placement(args, path)) as m, \
            Scheduler(m, max_batch=1, prefix_cache=2) as sched:
        view = CanvasView(sys.stderr, 0.0) if args.visual and sys.stderr.isatty() else None
        if sys.stdin.isatty():
            print(HELP, file=sys.stderr)
        messages: list[dict] = []
        while True:
            try:
                line = input("> " if sys.stdin.isatty() else "")
            except EOFError:
                break
            except KeyboardInterrupt:
                print(file=sys.stderr)
                continue
            text = line.strip()
            if not text:
                continue
            if text == "/exit":
                break
            if text == "/reset":
                messages = []
                print("(new conversation)", file=sys.stderr)
                continue
            if text.startswith("/"):
                print(f"unknown command {text.split()[0]}; {HELP}", file=sys.stderr)
                continue
            messages.append({"role": "user", "content": text})
            try:
                reply = answer(m, sched, messages, args, seed, view, sys.stdout)
            except KeyboardInterrupt:  # between steps, outside the core
                reply = None
                print("\n(stopped)", file=sys.stderr)
            seed = (seed + 1) % 2**64
            if reply is None:
                messages.pop()  # the question goes unanswered: not part of the conversation
            else:
                messages.append({"role": "assistant", "content": reply})
    return 0
