"""`dgemma infill` and `dgemma edit`: fixed text around holes, only the holes denoised (issue 14)."""

from __future__ import annotations

import argparse
import json
import sys

from .cli_args import int_in, model_placement, nonnegative_float, placement_args, positive_int, typed_flag, warn_threads

HOLE_START, HOLE_END = "\u27e6", "\u27e7"  # --visual brackets each run of denoising positions: ⟦ ⟧


def _common(p) -> None:
    p.add_argument("-m", "--model", help="GGUF model file (default: the small demo model in the package)")
    p.add_argument("--prompt", help="what the text answers: a user turn for chat-format models, read before the text")
    p.add_argument("--max-hole-tokens", dest="max_hole_tokens", type=positive_int, default=None,
                   help="tokens per hole at most (default: half a canvas)")
    p.add_argument("--hole-length", dest="hole_length", choices=["eos", "scored"], default="eos",
                   help="how a hole's length is found: EOS inside the hole (default), or every length "
                        "scored (one hole only)")
    p.add_argument("--seed", type=int_in(0, 2**64 - 1), default=None, help="random seed (same seed, same output)")
    p.add_argument("--visual", action="store_true",
                   help=f"show each step's canvas; denoising positions between {HOLE_START} {HOLE_END} (standard error)")
    p.add_argument("--visual-delay", type=nonnegative_float, default=0.05, metavar="SECONDS",
                   help="pause after each --visual frame (default 0.05)")
    p.add_argument("--json", action="store_true", help="print the text, each hole's text and the steps as JSON")
    p.add_argument("--threads", type=positive_int, default=None, help="threads (default: one per core)")
    placement_args(p)


def register(subparsers) -> None:
    i = subparsers.add_parser("infill", help="write the text between a prefix and a suffix")
    i.add_argument("--prefix", required=True, help="the text before the hole (read in encoder mode)")
    i.add_argument("--suffix", required=True, help="the text after the hole (fixed in the canvas)")
    _common(i)
    i.set_defaults(func=run_infill, parser=i)

    e = subparsers.add_parser("edit", help="rewrite character spans of a file, everything else kept")
    e.add_argument("file", help="the text file (read as UTF-8; never written: the result goes to standard output)")
    e.add_argument("--span", action="append", required=True, metavar="START:END",
                   help="character offsets of a span to rewrite (repeatable)")
    _common(e)
    e.set_defaults(func=run_edit, parser=e)


def _span(args, text: str) -> tuple[int, int]:
    try:
        start, end = (int(v) for v in text.split(":"))
    except ValueError:
        args.parser.error(f"{typed_flag(['--span'])} {text}: expected START:END, two character offsets")
    return start, end


def _prompt(m, args):
    if args.prompt is None:
        return None
    return [{"role": "user", "content": args.prompt}] if m.prompt_format == "chat" else args.prompt


def _visual(m, args, err):
    """on_draft for --visual: the canvas with each run of denoising positions bracketed."""
    from .cli_terminal import CanvasView

    if not args.visual:
        return None, None
    view = CanvasView(err, args.visual_delay) if err.isatty() else None
    tok, frame = m.tokenizer, [0]

    def on_draft(tokens, fixed):
        frame[0] += 1
        pieces, i = [], 0
        while i < len(tokens):
            j = i
            while j < len(tokens) and fixed[j] == fixed[i]:
                j += 1
            text = tok.decode(tokens[i:j], skip_special=True)
            pieces.append(text if fixed[i] else HOLE_START + text + HOLE_END)
            i = j
        line = "".join(pieces)
        if view is not None:
            view.draw(f"[step {frame[0]}]", line)
        else:
            err.write(f"[step {frame[0]}] {line}\n")
    return on_draft, view


def _run(args, call) -> int:
    from . import demo_model_path
    from .model import Model

    warn_threads(args.threads)
    out, err = sys.stdout, sys.stderr
    path = args.model or demo_model_path()
    with Model(path, threads=args.threads, **model_placement(args, path)) as m:
        on_draft, view = _visual(m, args, err)
        try:
            result = call(m, _prompt(m, args), on_draft)
        finally:
            if view is not None:
                view.erase()
    if args.json:
        print(json.dumps(result.as_dict(), ensure_ascii=False))
        return 0
    out.write(result.text + ("" if result.text.endswith("\n") else "\n"))
    print(f"[{len(result.fills)} hole{'s' if len(result.fills) != 1 else ''}: "
          + ", ".join(json.dumps(f, ensure_ascii=False) for f in result.fills)
          + f"; {result.steps} steps, {result.canvases} canvases]", file=err)
    return 0


def run_infill(args: argparse.Namespace) -> int:
    from .infill import default_hole_tokens, infill_parts, run

    def call(m, prompt, on_draft):
        parts = infill_parts(args.prefix, args.suffix, default_hole_tokens(m, args.max_hole_tokens))
        return run(m, prompt, parts, hole_length=args.hole_length, seed=args.seed, on_draft=on_draft)
    return _run(args, call)


def run_edit(args: argparse.Namespace) -> int:
    from .infill import default_hole_tokens, edit_parts, run

    try:
        with open(args.file, encoding="utf-8", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        args.parser.error(f"cannot read {args.file}: {e.strerror if isinstance(e, OSError) else 'not UTF-8 text'}")
    spans = [_span(args, s) for s in args.span]

    def call(m, prompt, on_draft):
        parts = edit_parts(text, spans, default_hole_tokens(m, args.max_hole_tokens))
        return run(m, prompt, parts, hole_length=args.hole_length, seed=args.seed, on_draft=on_draft)
    return _run(args, call)
