"""Quantized tensor types of the core against gguf.quants (the oracle) and against float64 math.

Build the library first (cmake --build build/dev) and point DGEMMA_LIBRARY at it until the package is installed.
"""

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants

from dgemma import kernels
from dgemma._native import check, ffi, lib
from dgemma.errors import InvalidArgumentError, UnsupportedError

SMALL_BLOCK = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
K_QUANTS = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_XS]
DOT_TYPES = SMALL_BLOCK + K_QUANTS

# Byte offsets of the f16 scale fields in each block (ggml's layouts, see native/src/quant/*.h).
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208], T.IQ4_XS: [0],
}


def info(t):
    return kernels.type_info(int(t))


def f16_values(kind, rng, size):
    """f16 bit patterns of a kind of scale; never inf or NaN."""
    sign = rng.integers(0, 2, size, dtype=np.uint16) << 15
    if kind == "normal":      # any finite normal exponent, 6.1e-5 .. 65504
        bits = rng.integers(0x0400, 0x7c00, size, dtype=np.uint16)
    elif kind == "moderate":  # 2^-8 .. 2: keeps dot products well inside float32
        bits = rng.integers(0x1c00, 0x4000, size, dtype=np.uint16)
    elif kind == "subnormal":
        bits = rng.integers(0x0001, 0x0400, size, dtype=np.uint16)
    elif kind == "tiny":
        bits = np.full(size, 0x0001, dtype=np.uint16)
    elif kind == "huge":
        bits = np.full(size, 0x7bff, dtype=np.uint16)
    elif kind == "zero":
        bits = np.zeros(size, dtype=np.uint16)
    else:
        raise ValueError(kind)
    return bits | sign


def random_blocks(t, n_blocks, rng, scale_kind):
    """n_blocks random blocks of type t, with the f16 scales replaced by `scale_kind` values."""
    raw = rng.integers(0, 256, (n_blocks, info(t).type_size), dtype=np.uint8)
    for off in F16_FIELDS[t]:
        raw[:, off:off + 2] = f16_values(scale_kind, rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(-1)


def same_floats(a, b):
    """Bitwise equality of float32 arrays (so -0.0 != 0.0)."""
    return np.array_equal(np.asarray(a, np.float32).view(np.uint32), np.asarray(b, np.float32).view(np.uint32))


# ---- dequantization: exact against gguf.quants ----

@pytest.mark.parametrize("scale_kind", ["normal", "moderate", "subnormal", "tiny", "huge", "zero"])
@pytest.mark.parametrize("t", DOT_TYPES, ids=lambda t: t.name)
def test_dequantize_matches_gguf(t, scale_kind):
    rng = np.random.default_rng([int(t), len(scale_kind)])
    data = random_blocks(t, 64, rng, scale_kind)
    ours = kernels.dequantize_row(t, data)
    ref = quants.dequantize(data, t).reshape(-1)
    assert same_floats(ours, ref)


@pytest.mark.parametrize("t", DOT_TYPES, ids=lambda t: t.name)
def test_dequantize_zero_blocks(t):
    data = np.zeros(3 * info(t).type_size, dtype=np.uint8)
    assert same_floats(kernels.dequantize_row(t, data), quants.dequantize(data, t).reshape(-1))


def test_q8_k_dequantize():
    rng = np.random.default_rng(15)
    n_blocks = 8
    blocks = np.zeros(n_blocks, dtype=[("d", "<f4"), ("qs", "i1", 256), ("bsums", "<i2", 16)])
    blocks["d"] = rng.standard_normal(n_blocks).astype(np.float32) * 10.0 ** rng.integers(-30, 30, n_blocks)
    blocks["qs"] = rng.integers(-128, 128, (n_blocks, 256))
    ref = (blocks["d"][:, None] * blocks["qs"].astype(np.float32)).reshape(-1)
    assert same_floats(kernels.dequantize_row(T.Q8_K, blocks.view(np.uint8)), ref)


# ---- quantization ----

def sample_rows(rng, n):
    """Rows that exercise the quantizers: Gaussian at several magnitudes, ties, zeros, constants, outliers."""
    rows = [rng.standard_normal(n) * s for s in (1.0, 1e-6, 1e-20, 3e4)]
    rows.append(rng.integers(-8, 9, n) * 0.25)  # many exact ties and repeated maxima
    rows.append(np.zeros(n))
    rows.append(np.full(n, -1.5))
    outlier = rng.standard_normal(n) * 1e-3
    outlier[::97] = 50.0
    rows.append(outlier)
    return np.stack(rows).astype(np.float32)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # f16 min overflows: inf both sides
@pytest.mark.parametrize("t", SMALL_BLOCK, ids=lambda t: t.name)
def test_quantize_bit_exact_with_gguf(t):
    rows = sample_rows(np.random.default_rng(int(t)), 1024)
    for row in rows:
        ref = quants.quantize(row[None, :], t).reshape(-1)
        assert np.array_equal(kernels.quantize_row(t, row), ref)


# Bounds on RMS(x - dequantize(quantize(x))) / RMS(x) for standard-normal rows. A uniform grid of step
# D has RMS error D / sqrt(12). Expected group ranges of N(0,1): about 3.5 for 16 values and 4.1 for
# 32 (E[max - min]); symmetric types use the largest |x|, about 1.8 (16) and 2.1 (32). So:
#   Q2_K: 4 levels over 3.5 -> D = 1.17, 0.34; the fitted scale/min gets ~0.28
#   Q3_K: 8 levels over 2*1.8 -> D = 0.45, 0.13; 6-bit group scales add a little (~0.14)
#   Q4_K: 16 levels over 4.1 -> D = 0.27, 0.079 (~0.071)
#   Q5_K: 32 levels over 4.1 -> D = 0.13, 0.038 (~0.036)
#   Q6_K: 64 levels over 2*1.8 -> D = 0.056, 0.016 (~0.018 with 8-bit group scales)
#   IQ4_XS: 16 non-uniform levels, 32 values, like Q4_K (~0.075)
# Each bound is the estimate plus about 25% (the fits must not do worse than a plain grid).
K_RMS_BOUND = {T.Q2_K: 0.36, T.Q3_K: 0.17, T.Q4_K: 0.095, T.Q5_K: 0.047, T.Q6_K: 0.022, T.IQ4_XS: 0.095}


@pytest.mark.parametrize("t", K_QUANTS, ids=lambda t: t.name)
def test_k_quantizer_error_bound(t):
    rng = np.random.default_rng(int(t))
    for scale in (1.0, 1e-3, 1e3):  # scale invariance while d stays a normal f16
        x = (rng.standard_normal(256 * 64) * scale).astype(np.float32)
        q = kernels.quantize_row(t, x)
        y = quants.dequantize(q, t).reshape(-1)  # the oracle reads our layout
        assert same_floats(y, kernels.dequantize_row(t, q))
        rel = np.sqrt(np.mean((x.astype(np.float64) - y) ** 2)) / np.sqrt(np.mean(x.astype(np.float64) ** 2))
        assert rel < K_RMS_BOUND[t], f"{t.name} scale {scale}: relative RMS error {rel:.4f}"


@pytest.mark.parametrize("t", K_QUANTS, ids=lambda t: t.name)
def test_k_quantizer_edge_rows(t):
    rng = np.random.default_rng(100 + int(t))
    for row in sample_rows(rng, 512):
        y = kernels.dequantize_row(t, kernels.quantize_row(t, row))
        assert np.all(np.isfinite(y))
        if not row.any():
            assert not y.any()
        # No value may move by more than the block's largest magnitude (a coarse sanity bound). Only
        # where the f16 super-scales (about amax / 63) stay normal: below, the format itself loses them.
        blocks, yb = row.reshape(-1, 256).astype(np.float64), y.reshape(-1, 256)
        amax = np.abs(blocks).max(axis=1, keepdims=True)
        ok = np.abs(blocks - yb) <= amax * 1.01
        assert np.all(ok | (amax < 1e-2))


def test_q8_k_quantize():
    rng = np.random.default_rng(8)
    x = (rng.standard_normal(256 * 4) * np.repeat([1.0, 1e-8, 0.0, 1e8], 256)).astype(np.float32)
    raw = kernels.quantize_row(T.Q8_K, x)
    blocks = raw.view([("d", "<f4"), ("qs", "i1", 256), ("bsums", "<i2", 16)])
    assert np.array_equal(blocks["bsums"], blocks["qs"].reshape(-1, 16, 16).astype(np.int32).sum(axis=2))
    assert np.all(np.abs(blocks["qs"].astype(int)) <= 127)
    amax = np.abs(x.reshape(-1, 256)).max(axis=1)
    y = kernels.dequantize_row(T.Q8_K, raw).reshape(-1, 256)
    err = np.abs(y - x.reshape(-1, 256)).max(axis=1)
    assert np.all(err <= amax / 254 * 1.0001)


# ---- dot products, per instruction set ----

def isa_params():
    out = []
    for isa in kernels.ISAS:
        try:
            kernels.set_cpu_isa(isa)
            out.append(isa)
        except UnsupportedError:
            out.append(pytest.param(isa, marks=pytest.mark.skip(reason=f"this CPU lacks {isa} ({kernels.cpu_features()!r})")))
    kernels.set_cpu_isa("auto")
    return out


@pytest.fixture
def isa(request):
    kernels.set_cpu_isa(request.param)
    yield request.param
    kernels.set_cpu_isa("auto")


def dot_bound(w, x, block):
    """Worst-case error of the integer dot product: each activation moves by at most half a step of its
    block's quantization (amax / 254 for Q8_0 and Q8_K), plus float32 rounding of the sums."""
    half_step = np.repeat(np.abs(x.reshape(-1, block)).max(axis=1) / 254.0, block)
    return float(np.sum(np.abs(w) * half_step)) * 1.001 + 1e-5 * float(np.sum(np.abs(w * x))) + 1e-30


@pytest.mark.parametrize("isa", isa_params(), indirect=True)
@pytest.mark.parametrize("t", DOT_TYPES, ids=lambda t: t.name)
def test_vec_dot(t, isa):
    rng = np.random.default_rng(int(t) * 7 + len(isa))
    bs = info(t).block_size
    act_block = 32 if bs == 32 else 256
    for trial in range(6):
        n = bs * int(rng.integers(1, 33))
        x = rng.standard_normal(n).astype(np.float32) * np.float32(10.0 ** rng.integers(-3, 4))
        if trial % 2 == 0:  # a quantized Gaussian row
            w_row = kernels.quantize_row(t, rng.standard_normal(n).astype(np.float32))
        else:  # arbitrary codes and scale bits
            w_row = random_blocks(t, n // bs, rng, "moderate")
        w = quants.dequantize(w_row, t).reshape(-1).astype(np.float64)
        ref = float(np.dot(w, x.astype(np.float64)))
        got = kernels.vec_dot(t, w_row, x)
        assert abs(got - ref) <= dot_bound(w, x.astype(np.float64), act_block), (n, got, ref)


@pytest.mark.parametrize("isa", isa_params(), indirect=True)
@pytest.mark.parametrize("t", DOT_TYPES, ids=lambda t: t.name)
def test_vec_dot_agrees_with_generic(t, isa):
    """The SIMD kernels do the same integer math: results agree to float32 rounding of the block sums."""
    rng = np.random.default_rng(int(t))
    n = info(t).block_size * 24
    w_row = random_blocks(t, 24, rng, "moderate")
    x = rng.standard_normal(n).astype(np.float32)
    got = kernels.vec_dot(t, w_row, x)
    kernels.set_cpu_isa("generic")
    ref = kernels.vec_dot(t, w_row, x)
    scale = float(np.sum(np.abs(quants.dequantize(w_row, t).reshape(-1).astype(np.float64) * x)))
    assert abs(got - ref) <= 1e-6 * scale


def test_matvec_rows_match_vec_dot():
    rng = np.random.default_rng(3)
    n, rows = 512, 5
    w = np.stack([kernels.quantize_row(T.Q4_K, rng.standard_normal(n).astype(np.float32)) for _ in range(rows)])
    x = rng.standard_normal(n).astype(np.float32)
    assert np.array_equal(kernels.matvec(T.Q4_K, w, x), [kernels.vec_dot(T.Q4_K, r, x) for r in w])



# ---- register-blocked matrix products (gemm), per instruction set ----

# (rows, tokens, blocks per row): tiles and every edge (rows and tokens not multiples of the tiles,
# one token, one row, an odd number of 32-element blocks, 257 tokens, rows past two panel pairs, rows
# longer than one sweep of the AVX-512 32-element panels: 70 blocks in 3 chunks). The token counts
# leave every tail of the AVX-512 tiles (1 or 2 after tiles of 3; 1, 2 or 3 after tiles of 4).
GEMM_SHAPES = [(13, 7, 5), (1, 1, 3), (4, 257, 2), (9, 4, 1), (6, 12, 4), (70, 9, 3), (20, 13, 70), (5, 6, 9)]


def gemm_inputs(t, rows, tokens, blocks, rng):
    n = info(t).block_size * blocks
    w = random_blocks(t, rows * blocks, rng, "moderate").reshape(rows, -1)
    x = rng.standard_normal((tokens, n)).astype(np.float32)
    return w, x


@pytest.mark.parametrize("isa", isa_params(), indirect=True)
@pytest.mark.parametrize("t", DOT_TYPES, ids=lambda t: t.name)
def test_gemm_agrees_with_generic(t, isa):
    """Each set's kernel on fresh random inputs against the generic path (vec_dot per pair): the same
    integer sums, so results agree to float32 rounding of the block sums."""
    rng = np.random.default_rng()
    for rows, tokens, blocks in GEMM_SHAPES:
        w, x = gemm_inputs(t, rows, tokens, blocks, rng)
        got = kernels.gemm(t, w, x)
        kernels.set_cpu_isa("generic")
        ref = kernels.gemm(t, w, x)
        kernels.set_cpu_isa(isa)
        wf = quants.dequantize(w.reshape(-1), t).reshape(rows, -1).astype(np.float64)
        scale = np.abs(x.astype(np.float64)) @ np.abs(wf).T
        assert np.all(np.abs(got - ref) <= 1e-6 * scale + 1e-30), (rows, tokens, blocks)


@pytest.mark.parametrize("isa", isa_params(), indirect=True)
@pytest.mark.parametrize("t", [T.Q8_0, T.Q4_0, T.Q5_0, T.Q4_1, T.Q5_1, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_XS],
                         ids=lambda t: t.name)
def test_gemm_extreme_codes_do_not_saturate(t, isa):
    """Rows whose bytes are all 0x80, 0x7f, 0xff or 0x00 (Q8_0 codes -128 and 127, the largest unsigned
    codes and scales of the others) against activations of +-127 (quantized exactly: codes +-127 for
    Q8_0, -+128 for Q8_K): a kernel whose int16 pair sums saturate is far off the float64 product."""
    rng = np.random.default_rng()
    n, size = 512, info(t).type_size
    n_blocks = n // info(t).block_size
    patterns = [0x80, 0x7f, 0xff, 0x00] * 2 + [None, None, None]
    w = np.empty((len(patterns), n_blocks, size), np.uint8)
    for r, byte in enumerate(patterns):
        w[r] = rng.choice(np.array([0x80, 0x7f, 0xff, 0x00], np.uint8), (n_blocks, size)) if byte is None else byte
    for off in F16_FIELDS[t]:
        w[:, :, off:off + 2] = np.array([1.0], np.float16).view(np.uint8)
    w = w.reshape(len(patterns), -1)
    x = np.stack([np.full(n, 127.0), np.full(n, -127.0)] + [rng.choice([-127.0, 127.0], n) for _ in range(3)])
    x = x.astype(np.float32)
    wf = quants.dequantize(w.reshape(-1), t).reshape(len(patterns), n).astype(np.float64)
    ref = x.astype(np.float64) @ wf.T
    scale = np.abs(x.astype(np.float64)) @ np.abs(wf).T
    got = kernels.gemm(t, w, x)
    assert np.all(np.abs(got - ref) <= 1e-6 * scale), np.max(np.abs(got - ref) / scale)


FLOAT_TYPES = {T.F32: np.float32, T.F16: np.float16}


@pytest.mark.parametrize("isa", isa_params(), indirect=True)
@pytest.mark.parametrize("t", [T.F32, T.F16, T.BF16], ids=lambda t: t.name)
def test_gemm_float_weights(t, isa):
    """F32/F16/BF16 weights against float activations: exact products of the widened weights, float32
    sums; odd row lengths take the masked tail."""
    rng = np.random.default_rng()
    for rows, tokens, n in [(13, 7, 176), (1, 1, 5), (4, 257, 48), (9, 4, 33)]:
        wf = rng.standard_normal((rows, n)).astype(np.float32)
        if t == T.BF16:
            bits = wf.view(np.uint32) >> 16
            w, wf = bits.astype(np.uint16).view(np.uint8).reshape(rows, -1), (bits << 16).view(np.float32)
        else:
            w = wf.astype(FLOAT_TYPES[t])
            wf = w.astype(np.float32)
            w = w.view(np.uint8).reshape(rows, -1)
        x = rng.standard_normal((tokens, n)).astype(np.float32)
        ref = x.astype(np.float64) @ wf.T.astype(np.float64)
        scale = np.abs(x.astype(np.float64)) @ np.abs(wf.T.astype(np.float64))
        assert np.all(np.abs(kernels.gemm(t, w, x) - ref) <= 1e-6 * scale + 1e-30), (rows, tokens, n)


@pytest.mark.parametrize("t", [T.F32, T.F16, T.BF16], ids=lambda t: t.name)
def test_float_panels_give_the_same_bits_on_avx2_and_avx512(t):
    """The AVX2 and AVX-512 float panels run one FMA chain per (row, token) over k in order, chunks
    stored and reloaded exactly: the same bits, on rows that fill no panel and a row past a chunk."""
    have = []
    for isa in ("avx512", "avx2"):
        try:
            kernels.set_cpu_isa(isa)
            have.append(isa)
        except UnsupportedError:
            pass
    kernels.set_cpu_isa("auto")
    if len(have) < 2:
        pytest.skip(f"needs both AVX2 and AVX-512 ({kernels.cpu_features()!r})")
    rng = np.random.default_rng()
    for rows, tokens, n in [(13, 7, 176), (37, 29, 1100), (8, 12, 8)]:
        wf = rng.standard_normal((rows, n)).astype(np.float32)
        w = (wf.view(np.uint32) >> 16).astype(np.uint16) if t == T.BF16 else wf.astype(FLOAT_TYPES[t])
        w = w.view(np.uint8).reshape(rows, -1)
        x = rng.standard_normal((tokens, n)).astype(np.float32)
        got = {}
        for isa in have:
            kernels.set_cpu_isa(isa)
            got[isa] = kernels.gemm(t, w, x)
        kernels.set_cpu_isa("auto")
        np.testing.assert_array_equal(got["avx2"].view(np.uint32), got["avx512"].view(np.uint32))


def float_weights(t, rows, n, rng):
    """Random rows of float type t as stored (uint8 [rows, row bytes]) and their float32 values."""
    wf = rng.standard_normal((rows, n)).astype(np.float32)
    if t == T.BF16:
        bits = wf.view(np.uint32) >> 16
        return bits.astype(np.uint16).view(np.uint8).reshape(rows, -1), (bits << 16).view(np.float32)
    w = wf.astype(FLOAT_TYPES[t])
    return w.view(np.uint8).reshape(rows, -1), w.astype(np.float32)


@pytest.mark.parametrize("isa", isa_params(), indirect=True)
@pytest.mark.parametrize("t", [T.F32, T.F16, T.BF16], ids=lambda t: t.name)
def test_float_panels_packed_at_load_give_the_rows_bits(t, isa, monkeypatch):
    """The products over weights packed at load (DGEMMA_GEMM_PACKED=1 packs them as the backend does;
    the 16-bit packs are widened by the first tile of tokens) against the same rows read as stored: one
    FMA chain per (row, token) over k in order either way, so the same bits, for every token count of
    a tile's tail (1 .. 25 tokens), rows that fill no panel, the experts' 176 and a row past a chunk
    (528, 1100); each token's result is also what it gets alone, and within float32 of the float64
    product."""
    rng = np.random.default_rng()
    for rows, n in [(32, 176), (13, 528), (37, 1100), (16, 5)]:
        w, wf = float_weights(t, rows, n, rng)
        for tokens in list(range(1, 26)) + [64, 67]:
            x = rng.standard_normal((tokens, n)).astype(np.float32)
            monkeypatch.delenv("DGEMMA_GEMM_PACKED", raising=False)
            rows_read = kernels.gemm(t, w, x)
            monkeypatch.setenv("DGEMMA_GEMM_PACKED", "1")
            packed = kernels.gemm(t, w, x)
            assert same_floats(packed, rows_read), (rows, n, tokens)
            ref = x.astype(np.float64) @ wf.T.astype(np.float64)
            scale = np.abs(x.astype(np.float64)) @ np.abs(wf.T.astype(np.float64))
            assert np.all(np.abs(packed - ref) <= 1e-6 * scale + 1e-30), (rows, n, tokens)
        for lo in (0, 5, 13, 66):
            assert same_floats(packed[lo:lo + 1], kernels.gemm(t, w, x[lo:lo + 1])), (rows, n, lo)


@pytest.mark.parametrize("isa", isa_params(), indirect=True)
@pytest.mark.parametrize("t", DOT_TYPES, ids=lambda t: t.name)
def test_gemm_over_packed_weights_agrees_with_generic(t, isa, monkeypatch):
    """test_gemm_agrees_with_generic with the weights packed at load where the set's kernel packs them
    (DGEMMA_GEMM_PACKED=1): the packs the model's products read, against vec_dot per pair."""
    monkeypatch.setenv("DGEMMA_GEMM_PACKED", "1")
    test_gemm_agrees_with_generic(t, isa)


@pytest.mark.parametrize("isa", isa_params(), indirect=True)
@pytest.mark.parametrize("t", [T.F32, T.Q8_0, T.Q4_K], ids=lambda t: t.name)
def test_gemm_over_many_tokens_is_the_same_per_segment(t, isa):
    """A batched pass's products take the activation rows in chunks of 256 KiB (252 rows of 256
    floats here; fewer, larger chunks of quantized rows): 1003 tokens, several chunks and an edge,
    give each run of tokens starting at a multiple of 12 exactly what that run gets alone (a
    sequence's rows do not depend on what shares its pass)."""
    rng = np.random.default_rng()
    rows, n = 21, 256
    if t == T.F32:
        wf = rng.standard_normal((rows, n)).astype(np.float32)
        w = wf.view(np.uint8)
    else:
        w = random_blocks(t, rows * n // info(t).block_size, rng, "moderate").reshape(rows, -1)
    x = rng.standard_normal((1003, n)).astype(np.float32)
    got = kernels.gemm(t, w, x)
    for lo, hi in [(0, 252), (240, 516), (504, 1003), (996, 1003)]:
        assert same_floats(got[lo:hi], kernels.gemm(t, w, x[lo:hi])), (lo, hi)
    if t == T.F32:
        ref = x.astype(np.float64) @ wf.T.astype(np.float64)
        scale = np.abs(x.astype(np.float64)) @ np.abs(wf.T.astype(np.float64))
        assert np.all(np.abs(got - ref) <= 1e-6 * scale + 1e-30)


@pytest.mark.parametrize("isa", isa_params(), indirect=True)
@pytest.mark.parametrize("t", DOT_TYPES, ids=lambda t: t.name)
def test_gemm_matches_float64(t, isa):
    rng = np.random.default_rng()
    bs = info(t).block_size
    act_block = 32 if bs == 32 else 256
    rows, tokens, blocks = 7, 5, 3
    w, x = gemm_inputs(t, rows, tokens, blocks, rng)
    w[::2] = np.stack([kernels.quantize_row(t, rng.standard_normal(bs * blocks).astype(np.float32))
                       for _ in range(len(w[::2]))])
    got = kernels.gemm(t, w, x)
    wf = quants.dequantize(w.reshape(-1), t).reshape(rows, -1).astype(np.float64)
    for i in range(tokens):
        for r in range(rows):
            ref = float(np.dot(wf[r], x[i].astype(np.float64)))
            assert abs(got[i, r] - ref) <= dot_bound(wf[r], x[i].astype(np.float64), act_block), (i, r, got[i, r], ref)


@pytest.mark.parametrize("isa", isa_params(), indirect=True)
def test_gemm_quantizes_activations_like_the_reference(isa):
    """Q8_0 weight rows that are unit vectors read the quantized activations back exactly: every set's
    activation quantizer must round as ggml's reference does (half away from zero, ties included).
    20 blocks: AVX-512 quantizes up to 16 at a time, so one full group and one short; blocks of
    scales from 1e-4 to 1e4 side by side. A block with an infinity sends its group down the per-block
    path: every product over it is non-finite, as on the generic path."""
    n = 640
    eye = np.eye(n, dtype=np.float32)
    blocks = np.zeros((n, n // 32, 34), np.uint8)
    blocks[:, :, :2] = np.array([1.0], np.float16).view(np.uint8)  # d = 1, codes one-hot
    blocks[:, :, 2:] = eye.reshape(n, n // 32, 32)
    w = blocks.reshape(n, -1)
    assert np.array_equal(quants.dequantize(w.reshape(-1), T.Q8_0).reshape(n, n), eye)
    rng = np.random.default_rng()
    ties = np.concatenate([[127.0], np.arange(-15.5, 15.5, 1.0), rng.standard_normal(n - 32) * 40]).astype(np.float32)
    scaled = (rng.standard_normal(n) * np.repeat(10.0 ** rng.uniform(-4, 4, n // 32), 32)).astype(np.float32)
    x = np.stack([ties, rng.standard_normal(n).astype(np.float32) * 1e-3, np.zeros(n, np.float32), scaled])
    ref = np.stack([kernels.dequantize_row(T.Q8_0, kernels.quantize_row(T.Q8_0, xi)) for xi in x])
    assert same_floats(kernels.gemm(T.Q8_0, w, x), ref)
    with_inf = rng.standard_normal((1, n)).astype(np.float32)
    with_inf[0, 32 * 3 + 5] = np.inf
    assert not np.isfinite(kernels.gemm(T.Q8_0, w, with_inf)).any()


@pytest.mark.parametrize("isa", isa_params(), indirect=True)
def test_gemm_quantizes_k_activations_like_the_reference(isa):
    """Q4_K weight rows that are unit vectors (d = 1, scales 1, mins 0, codes one-hot) read the Q8_K
    activations back exactly: every set's Q8_K quantizer must scale by the largest magnitude and round
    half to even as ggml's reference does (the scale's sign, taken from the first such element, flips
    codes and scale together and cannot be seen in the values)."""
    n = 256
    blocks = np.zeros((n, 144), np.uint8)
    blocks[:, 0:2] = np.array([1.0], np.float16).view(np.uint8)
    blocks[:, 4:8] = 1     # scales of groups 0..3 (mins 0)
    blocks[:, 12:16] = 1   # low nibbles: scales of groups 4..7
    for e in range(n):  # element e = 64 k + 32 h + l: nibble h of qs[32 k + l]
        k, h, l = e // 64, e % 64 // 32, e % 32
        blocks[e, 16 + 32 * k + l] = 1 << (4 * h)
    assert np.array_equal(quants.dequantize(blocks.reshape(-1), T.Q4_K).reshape(n, n), np.eye(n, dtype=np.float32))
    rng = np.random.default_rng()
    ties = np.concatenate([[-127.0, 127.0], np.arange(-126.5, 127.0, 1.0)]).astype(np.float32)  # iscale 1: ties at k + 0.5
    x = np.stack([ties, rng.standard_normal(n).astype(np.float32) * 40, np.zeros(n, np.float32)])
    ref = np.stack([kernels.dequantize_row(T.Q8_K, kernels.quantize_row(T.Q8_K, xi)) for xi in x])
    assert np.array_equal(kernels.gemm(T.Q4_K, blocks, x), ref)  # values: a zero code times a negative d is -0.0


def test_generic_gemm_is_vec_dot_per_pair(isa="generic"):
    kernels.set_cpu_isa("generic")
    try:
        rng = np.random.default_rng(5)
        w, x = gemm_inputs(T.Q4_K, 3, 2, 2, rng)
        assert same_floats(kernels.gemm(T.Q4_K, w, x), [[kernels.vec_dot(T.Q4_K, r, xi) for r in w] for xi in x])
    finally:
        kernels.set_cpu_isa("auto")


def test_gemm_bad_inputs():
    w = np.zeros((2, 34), np.uint8)
    with pytest.raises(InvalidArgumentError):
        kernels.gemm(T.Q8_0, w, np.zeros((3, 64), np.float32))  # rows of 64 need 68 bytes
    with pytest.raises(UnsupportedError):
        kernels.gemm(T.Q8_1, np.zeros((2, 36), np.uint8), np.zeros((3, 32), np.float32))
    out = ffi.new("float[6]")
    x = ffi.new("float[96]")
    assert lib.dgemma_gemm(int(T.Q8_0), ffi.NULL, 2, x, 3, 32, out) == InvalidArgumentError.status
    assert lib.dgemma_gemm(int(T.Q8_0), x, 2, x, -1, 32, out) == InvalidArgumentError.status
    assert lib.dgemma_gemm(int(T.Q8_0), x, 2, x, 3, 31, out) == InvalidArgumentError.status

# ---- errors ----

def test_type_info():
    assert kernels.type_info(T.Q4_K) == (256, 144, "Q4_K")
    assert kernels.type_info("q8_0") == (32, 34, "Q8_0")
    with pytest.raises(UnsupportedError, match="99"):
        kernels.type_info(99)


def test_bad_inputs_raise():
    x = np.zeros(48, dtype=np.float32)
    with pytest.raises(InvalidArgumentError, match="multiple"):
        kernels.quantize_row(T.Q4_0, x)
    with pytest.raises(InvalidArgumentError):
        kernels.dequantize_row(T.Q4_K, np.zeros(100, dtype=np.uint8))
    with pytest.raises(InvalidArgumentError):
        kernels.vec_dot(T.Q4_0, np.zeros(18, dtype=np.uint8), np.zeros(64, dtype=np.float32))
    with pytest.raises(UnsupportedError, match="Q8_1"):
        kernels.dequantize_row(T.Q8_1, np.zeros(36, dtype=np.uint8))
    with pytest.raises(UnsupportedError, match="F32"):
        kernels.vec_dot(T.F32, np.zeros(4 * 32, dtype=np.uint8), np.zeros(32, dtype=np.float32))
    with pytest.raises(UnsupportedError):
        kernels.quantize_row(-1, np.zeros(32, dtype=np.float32))
    with pytest.raises(InvalidArgumentError, match="sse9"):
        kernels.set_cpu_isa("sse9")


def test_null_pointers_and_lengths_at_the_c_boundary():
    buf = ffi.new("float[32]")
    assert lib.dgemma_quantize_row(int(T.Q8_0), ffi.NULL, 32, buf) == InvalidArgumentError.status
    assert lib.dgemma_dequantize_row(int(T.Q8_0), buf, -32, buf) == InvalidArgumentError.status
    assert lib.dgemma_vec_dot(int(T.Q8_0), buf, buf, 32, ffi.NULL) == InvalidArgumentError.status
    assert "NULL" in ffi.string(lib.dgemma_last_error()).decode()
    assert lib.dgemma_set_cpu_isa(ffi.NULL) == InvalidArgumentError.status


def test_set_cpu_isa_reports_unsupported_sets():
    for isa in kernels.ISAS:
        try:
            kernels.set_cpu_isa(isa)
        except UnsupportedError as e:
            assert isa in str(e)
            continue
        assert kernels.cpu_isa() == isa
    kernels.set_cpu_isa("auto")
    assert kernels.cpu_isa() in kernels.ISAS


def test_python_type_table_is_the_cores_and_agrees_with_gguf():
    """dgemma.gguf reads its type table from the core: every id the core knows, with gguf's name,
    block size and bytes per block; ids the core does not know are not in it."""
    from gguf.constants import GGML_QUANT_SIZES

    from dgemma.gguf import GGML_TYPE_IDS, GGML_TYPES

    assert set(GGML_TYPES) == {int(t) for t in T if lib.dgemma_type_info(int(t), ffi.NULL, ffi.NULL, ffi.NULL) == 0}
    assert {T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_K, T.IQ4_XS} <= set(GGML_TYPES)
    # gguf-py still lists Q8_1 (an activation type, never stored) with float scales, 40 bytes; ggml's
    # block_q8_1 holds two halves and 32 quants, 36 bytes (static_assert in ggml-common.h).
    expected = {**GGML_QUANT_SIZES, T.Q8_1: (32, 2 + 2 + 32)}
    for type_id, (name, block, size) in GGML_TYPES.items():
        assert (T(type_id).name, (block, size)) == (name, expected[T(type_id)])
        assert GGML_TYPE_IDS[name] == type_id


@pytest.mark.parametrize("t", [T.Q6_K, T.Q8_K, T.Q4_0, T.F16])
def test_kernels_take_buffers_at_any_offset(t):
    """dgemma.kernels hands rows and vectors at an odd address (a slice of a byte buffer) to the core
    as they are, and gets the results of aligned ones (the C API side: the test below)."""
    rng = np.random.default_rng(5)
    n = 512
    x = rng.standard_normal(n).astype(np.float32)
    row = kernels.quantize_row(int(t), rng.standard_normal(n).astype(np.float32))
    shifted = np.empty(row.size + 1, np.uint8)[1:]
    shifted[:] = row
    xs = np.empty(4 * n + 1, np.uint8)[1:].view(np.float32)
    xs[:] = x
    assert shifted.ctypes.data % 2 == 1 and xs.ctypes.data % 4 == 1
    np.testing.assert_array_equal(kernels.dequantize_row(int(t), shifted), kernels.dequantize_row(int(t), row))
    if int(t) in (int(T.Q6_K), int(T.Q4_0)):
        assert kernels.vec_dot(int(t), shifted, xs) == kernels.vec_dot(int(t), row, x)
        rows = np.empty(2 * row.size + 1, np.uint8)[1:].reshape(2, -1)
        rows[:] = row
        np.testing.assert_array_equal(kernels.matvec(int(t), rows, xs), kernels.matvec(int(t), np.stack([row, row]), x))
    np.testing.assert_array_equal(kernels.quantize_row(int(t), xs), kernels.quantize_row(int(t), x))


def _at_odd_address(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A copy of `data`'s bytes one byte past an aligned address, between two guard bytes; returns
    (the copy as uint8, the whole buffer with its guards)."""
    raw = data.reshape(-1).view(np.uint8)
    whole = np.full(raw.size + 2 + 7, 0xA5, np.uint8)
    start = (-whole.ctypes.data) % 8 + 1
    whole = whole[start - 1:start + raw.size + 1]
    whole[1:-1] = raw
    assert whole[1:].ctypes.data % 2 == 1
    return whole[1:-1], whole


def _ptr(a: np.ndarray):
    """A `void *` to the array's first byte (it stays valid while the array lives)."""
    return ffi.cast("void *", ffi.from_buffer(a))


@pytest.mark.parametrize("t", [T.Q6_K, T.Q8_K, T.Q4_0, T.F16, T.F32])
def test_c_api_kernels_take_pointers_at_any_alignment(t):
    """Every kernel function of the C API (dgemma.h: "any alignment") gives the same bytes with each
    input and output one byte off an aligned address as with aligned buffers, and writes nothing
    outside its output. Before, the core bound block and float references to those addresses:
    undefined behaviour, which the sanitizer build reports (k_quants.cpp bound a BlockQ6_K reference
    to an odd address; CI runs this file against it)."""
    rng = np.random.default_rng(5)
    n, n_rows, n_tokens, tid = 512, 3, 2, int(t)
    x = rng.standard_normal((n_tokens, n)).astype(np.float32)
    w = kernels.quantize_rows(tid, rng.standard_normal((n_rows, n)).astype(np.float32))
    x_odd, _ = _at_odd_address(x)
    w_odd, _ = _at_odd_address(w)
    has_dot = t not in (T.F16, T.F32, T.Q8_K)

    def both(run, out_bytes):
        """run(inputs odd?, out pointer) with aligned and with odd buffers; the odd output checked for
        guards and returned with the aligned one."""
        aligned = np.zeros(out_bytes, np.uint8)
        check(run(False, _ptr(aligned)))
        odd, whole = _at_odd_address(np.zeros(out_bytes, np.uint8))
        check(run(True, _ptr(odd)))
        assert whole[0] == whole[-1] == 0xA5, "wrote outside the output buffer"
        return aligned, odd

    expected, got = both(lambda o, out: lib.dgemma_dequantize_row(tid, _ptr(w_odd if o else w), n_rows * n, out),
                         4 * n_rows * n)
    np.testing.assert_array_equal(got, expected)
    if t != T.Q8_K:  # gguf has no Q8_K dequantizer
        np.testing.assert_array_equal(got.view(np.float32), quants.dequantize(w, t).reshape(-1))
    x_all, x_all_odd = _ptr(x), _ptr(x_odd)
    expected, got = both(lambda o, out: lib.dgemma_quantize_row(tid, x_all_odd if o else x_all, n, out), w[0].size)
    np.testing.assert_array_equal(got, expected)
    expected, got = both(lambda o, out: lib.dgemma_quantize_rows(tid, x_all_odd if o else x_all, n_tokens, n, out, 2),
                         n_tokens * w[0].size)
    np.testing.assert_array_equal(got, expected)
    if has_dot:
        expected, got = both(lambda o, out: lib.dgemma_vec_dot(tid, _ptr(w_odd if o else w), x_all_odd if o else x_all,
                                                               n, out), 4)
        np.testing.assert_array_equal(got, expected)
        expected, got = both(lambda o, out: lib.dgemma_matvec(tid, _ptr(w_odd if o else w), n_rows,
                                                              x_all_odd if o else x_all, n, out),
                             4 * n_rows)
        np.testing.assert_array_equal(got, expected)
    if t != T.Q8_K:
        expected, got = both(lambda o, out: lib.dgemma_gemm(tid, _ptr(w_odd if o else w), n_rows,
                                                            x_all_odd if o else x_all, n_tokens, n,
                                                            out), 4 * n_tokens * n_rows)
        np.testing.assert_array_equal(got, expected)
