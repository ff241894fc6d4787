"""What quantization costs: KL(F32 || quantized) of decoder logits, per type, on random-weight models.

For each preset ('tiny', 'mini') and weight seed, an F32 master is written (convert/random_model.py)
and quantized with convert/quantize_gguf.py (F16 and BF16 rows are the master's weights rounded by
the writer, for scale). Every model then runs the same inputs: per prompt, a prefill and two
denoising steps over a random canvas, the second self-conditioned on the F32 model's first logits
(so both sides always see identical inputs). KL is taken per canvas position, pooled over seeds,
prompts and steps: mean, 99th percentile, and how often the argmax agrees. bpw = bits per weight
over all tensors of the file.

    DGEMMA_LIBRARY=build/dev/libdgemma.so PYTHONPATH=python python bench/quality.py [--seeds 4] [--ablate]

--ablate instead measures the _M mix candidates on 'mini': Q4_K with one group of tensors promoted to
Q6_K at a time, KL and extra bytes against plain Q4_K (docs/quantization.md).
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile

import numpy as np

import dgemma
from dgemma.convert.quantize_gguf import MIX_PROMOTED, quantize_file
from dgemma.convert.random_model import write_random_gguf
from dgemma.gguf import GGUFFile

TYPES = ["F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "Q4_0", "Q3_K", "Q2_K"]
PROMPTS = {"tiny": (5, 37), "mini": (40, 150)}  # prompt lengths: shorter and longer than the sliding window
GROUPS = {  # _M mix candidates
    "token_embd (lm_head)": r"token_embd\.weight$", "attn_v": r".*attn_v\.weight$",
    "attn_output": r".*attn_output\.weight$", "attn_q + attn_k": r".*attn_[qk]\.weight$",
    "ffn_down (dense)": r".*ffn_down\.weight$", "ffn_gate + ffn_up (dense)": r".*ffn_(gate|up)\.weight$",
    "ffn_down_exps": r".*ffn_down_exps\.weight$", "ffn_gate_up_exps": r".*ffn_gate_up_exps\.weight$",
    "self_cond_*": r"self_cond_.*\.weight$",
}


def log_softmax(z):
    z = z.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def run_inputs(path, preset, seed, sc_feed=None, threads=None):
    """Decoder logits for the fixed inputs: per prompt, [no self-conditioning, self-conditioned]."""
    outs = []
    with dgemma.Model(path, threads=threads) as m:
        c = m.config
        rng = np.random.default_rng(1000 + seed)
        for i, n in enumerate(PROMPTS[preset]):
            s = m.session()
            s.prefill(rng.integers(0, c.n_vocab, n))
            first = s.denoise(rng.integers(0, c.n_vocab, c.canvas_length))
            sc = (sc_feed[2 * i] if sc_feed is not None else first) / c.sampler.t_max
            outs += [first, s.denoise(rng.integers(0, c.n_vocab, c.canvas_length), sc)]
            s.close()
    return outs


def compare(ref, got):
    """Per-position KL(ref || got) and argmax agreement, pooled."""
    kls, agree = [], []
    for r, g in zip(ref, got):
        lr, lg = log_softmax(r), log_softmax(g)
        kls.append((np.exp(lr) * (lr - lg)).sum(axis=-1))
        agree.append(r.argmax(-1) == g.argmax(-1))
    return np.concatenate(kls), np.concatenate(agree)


def bits_per_weight(path):
    with GGUFFile(path) as f:
        n = sum(int(np.prod(t.shape)) for t in f.tensors.values())
        return 8 * sum(t.nbytes for t in f.tensors.values()) / n


def build(tmp, preset, seed, type_name, master, promote=MIX_PROMOTED):
    """The model of `type_name`; `promote`: the tensors an _M mix promotes (None: none)."""
    path = os.path.join(tmp, f"{preset}-{seed}-{type_name}.gguf")
    if type_name in ("F16", "BF16"):
        write_random_gguf(path, preset, type_name, seed=seed)
    else:
        quantize_file(master, path, type_name, progress=None, promote=promote)
    return path


def table(args, tmp):
    print(f"| model | type | bpw | mean KL | p99 KL | argmax agreement |\n|---|---|---|---|---|---|")
    for preset in ("tiny", "mini"):
        results = {t: ([], [], 0.0) for t in TYPES}
        for seed in range(args.seeds):
            master = os.path.join(tmp, f"{preset}-{seed}-F32.gguf")
            write_random_gguf(master, preset, "F32", seed=seed)
            ref = run_inputs(master, preset, seed, threads=args.threads)
            for t in TYPES:
                path = build(tmp, preset, seed, t, master)
                kl, agree = compare(ref, run_inputs(path, preset, seed, sc_feed=ref, threads=args.threads))
                results[t][0].append(kl)
                results[t][1].append(agree)
                results[t] = (results[t][0], results[t][1], bits_per_weight(path))
                os.unlink(path)
        for t in TYPES:
            kl, agree = np.concatenate(results[t][0]), np.concatenate(results[t][1])
            print(f"| {preset} | {t} | {results[t][2]:.2f} | {kl.mean():.4f} | {np.percentile(kl, 99):.4f} | "
                  f"{agree.mean():.1%} |")


def ablate(args, tmp):
    preset = "mini"
    masters = []
    for seed in range(args.seeds):
        masters.append(os.path.join(tmp, f"{preset}-{seed}-F32.gguf"))
        write_random_gguf(masters[-1], preset, "F32", seed=seed)
    refs = [run_inputs(m, preset, s, threads=args.threads) for s, m in enumerate(masters)]

    def measure(promote):
        kls, size = [], 0
        for seed, (master, ref) in enumerate(zip(masters, refs)):
            path = build(tmp, preset, seed, "Q4_K_M", master, promote)
            kls.append(compare(ref, run_inputs(path, preset, seed, sc_feed=ref, threads=args.threads))[0])
            size += os.path.getsize(path)
            os.unlink(path)
        return np.concatenate(kls).mean(), size

    base_kl, base_size = measure(None)
    print(f"Q4_K on '{preset}', {args.seeds} seeds: mean KL {base_kl:.4f}\n")
    print("| promoted to Q6_K | mean KL | KL saved | extra bytes | KL saved per extra MB |\n|---|---|---|---|---|")
    for name, pattern in GROUPS.items():
        kl, size = measure(re.compile(pattern))
        extra = (size - base_size) / args.seeds
        print(f"| {name} | {kl:.4f} | {base_kl - kl:+.4f} | {extra / 1e3:.0f} kB | {(base_kl - kl) / (extra / 1e6):+.3f} |")
    kl, size = measure(MIX_PROMOTED)
    print(f"| the Q4_K_M mix ({MIX_PROMOTED.pattern}) | {kl:.4f} | {base_kl - kl:+.4f} | "
          f"{(size - base_size) / args.seeds / 1e3:.0f} kB | |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=4, help="random-weight models per preset (default 4)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ablate", action="store_true", help="measure the _M mix candidates instead")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (ablate if args.ablate else table)(args, tmp)


if __name__ == "__main__":
    main()
