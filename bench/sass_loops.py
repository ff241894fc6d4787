"""The hot loop of CUDA kernels in SASS, counted: one table of kernel, instructions in its longest
loop (the largest body that ends in a backward branch), tensor-core instructions, global loads,
barriers, calls (64-bit integer division and the like go through calls) and registers.

A static count, no GPU needed: the machine code nvcc makes for sm_90, read with cuobjdump. It says how
much work each chunk of a kernel's main loop issues, which is what bounds the issue-limited kernels
(bench/results/cuda-notes.md, runs 10-11); a device run says what that buys.

    python bench/sass_loops.py                      # the matrix, expert and attention kernels
    python bench/sass_loops.py --kernels gate_up_mma_kernel soft_embed --sources moe.cu matmul.cu

Needs nvcc and cuobjdump on PATH (cuobjdump: the CUDA toolkit, or the nvidia-cuda-cuobjdump wheel:
`pip download --no-deps nvidia-cuda-cuobjdump -d /tmp/w`, unzip it, add its nvidia/cu13/bin to PATH).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["matmul.cu", "moe.cu", "attention.cu", "int8_mma.cu"]
KERNELS = ["matmul_mma_kernel", "matmul_qmma_kernel", "gate_up_mma_kernel", "gate_up_qmma_kernel", "down_mma_kernel",
           "down_qmma_kernel", "soft_embed_mma_kernel", "route_logits", "attention_mma_kernel", "i8_matmul_kernel",
           "i8_gate_up_kernel", "i8_down_kernel"]
TYPES = {"0": "F32", "1": "F16", "2": "Q4_0", "3": "Q4_1", "6": "Q5_0", "7": "Q5_1", "8": "Q8_0", "12": "Q4_K",
         "13": "Q5_K", "14": "Q6_K", "30": "BF16"}
INSTRUCTION = re.compile(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")


def compile_sass(source: str, out_dir: Path) -> tuple[str, str]:
    """(SASS text, ptxas -v output) of native/src/cuda/<source> for sm_90."""
    obj = out_dir / (source + ".o")
    ptxas = subprocess.run(["nvcc", "-I", str(ROOT / "native/include"), "-I", str(ROOT / "native/src"), "-O3", "-DNDEBUG",
                            "-std=c++17", "--generate-code=arch=compute_90,code=[sm_90]", "-Xptxas", "-v", "-x", "cu", "-c",
                            str(ROOT / "native/src/cuda" / source), "-o", str(obj)],
                           capture_output=True, text=True, check=True).stderr
    return subprocess.run(["cuobjdump", "-sass", str(obj)], capture_output=True, text=True, check=True).stdout, ptxas


def registers(ptxas: str) -> dict[str, int]:
    out, name = {}, None
    for line in ptxas.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            name = m.group(1)
        m = re.search(r"Used (\d+) registers", line)
        if m and name:
            out[name] = int(m.group(1))
    return out


def longest_loop(body: str) -> list[str]:
    ins = [(int(m.group(1), 16), m.group(2)) for m in map(INSTRUCTION.match, body.splitlines()) if m]
    at = {a: i for i, (a, _) in enumerate(ins)}
    best: list[str] = []
    for i, (a, s) in enumerate(ins):
        m = re.search(r"BRA\s.*?0x([0-9a-f]+)", s)
        if m and int(m.group(1), 16) < a and int(m.group(1), 16) in at:
            loop = [t for _, t in ins[at[int(m.group(1), 16)]:i + 1]]
            if len(loop) > len(best):
                best = loop
    return best


def label(mangled: str) -> str:
    """kernel<type, n> from a mangled name: the nested name's length-prefixed parts read in turn (an
    anonymous namespace's hash may end in digits), the last one the kernel's, then its template
    arguments."""
    i = mangled.find("_ZN")
    if i < 0:
        return mangled[:60]
    i += 3
    name = ""
    while i < len(mangled) and mangled[i].isdigit():
        j = i
        while mangled[j].isdigit():
            j += 1
        n = int(mangled[i:j])
        name, i = mangled[j:j + n], j + n
    if not name:
        return mangled[:60]
    a = re.match(r"(?:ILNS_10TensorTypeE(\d+)E(?:Li(\d+)E)?|ILi(\d+)E)?", mangled[i:])
    t, n, d = a.groups()
    return name + (f"<{TYPES.get(t, t)}{', ' + n if n else ''}>" if t else f"<{d}>" if d else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", nargs="+", default=SOURCES, help="files of native/src/cuda")
    ap.add_argument("--kernels", nargs="+", default=KERNELS, help="kernel names (substrings)")
    args = ap.parse_args()
    for tool in ("nvcc", "cuobjdump"):
        if not shutil.which(tool):
            print(f"sass_loops: {tool} is not on PATH (see the docstring)", file=sys.stderr)
            return 2
    print(f"{'kernel':40} {'loop':>6} {'mma':>5} {'loads':>6} {'bar':>4} {'calls':>6} {'regs':>5}")
    with tempfile.TemporaryDirectory() as d:
        for source in args.sources:
            sass, ptxas = compile_sass(source, Path(d))
            regs = registers(ptxas)
            for fn in sass.split("Function : ")[1:]:
                name = fn.split("\n", 1)[0].strip()
                if not any(k in name for k in args.kernels):
                    continue
                loop = longest_loop(fn)
                count = lambda key: sum(key in s for s in loop)  # noqa: E731
                print(f"{label(name):40} {len(loop):6d} {count('MMA'):5d} {count('LDG'):6d} {count('BAR'):4d} "
                      f"{count('CALL'):6d} {regs.get(name, 0):5d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
