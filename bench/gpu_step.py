"""One denoising step and a 512-token prefill on CUDA against the CPU backend, same file, same run.

The baseline for the issue "GPU speed at full 26B-A4B scale": random models of a benchmark config
(convert/random_model.py's random blocks in a quantize recipe's types; --config full is the 26B-A4B,
about 16 GB at Q4_K_M, written in well under a minute) as Q8_0 and Q4_K_M, a 512-token
prompt, one canvas, self-conditioning on, median of --steps steps after a warm-up; the CPU on all
cores. CUDA runs three times: DGEMMA_CUDA_KERNELS=float (float32 tiles), =reference (per-row kernels)
and =tensor (bf16 tensor-core tiles, the default from compute capability 8.0).
Prints one table: the figures, the CPU from the same run, the ratios; then, with --profile, the
device time per op of one more CUDA run with the default set (DGEMMA_CUDA_PROFILE, on stderr).

    python bench/gpu_step.py [--config medium] [--steps 5] [--types Q8_0,Q4_K_M] [--no-cpu] [--profile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
import dgemma  # noqa: E402
from dgemma.convert.random_model import PRESETS, write_random_blocks_gguf  # noqa: E402


def median_ms(fn, reps: int) -> float:
    fn()  # warm-up: module load, first-touch, workspace reserve
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def measure(path: Path, device: str, steps: int, prompt_len: int, **env: str) -> tuple[float, float]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # read when the CUDA backend is made
    try:
        return _measure(path, device, steps, prompt_len)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _measure(path: Path, device: str, steps: int, prompt_len: int) -> tuple[float, float]:
    with dgemma.Model(path, device=device, threads=os.cpu_count()) as m:
        c = m.config
        rng = np.random.default_rng(0)
        prompt = rng.integers(0, c.n_vocab, prompt_len)
        canvas = rng.integers(0, c.n_vocab, c.canvas_length)

        def prefill():
            s = m.session()
            s.prefill(prompt)
            s.close()

        s = m.session()
        s.prefill(prompt)
        z = s.denoise(canvas)
        step = median_ms(lambda: s.denoise(canvas, z), steps)  # returns logits to the host: the synchronization
        return median_ms(prefill, max(3, steps // 2)), step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="medium", choices=sorted(PRESETS))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--types", default="Q8_0,Q4_K_M")
    ap.add_argument("--profile", action="store_true", help="then one CUDA run of the last type with DGEMMA_CUDA_PROFILE=1")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU reference (slow at the full shapes)")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for t in a.types.split(","):
            path = Path(d) / f"{t}.gguf"
            write_random_blocks_gguf(str(path), a.config, t, seed=1, progress=None)
            cpu = (float("nan"), float("nan")) if a.no_cpu else measure(path, "cpu", a.steps, a.prompt)
            cuda = measure(path, "cuda", a.steps, a.prompt, DGEMMA_CUDA_KERNELS="float")
            ref = measure(path, "cuda", a.steps, a.prompt, DGEMMA_CUDA_KERNELS="reference")
            try:  # the tensor-core set needs compute capability 8.0
                tc = measure(path, "cuda", a.steps, a.prompt, DGEMMA_CUDA_KERNELS="tensor")
            except dgemma.UnsupportedError as e:
                print(f"tensor-core kernels: {e}", file=sys.stderr)
                tc = (float("nan"), float("nan"))
            rows.append((t, "prefill", cuda[0], ref[0], tc[0], cpu[0]))
            rows.append((t, "step", cuda[1], ref[1], tc[1], cpu[1]))
        print(f"{a.config}, {a.prompt}-token prompt, median of {a.steps}; CPU: {os.cpu_count()} threads")
        print(f"{'type':<8} {'what':<8} {'float ms':>9} {'ref ms':>9} {'tc ms':>9} {'cpu ms':>9} {'float/ref':>9} "
              f"{'tc/float':>9} {'tc/cpu':>9}")
        for t, what, g, r, tc, c in rows:
            print(f"{t:<8} {what:<8} {g:9.2f} {r:9.2f} {tc:9.2f} {c:9.2f} {g / r:9.3f} {tc / g:9.3f} {tc / c:9.3f}",
                  flush=True)
        if a.profile:
            print(f"device time per op, {t}: one prefill and {a.steps + 1} steps (then the prefills timed)", flush=True)
            measure(path, "cuda", a.steps, a.prompt, DGEMMA_CUDA_PROFILE="1")


if __name__ == "__main__":
    main()
