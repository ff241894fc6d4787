"""A/B timing of the CPU prefill between builds of libdgemma: interleaved rounds, one process per
(round, library), each timing `--prefills` prefills of `--prompt` random tokens after a warm-up.

    python bench/prefill_ab.py --gguf /tmp/med/Q8_0.gguf --rounds 6 /tmp/old.so build/dev/libdgemma.so

The medium files: see bench/bench_step.py (or /work/notes/prof_step.py's build()). Prints, per
library, each round's median and the median of medians and minimum over all rounds. The machine
is shared and noisy: compare medians of medians and minimums over several rounds."""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import sys, time
import numpy as np
import dgemma
path, prompt_len, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
with dgemma.Model(path, threads=threads) as m:
    prompt = rng.integers(0, m.config.n_vocab, prompt_len)
    s = m.session(); s.prefill(prompt); s.close()  # warm-up: scratch grown, pages touched
    ts = []
    for _ in range(n):
        s = m.session(); t0 = time.perf_counter(); s.prefill(prompt); ts.append(time.perf_counter() - t0); s.close()
    print(sorted(ts)[len(ts) // 2], min(ts))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--prefills", type=int, default=10)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("libs", nargs="+")
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[1]
    med = {lib: [] for lib in args.libs}
    low = {lib: [] for lib in args.libs}
    for _ in range(args.rounds):
        for lib in args.libs:
            env = dict(os.environ, DGEMMA_DEV="1", DGEMMA_LIBRARY=str(Path(lib).resolve()), PYTHONPATH=str(root / "python"))
            out = subprocess.run([sys.executable, "-c", CHILD, args.gguf, str(args.prompt), str(args.prefills), str(args.threads)],
                                 env=env, capture_output=True, text=True, check=True).stdout.split()
            med[lib].append(1e3 * float(out[0]))
            low[lib].append(1e3 * float(out[1]))
    for lib in args.libs:
        m, lo = statistics.median(med[lib]), min(low[lib])
        print(f"{lib}: medians {[round(v, 1) for v in sorted(med[lib])]} median of medians {m:.1f} ms "
              f"({args.prompt / m * 1e3:.0f} tok/s), min {lo:.1f} ms")


if __name__ == "__main__":
    main()
