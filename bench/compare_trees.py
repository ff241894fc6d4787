"""The decoder step, the sampler and prefill of two builds of dgemma, measured alternately in one run.

For a change to the core (a new backend seam, a kernel): `--before` names another checkout of this
repository with its library built (`cmake -S . -B build/dev -G Ninja && cmake --build build/dev`),
the current tree is "after". Each round runs one worker process per tree on the same random-weight
model file: a 512-token prompt, then one canvas of `--steps` denoising steps with the early stop off
(self-conditioning on, the sampler in the loop: the generation path users run). Rounds alternate the
two trees so that a noisy machine slows both alike; the table gives the medians and the ratio.

    python bench/compare_trees.py --before ../old-checkout [--config medium] [--type Q8_0] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys, time
# An editable install of dgemma puts a finder ahead of sys.path; this worker must import its own tree.
sys.meta_path = [f for f in sys.meta_path if "_editable_" not in getattr(f, "__module__", "")]
import numpy as np
import dgemma
path, steps = sys.argv[1], int(sys.argv[2])
with dgemma.Model(path) as m:
    c = m.config
    prompt = list(np.random.default_rng(0).integers(0, c.n_vocab, 512))
    # Warm-up: first passes of each size grow scratch (a one-time cost, not the steady state).
    m.generate(prompt, max_new_tokens=c.canvas_length, max_denoising_steps=2, confidence_threshold=0.0, seed=1)
    s = m.session()
    t0 = time.perf_counter(); s.prefill(prompt); prefill = time.perf_counter() - t0
    s.close()
    g = m.generate(prompt, max_new_tokens=c.canvas_length, max_denoising_steps=steps, confidence_threshold=0.0, seed=1)
    assert dgemma.__file__.startswith(sys.argv[3]), dgemma.__file__
    print(json.dumps({"steps": g.steps, "decode_ms": 1e3 * g.decode_seconds / g.steps,
                      "sample_ms": 1e3 * g.sample_seconds / g.steps, "prefill_tok_s": 512 / prefill}))
"""


def run_worker(tree: Path, model: str, steps: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree / "python"), DGEMMA_LIBRARY=str(tree / "build/dev/libdgemma.so"),
               DGEMMA_DEV="1")
    out = subprocess.run([sys.executable, "-c", WORKER, model, str(steps), str(tree)], env=env, capture_output=True, text=True,
                         cwd=tree)
    if out.returncode:
        raise SystemExit(f"worker for {tree} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="another checkout, its library built in build/dev")
    ap.add_argument("--config", default="medium", choices=["tiny", "mini", "medium"])
    ap.add_argument("--type", default="Q8_0", help="weight type of the matrices (F32, F16, BF16, Q8_0)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    trees = {"before": args.before.resolve(), "after": HERE}
    for name, tree in trees.items():
        if not (tree / "build/dev/libdgemma.so").exists():
            raise SystemExit(f"{name}: {tree}/build/dev/libdgemma.so is missing: build it first")
    sys.path.insert(0, str(HERE / "python"))
    os.environ.setdefault("DGEMMA_LIBRARY", str(HERE / "build/dev/libdgemma.so"))  # this tree's build
    from dgemma.convert.random_model import write_random_gguf

    results = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        model = f"{tmp}/{args.config}-{args.type}.gguf"
        write_random_gguf(model, args.config, args.type, seed=0)
        for _ in range(args.rounds):
            for name, tree in trees.items():
                results[name].append(run_worker(tree, model, args.steps))
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in results.items()}
    print(f"{args.config}, {args.type} weights, {os.cpu_count()} threads, median of {args.rounds} alternating rounds\n")
    print("| measure | before | after | after / before |")
    print("|---|---|---|---|")
    for key, label in (("decode_ms", "decoder step (ms)"), ("sample_ms", "sampler step (ms)"),
                       ("prefill_tok_s", "prefill, 512 tokens (tokens/s)")):
        b, a = med["before"][key], med["after"][key]
        print(f"| {label} | {b:.1f} | {a:.1f} | {a / b:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
