"""Prefill, one decoder step and the sampler, dgemma against transformers on the same weights.

Protocol (shared/bench/models.json): a 512-token prompt, one canvas of the configuration's length,
self-conditioning on, median of >= 5 steps after a warm-up, threads = all cores; transformers' and
every dgemma type's prefills (then steps) run in interleaved rounds, so the ratios compare times taken
under the same machine conditions. transformers runs
F32 (its CPU path is float32); dgemma runs the same weights as F32 and, per --types, re-quantized
(Q8_0, Q4_K_M, ...: `dgemma quantize` recipes), every type against the same transformers times.
The sampler is timed on the same logits: dgemma's native sampler against transformers'
EntropyBoundSampler + temperature + multinomial + stopping classes. The last rows put the CPU
kernels against the core's peak, measured in the same run by bench/peak.c (12 chains of
vfmadd231ps and of vpdpbusd, compiled here with cc): one thread of the Q8_0 (integer) and F16
(float) products at 1024 x 704 over 256 tokens, as a fraction of one core's peak. The 26B-A4B
row is one sliding-window layer at the released model's shapes in Q4_K_M (random blocks: the
attention, the dense MLP and the 128-expert MoE, 256 canvas rows over 512 cached positions, the
CPU's share of a step when experts are offloaded): the step of a 2-layer file minus that of a
1-layer one (both with a 1024-token vocabulary), all threads against one thread. The first
quantized type's step also runs on one thread, against transformers on one thread; the footer
gives the threads' busy share from it.

    python bench/bench_step.py [--config medium] [--steps 5] [--types f32,q8_0,q4_k_m]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference import ReferenceSequence, build_model, save_checkpoint, shared_config  # noqa: E402

import dgemma  # noqa: E402
from dgemma.convert.hf_to_gguf import convert  # noqa: E402
from dgemma.convert.quantize_gguf import quantize_file  # noqa: E402
from dgemma.sampler import Sampler  # noqa: E402


def median_time(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(fns: dict, reps):
    """{name: median seconds} of each callable, after a warm-up of each, over `reps` rounds that
    call every one in turn."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def core_peak(tmp: Path):
    """(fp32, int8) G multiply-accumulates per second of one core, or None without a C compiler."""
    from dgemma import kernels
    width = 512 if "avx512_vnni" in kernels.cpu_features() or "avx512vnni" in kernels.cpu_features() else 256
    exe = tmp / "peak"
    src = Path(__file__).resolve().parent / "peak.c"
    try:
        subprocess.run(["cc", "-O2", f"-DWIDTH={width}", str(src), "-o", str(exe)], check=True, capture_output=True)
        out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return None
    return float(out[1]), float(out[3])


def kernel_rate(type_name, rows=1024, k=704, tokens=256):
    """G multiply-accumulates per second of dgemma's single-threaded product for one weight type."""
    from gguf import GGMLQuantizationType
    from dgemma import kernels
    t = getattr(GGMLQuantizationType, type_name)
    rng = np.random.default_rng(1)
    if t == GGMLQuantizationType.F16:
        w = rng.standard_normal((rows, k)).astype(np.float16).view(np.uint8)
    else:
        w = kernels.quantize_rows(t, rng.standard_normal((rows, k)).astype(np.float32))
    x = rng.standard_normal((tokens, k)).astype(np.float32)
    return rows * k * tokens / median_time(lambda: kernels.gemm(t, w, x), 5) / 1e9


def full_layer_ms(tmp: Path, threads: int, steps: int, prompt_len: int):
    """(all threads, one thread) ms of one sliding layer at the 26B-A4B shapes, Q4_K_M (see the docstring)."""
    from dgemma.convert.random_model import PRESETS, write_random_blocks_gguf
    paths = {}
    for n_layer in (1, 2):
        paths[n_layer] = tmp / f"full-{n_layer}.gguf"
        write_random_blocks_gguf(paths[n_layer], dict(PRESETS["full"], num_hidden_layers=n_layer, vocab_size=1024),
                                 "Q4_K_M", progress=None)
    rng = np.random.default_rng(2)
    prompt, canvas = rng.integers(0, 1024, prompt_len), rng.integers(0, 1024, PRESETS["full"]["canvas_length"])

    def step(path, n_threads):
        with dgemma.Model(path, threads=n_threads) as m:
            s = m.session()
            s.prefill(prompt)
            z = s.denoise(canvas)
            out, sc = np.empty_like(z), z / 0.8
            t = median_time(lambda: s.denoise(canvas, sc, out=out), steps)
            s.close()
        return t

    return tuple(1e3 * (step(paths[2], n) - step(paths[1], n)) for n in (threads, 1))


def reference_sampler_step(z, n, N):
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
        EntropyBoundSampler, EntropyBoundSamplerConfig, LinearTemperatureScheduleLogitsProcessor,
        StableAndConfidentStoppingCriteria)

    C, V = z.shape[1:]
    sampler = EntropyBoundSampler(EntropyBoundSamplerConfig(entropy_bound=0.1), C, V, N)
    proc = LinearTemperatureScheduleLogitsProcessor(0.4, 0.8, N)
    stop = StableAndConfidentStoppingCriteria(1, 0.005)
    canvas = sampler.initialize_canvas(1, "cpu")

    def step():
        y = proc(None, z, cur_step=torch.tensor(n, dtype=torch.int32))
        probs = torch.softmax(y, dim=-1, dtype=torch.float32)
        draw = torch.multinomial(probs.view(-1, V), num_samples=1).view(1, C)
        amax = torch.argmax(y, dim=-1)
        acc = sampler.accept_canvas(canvas, draw, y, n)
        sampler.renoise_canvas(acc, n)
        stop(amax, y)
    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="medium")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--types", default="f32,q8_0,q4_k_m", help="dgemma weight types, comma-separated; f32 first")
    args = ap.parse_args()
    types = [t.strip().upper() for t in args.types.split(",")]
    if types[0] != "F32":
        ap.error("--types must start with f32 (the batch and sampler rows use it)")
    threads = os.cpu_count()
    torch.set_num_threads(threads)
    cfg = shared_config(args.config)
    C, V = cfg["canvas_length"], cfg["vocab_size"]
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, V, args.prompt)
    canvas = rng.integers(0, V, C)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(cfg, seed=0, max_position_embeddings=4096)
        hf = save_checkpoint(model, Path(tmp) / "hf")
        gguf = Path(tmp) / "m.gguf"
        convert(hf, gguf, "f32", progress=None)

        paths = {"F32": gguf}
        for t in types[1:]:
            paths[t] = Path(tmp) / f"m-{t}.gguf"
            quantize_file(gguf, paths[t], t, progress=None)

        # Prefills, then steps, of transformers and of every dgemma type in interleaved rounds: the
        # machine's drift (tens of % over minutes here) falls on all of them alike, so each ratio
        # compares times taken under the same conditions.
        ref = ReferenceSequence(model)
        models = {t: dgemma.Model(p, threads=threads) for t, p in paths.items()}
        try:
            def ref_prefill():
                ref.cache = ReferenceSequence(model).cache
                ref.prefill(prompt)

            def ours_prefill(m):
                s = m.session()
                s.prefill(prompt)
                s.close()

            prefills = interleaved_medians({"ref": ref_prefill, **{t: (lambda m=m: ours_prefill(m)) for t, m in models.items()}},
                                           args.steps)
            ref.cache = ReferenceSequence(model).cache
            ref.prefill(prompt)
            z_ref = ref.denoise(canvas)
            steps_fns = {"ref": lambda: ref.denoise(canvas, z_ref / 0.8)}
            sessions, first_z = [], {}
            for t, m in models.items():
                s = m.session()
                sessions.append(s)
                s.prefill(prompt)
                z_t = s.denoise(canvas)
                first_z[t] = z_t
                steps_fns[t] = (lambda s=s, sc=z_t / 0.8, out=np.empty_like(z_t): s.denoise(canvas, sc, out=out))
            steps = interleaved_medians(steps_fns, args.steps)
            for s in sessions:
                s.close()
        finally:
            for m in models.values():
                m.close()
        t_ref_prefill, t_ref_step = prefills["ref"], steps["ref"]
        t_prefill, t_step, z = prefills["F32"], steps["F32"], first_z["F32"]
        quantized = [(t, prefills[t], steps[t]) for t in types[1:]]  # (type, prefill s, step s)

        def step_time(path, n_threads):
            with dgemma.Model(path, threads=n_threads) as m:
                s = m.session()
                s.prefill(prompt)
                z = s.denoise(canvas)
                out = np.empty_like(z)
                sc = z / 0.8
                t_step = median_time(lambda: s.denoise(canvas, sc, out=out), args.steps)
                s.close()
            return t_step

        # Thread scaling: the first quantized type's step on one thread, and transformers' on one.
        scaling = None
        if len(types) > 1 and threads > 1:
            t_one = step_time(paths[types[1]], 1)
            torch.set_num_threads(1)
            t_ref_one = median_time(lambda: ref.denoise(canvas, z_ref / 0.8), args.steps)
            torch.set_num_threads(threads)
            scaling = (types[1], t_one, t_ref_one, quantized[0][2])
        with dgemma.Model(gguf, threads=threads) as m:
            # Batching: 4 sequences' canvases per decoder pass vs the same 4 generated one by one
            # (4 steps each, no early stop), per sequence-step.
            gen = dict(max_new_tokens=C, max_denoising_steps=4, stability_threshold=0, confidence_threshold=0.0,
                       seed=1)
            prompts = [list(prompt[:64 + 16 * i]) for i in range(4)]
            t_batch = median_time(lambda: m.generate(prompts, **gen), 2) / 16
            t_alone = median_time(lambda: [m.generate(p, **gen) for p in prompts], 2) / 16

        N = 48
        ours_sampler = Sampler(C, V, seed=1)
        ours_sampler.init_canvas()
        t_sampler = median_time(lambda: ours_sampler.step(N, z), args.steps)
        t_ref_sampler = median_time(reference_sampler_step(torch.from_numpy(z)[None], N, N), args.steps)

        peak = core_peak(Path(tmp))
        layer_all, layer_one = full_layer_ms(Path(tmp), threads, args.steps, args.prompt)

    rows = [
        ("prefill (tokens/s)", args.prompt / t_prefill, args.prompt / t_ref_prefill, "higher"),
        ("decoder step, sc on (ms)", t_step * 1e3, t_ref_step * 1e3, "lower"),
    ]
    for t, tp, ts in quantized:
        rows += [(f"{t} prefill (tokens/s)", args.prompt / tp, args.prompt / t_ref_prefill, "higher"),
                 (f"{t} decoder step, sc on (ms)", ts * 1e3, t_ref_step * 1e3, "lower")]
    rows += [
        ("sampler step (ms)", t_sampler * 1e3, t_ref_sampler * 1e3, "lower"),
        ("batch of 4: ms per sequence-step", t_batch * 1e3, t_alone * 1e3, "lower"),
        ("sampler share of a step (%)", 100 * t_sampler / (t_step + t_sampler),
         100 * t_ref_sampler / (t_ref_step + t_ref_sampler), "lower"),
    ]
    if scaling is not None:
        rows.append((f"{scaling[0]} decoder step, 1 thread (ms)", scaling[1] * 1e3, scaling[2] * 1e3, "lower"))
    rows.append(("26B-A4B layer, Q4_K_M, all threads (ms)", layer_all, layer_one, "lower"))
    if peak is not None:
        rows += [("Q8_0 GEMM, 1 thread (G MAC/s)", kernel_rate("Q8_0"), peak[1], "peak"),
                 ("F16 GEMM, 1 thread (G MAC/s)", kernel_rate("F16"), peak[0], "peak")]
    print(f"config {args.config} (canvas {C}, vocab {V}), dgemma F32 unless named, transformers F32, {threads} threads, prompt {args.prompt}, "
          f"median of {args.steps}")
    print(f"| {'measure':<30} | {'dgemma':>10} | {'transformers':>12} | {'ratio':>6} |")
    print(f"|{'-' * 32}|{'-' * 12}|{'-' * 14}|{'-' * 8}|")
    for name, ours, theirs, better in rows:
        ratio = ours / theirs if better in ("higher", "peak") else theirs / ours
        print(f"| {name:<30} | {ours:>10.1f} | {theirs:>12.1f} | {ratio:>5.2f}x |")
    print("ratio: how many times better dgemma is (speed-up; for the share, transformers' share / ours);")
    print("the batch row's reference is dgemma itself generating the same 4 sequences one by one;")
    if scaling is not None:
        busy = scaling[1] / (threads * scaling[3])
        print(f"threads: the {scaling[0]} step on {threads} threads is {scaling[1] / scaling[3]:.2f}x its one-thread time: "
              f"the threads are busy {busy:.0%} of the step (idle {1 - busy:.0%})")
    print("26B-A4B layer row: one sliding layer at the released shapes; its reference is the same on one thread")
    print("GEMM rows: 1024 x 704 over 256 tokens; the reference is one core's peak (bench/peak.c: vpdpbusd for")
    print("int8, vfmadd231ps for fp32, or their AVX2 forms), the ratio the fraction of it")


if __name__ == "__main__":
    main()
