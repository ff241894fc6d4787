"""Peak memory of a quantized model: the file is mapped, not copied.

Writes the 'medium' random-weight preset in F32, quantizes it (default Q4_K_M), then, in a fresh
process, loads it and runs one prefill and one denoising step over a full canvas. Reports from
/proc/self/status, before loading and after the run: VmHWM (peak resident set), RssFile (pages of
mapped files, the weights among them) and RssAnon (private memory: activations, KV cache, logits and
any copy of the weights — a copy would make it grow by the file size).

    DGEMMA_LIBRARY=build/dev/libdgemma.so PYTHONPATH=python python bench/memory.py [--type Q4_K_M]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile


def status_mb():
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


def child(path, threads):
    import numpy as np

    import dgemma

    before = status_mb()
    with dgemma.Model(path, threads=threads) as m:
        loaded = status_mb()
        c = m.config
        rng = np.random.default_rng(0)
        s = m.session()
        s.prefill(rng.integers(0, c.n_vocab, 256))
        s.denoise(rng.integers(0, c.n_vocab, c.canvas_length))
        after = status_mb()
    print(json.dumps({"before": before, "loaded": loaded, "after": after}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--type", default="Q4_K_M")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.threads)

    from dgemma.convert.quantize_gguf import quantize_file
    from dgemma.convert.random_model import write_random_gguf

    with tempfile.TemporaryDirectory() as tmp:
        master, path = os.path.join(tmp, "medium-f32.gguf"), os.path.join(tmp, f"medium-{args.type}.gguf")
        write_random_gguf(master, "medium", "F32", seed=0)
        types = quantize_file(master, path, args.type, progress=None)
        os.unlink(master)
        cmd = [sys.executable, __file__, "--child", path] + (["--threads", str(args.threads)] if args.threads else [])
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        size = os.path.getsize(path) / 2**20
    mix = ", ".join(f"{n} {t}" for t, n in collections.Counter(types.values()).most_common())
    print(f"medium preset at {args.type}: file {size:.1f} MiB (tensors: {mix})")
    print("| when | VmHWM (peak) MiB | RssFile MiB | RssAnon MiB |\n|---|---|---|---|")
    for when in ("before", "loaded", "after"):
        m = r[when]
        print(f"| {when} | {m['VmHWM']:.1f} | {m['RssFile']:.1f} | {m['RssAnon']:.1f} |")
    grow = r["after"]["RssAnon"] - r["before"]["RssAnon"]
    print(f"private memory grew by {grow:.1f} MiB for a {size:.1f} MiB file: the weights are mapped, not copied")


if __name__ == "__main__":
    main()
