"""The CPU backend's row kernels (cpu/kernels.cpp: the RMS norm's scaling, y += a x, RoPE's rotation,
a row's maximum) on each instruction set this machine runs against the generic set, the reference
path, through a host check that links kernels.cpp alone (tests/cpu_kernels_check.cpp); the one-pass
router; the products' row-adding mode (tests/gemm_rows_check.cpp); and the thread pool, linked alone
(tests/threadpool_check.cpp)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_row_kernels_of_every_instruction_set_match_the_generic_ones(tmp_path):
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    assert compiler, "a C++ compiler is needed for the host check of the CPU kernels"
    exe = tmp_path / "cpu_kernels_check"
    subprocess.run([compiler, "-std=c++17", "-O1", "-Wno-psabi", "-I", str(ROOT / "native" / "src"), "-I",
                    str(ROOT / "native" / "include"), str(ROOT / "tests" / "cpu_kernels_check.cpp"),
                    str(ROOT / "native" / "src" / "cpu" / "kernels.cpp"), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    words = out.stdout.split()
    assert int(words[-1]) > 100_000  # elements compared
    from dgemma import kernels
    features = set(kernels.cpu_features().split())
    assert int(words[1]) >= ("avx2" in features) + ("avx512f" in features)  # the wide sets this CPU has were run


def test_one_pass_router_choice_is_the_contracts_bit_for_bit(tmp_path):
    """router_math.h's route_top_k_one_pass (the CPU backend's and the CUDA default kernels' router)
    against route_top_k (the contract): the same experts, order and weights, bit for bit, on random
    logits with planted ties and equal maxima (tests/router_one_pass_check.cpp)."""
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    assert compiler, "a C++ compiler is needed for the host check of the router"
    exe = tmp_path / "router_one_pass_check"
    subprocess.run([compiler, "-std=c++17", "-O1", "-I", str(ROOT / "native" / "src"), "-I", str(ROOT / "native" / "include"),
                    str(ROOT / "tests" / "router_one_pass_check.cpp"), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    assert int(out.stdout.split()[-1]) == 20000


def test_thread_pool_runs_every_task_once_and_rethrows_a_tasks_exception(tmp_path):
    """cpu/threadpool.cpp linked alone (tests/threadpool_check.cpp): thousands of loops of every size
    on 2-4 threads, each task once and done when run() returns, an exception rethrown with no task
    still running, and the pool usable after it."""
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    assert compiler, "a C++ compiler is needed for the host check of the thread pool"
    exe = tmp_path / "threadpool_check"
    subprocess.run([compiler, "-std=c++17", "-O1", "-pthread", "-I", str(ROOT / "native" / "src"),
                    str(ROOT / "tests" / "threadpool_check.cpp"), str(ROOT / "native" / "src" / "cpu" / "threadpool.cpp"),
                    "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout
    assert int(out.stdout.split()[-1]) > 9000  # loops checked


def test_row_adding_products_give_the_bits_of_a_stored_product_and_axpy(tmp_path):
    """GemmArgs::y_rows (the experts' down products summed into their tokens' rows): on each set this
    CPU runs, F32/F16/BF16 (added in the AVX-512 register tiles) and Q8_0/Q5_0/Q4_K (stored, then
    added by gemm()), packed and not, the rows end with exactly the bits of the stored product
    followed by axpy (tests/gemm_rows_check.cpp, linked with the CPU kernels). The project's flags
    (-std=gnu++17: contracted multiply-adds) are the library's, which axpy's one rounding needs."""
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    assert compiler, "a C++ compiler is needed for the host check of the products"
    src = ROOT / "native" / "src"
    sources = sorted(str(p) for p in [*(src / "cpu").glob("gemm*.cpp"), *(src / "cpu").glob("vec_dot_*.cpp"),
                                      src / "cpu" / "kernels.cpp", src / "cpu" / "dispatch.cpp", *(src / "quant").glob("*.cpp"),
                                      src / "error.cpp"])
    exe = tmp_path / "gemm_rows_check"
    subprocess.run([compiler, "-std=gnu++17", "-O2", "-Wno-psabi", "-I", str(src), "-I", str(ROOT / "native" / "include"),
                    str(ROOT / "tests" / "gemm_rows_check.cpp"), *sources, "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout
    words = out.stdout.split()
    # (type, k, rows, tokens, packed) cases compared: 216 a set (the packed forms vary by set)
    assert int(words[-1]) >= 200 * int(words[1])
    from dgemma import kernels
    features = set(kernels.cpu_features().split())
    assert int(words[1]) >= 1 + ("avx2" in features) + ("avx512f" in features)  # every set this CPU has was run
