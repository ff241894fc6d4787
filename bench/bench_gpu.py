"""GPU speed at the 26B-A4B shapes: one table, and the same rows as JSON (the issue "GPU speed at full
26B-A4B scale").

    python bench/bench_gpu.py [--config full] [--type Q4_K_M] [--model FILE] [--json PATH] [--no-peer]
    python bench/bench_gpu.py --dry-run     # the whole script on the CPU, tiny config, no floors (CI)

Rows, each a JSON record with the keys card, commit, config, weight_type, batch, step_ms, prefill_tok_s,
peak_mem_gb, floor_ms (and `row`, `tokens_s`, `floor_ratio`, `kernels`: DGEMMA_CUDA_KERNELS, "auto" when unset;
`h2d_gb_s`: pinned host-to-device copies, measured through torch; offload rows: see below):
  - prefill of 512 and 8192 tokens (tokens/s);
  - a denoising step of a 256-token canvas, self-conditioning on, at 1 and 4 sequences (ms per step and
    per sequence-step), from generate() with a fixed number of steps (no early stop), so the sampler
    runs on the device and only the stop flag comes back, as in real use;
  - tokens/s of whole canvases at 16, 25 and 48 steps per canvas;
  - the step rows again under each opt-in of --env-rows (not in --dry-run; ENV_ROWS: each pass recorded
    once as a CUDA graph and replayed, the Q4_K and Q5_0 products on quantized fragments, the Q4_K, Q6_K,
    Q5_0 and Q8_0 products on int8 tensor cores, and those with the attention as flash
    attention);
  - the peer: transformers' DiffusionGemma in bf16 at the same shapes with random weights, ms per step;
  - expert offload: for each cap of --offload-caps (GB of GPU memory; 12 and 16 by default) and each
    way of running offloaded experts (computed by the CPU backend, or streamed to the GPU over PCIe for
    each pass), the step with the experts of the last N layers in host memory, N chosen as
    `--gpu-memory` chooses it (dgemma/offload.py), its own peak memory, N and the way in the row
    (`host_expert_layers`, `expert_offload`, `gpu_cap_gb`; streamed rows: `stream_floor_ms`, the
    streamed bytes of a step over `h2d_gb_s`).
With --profile NAMES, one canvas per name also runs under DGEMMA_CUDA_PROFILE=1 and the backend's table of
device time per op goes to stderr (not a row; names: default and those of ENV_ROWS).
The floor for the file on this card: its bytes over the copy bandwidth and a step's FLOPs over the bf16
matrix rate, both measured in this run through torch; floor_ms is the larger (they overlap at best).
Peak memory: the card's used memory (nvidia-smi) over what was used before the model loaded.
The model file is written with random quantized blocks (convert/random_model.py) unless --model is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
import dgemma  # noqa: E402
from dgemma.convert.random_model import PRESETS, text_config, write_random_blocks_gguf  # noqa: E402

CANVAS_STEPS = (16, 25, 48)
FIXED = dict(stability_threshold=0, confidence_threshold=0.0)  # no early stop: exactly the steps asked


def card() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "cpu"


def used_gb() -> float:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
        return float(out.split()[0]) / 1024
    except (OSError, IndexError, ValueError, subprocess.SubprocessError):
        return float("nan")


def commit() -> str:
    pack = ROOT / "build" / "gpu-pack" / "COMMIT"
    if os.environ.get("DGEMMA_LIBRARY", "").startswith(str(pack.parent)) and pack.exists():
        return pack.read_text().strip()[:12]
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def step_flops(preset: dict, n_past: int) -> float:
    """FLOPs of one 256-row decoder step: the matrix products (2 per multiply-add), attention over the
    cached prefix and the canvas, the tied lm_head and the soft embedding."""
    cfg = text_config(preset)
    E, F, Fe, k, V, H = (cfg.hidden_size, cfg.intermediate_size, cfg.moe_intermediate_size, cfg.top_k_experts,
                         cfg.vocab_size, cfg.num_attention_heads)
    C = preset["canvas_length"]
    per_token = 0.0
    for i in range(cfg.num_hidden_layers):
        d, kv = cfg.head_dims[i], cfg.kv_heads[i]
        v_proj = cfg.layer_types[i] == "sliding_attention"
        keys = min(n_past, cfg.sliding_window) + C if v_proj else n_past + C
        per_token += 2 * E * (H * d + kv * d * (2 if v_proj else 1)) + 2 * H * d * E  # q, k, v, o
        per_token += 2 * 3 * E * F + 2 * E * cfg.num_experts + 2 * 3 * E * Fe * k  # dense, router, experts
        per_token += 4 * H * d * keys  # scores and values
    per_token += 2 * 2 * V * E  # lm_head and the soft embedding
    return per_token * C


def measure_floors() -> tuple[float, float, float]:
    """(copy bandwidth in bytes/s counting read + write, bf16 matrix rate in FLOP/s, host-to-device
    copy bandwidth from pinned memory in bytes/s: what streamed experts cross), through torch."""
    import torch

    def median_ms(fn, reps=10):
        fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        return statistics.median(times)

    n = 2 << 30
    src, dst = torch.empty(n, dtype=torch.uint8, device="cuda"), torch.empty(n, dtype=torch.uint8, device="cuda")
    src.random_(0, 255)
    bw = 2 * n / (median_ms(lambda: dst.copy_(src)) / 1e3)
    del src, dst
    host = torch.empty(1 << 30, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    h2d = (1 << 30) / (median_ms(lambda: dev.copy_(host, non_blocking=True), reps=5) / 1e3)
    del host, dev
    m = 8192
    a, b = torch.randn(m, m, dtype=torch.bfloat16, device="cuda"), torch.randn(m, m, dtype=torch.bfloat16, device="cuda")
    rate = 2 * m ** 3 / (median_ms(lambda: a @ b) / 1e3)
    del a, b
    torch.cuda.empty_cache()
    return bw, rate, h2d


def peer_step_ms(preset: dict, prompt: int, steps: int, device: str) -> float:
    """transformers' DiffusionGemma, bf16, random weights (its own initialisation, made on the device):
    median ms of a decoder step after a 512-token prefill, self-conditioning on."""
    import torch
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion, DynamicCache

    tc = dict(preset)
    canvas = tc.pop("canvas_length")
    tc["max_position_embeddings"] = 16384
    vision = dict(model_type="gemma4_vision", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=1, num_key_value_heads=1, head_dim=16)
    config = DiffusionGemmaConfig(text_config=tc, vision_config=vision, canvas_length=canvas)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = DiffusionGemmaForBlockDiffusion(config).eval()
    finally:
        torch.set_default_dtype(torch.float32)
    g = torch.Generator(device=device).manual_seed(0)
    ids = torch.randint(0, tc["vocab_size"], (1, prompt), device=device, generator=g)
    cv = torch.randint(0, tc["vocab_size"], (1, canvas), device=device, generator=g)
    cache = DynamicCache(config=model.config.get_text_config())
    times = []
    with torch.no_grad():
        model.model.encoder(input_ids=ids, cache=cache)
        sc = model(decoder_input_ids=cv, cache=cache).logits
        for _ in range(steps):
            sync()
            t0 = time.perf_counter()
            sc = model(decoder_input_ids=cv, cache=cache, self_conditioning_logits=sc).logits
            sync()
            times.append(time.perf_counter() - t0)
    del model, cache
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return 1e3 * statistics.median(times)


def generation_rows(m, prompt_ids, steps_per_canvas, batch: int) -> dict:
    """One canvas per sequence at a fixed number of steps: ms per step (per sequence at batch > 1),
    canvas tokens/s."""
    prompts = [list((np.asarray(prompt_ids) + 13 * i) % m.config.n_vocab) for i in range(batch)]
    C = m.config.canvas_length
    kw = dict(max_new_tokens=C, max_denoising_steps=steps_per_canvas, seed=1, eos_ids=[], **FIXED)
    m.generate(prompts[0] if batch == 1 else prompts, **kw)  # warm-up
    t0 = time.perf_counter()
    out = m.generate(prompts[0] if batch == 1 else prompts, **kw)
    wall = time.perf_counter() - t0
    gens = [out] if batch == 1 else out
    prefill = max(g.prefill_seconds for g in gens)
    steps = max(g.steps for g in gens)
    denoise = wall - prefill  # the steps and the commit of the canvas
    return dict(step_ms=1e3 * denoise / steps / batch, tokens_s=batch * C / denoise, steps=steps)


# The CUDA backend's opt-ins --env-rows measures (each read when the backend is made): name -> the
# variables set to 1, and the row's words.
ENV_ROWS = {
    "graph": (("DGEMMA_CUDA_GRAPH",), "CUDA graphs"),
    "qmma": (("DGEMMA_CUDA_QMMA",), "quantized fragments"),
    "int8": (("DGEMMA_CUDA_INT8",), "int8 tensor cores"),
    "flash": (("DGEMMA_CUDA_FLASH",), "flash attention"),
    "int8+flash": (("DGEMMA_CUDA_INT8", "DGEMMA_CUDA_FLASH"), "int8 tensor cores and flash attention"),
    "int8+flash+graph": (("DGEMMA_CUDA_INT8", "DGEMMA_CUDA_FLASH", "DGEMMA_CUDA_GRAPH"),
                         "int8 tensor cores, flash attention, CUDA graphs"),
    "int8+flash+wgmma": (("DGEMMA_CUDA_INT8", "DGEMMA_CUDA_FLASH", "DGEMMA_CUDA_WGMMA"),
                         "int8 tensor cores, flash attention, warpgroup vocabulary products"),
}


def env_rows(path: str, ids, name: str) -> list[dict]:
    """The step rows (1 and 4 sequences) again with the opt-in `name` of ENV_ROWS set."""
    names, what = ENV_ROWS[name]
    for var in names:
        os.environ[var] = "1"
    try:
        with dgemma.Model(path, device="cuda") as m:
            return [dict(row=f"step, {b} sequence{'s' if b > 1 else ''}, {what}", batch=b,
                         step_ms=generation_rows(m, ids, CANVAS_STEPS[0], b)["step_ms"]) for b in (1, 4)]
    except dgemma.DgemmaError as e:  # an opt-in's fault ends its rows, not the table (main runs these last)
        print(f"--env-rows {name}: {type(e).__name__}: {e}", file=sys.stderr)
        return [dict(row=f"step, 1 sequence, {what}: failed ({type(e).__name__})", batch=1)]
    finally:
        for var in names:
            del os.environ[var]


def profile_run(path: str, ids, name: str) -> None:
    """One canvas at 16 steps under DGEMMA_CUDA_PROFILE=1 (and the opt-in `name` of ENV_ROWS, or none for
    "default"): the backend prints the device time per op of the run (the prefill, 16 steps and the
    commit) to stderr when the model closes. Not a row: where a step's time goes, op by op, at full size."""
    names = ("DGEMMA_CUDA_PROFILE",) + (ENV_ROWS[name][0] if name != "default" else ())
    print(f"== device time per op, {name} kernels: a {len(ids)}-token prefill, one canvas at {CANVAS_STEPS[0]} steps",
          file=sys.stderr, flush=True)
    for var in names:
        os.environ[var] = "1"
    try:
        with dgemma.Model(path, device="cuda") as m:  # one canvas, no warm-up: the table counts every op
            C = m.config.canvas_length
            m.generate(list(ids), max_new_tokens=C, max_denoising_steps=CANVAS_STEPS[0], seed=1, eos_ids=[], **FIXED)
    finally:
        for var in names:
            del os.environ[var]
    sys.stderr.flush()


def offload_rows(path: str, a, ids, h2d: float) -> list[dict]:
    """The step with experts offloaded, per GPU memory cap and way of running them (computed by the
    CPU backend, or streamed to the GPU for each pass: see the docstring). A streamed row carries
    stream_floor_ms, its experts' bytes over the host-to-device bandwidth h2d (every offloaded layer
    crosses once a pass from three layers on). In a dry run the caps are the model's own need less
    one and two layers' experts."""
    from dgemma.errors import OutOfMemoryError
    from dgemma.offload import device_bytes_needed, host_expert_layers_for, layer_expert_bytes

    if a.dry_run:
        need, experts = device_bytes_needed(path, 0), layer_expert_bytes(path)
        caps = [(need - experts[-1]) / 1e9, (need - experts[-1] - experts[-2]) / 1e9]
    else:
        caps = [float(c) for c in a.offload_caps.split(",") if c.strip()]
    rows = []
    for cap in caps:
        for mode, where in (("cpu", "computed by the CPU"), ("stream", "streamed to the GPU")):
            try:
                n = host_expert_layers_for(path, int(cap * 1e9), mode)
            except OutOfMemoryError as e:
                print(f"offload ({mode}) at {cap:g} GB: {e}", file=sys.stderr)
                continue
            before = used_gb()
            with dgemma.Model(path, device=a.device, host_expert_layers=n, expert_offload=mode) as m:
                r = generation_rows(m, ids, CANVAS_STEPS[0], 1)
                peak = used_gb() - before
            streamed = sum(layer_expert_bytes(path)[::-1][:n]) if mode == "stream" and n > 2 else 0
            copies = f"; copies >= {1e3 * streamed / h2d:.1f} ms" if mode == "stream" and h2d == h2d else ""
            rows.append(dict(row=f"step, {n} layers' experts {where} ({cap:.3g} GB cap{copies})", batch=1, step_ms=r["step_ms"],
                             host_expert_layers=n, expert_offload=mode, gpu_cap_gb=cap,
                             peak_mem_gb=peak if a.device != "cpu" else None,
                             stream_floor_ms=1e3 * streamed / h2d if mode == "stream" and h2d == h2d else None))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="full", choices=list(PRESETS))
    ap.add_argument("--type", default="Q4_K_M", help="a quantize recipe (random blocks), or the type of --model")
    ap.add_argument("--model", default=None, help="an existing GGUF instead of a random-block file")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", default=None, help="default: bench/results/<card>-<date>.json")
    ap.add_argument("--no-peer", action="store_true", help="skip transformers")
    ap.add_argument("--prompts", default="512,8192")
    ap.add_argument("--steps", type=int, default=5, help="repetitions of the timed peer step")
    ap.add_argument("--offload-caps", default="12,16", help="GPU memory caps (GB) for the expert-offload rows; '' for none")
    ap.add_argument("--env-rows", default="graph,qmma,int8,flash,int8+flash",
                    help=f"the opt-ins to measure the step rows under, comma-separated ({', '.join(ENV_ROWS)}); '' for none")
    ap.add_argument("--profile", default="", metavar="NAMES",
                    help="also print the device time per op of one canvas (DGEMMA_CUDA_PROFILE), for each of "
                         "'default' and the --env-rows names given (comma-separated; not in --dry-run)")
    ap.add_argument("--dry-run", action="store_true", help="tiny config on the CPU, no floors")
    a = ap.parse_args()
    unknown = [n for n in a.env_rows.split(",") if n.strip() and n.strip() not in ENV_ROWS]
    if unknown:
        ap.error(f"--env-rows: unknown {', '.join(unknown)} (known: {', '.join(ENV_ROWS)})")
    unknown = [n for n in a.profile.split(",") if n.strip() and n.strip() not in ENV_ROWS and n.strip() != "default"]
    if unknown:
        ap.error(f"--profile: unknown {', '.join(unknown)} (known: default, {', '.join(ENV_ROWS)})")
    if a.dry_run:  # the peer runs too (on the CPU) when transformers is installed
        a.config, a.device, a.prompts = "tiny", "cpu", "64,200"
    preset = PRESETS[a.config]
    prompts = [int(p) for p in a.prompts.split(",")]
    base = dict(card=card() if a.device != "cpu" else "cpu", commit=commit(), config=a.config, weight_type=a.type.upper(),
                kernels=os.environ.get("DGEMMA_CUDA_KERNELS") or "auto")
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("DGEMMA_BENCH_TMP")) as tmp:
        path = a.model
        if path is None:
            path = os.path.join(tmp, f"{a.config}-{a.type}.gguf")
            t0 = time.perf_counter()
            write_random_blocks_gguf(path, preset, a.type, seed=0, progress=None,
                                     max_position_embeddings=max(prompts) + 2 * preset["canvas_length"])
            print(f"wrote {os.path.getsize(path) / 2**30:.2f} GiB of random blocks in {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr)
        file_bytes = os.path.getsize(path)
        bw = rate = h2d = float("nan")
        if a.device != "cpu":
            bw, rate, h2d = measure_floors()
        before = used_gb()
        peak = 0.0
        with dgemma.Model(path, device=a.device) as m:
            rng = np.random.default_rng(0)
            for p in prompts:
                ids = rng.integers(0, m.config.n_vocab, p)
                s = m.session()
                s.prefill(ids[:8])  # warm-up
                s.close()
                s = m.session()
                t0 = time.perf_counter()
                s.prefill(ids)
                dt = time.perf_counter() - t0
                peak = max(peak, used_gb() - before)
                s.close()
                rows.append(dict(row=f"prefill {p}", batch=1, prefill_tok_s=p / dt))
            ids = rng.integers(0, m.config.n_vocab, prompts[0])
            for batch in (1, 4):
                r = generation_rows(m, ids, CANVAS_STEPS[0], batch)
                peak = max(peak, used_gb() - before)
                rows.append(dict(row=f"step, {batch} sequence{'s' if batch > 1 else ''}", batch=batch,
                                 step_ms=r["step_ms"]))
            for steps in CANVAS_STEPS:
                r = generation_rows(m, ids, steps, 1)
                rows.append(dict(row=f"canvas at {steps} steps", batch=1, step_ms=r["step_ms"], tokens_s=r["tokens_s"]))
        for name in filter(None, (n.strip() for n in a.profile.split(",") if a.device != "cpu")):
            profile_run(path, ids, name)
        rows += offload_rows(path, a, ids, h2d)
        # Last: a device fault under an opt-in can leave the process's CUDA context unusable.
        for name in filter(None, (n.strip() for n in a.env_rows.split(",") if a.device != "cpu")):
            rows += env_rows(path, ids, name)
    flops = step_flops(preset, prompts[0])
    floor_ms = max(1e3 * file_bytes / bw, 1e3 * flops / rate) if bw == bw else float("nan")
    for i, r in enumerate(rows):  # an offload row keeps its own peak
        rows[i] = {**base, "peak_mem_gb": peak if a.device != "cpu" else None, "floor_ms": floor_ms,
                   "h2d_gb_s": h2d / 1e9 if h2d == h2d else None,
                   "floor_ratio": r["step_ms"] / floor_ms if "step_ms" in r and floor_ms == floor_ms else None, **r}
    if not a.no_peer:
        try:
            ms = peer_step_ms(preset, prompts[0], a.steps, "cpu" if a.device == "cpu" else "cuda")
            rows.append(dict(base, row="transformers bf16 step", weight_type="BF16 (transformers)", batch=1, step_ms=ms,
                             peak_mem_gb=None, floor_ms=None, floor_ratio=None))
        except Exception as e:  # the peer is a comparison, not the product: say why it is missing
            print(f"peer: transformers could not run: {type(e).__name__}: {e}", file=sys.stderr)
    for r in rows:
        for key in ("step_ms", "prefill_tok_s", "tokens_s"):
            r.setdefault(key, None)
    print(f"{base['card']}, commit {base['commit']}, {a.config} at {base['weight_type']}, kernels {base['kernels']}; floor {floor_ms:.2f} ms "
          f"({file_bytes / 2**30:.2f} GiB at {bw / 1e12:.2f} TB/s, {flops / 1e12:.2f} TFLOP at {rate / 1e12:.0f} TFLOP/s); "
          f"peak {peak:.2f} GB; host-to-device {h2d / 1e9:.1f} GB/s")
    w = max(44, *(len(r["row"]) for r in rows))
    print(f"{'row':<{w}} {'step ms':>9} {'tokens/s':>10} {'prefill tok/s':>14} {'x floor':>8}")
    fmt = lambda v, f: format(v, f) if isinstance(v, (int, float)) and v == v else "-"  # noqa: E731
    for r in rows:
        print(f"{r['row']:<{w}} {fmt(r['step_ms'], '9.2f'):>9} {fmt(r['tokens_s'], '10.0f'):>10} "
              f"{fmt(r['prefill_tok_s'], '14.0f'):>14} {fmt(r.get('floor_ratio'), '8.1f'):>8}")
    out = Path(a.json) if a.json else ROOT / "bench" / "results" / (
        f"{base['card'].replace(' ', '-')}-{datetime.date.today().isoformat()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1, default=lambda v: None) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
