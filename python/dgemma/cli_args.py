"""Argument checking shared by the `dgemma` subcommands: typed values that name the flag, usage
errors on one line, and core / API messages rewritten to name the flags the user typed."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys

INT32_MAX = 2**31 - 1


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2) that name the spelling of a flag the user typed."""

    def error(self, message: str):
        message = re.sub(r"argument ((?:-\S+/)+-\S+):", lambda m: f"argument {typed_flag(m.group(1).split('/'))}:",
                         message)
        self.exit(2, f"{self.prog}: error: {message}\n")


def typed_flag(option_strings, argv=None) -> str:
    """The spelling among `option_strings` that appears on the command line (else the longest)."""
    argv = sys.argv[1:] if argv is None else argv
    for arg in argv:
        for opt in option_strings:
            if arg == opt or (opt.startswith("--") and arg.startswith(opt + "=")) or \
                    (not opt.startswith("--") and arg.startswith(opt) and len(opt) == 2):
                return opt
    return max(option_strings, key=len)


def int_in(lo: int, hi: int = INT32_MAX):
    """An argparse type: an integer in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo} to {hi}, got {text}")
        return value
    return parse


positive_int = int_in(1)


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def device_arg(parser) -> None:
    """--device on a command that runs a model."""
    parser.add_argument("--device", type=device_name, default="auto",
                        help='where to run: auto (a CUDA GPU when one can be used, else the CPU), cpu, cuda or cuda:N')


def offload_args(parser) -> None:
    """--n-cpu-moe / --gpu-memory / --moe-offload on a command with --device: expert offload
    (dgemma/offload.py)."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--n-cpu-moe", dest="n_cpu_moe", type=int_in(0, 100000), default=None, metavar="N",
                   help="keep the experts of the last N layers in host memory (a GPU smaller than the model)")
    g.add_argument("--gpu-memory", dest="gpu_memory", type=float, default=None, metavar="GB",
                   help="choose --n-cpu-moe so that the model fits in this many GB of GPU memory")
    parser.add_argument("--moe-offload", dest="moe_offload", choices=("cpu", "stream"), default=None,
                        help="how the experts in host memory run: cpu (computed by the CPU) or stream "
                             "(copied to the GPU for each step and computed there)")


def placement_args(parser) -> None:
    """--device and the expert-offload flags: where a command that runs a model runs it."""
    device_arg(parser)
    offload_args(parser)


def model_placement(args, path: str) -> dict:
    """Model() keywords from placement_args' flags: device, host_expert_layers, expert_offload."""
    return dict(device=args.device, host_expert_layers=host_expert_layers(args, path), expert_offload=args.moe_offload)


def host_expert_layers(args, path: str) -> int:
    """The N of --n-cpu-moe or the one --gpu-memory chooses (0 without either); both need a GPU, and
    --moe-offload needs one of them."""
    from .devices import resolve_device
    from .errors import InvalidArgumentError
    from .offload import host_expert_layers_for

    flag = "--n-cpu-moe" if args.n_cpu_moe is not None else "--gpu-memory" if args.gpu_memory is not None else None
    if flag is None:
        if args.moe_offload is not None:
            raise InvalidArgumentError("--moe-offload says how offloaded experts run; give --n-cpu-moe or --gpu-memory "
                                       "to offload some")
        return 0
    if resolve_device(args.device) == "cpu":
        raise InvalidArgumentError(f"{flag} moves experts off a GPU, and this run is on the CPU (--device "
                                   f"{args.device}{': no usable GPU' if args.device == 'auto' else ''})")
    if args.n_cpu_moe is not None:
        return args.n_cpu_moe
    n = host_expert_layers_for(path, int(args.gpu_memory * 1e9), args.moe_offload)
    print(f"--gpu-memory {args.gpu_memory:g}: the experts of the last {n} layers stay in host memory", file=sys.stderr)
    return n


def device_name(text: str) -> str:
    if text in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d{1,4}", text):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")


def warn_threads(threads: int | None, flag: str = "--threads") -> None:
    """More threads than cores only makes each step wait on the slowest: say so, once."""
    cores = os.cpu_count() or 1
    if threads is not None and threads > cores:
        print(f"dgemma: warning: {flag} {threads} is more than the {cores} cores of this machine; "
              f"expect it to run slower than with {cores}", file=sys.stderr)


def name_flags(message: str, parser: argparse.ArgumentParser, argv=None) -> str:
    """`message` with each Python parameter name that is also this command's option dest replaced by
    the flag the user typed (e.g. max_new_tokens -> -n)."""
    for action in parser._actions:
        if action.option_strings and ("_" in action.dest or action.dest in ("seed", "threads")):
            message = re.sub(rf"\b{action.dest}\b", typed_flag(action.option_strings, argv), message)
    return message
