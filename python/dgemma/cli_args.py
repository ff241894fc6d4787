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


# Without an offload flag, a model is fitted into this share of its GPU's free memory: the
# accounting leaves out the CUDA backend's op scratch (0.1-0.2 GB at the 26B shapes).
AUTO_FIT_SHARE = 0.95


def model_placement(args, path: str, n_batch: int = 1) -> dict:
    """Model() keywords from placement_args' flags: device, host_expert_layers, expert_offload.
    --n-cpu-moe and --gpu-memory say how many layers' experts stay in host memory; without them, a
    GPU the model does not fit gets the N --gpu-memory would choose for its free memory (said on
    standard error), and with --device auto a GPU it does not fit even so is passed over for the CPU.
    n_batch: the canvases the command decodes together (a server's --parallel)."""
    from .devices import resolve_device
    from .errors import InvalidArgumentError
    from .offload import host_expert_layers_for

    flag = ("--n-cpu-moe" if args.n_cpu_moe is not None else "--gpu-memory" if args.gpu_memory is not None
            else "--moe-offload" if args.moe_offload is not None else None)
    device = resolve_device(args.device)
    placement = dict(device=device, host_expert_layers=0, expert_offload=args.moe_offload)
    if device == "cpu":
        if flag is not None:
            what = "says how experts offloaded from a GPU run" if flag == "--moe-offload" else "moves experts off a GPU"
            raise InvalidArgumentError(f"{flag} {what}, and this run is on the CPU (--device "
                                       f"{args.device}{': no usable GPU' if args.device == 'auto' else ''})")
        return placement
    if args.n_cpu_moe is not None:
        placement["host_expert_layers"] = args.n_cpu_moe
    elif args.gpu_memory is not None:
        n = host_expert_layers_for(path, int(args.gpu_memory * 1e9), args.moe_offload, n_batch)
        print(f"--gpu-memory {args.gpu_memory:g}: the experts of the last {n} layers stay in host memory", file=sys.stderr)
        placement["host_expert_layers"] = n
    else:
        free = _free_memory(device)
        if free is not None:
            n = fit_experts(path, device, int(free * AUTO_FIT_SHARE), args.moe_offload, fall_back=args.device == "auto",
                            n_batch=n_batch)
            if n is None:
                placement["device"] = "cpu"
            else:
                placement["host_expert_layers"] = n
    return placement


def fit_experts(path: str, device: str, gpu_bytes: int, expert_offload: str | None, fall_back: bool,
                n_batch: int = 1) -> int | None:
    """0 when the model fits in `gpu_bytes` of `device`, else the N --gpu-memory would choose for them,
    said on standard error. When even every layer's experts in host memory leave it too large: None
    (the CPU instead, said) with `fall_back`, else OutOfMemoryError naming the shortfall."""
    from .errors import OutOfMemoryError
    from .offload import device_bytes_needed, host_expert_layers_for

    need = device_bytes_needed(path, 0, expert_offload, n_batch)
    if need <= gpu_bytes:
        return 0
    try:
        n = host_expert_layers_for(path, gpu_bytes, expert_offload, n_batch)
    except OutOfMemoryError as e:
        if not fall_back:
            raise OutOfMemoryError(f"{device}: {e}; --device cpu runs it on the CPU") from None
        print(f"{device}: {e}; running on the CPU", file=sys.stderr)
        return None
    print(f"{device}: the model needs {need / 1e9:.1f} GB and {gpu_bytes / 1e9:.1f} GB can be used: the experts of "
          f"the last {n} layers stay in host memory (--n-cpu-moe N chooses, 0 for none)", file=sys.stderr)
    return n


def _free_memory(device: str) -> int | None:
    """Free bytes on CUDA device `device` ("cuda" is device 0), or None when it is not listed (the
    core names it when the model loads)."""
    from .devices import cuda_devices

    index = int(device.split(":")[1]) if ":" in device else 0
    return next((g.free_memory for g in cuda_devices() if g.index == index), None)


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
