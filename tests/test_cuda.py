"""The CUDA backend against the CPU backend (docs/backends.md, "CUDA").

On a machine without a usable CUDA device the GPU tests skip, saying so; what needs no GPU runs
everywhere: the kernels' block layouts (cuda/dequant.h compiled for the host and compared bit for
bit with dgemma_dequantize_row) and the errors for a missing library, driver or device.
bench/gpu_check.sh runs this file and the op-by-op check (bench/cuda_opcheck.cpp) on a lent GPU.

Tolerance, relative L2 error of CUDA logits against the CPU's: 1e-4 (the same float operations in
another summation order, through six layers and soft-capping; measured near 3e-6 on an H200). For
quantized weights the CPU reference runs the dequantized file (dequantize_file): the CUDA kernels
multiply dequantized weights by float activations, while the CPU quantizes activations to Q8_0/Q8_K
for its integer dot products, which moves random models' logits by about 3 % (measured on an H200,
2026-11-27) and would hide any kernel error smaller than that.

Kernel sets (DGEMMA_CUDA_KERNELS): the default from compute capability 8.0 is the bf16 tensor-core
set, whose error is of bf16's size, not float's; the tests here run the float32 tiles ('float', the
exact mode) unless they name the set, and test_tensor_core_kernels_match_the_cpu_within_bf16_rounding
bounds the tensor set on the models.

Token-for-token equality of generate is checked on the trained demo model. Random models give
near-uniform distributions whose positions' entropies lie within float rounding of each other, so
a 1e-6 difference in logits reorders the entropy-bound acceptance and the runs part (seen on an
H200); the sampler itself is checked bit for bit by the op check, and the logits by the test above.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dgemma
from dgemma import kernels
from dgemma.convert.quantize_gguf import dequantize_file, quantize_file
from dgemma.convert.random_model import PRESETS, write_random_gguf
from dgemma.devices import cuda_unavailable_reason
from dgemma.gguf import GGUFFile

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = cuda_unavailable_reason()
needs_cuda = pytest.mark.skipif(NO_CUDA is not None, reason=f"no CUDA device: {NO_CUDA}")

CUDA_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]
FLOAT_TOL = 1e-4
# mini with expert rows of 256 so that every matrix takes the K-quant types (no Q5_0 fallback).
MINI_K = dict(PRESETS["mini"], moe_intermediate_size=256)


@pytest.fixture(autouse=True)
def float_kernels(monkeypatch):
    """The float32 tiles unless a test names another set (see the module's docstring)."""
    monkeypatch.setenv("DGEMMA_CUDA_KERNELS", "float")


# --- no GPU needed ------------------------------------------------------------------------------

def _host_check(source: str, out_dir: Path, *links: str) -> Path:
    """tests/<source> compiled with the host compiler against native/src (and the sources `links` of
    native/src it calls): the DG_HD functions the CUDA kernels share with the CPU, checked on machines
    without a GPU."""
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    assert compiler, "a C++ compiler is needed to check the kernels' shared functions on the host"
    exe = out_dir / Path(source).stem
    subprocess.run([compiler, "-std=c++17", "-O1", "-I", str(ROOT / "native" / "src"), "-I", str(ROOT / "native" / "include"),
                    str(ROOT / "tests" / source), *(str(ROOT / "native" / "src" / s) for s in links), "-o", str(exe)], check=True)
    return exe


@pytest.fixture(scope="module")
def dequant_check(tmp_path_factory):
    return _host_check("cuda_dequant_check.cpp", tmp_path_factory.mktemp("cuda-layouts"))


@pytest.mark.parametrize("type_name", CUDA_TYPES)
def test_kernel_block_layouts_match_the_cpu_dequantizer_bit_for_bit(dequant_check, type_name):
    info = kernels.type_info(type_name)
    n, rows = 2 * 256, 5
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((rows, n)) * rng.uniform(0.01, 30, (rows, 1))).astype(np.float32)
    x[0, :64] = 0.0  # an all-zero block
    q = kernels.quantize_rows(type_name, x).reshape(-1)
    row = kernels.row_bytes(type_name, n)
    header = np.array([kernels._type_id(type_name)], np.uint32).tobytes() + np.array([n, row, rows], np.int64).tobytes()
    out = subprocess.run([str(dequant_check)], input=header + q.tobytes(), capture_output=True, check=True).stdout
    got = np.frombuffer(out, np.float32).reshape(2, rows, n)  # dequant, then dequant8
    want = np.stack([kernels.dequantize_row(type_name, q[r * row:(r + 1) * row]) for r in range(rows)])
    assert info.block_size in (1, 32, 256)
    np.testing.assert_array_equal(got[0].view(np.uint32), want.view(np.uint32))
    np.testing.assert_array_equal(got[1].view(np.uint32), want.view(np.uint32))


def test_attention_tile_spans_match_the_cpu_backends_visibility(tmp_path):
    """attention_span.h (the CUDA attention tiles' key intervals) against the CPU backend's rule, on the host."""
    out = subprocess.run([str(_host_check("attention_span_check.cpp", tmp_path))], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    assert int(out.stdout.split()[-1]) > 1_000_000  # (query, key) pairs compared


def test_tensor_core_tile_layout_covers_each_element_once_and_multiplies_as_the_ptx_fragments_say(tmp_path):
    """cuda/mma_layout.h (the tensor-core tiles' loaders, warp tiles and fragment coordinates) on the host:
    every stage element loaded once, conflict-free fragment reads, and a block's products emulated as the
    PTX ISA's m16n8k16 fragment tables say equal to a plain product, for both tile widths."""
    out = subprocess.run([str(_host_check("mma_layout_check.cpp", tmp_path))], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    assert int(out.stdout.split()[-1]) == 128 * (32 + 128)  # outputs compared


def test_tensor_core_attention_tiles_run_on_the_host_give_plain_attention(tmp_path):
    """cuda/attention_mma.h (the tensor set's attention: tf32 mma for the scores and the output) on the
    host, lane by lane as the kernel runs it: every fragment element supplied once, every score and output
    owned once, the fragment coordinates at the PTX tables' spot values, and the result a plain attention's
    (1e-5 with exact operands, 8e-3 with tf32 ones), over random head sizes, spans and partial tiles."""
    out = subprocess.run([str(_host_check("attention_mma_check.cpp", tmp_path))], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout
    assert out.stdout.split()[0] == "ok" and int(out.stdout.split()[-1]) > 100_000  # outputs compared


def test_quantized_codes_into_fragments_with_scales_after_give_the_dequantized_products(tmp_path):
    """cuda/quant_mma.h (the tensor set's Q4_K and Q5_0 kernels: codes straight into mma fragments, each
    32-element scale applied after) on the host, lane by lane: each step's 16 slots distinct k of one
    sub-block, every A and B slot supplied once, and a warp's 16 x 8 outputs equal to the plain sum of
    the dequantized weights times x within 1e-5 of sum |w x|, over random blocks and lengths."""
    out = subprocess.run([str(_host_check("quant_mma_check.cpp", tmp_path))], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    assert out.stdout.split()[0] == "ok" and int(out.stdout.split()[-1]) == 20 * 2 * 16 * 8  # outputs compared


def test_int8_tensor_core_tiles_run_on_the_host_give_the_cpus_integer_dot_products_bit_for_bit(tmp_path):
    """cuda/int8_mma.h (DGEMMA_CUDA_INT8: Q4_K, Q6_K, Q5_0 and Q8_0 products on int8 mma) on the host, lane by
    lane as the kernels run it: the activation quantizer's warp gives the CPU's Q8_K and Q8_0 codes and
    scales exactly (planted ties of opposite sign, zero units, rows ending inside a unit); a block's stage
    copies fill each byte once; each step's A and B elements supplied once by the PTX fragment tables; the
    fragment reads conflict-free; and every output equals the CPU's portable vec_dot bit for bit, for rows
    and k ending inside a tile and a unit, and token tiles of 32 and 64."""
    exe = _host_check("int8_mma_check.cpp", tmp_path, "quant/k_quants.cpp", "quant/k_quantize.cpp", "quant/q4_q5.cpp",
                      "quant/q8_0.cpp")
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout
    assert out.stdout.split()[0] == "ok" and int(out.stdout.split()[-1]) > 500_000  # codes and outputs compared


def test_flash_attention_blocks_run_on_the_host_give_attention_within_bf16_rounding(tmp_path):
    """cuda/flash_attention.h (DGEMMA_CUDA_FLASH: attention on bf16 mma) on the host, block by block and
    lane by lane as flash_attention.cu runs it: every query, key and value element loaded once per tile
    (rings that wrap, F32/F16/BF16 caches), every A and B element supplied once by the PTX fragment
    tables, the scores' C registers used as the probabilities' A registers, conflict-free fragment reads,
    and the output within bf16's rounding of a double-precision attention (1e-2; 2e-3 of the attention of
    the bf16-rounded inputs), whole and cut into key slices, for head sizes 64 to 512 and GQA groups of
    1 to 8; decoder segments (every key) and encoder ones (causal, windowed: each row's span masked, and
    no skipped key tile holding a key of the block's rows)."""
    out = subprocess.run([str(_host_check("flash_attention_check.cpp", tmp_path))], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout
    assert out.stdout.split()[0] == "ok" and int(out.stdout.split()[-1]) > 1_000_000  # outputs compared


def test_warpgroup_product_stages_read_as_the_ptx_descriptors_say_give_a_plain_product(tmp_path):
    """cuda/wgmma.h (DGEMMA_CUDA_WGMMA: the vocabulary-sized products on Hopper's wgmma) on the host, stage
    by stage and thread by thread: the token, dense-weight and turned-table loaders write each element of a
    stage once with conflict-free warp stores; the descriptors carry the layout's offsets; the products read
    through the descriptors as the PTX ISA's K-major canonical layout says and handed out by its m64nNk16
    accumulator table equal a plain product of the bf16 operands, each (row, token) owned once, for k and
    tiles ending inside a stage; the soft embedding's parts cover the vocabulary in whole stages; the L2
    prefetches are whole blocks (GGUF's block shapes), cover each block of a row once, and touch every
    128-byte line of their ranges."""
    out = subprocess.run([str(_host_check("wgmma_layout_check.cpp", tmp_path))], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout
    assert out.stdout.split()[0] == "ok" and int(out.stdout.split()[-1]) > 100_000  # outputs compared


def test_expert_grouping_is_a_stable_sort_by_expert_thread_by_thread(tmp_path):
    """cuda/expert_group.h (moe.cu's group_kernel: one block groups a pass's n x k assignments by
    expert) run phase by phase and thread by thread on the host, its warp scans lane by lane: offsets,
    order and slot_of equal a stable sort by expert for 1 to 12256 experts and 1 to 8192 assignments,
    every count entry written once, the prefix runs consecutive and disjoint."""
    out = subprocess.run([str(_host_check("expert_group_check.cpp", tmp_path))], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout
    assert out.stdout.split()[0] == "ok" and int(out.stdout.split()[-1]) > 100_000  # assignments grouped


def test_a_warps_chunk_sum_is_the_contracts_halving_tree_bit_for_bit(tmp_path):
    """sampler_math.h's chunk_lane_sums and the CUDA sampler's five shuffle levels after it (restated lane
    by lane) against chunk_tree_sum, the contract's tree, on 3000 random chunks of e and e * d with
    zeros, subnormals and partial chunks: the same bits, so the device's entropies and draws stay the
    CPU's with a warp per chunk instead of 512 threads and two barriers a level."""
    out = subprocess.run([str(_host_check("sampler_lanes_check.cpp", tmp_path))], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout
    assert out.stdout.split() == ["ok", "3000"]


def test_router_top_k_is_the_contracts_choice_with_ties_to_the_lower_id(tmp_path):
    """router_math.h's route_top_k (the CPU backend's and the CUDA kernels' router) against a stable sort
    of the probabilities, bit for bit, on random logits with planted ties."""
    out = subprocess.run([str(_host_check("router_check.cpp", tmp_path))], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    assert int(out.stdout.split()[-1]) == 20000


def test_device_auto_is_the_cpu_without_cuda_and_an_unknown_device_is_refused():
    path = dgemma.demo_model_path()
    with pytest.raises(dgemma.InvalidArgumentError, match="device must be"):
        dgemma.Model(path, device="gpu")
    with dgemma.Model(path, threads=1) as m:
        assert m.device == ("cpu" if NO_CUDA else "cuda")
    with pytest.raises(dgemma.UnsupportedError) as e:  # no driver here, or no such device there
        dgemma.Model(path, device="cuda:999")
    assert ("no CUDA device 999" in str(e.value)) if NO_CUDA is None else str(e.value) == NO_CUDA


def test_a_missing_cuda_library_is_a_clear_error():
    code = ("import dgemma\n"
            "try:\n    dgemma.Model(dgemma.demo_model_path(), device='cuda')\n"
            "except dgemma.UnsupportedError as e:\n    print(e)\n")
    env = dict(os.environ, DGEMMA_CUDA_LIBRARY="/nonexistent/libdgemma_cuda.so")
    if os.environ.get("DGEMMA_DEV"):  # in front of what is there (the device's carried cffi, say)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert "built without CUDA support" in out and "/nonexistent/libdgemma_cuda.so" in out


def _cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(dgemma.__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "dgemma.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_cli_device_flag_and_info_say_what_cuda_can_do():
    bad = _cli("generate", "Copy: a b", "--device", "gpu")
    assert bad.returncode == 2 and "argument --device: expected auto, cpu, cuda or cuda:N, got 'gpu'" in bad.stderr
    cpu = _cli("generate", "Copy: cat dog", "--seed", "0", "--device", "cpu")
    assert cpu.returncode == 0 and cpu.stdout.strip() == "cat dog"
    info = _cli("info").stdout
    if NO_CUDA:
        assert f"GPU: none usable ({NO_CUDA})" in info
        missing = _cli("generate", "Copy: a b", "--device", "cuda")
        assert missing.returncode == 1 and missing.stderr.strip() == f"dgemma generate: error: {NO_CUDA}"
    else:
        assert re.search(r"GPU cuda:0: .* free of .*; this model needs about .* there with a \d+-token context: fits", info)


# --- on a GPU -----------------------------------------------------------------------------------

def _opcheck() -> Path | None:
    lib = Path(os.environ.get("DGEMMA_LIBRARY") or Path(dgemma.__file__).parent / "libdgemma.so")
    exe = lib.parent / "dgemma_cuda_opcheck"
    return exe if exe.exists() else None


@needs_cuda
def test_every_op_and_type_matches_the_cpu_backend(tmp_path):
    exe = _opcheck()
    assert exe, "dgemma_cuda_opcheck is built and installed beside libdgemma with the CUDA backend"
    r = subprocess.run([str(exe), "--out", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, (tmp_path / "failures.txt").read_text() + r.stdout[-4000:]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("cuda-models")
    made = {}

    def get(preset: str, type_name: str) -> Path:
        key = (preset, type_name)
        if key not in made:
            path = d / f"{preset}-{type_name}.gguf"
            if type_name in ("F32", "F16", "BF16", "Q8_0"):
                write_random_gguf(str(path), PRESETS[preset] if preset != "mini-k" else MINI_K, type_name, seed=11)
            else:
                src = get(preset, "F32")
                quantize_file(str(src), str(path), type_name, progress=None)
            made[key] = path
        return made[key]

    return get


def _trace(path, device, kv_type="f32", sc_steps=1):
    """Logits of a prompt longer than the sliding window, then two committed canvases, each denoised
    without self-conditioning, then `sc_steps` times with it (from the second on over a fresh canvas:
    the same pass key, which a backend recording passes replays)."""
    with dgemma.Model(path, threads=2, device=device, kv_type=kv_type) as m:
        c = m.config
        rng = np.random.default_rng(3)
        s = m.session()
        s.prefill(rng.integers(0, c.n_vocab, c.sliding_window + 13))
        out = []
        for _ in range(2):
            canvas = rng.integers(0, c.n_vocab, c.canvas_length)
            z = s.denoise(canvas)
            out.append(z)
            for i in range(sc_steps):
                if i:
                    canvas = rng.integers(0, c.n_vocab, c.canvas_length)
                z = s.denoise(canvas, z / 0.7)
                out.append(z)
            # Committed tokens drawn here, not the canvas's argmax: two backends within rounding of
            # each other may break a near tie differently, and then their contexts would differ.
            s.prefill(rng.integers(0, c.n_vocab, c.canvas_length))
        s.close()
        return out


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _dequantized(path: Path) -> Path:
    out = path.with_name(path.stem + "-dequantized.gguf")
    if not out.exists():
        dequantize_file(str(path), str(out))
    return out


# tiny: rows of 64, no K-quants; mini-k: every matrix a K-quant; mini and medium with the _M mixes: expert rows
# of 128 (704 in the 26B files), not a multiple of 256, take the fallbacks (Q5_0 under Q4_K_M, Q5_1 under Q5_K_M) as in the real 26B files.
@needs_cuda
@pytest.mark.parametrize("preset, type_name", [("tiny", t) for t in ("F32", "F16", "BF16", "Q8_0", "Q4_0")] +
                         [("mini-k", t) for t in ("F32", "F16", "BF16", "Q8_0", "Q4_K", "Q5_K", "Q6_K")] +
                         [("mini", "Q4_K_M"), ("mini", "Q5_K_M"), ("medium", "Q8_0"), ("medium", "Q4_K_M")])
def test_model_logits_match_the_cpu(models, preset, type_name):
    path = models(preset, type_name)
    reference = path if type_name in ("F32", "F16", "BF16") else _dequantized(path)
    for got, want in zip(_trace(path, "cuda"), _trace(reference, "cpu")):
        _assert_rows_close(got, want)


def _assert_rows_close(got, want):
    """Logits rows [n, vocab] within FLOAT_TOL of the reference, except a few rows a routing near-tie moved.

    The backends sum in different orders (relative differences near 1e-6). Where two experts' router
    scores are that close, the top-k choice can differ for one token in one layer: that token's row
    moves by the difference of the two experts (H200, medium Q8_0, 2026-11-27: one canvas of 256 rows
    had 2 rows at 1e-3..8.8e-3, and through attention the others at a median of 2.6e-5; the other
    canvases, and the reference kernel set, stayed under 3e-6 everywhere). A systematic error moves
    every row, so at most 2 % of rows may exceed FLOAT_TOL, none 3e-2, and the median row stays
    within FLOAT_TOL."""
    assert np.isfinite(got).all()
    rows = np.linalg.norm(got - want, axis=-1) / np.linalg.norm(want, axis=-1)
    assert np.median(rows) <= FLOAT_TOL, f"median row off by {np.median(rows):.2e}"
    assert (rows > FLOAT_TOL).sum() <= 0.02 * rows.size, f"{(rows > FLOAT_TOL).sum()} of {rows.size} rows above {FLOAT_TOL}"
    assert rows.max() <= 3e-2, f"row {rows.argmax()} off by {rows.max():.2e}"


# The bf16 tensor-core set (DGEMMA_CUDA_KERNELS=tensor): operands rounded to 8 significant bits
# (relative error up to 2^-9 each) through every product of six layers.
def _bf16_weights(path: Path) -> Path:
    """The dequantized file with every matrix rounded to bf16 (round to nearest even), still F32."""
    out = path.with_name(path.stem + "-bf16-weights.gguf")
    if not out.exists():
        shutil.copy(_dequantized(path), out)
        with GGUFFile(out) as f:
            matrices = [t for t in f.tensors.values() if len(t.shape) >= 2 and t.type_name == "F32"]
        data = np.memmap(out, dtype=np.uint8, mode="r+")
        for t in matrices:
            u = data[t.offset:t.offset + t.nbytes].view(np.uint32)
            u[...] = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
        data.flush()
        del data
    return out


# The tensor-core set rounds both operands of every product to bf16. How far that moves a model's
# logits depends on the model (a random mini moves about 1 %, medium 0.7 %), so the bound is measured
# on the model itself: the CPU on the same weights rounded to bf16 (the weights' share of the error);
# the activations' rounding is of the same size and independent, so together about sqrt(2) times
# that, and the test allows 3 times.
TENSOR_MARGIN = 3.0


@needs_cuda
@pytest.mark.parametrize("products", ["bf16", "qmma", "int8", "flash", "wgmma"])
@pytest.mark.parametrize("preset, type_name", [("mini-k", "Q4_K"), ("mini", "Q4_K_M"), ("medium", "Q4_K_M"), ("mini-k", "Q8_0")])
def test_tensor_core_kernels_match_the_cpu_within_bf16_rounding(models, preset, type_name, monkeypatch, products):
    """products=qmma (DGEMMA_CUDA_QMMA): the Q4_K and Q5_0 products on quantized fragments, scales after
    (cuda/qmma.cuh): the same bf16 activations, the weights exact, so within the same bound.
    products=int8 (DGEMMA_CUDA_INT8): Q4_K, Q6_K, Q5_0 and Q8_0 products on int8 tensor cores take the CPU's
    quantized activations and integer sums, so they are held against the CPU on the quantized file itself
    (the activations' quantization is in both); what remains of the bf16 bound is the other products
    (Q6_K, the soft embedding) and the tf32 attention.
    products=flash (DGEMMA_CUDA_FLASH): the bf16 products with the decoder's attention as flash attention
    on bf16 tensor cores (cuda/flash_attention.h): one more bf16 rounding of the same size, within the bound.
    products=wgmma (DGEMMA_CUDA_WGMMA, Hopper): the soft embedding on warpgroup products (cuda/wgmma.cu; these
    models' logits are too few rows for its matmul, which the op check's matmul-wide rows cover): the same
    bf16 operands, so the same bound."""
    if products == "wgmma" and _compute_capability() != 9.0:
        pytest.skip("the warpgroup products need compute capability 9.0 (Hopper)")
    path = models(preset, type_name)
    want = _trace(_dequantized(path), "cpu")
    rounded = _trace(_bf16_weights(path), "cpu")
    monkeypatch.setenv("DGEMMA_CUDA_KERNELS", "tensor")
    monkeypatch.setenv("DGEMMA_CUDA_QMMA", "1" if products == "qmma" else "0")
    monkeypatch.setenv("DGEMMA_CUDA_INT8", "1" if products == "int8" else "0")
    monkeypatch.setenv("DGEMMA_CUDA_FLASH", "1" if products == "flash" else "0")
    monkeypatch.setenv("DGEMMA_CUDA_WGMMA", "1" if products == "wgmma" else "0")
    got = _trace(path, "cuda")
    reference = _trace(path, "cpu") if products == "int8" else want
    for g, r, w, ref in zip(got, rounded, want, reference):
        assert np.isfinite(g).all()
        assert 0 < _rel(r, w) < 0.05, "the bf16-rounded weights should move the logits a little"
        assert _rel(g, ref) <= TENSOR_MARGIN * _rel(r, w)


@needs_cuda
def test_an_unknown_kernel_set_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("DGEMMA_CUDA_KERNELS", "fastest")
    with pytest.raises(dgemma.InvalidArgumentError,
                       match="DGEMMA_CUDA_KERNELS must be 'auto', 'float', 'reference' or 'tensor', got 'fastest'"):
        dgemma.Model(dgemma.demo_model_path(), device="cuda")


def _compute_capability() -> float:
    out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True, text=True,
                         check=True).stdout
    return float(out.split()[0])


@needs_cuda
@pytest.mark.parametrize("setting", [None, "auto"])
def test_the_default_kernel_set_is_the_tensor_cores_from_compute_capability_8(models, monkeypatch, setting):
    path = models("mini", "Q4_K_M")
    monkeypatch.setenv("DGEMMA_CUDA_KERNELS", "tensor" if _compute_capability() >= 8.0 else "float")
    want = _trace(path, "cuda")
    if setting is None:
        monkeypatch.delenv("DGEMMA_CUDA_KERNELS")
    else:
        monkeypatch.setenv("DGEMMA_CUDA_KERNELS", setting)
    for got, w in zip(_trace(path, "cuda"), want):
        np.testing.assert_array_equal(got, w)


@needs_cuda
@pytest.mark.parametrize("kv_type", ["f16", "bf16"])
def test_kv_cache_types_match_the_cpu(models, kv_type):
    path = models("mini", "F32")
    for got, want in zip(_trace(path, "cuda", kv_type), _trace(path, "cpu", kv_type)):
        _assert_rows_close(got, want)


@needs_cuda
def test_a_type_without_a_cuda_kernel_is_refused_naming_tensor_and_type(tmp_path, models):
    path = tmp_path / "mini-k-q3_k.gguf"
    quantize_file(str(models("mini-k", "F32")), str(path), "Q3_K", progress=None)
    with pytest.raises(dgemma.UnsupportedError, match=r"tensor '.*': type Q3_K has no CUDA kernel \(CUDA runs F32, "):
        dgemma.Model(path, device="cuda")


# Three canvases, some 38 denoising steps on the demo model.
DEMO_PROMPT = [{"role": "user", "content": "Copy: red blue green yellow cat dog bird fish tree house car road river "
                                           "hill sun moon star cloud rain snow wind fire stone sand"}]


@needs_cuda
@pytest.mark.parametrize("prompt", [DEMO_PROMPT, [{"role": "user", "content": "Write a sentence: red car, runs"}]])
def test_generate_gives_the_cpu_tokens(prompt):
    runs = {}
    for device in ("cpu", "cuda"):
        with dgemma.Model(dgemma.demo_model_path(), threads=2, device=device) as m:
            runs[device] = m.generate(prompt, max_new_tokens=3 * m.config.canvas_length, seed=5)
    assert runs["cuda"].tokens == runs["cpu"].tokens
    assert runs["cuda"].steps == runs["cpu"].steps


@needs_cuda
def test_experts_offloaded_to_the_cpu_give_the_same_tokens():
    """--n-cpu-moe on a GPU: the experts of the last 2 layers computed by the CPU backend."""
    runs = []
    for kw in (dict(device="cpu"), dict(device="cuda", host_expert_layers=2, expert_offload="cpu")):
        with dgemma.Model(dgemma.demo_model_path(), threads=2, **kw) as m:
            runs.append(m.generate(DEMO_PROMPT, max_new_tokens=3 * m.config.canvas_length, seed=5).tokens)
            if "host_expert_layers" in kw:
                assert m.memory()["weights_on_host"] > 0
    assert runs[0] == runs[1]


@needs_cuda
@pytest.mark.parametrize("layers", [1, 3, 6])
def test_streamed_experts_give_the_logits_of_experts_on_the_device(models, layers):
    """--moe-offload stream: the experts of the last `layers` layers stay in pinned host memory and
    are copied into two device slots for each pass (weight_stream.h), the next layer's while this
    one computes. The same kernels read the same bytes, so every logit is that of the experts
    placed on the device, bit for bit: over steps in a row, a prefill (which skips the last
    layer's experts) and a step after it, and a batch's tokens. The staging is what the planner
    counts."""
    from dgemma.offload import stream_staging_bytes

    path = models("mini", "Q4_K_M")
    rng = np.random.default_rng(21)
    prompt, canvas = [int(t) for t in rng.integers(0, 1024, 45)], rng.integers(0, 1024, 32)
    out = {}
    for name, kw in (("placed", {}), ("streamed", dict(host_expert_layers=layers, expert_offload="stream"))):
        with dgemma.Model(path, device="cuda", **kw) as m:
            s = m.session()
            s.prefill(prompt)
            zs = [s.denoise(canvas)]
            for _ in range(3):
                zs.append(s.denoise(canvas, zs[-1] / 0.7))
            s.prefill(canvas[:16])
            zs.append(s.denoise(canvas, zs[-1] / 0.7))
            s.close()
            tokens = [g.tokens for g in m.generate([prompt, prompt[:9]], max_new_tokens=40, seed=2)]
            out[name] = dict(zs=zs, tokens=tokens, mem=m.memory())
    for a, b in zip(out["placed"]["zs"], out["streamed"]["zs"]):
        np.testing.assert_array_equal(a, b)
    assert out["placed"]["tokens"] == out["streamed"]["tokens"]
    assert out["streamed"]["mem"]["weights_on_host"] > 0
    assert (out["streamed"]["mem"]["weights_owned"] - out["placed"]["mem"]["weights_owned"]
            == stream_staging_bytes(path, layers) - out["streamed"]["mem"]["weights_on_host"])


@needs_cuda
@pytest.mark.parametrize("kernel_set", ["float", "tensor", "tensor-qmma", "tensor-int8-flash", "tensor-wgmma"])
def test_a_batch_on_cuda_gives_each_sequence_what_it_gets_alone(models, monkeypatch, kernel_set):
    if "wgmma" in kernel_set and _compute_capability() != 9.0:
        pytest.skip("the warpgroup products need compute capability 9.0 (Hopper)")
    monkeypatch.setenv("DGEMMA_CUDA_KERNELS", kernel_set.split("-")[0])
    monkeypatch.setenv("DGEMMA_CUDA_WGMMA", "1" if "wgmma" in kernel_set else "0")
    monkeypatch.setenv("DGEMMA_CUDA_QMMA", "1" if "qmma" in kernel_set else "0")
    monkeypatch.setenv("DGEMMA_CUDA_INT8", "1" if "int8" in kernel_set else "0")
    monkeypatch.setenv("DGEMMA_CUDA_FLASH", "1" if "flash" in kernel_set else "0")
    # mini for flash attention (tiny's heads of 16 are below its 64)
    path = models("mini" if "flash" in kernel_set else "tiny", "Q8_0" if kernel_set in ("float", "tensor") else "Q4_K_M")
    prompts = [[1, 2, 3, 4, 5], [9, 8, 7]]
    with dgemma.Model(path, device="cuda") as m:
        batch = m.generate(prompts, max_new_tokens=40, seed=2)
        alone = [m.generate(p, max_new_tokens=40, seed=2) for p in prompts]
    assert [g.tokens for g in batch] == [g.tokens for g in alone]


@needs_cuda
@pytest.mark.parametrize("kernel_set", ["float", "tensor"])
def test_cuda_graphs_replay_to_the_logits_and_tokens_of_op_by_op_passes(models, monkeypatch, capfd, kernel_set):
    """DGEMMA_CUDA_GRAPH=1: each pass the model brackets is captured once as a CUDA graph and replayed
    for an equal key, a pass of a kept one's shape updating that one's executable. The same kernels run,
    so the logits and a batch's tokens are bit for bit those of passes launched op by op; the backend's
    count shows that steps were replayed and executables updated."""
    monkeypatch.setenv("DGEMMA_CUDA_KERNELS", kernel_set)
    path = models("mini", "Q4_K_M")
    prompts = [[1, 2, 3, 4, 5], [9, 8, 7]]

    def tokens():
        with dgemma.Model(path, device="cuda") as m:
            return [g.tokens for g in m.generate(prompts, max_new_tokens=40, seed=2)]

    want, want_tokens = _trace(path, "cuda", sc_steps=3), tokens()
    monkeypatch.setenv("DGEMMA_CUDA_GRAPH", "1")
    capfd.readouterr()
    got = _trace(path, "cuda", sc_steps=3)
    err = capfd.readouterr().err
    counts = re.search(r"dgemma CUDA graphs \(DGEMMA_CUDA_GRAPH\): (\d+) passes recorded \((\d+) of them updating another's\), "
                       r"(\d+) replayed(.*)", err)
    assert counts and counts.group(4) == "", err
    assert int(counts.group(3)) >= 4  # two canvases, three self-conditioned steps each
    # The second canvas's passes have the first's shapes at another n_past: recorded by updating the
    # first's executables in place, not instantiated anew.
    assert int(counts.group(2)) >= 1, err
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert tokens() == want_tokens


@needs_cuda
def test_the_device_sampler_consumes_a_draw_table_as_the_cpu():
    path = dgemma.demo_model_path()
    draws = np.random.default_rng(4).integers(0, 2**63, 200000, dtype=np.uint64)
    out = []
    for device in ("cpu", "cuda"):
        with dgemma.Model(path, threads=2, device=device) as m:
            g = m.generate(DEMO_PROMPT, max_new_tokens=3 * m.config.canvas_length, draws=draws)
            out.append((g.tokens, g.steps))
    assert out[0] == out[1]
    with dgemma.Model(path, device="cuda") as m:
        with pytest.raises(dgemma.OutOfRangeError, match="the draw table holds 5 values"):
            m.generate([1, 2, 3], max_new_tokens=16, draws=draws[:5])
