"""Single-thread throughput of the quantized dot products per instruction set.

For each type, a weight matrix of about --mb MB is multiplied with one activation vector
(dgemma_matvec: x is quantized once, then one vec_dot per row); the table reports GB/s of weights read
per ISA and its speed-up over the generic C++ path measured in the same run.

    DGEMMA_LIBRARY=build/dev/libdgemma.so PYTHONPATH=python python bench/bench_quants.py [--mb 4]
"""

import argparse
import time

import numpy as np

from dgemma import kernels
from dgemma.errors import UnsupportedError

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"]


def supported_isas():
    out = []
    for isa in kernels.ISAS:
        try:
            kernels.set_cpu_isa(isa)
            out.append(isa)
        except UnsupportedError:
            pass
    kernels.set_cpu_isa("auto")
    return out


def weight_matrix(t, n, megabytes, rng):
    rows = max(1, int(megabytes * 1e6 // kernels.row_bytes(t, n)))
    row = kernels.quantize_row(t, rng.standard_normal(n * 8).astype(np.float32)).reshape(8, -1)
    return np.tile(row, (rows // 8 + 1, 1))[:rows].copy()  # quantizing every row would dominate the run


def gbps(t, w, x, min_seconds):
    kernels.matvec(t, w, x)  # warm-up
    best, spent = float("inf"), 0.0
    while spent < min_seconds:
        t0 = time.perf_counter()
        kernels.matvec(t, w, x)
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return w.nbytes / best / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=4.0, help="weight matrix size per type (default 4 MB)")
    ap.add_argument("--n", type=int, default=4096, help="row length (multiple of 256)")
    ap.add_argument("--seconds", type=float, default=0.3, help="measuring time per cell")
    args = ap.parse_args()

    isas = supported_isas()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(args.n).astype(np.float32)
    print(f"cpu features: {kernels.cpu_features() or '(none)'}; row length {args.n}, ~{args.mb:g} MB of weights per type")
    head = f"{'type':8}" + "".join(f"{isa + ' GB/s':>14}" for isa in isas) + "".join(f"{isa + '/gen':>12}" for isa in isas[1:])
    print(head)
    print("-" * len(head))
    for t in TYPES:
        w = weight_matrix(t, args.n, args.mb, rng)
        speeds = []
        for isa in isas:
            kernels.set_cpu_isa(isa)
            speeds.append(gbps(t, w, x, args.seconds))
        kernels.set_cpu_isa("auto")
        print(f"{t:8}" + "".join(f"{s:14.2f}" for s in speeds) + "".join(f"{s / speeds[0]:11.1f}x" for s in speeds[1:]))


if __name__ == "__main__":
    main()
