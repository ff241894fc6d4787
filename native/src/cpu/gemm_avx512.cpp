// AVX-512 VNNI register-blocked kernels (cpu/gemm.h). A 512-bit register holds two 32-element
// blocks or a quarter of a 256-element super-block; every (row, token) pair of a tile owns one float
// accumulator, and integer sums are exact per block (per super-block for the K-quants) before the
// float scales apply, as in the vec_dot kernels.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/quantize_avx512.h"
#include "quant/k_quants.h"
#include "quant/q4_q5.h"
#include "quant/q8_0.h"

#if defined(__x86_64__) || defined(_M_X64)

namespace dg {
namespace {

DG_TARGET inline __m256i load256(const void *p) { return _mm256_loadu_si256(static_cast<const __m256i *>(p)); }
DG_TARGET inline __m512i load512(const void *p) { return _mm512_loadu_si512(p); }
DG_TARGET inline __m512i join(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }
DG_TARGET inline float f16(uint16_t h) { return _cvtsh_ss(h); }

// n objects of T in a per-thread buffer that grows to the largest request, 64-byte aligned.
template <typename T>
inline T *aligned_scratch(std::vector<uint8_t> &buf, int64_t n) {
    const size_t bytes = static_cast<size_t>(n) * sizeof(T) + 64;
    if (buf.size() < bytes) buf.resize(bytes);
    return reinterpret_cast<T *>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t{63});
}

// y[t0 + t][r0 + r] = the horizontal sum of acc[r][t]; a 4 x 4 tile through one transposing tree.
template <int NR, int NT>
DG_TARGET inline void store_tile(const __m512 (&acc)[NR][NT], const GemmArgs &a, int64_t r0, int64_t t0) {
    if constexpr (NR == 4 && NT == 4) {
        const __m512 s = avx512::reduce16(&acc[0][0]);  // quarter t: rows 0..3 of token t
        _mm_storeu_ps(a.y + t0 * a.ldy + r0, _mm512_castps512_ps128(s));
        _mm_storeu_ps(a.y + (t0 + 1) * a.ldy + r0, _mm512_extractf32x4_ps(s, 1));
        _mm_storeu_ps(a.y + (t0 + 2) * a.ldy + r0, _mm512_extractf32x4_ps(s, 2));
        _mm_storeu_ps(a.y + (t0 + 3) * a.ldy + r0, _mm512_extractf32x4_ps(s, 3));
    } else {
        for (int r = 0; r < NR; ++r)
            for (int t = 0; t < NT; ++t) a.y[(t0 + t) * a.ldy + r0 + r] = _mm512_reduce_add_ps(acc[r][t]);
    }
}

// ---- 32-element blocks (Q8_0, Q4_0, Q5_0) against Q8_0 activations ----
// Weight rows go in panels of 16, repacked so that lane i of every register belongs to row i:
// register q of a block holds elements 4q .. 4q+3 of the 16 rows, and one vpdpbusd against the
// token's 4 activation codes (broadcast) adds 64 products to 16 rows' sums. A block's sum stays
// integer over its 8 registers; one conversion, one multiply and one FMA per block apply the two
// scales, and a token's 16 results leave as one vector (no horizontal reduction). vpdpbusd takes
// unsigned weight codes u = w + offset; the offset comes back through the activation block's sum,
// which starts each block's integer sum. Each token's results are the same whatever tokens share
// its tile (the same operations in the same order), so batching never changes a sequence's bits.


struct PanelBlock {    // one 32-element block of a panel
    __m512i codes[8];  // register q, lane i: u of row i, elements 4q .. 4q+3
    __m512 scale;      // lane i: d of row i (0 past the last row)
};

struct ActBlock {      // one 32-element block of one token, as the panel tiles read it
    int8_t qs[32];     // Q8_0 codes by the reference rule
    int32_t neg;       // -offset * sum(qs)
    float d;           // the block's f16 scale, widened
};

// Gathers the dword at `at` (bytes from row 0's block) of every row of the panel (rows where
// `rows` is clear read nothing and give 0).
DG_TARGET inline __m512i gather_rows(const uint8_t *at, __m512i row_offsets, __mmask16 rows) {
    return _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), rows, row_offsets, at, 1);
}

// Lane i: the f16 in the low half of dword i, widened.
DG_TARGET inline __m512 low_halves(__m512i v) { return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v)); }

// r[j] = column j of the 16 x 16 matrix of dwords whose row i is r[i] (unpacks within 128-bit
// lanes, then 128-bit lanes moved across registers: 64 shuffles, no memory round trip).
DG_TARGET inline void transpose16_epi32(__m512i (&r)[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 8; ++i) {  // lane L of t[2i]: r[2i][4L], r[2i+1][4L], r[2i][4L+1], r[2i+1][4L+1]
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 4; ++g) {  // lane L of u[4g + c]: rows 4g .. 4g+3 of column 4L + c
        u[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
    for (int c = 0; c < 4; ++c) {  // column 4L + c: lane L of u[c], u[4 + c], u[8 + c], u[12 + c]
        const __m512i lo01 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x44), lo23 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x44);
        const __m512i hi01 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xee), hi23 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xee);
        r[c] = _mm512_shuffle_i32x4(lo01, lo23, 0x88);
        r[4 + c] = _mm512_shuffle_i32x4(lo01, lo23, 0xdd);
        r[8 + c] = _mm512_shuffle_i32x4(hi01, hi23, 0x88);
        r[12 + c] = _mm512_shuffle_i32x4(hi01, hi23, 0xdd);
    }
}

// Row i's bytes [at, at + 64) for the 16 rows of a panel (zero where `rows` is clear), loaded as
// `parts` pieces of 64 / parts bytes from at + j * step, transposed: r[j] = dword j of every row.
DG_TARGET inline void load_transposed(const uint8_t *at, size_t stride, __mmask16 rows, int parts, size_t step, int64_t n_parts,
                                      __m512i (&r)[16]) {
    for (int i = 0; i < 16; ++i) {
        r[i] = _mm512_setzero_si512();
        if (!(rows >> i & 1)) continue;
        const uint8_t *row = at + i * stride;
        if (parts == 2) {
            const __m256i lo = load256(row), hi = n_parts > 1 ? load256(row + step) : _mm256_setzero_si256();
            r[i] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        } else {
            auto part = [&](int j) { return _mm_loadu_si128(reinterpret_cast<const __m128i *>(row + j * step)); };
            r[i] = _mm512_zextsi128_si512(part(0));
            if (n_parts > 1) r[i] = _mm512_inserti32x4(r[i], part(1), 1);
            if (n_parts > 2) r[i] = _mm512_inserti32x4(r[i], part(2), 2);
            if (n_parts > 3) r[i] = _mm512_inserti32x4(r[i], part(3), 3);
        }
    }
    transpose16_epi32(r);
}

// Per type: decode blocks [b, b + n) of the panel's rows (b0 = row 0's block b; n <= kGroup) into
// PanelBlocks, kGroup blocks per transpose.
struct Q8_0Panel {
    using Block = BlockQ8_0;
    static constexpr int kOffset = 128, kGroup = 2;  // 2 x 32 code bytes per row
    DG_TARGET static void decode(const uint8_t *b0, size_t stride, __m512i off, __mmask16 rows, int64_t n, PanelBlock *p) {
        __m512i r[16];
        load_transposed(b0 + 2, stride, rows, 2, sizeof(Block), n, r);
        for (int64_t j = 0; j < n; ++j) {
            for (int q = 0; q < 8; ++q) p[j].codes[q] = _mm512_xor_si512(r[8 * j + q], _mm512_set1_epi8(-128));
            p[j].scale = low_halves(gather_rows(b0 + j * sizeof(Block), off, rows));
        }
    }
};

// Q4_0 and Q5_0: element e < 16 is the low nibble of qs[e], e >= 16 the high nibble of qs[e - 16];
// Q5_0 adds bit e of qh as bit 4.
template <typename B, int kQs, bool kHigh>
struct Nibble32Panel {
    using Block = B;
    static constexpr int kOffset = kHigh ? 16 : 8, kGroup = 4;  // 4 x 16 nibble bytes per row
    DG_TARGET static void decode(const uint8_t *b0, size_t stride, __m512i off, __mmask16 rows, int64_t n, PanelBlock *p) {
        const __m512i m = _mm512_set1_epi8(0x0f);
        __m512i r[16];
        load_transposed(b0 + kQs, stride, rows, 4, sizeof(Block), n, r);
        for (int64_t j = 0; j < n; ++j) {
            for (int q = 0; q < 4; ++q) {
                p[j].codes[q] = _mm512_and_si512(r[4 * j + q], m);
                p[j].codes[q + 4] = _mm512_and_si512(_mm512_srli_epi16(r[4 * j + q], 4), m);
            }
            if constexpr (kHigh) {
                const __m512i qh = gather_rows(b0 + j * sizeof(Block) + 2, off, rows);
                for (int q = 0; q < 8; ++q) {
                    // Bits 4q .. 4q+3 of qh to bit 0 of bytes 0..3: the product places bit j at 8j (no carries).
                    const __m512i nib = _mm512_and_si512(_mm512_srli_epi32(qh, 4 * q), _mm512_set1_epi32(0xf));
                    const __m512i bits = _mm512_and_si512(_mm512_mullo_epi32(nib, _mm512_set1_epi32(0x204081)), _mm512_set1_epi32(0x01010101));
                    p[j].codes[q] = _mm512_or_si512(p[j].codes[q], _mm512_slli_epi32(bits, 4));
                }
            }
            p[j].scale = low_halves(gather_rows(b0 + j * sizeof(Block), off, rows));
        }
    }
};
using Q4_0Panel = Nibble32Panel<BlockQ4_0, 2, false>;
using Q5_0Panel = Nibble32Panel<BlockQ5_0, 6, true>;

template <typename P>
size_t act_blocks_bytes(int64_t k) { return static_cast<size_t>(k / 32) * sizeof(ActBlock); }

template <typename P>
DG_TARGET void pack_act_blocks(const float *x, void *dst, int64_t k) {
    ActBlock *out = static_cast<ActBlock *>(dst);
    for (int64_t b = 0; b < k / 32; ++b) {
        uint16_t d;
        const __m256i qs = avx512::quantize_block_q8_0(x + 32 * b, &d);
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(out[b].qs), qs);
        const __m256i sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), qs);
        const __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
        const __m128i s2 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        out[b].neg = -P::kOffset * _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0xb1)));
        out[b].d = f16(d);
    }
}

// NT tokens (activation rows x_stride bytes apart) against one packed panel of nb blocks; y: the
// panel's first row for the first token, rows where `rows` is set are written.
template <int NT>
DG_TARGET inline void panel_tile(const PanelBlock *p, int64_t nb, const uint8_t *x0, size_t x_stride, float *y, int64_t ldy,
                                 __mmask16 rows) {
    const ActBlock *x[NT];
    for (int t = 0; t < NT; ++t) x[t] = reinterpret_cast<const ActBlock *>(x0 + t * x_stride);
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const PanelBlock &w = p[b];
        __m512i s[NT];  // the tokens' sums run side by side: NT independent vpdpbusd chains
        for (int t = 0; t < NT; ++t) s[t] = _mm512_set1_epi32(x[t][b].neg);
        for (int q = 0; q < 8; ++q) {
            for (int t = 0; t < NT; ++t) {
                int32_t codes;
                std::memcpy(&codes, x[t][b].qs + 4 * q, 4);
                s[t] = _mm512_dpbusd_epi32(s[t], w.codes[q], _mm512_set1_epi32(codes));
            }
        }
        for (int t = 0; t < NT; ++t)
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(s[t]), _mm512_set1_ps(x[t][b].d)), w.scale, acc[t]);
    }
    for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + t * ldy, rows, acc[t]);
}

// One panel (rows <= 16 rows from w0, w_stride apart, k elements) decoded into nb = k / 32 blocks.
template <typename P>
DG_TARGET void decode_panel(const uint8_t *w0, size_t w_stride, int64_t rows, int64_t k, PanelBlock *panel) {
    const int64_t nb = k / 32;
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i off = _mm512_mullo_epi32(lane, _mm512_set1_epi32(static_cast<int>(w_stride)));
    const __mmask16 mask = static_cast<__mmask16>((1u << rows) - 1);
    for (int64_t b = 0; b < nb; b += P::kGroup)
        P::decode(w0 + b * sizeof(typename P::Block), w_stride, off, mask, std::min<int64_t>(P::kGroup, nb - b), panel + b);
}

size_t panel_bytes(int64_t k) { return static_cast<size_t>(k / 32) * sizeof(PanelBlock); }

template <typename P>
DG_TARGET void pack_panel(const uint8_t *w0, size_t w_stride, int64_t rows, int64_t k, uint8_t *dst) {
    decode_panel<P>(w0, w_stride, rows, k, reinterpret_cast<PanelBlock *>(dst));
}

// Panels come packed at load (a.packed) or are decoded here once per call; either way each is
// swept by every token (a panel, 576 B per block, stays in L1 for rows up to ~2600 elements).
template <typename P>
DG_TARGET void gemm_panels(const GemmArgs &a) {
    constexpr int64_t kTokens = 8;
    const int64_t nb = a.k / 32;
    thread_local std::vector<uint8_t> buf;
    PanelBlock *const scratch = a.packed ? nullptr : aligned_scratch<PanelBlock>(buf, nb);
    for (int64_t r0 = 0; r0 < a.n_rows; r0 += kPanelRows) {
        const int64_t rows = std::min<int64_t>(kPanelRows, a.n_rows - r0);
        const __mmask16 mask = static_cast<__mmask16>((1u << rows) - 1);
        const PanelBlock *panel = scratch;
        if (a.packed) panel = reinterpret_cast<const PanelBlock *>(a.packed) + r0 / kPanelRows * nb;
        else decode_panel<P>(a.w + r0 * a.w_stride, a.w_stride, rows, a.k, scratch);
        float *y = a.y + r0;
        int64_t t = 0;
        for (; t + kTokens <= a.n_tokens; t += kTokens) panel_tile<kTokens>(panel, nb, a.x + t * a.x_stride, a.x_stride, y + t * a.ldy, a.ldy, mask);
        if (a.n_tokens - t >= 4) { panel_tile<4>(panel, nb, a.x + t * a.x_stride, a.x_stride, y + t * a.ldy, a.ldy, mask); t += 4; }
        if (a.n_tokens - t >= 2) { panel_tile<2>(panel, nb, a.x + t * a.x_stride, a.x_stride, y + t * a.ldy, a.ldy, mask); t += 2; }
        if (a.n_tokens - t >= 1) panel_tile<1>(panel, nb, a.x + t * a.x_stride, a.x_stride, y + t * a.ldy, a.ldy, mask);
    }
}

// Tiles of NR rows x NT tokens with edge tiles for the remainders. Rows run in the outer loop so a
// tile's weight rows stay in L1 while every token streams past them.
template <template <int, int> class Tile, int NR, int NT>
DG_TARGET inline void tiles(const GemmArgs &a) {
    int64_t r = 0;
    for (; r + NR <= a.n_rows; r += NR) {
        int64_t t = 0;
        for (; t + NT <= a.n_tokens; t += NT) Tile<NR, NT>::run(a, r, t);
        for (; t < a.n_tokens; ++t) Tile<NR, 1>::run(a, r, t);
    }
    for (; r < a.n_rows; ++r) {
        int64_t t = 0;
        for (; t + NT <= a.n_tokens; t += NT) Tile<1, NT>::run(a, r, t);
        for (; t < a.n_tokens; ++t) Tile<1, 1>::run(a, r, t);
    }
}

// ---- K-quants against Q8_K ----
// A weight super-block decodes to four registers of unsigned codes (64 elements each, in element
// order) and four registers of int16 group scales, one per int16 product lane of vpmaddubsw;
// vpdpwssd applies the scales. Per (row, token) the integer sum of the super-block is exact.

struct SuperBlock {
    __m512i codes[4];
    __m512i scales[4];
    __m512i corr;    // int16 lanes against the activations' 16 group sums (upper half zero)
    float d, dmin;   // dmin: the factor of the int32 sum corr . bsums (0: corr is part of the integer sum)
};

// Q4_K / Q5_K: codes q, x = d*sc * q - dmin*m per 32-element group.
template <typename Block, bool kFiveBit>
DG_TARGET inline void decode_q45_k(const Block &b, SuperBlock &s) {
    int sc[8], m[8];
    for (int j = 0; j < 8; ++j) k4_scale_min(b.scales, j, &sc[j], &m[j]);
    __m256i qh = _mm256_setzero_si256();
    if constexpr (kFiveBit) qh = load256(b.qh);
    for (int k = 0; k < 4; ++k) {
        const __m256i v = load256(b.qs + 32 * k);
        __m256i lo = _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0f));
        if constexpr (kFiveBit) {
            const __mmask32 blo = _mm256_test_epi8_mask(qh, _mm256_set1_epi8(static_cast<char>(1 << (2 * k))));
            const __mmask32 bhi = _mm256_test_epi8_mask(qh, _mm256_set1_epi8(static_cast<char>(1 << (2 * k + 1))));
            lo = _mm256_mask_add_epi8(lo, blo, lo, _mm256_set1_epi8(0x10));
            hi = _mm256_mask_add_epi8(hi, bhi, hi, _mm256_set1_epi8(0x10));
        }
        s.codes[k] = join(lo, hi);
        s.scales[k] = join(_mm256_set1_epi16(static_cast<short>(sc[2 * k])), _mm256_set1_epi16(static_cast<short>(sc[2 * k + 1])));
    }
    // Each min covers two 16-element activation groups.
    s.corr = _mm512_zextsi256_si512(_mm256_setr_epi16(m[0], m[0], m[1], m[1], m[2], m[2], m[3], m[3], m[4], m[4], m[5], m[5],
                                                      m[6], m[6], m[7], m[7]));
    s.d = f16(b.d);
    s.dmin = f16(b.dmin);
}

// Q6_K: codes q + 32 (0..63), x = d*sc * q per 16-element group; the offset goes into the integer
// sum through corr = -32 * sc.
DG_TARGET inline void decode_q6_k(const BlockQ6_K &b, SuperBlock &s) {
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b.scales)));
    const __m512i sc = _mm512_castsi256_si512(sc16);
    // int16 lane i of register j covers elements 64j + 2i, 2i + 1: group 4j + i / 8.
    alignas(64) static const int16_t kGroupOf[4][32] = {
        {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
        {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7},
        {8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9, 10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11},
        {12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13, 14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15}};
    // Register j = 2n + h: low (h = 0) or high nibbles of ql[64n..64n+63] and bit pairs 2t.. of
    // qh[32n..32n+31] for t = 2h (first 32 elements) and 2h + 1 (next 32).
    for (int n = 0; n < 2; ++n) {
        const __m512i ql = load512(b.ql + 64 * n);
        const __m512i qh = _mm512_broadcast_i64x4(load256(b.qh + 32 * n));
        for (int h = 0; h < 2; ++h) {
            const __m512i shift = join(_mm256_set1_epi16(static_cast<short>(4 * h)), _mm256_set1_epi16(static_cast<short>(4 * h + 2)));
            const __m512i high = _mm512_and_si512(_mm512_srlv_epi16(qh, shift), _mm512_set1_epi8(3));
            const __m512i low = _mm512_and_si512(h ? _mm512_srli_epi16(ql, 4) : ql, _mm512_set1_epi8(0x0f));
            s.codes[2 * n + h] = _mm512_or_si512(low, _mm512_slli_epi16(high, 4));
            s.scales[2 * n + h] = _mm512_permutexvar_epi16(load512(kGroupOf[2 * n + h]), sc);
        }
    }
    s.corr = _mm512_zextsi256_si512(_mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(sc16, 5)));
    s.d = f16(b.d);
    s.dmin = 0.0f;
}

template <typename Block>
DG_TARGET inline void decode_k(const Block &b, SuperBlock &s) {
    if constexpr (std::is_same_v<Block, BlockQ4_K>) decode_q45_k<BlockQ4_K, false>(b, s);
    else if constexpr (std::is_same_v<Block, BlockQ5_K>) decode_q45_k<BlockQ5_K, true>(b, s);
    else decode_q6_k(b, s);
}

// NR packed rows (ns super-blocks each, rows ns apart) x NT activation rows; y at row r0, token t0.
template <bool kMin, int NR, int NT>
DG_TARGET inline void tile_k(const SuperBlock *w, int64_t ns, const GemmArgs &a, int64_t r0, int64_t t0) {
    const BlockQ8_K *x[NT];
    for (int t = 0; t < NT; ++t) x[t] = reinterpret_cast<const BlockQ8_K *>(a.x + (t0 + t) * a.x_stride);
    __m512 acc[NR][NT];
    for (int r = 0; r < NR; ++r)
        for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < ns; ++i) {
        for (int t = 0; t < NT; ++t) {
            const BlockQ8_K &y = x[t][i];
            const __m512i bsums = _mm512_castsi256_si512(load256(y.bsums));  // upper half meets zeros
            for (int r = 0; r < NR; ++r) {
                const SuperBlock &s = w[r * ns + i];
                __m512i isum = _mm512_setzero_si512();
                for (int k = 0; k < 4; ++k)
                    isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(s.codes[k], load512(y.qs + 64 * k)), s.scales[k]);
                if constexpr (kMin) {
                    const __m512i msum = _mm512_madd_epi16(bsums, s.corr);
                    acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(y.d * s.d), acc[r][t]);
                    acc[r][t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum), _mm512_set1_ps(y.d * s.dmin), acc[r][t]);
                } else {
                    isum = _mm512_dpwssd_epi32(isum, bsums, s.corr);
                    acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(y.d * s.d), acc[r][t]);
                }
            }
        }
    }
    store_tile<NR, NT>(acc, a, r0, t0);
}

// Panels of kPanel rows decoded once per call, swept by every group of kTokens activation rows.
template <typename Block>
DG_TARGET void gemm_k(const GemmArgs &a) {
    constexpr bool kMin = !std::is_same_v<Block, BlockQ6_K>;
    constexpr int64_t kPanel = 16, kTokens = 4, kRows = 4;  // 4 x 4 tiles: 16 accumulators
    const int64_t ns = a.k / kQK_K;
    thread_local std::vector<uint8_t> w_buf;
    SuperBlock *const wp = aligned_scratch<SuperBlock>(w_buf, kPanel * ns);
    for (int64_t p0 = 0; p0 < a.n_rows; p0 += kPanel) {
        const int64_t rows = std::min(kPanel, a.n_rows - p0);
        for (int64_t r = 0; r < rows; ++r) {
            const Block *b = reinterpret_cast<const Block *>(a.w + (p0 + r) * a.w_stride);
            for (int64_t i = 0; i < ns; ++i) decode_k(b[i], wp[r * ns + i]);
        }
        for (int64_t r = 0; r < rows; r += kRows) {
            const SuperBlock *w = wp + r * ns;
            int64_t t = 0;
            if (r + kRows <= rows) {
                for (; t + kTokens <= a.n_tokens; t += kTokens) tile_k<kMin, kRows, kTokens>(w, ns, a, p0 + r, t);
                for (; t < a.n_tokens; ++t) tile_k<kMin, kRows, 1>(w, ns, a, p0 + r, t);
            } else {
                for (int64_t rr = r; rr < rows; ++rr) {
                    for (t = 0; t + kTokens <= a.n_tokens; t += kTokens) tile_k<kMin, 1, kTokens>(wp + rr * ns, ns, a, p0 + rr, t);
                    for (; t < a.n_tokens; ++t) tile_k<kMin, 1, 1>(wp + rr * ns, ns, a, p0 + rr, t);
                }
            }
        }
    }
}

// ---- 16-bit float weights against float32 activations ----
// The same lane-per-row panels as the 32-element blocks: a panel of 16 rows is widened to float32
// once, element-major (register kk holds element kk of the 16 rows), and each FMA multiplies it by
// one activation broadcast from memory; a token's 16 results are one vector. Long rows go in
// chunks of kFloatChunk elements (the widened chunk stays in L1): the sums are stored after one
// chunk and reloaded for the next, which leaves each sum one FMA chain over k in order, so a
// token's results do not depend on the tokens beside it.

constexpr int64_t kFloatChunk = 512;

// Pairs of 16-bit elements (2j, 2j+1) of the 16 rows, as gathered dwords, widened to two registers.
struct F16Pairs {
    DG_TARGET static void widen(__m512i v, __m512 &even, __m512 &odd) {
        even = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
        odd = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(v, 16)));
    }
};
struct BF16Pairs {
    DG_TARGET static void widen(__m512i v, __m512 &even, __m512 &odd) {
        even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
        odd = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
    }
};

// Elements [k0, k0 + kc) of the panel's rows (row i at w0 + i * stride, rows where `rows` is set)
// as kc registers: 32 elements of the 16 rows at a time, loaded (masked at the ends), transposed
// as dwords (element pairs) and widened.
template <typename C>
DG_TARGET inline void pack_half_panel(const uint8_t *w0, size_t stride, __mmask16 rows, int64_t k0, int64_t kc, __m512 *panel) {
    for (int64_t kk = 0; kk < kc; kk += 32) {
        const int64_t n = std::min<int64_t>(32, kc - kk);
        const __mmask32 elems = static_cast<__mmask32>(n == 32 ? ~0u : (1u << n) - 1);
        __m512i r[16];
        for (int i = 0; i < 16; ++i)
            r[i] = rows >> i & 1 ? _mm512_maskz_loadu_epi16(elems, w0 + i * stride + 2 * (k0 + kk)) : _mm512_setzero_si512();
        transpose16_epi32(r);
        alignas(64) __m512 pair[2];
        for (int j = 0; 2 * j < n; ++j) {
            C::widen(r[j], pair[0], pair[1]);
            panel[kk + 2 * j] = pair[0];
            if (2 * j + 1 < n) panel[kk + 2 * j + 1] = pair[1];
        }
    }
}

// NP panels (16 NP rows, panel p's registers kc apart) x NT tokens; each broadcast feeds NP FMAs.
template <int NP, int NT>
DG_TARGET inline void float_panel_tile(const __m512 *panel, int64_t kc, bool first, const float *x0, int64_t ldx, float *y,
                                       int64_t ldy, const __mmask16 (&rows)[2]) {
    __m512 acc[NP][NT];
    for (int p = 0; p < NP; ++p)
        for (int t = 0; t < NT; ++t)
            acc[p][t] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(rows[p], y + t * ldy + p * kPanelRows);
    for (int64_t kk = 0; kk < kc; ++kk) {
        __m512 w[NP];
        for (int p = 0; p < NP; ++p) w[p] = panel[p * kc + kk];
        for (int t = 0; t < NT; ++t) {
            const __m512 xv = _mm512_set1_ps(x0[t * ldx + kk]);
            for (int p = 0; p < NP; ++p) acc[p][t] = _mm512_fmadd_ps(w[p], xv, acc[p][t]);
        }
    }
    for (int p = 0; p < NP; ++p)
        for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + t * ldy + p * kPanelRows, rows[p], acc[p][t]);
}

template <int NP>
DG_TARGET inline void float_panel_tiles(const __m512 *panel, int64_t kc, bool first, const float *x, int64_t ldx, int64_t n,
                                        float *y, int64_t ldy, const __mmask16 (&rows)[2]) {
    constexpr int64_t kTokens = NP == 2 ? 8 : 12;  // at least 12 FMA chains hide the FMA latency on two ports
    int64_t t = 0;
    for (; t + kTokens <= n; t += kTokens) float_panel_tile<NP, kTokens>(panel, kc, first, x + t * ldx, ldx, y + t * ldy, ldy, rows);
    if (n - t >= 4) { float_panel_tile<NP, 4>(panel, kc, first, x + t * ldx, ldx, y + t * ldy, ldy, rows); t += 4; }
    for (; t < n; ++t) float_panel_tile<NP, 1>(panel, kc, first, x + t * ldx, ldx, y + t * ldy, ldy, rows);
}

template <typename C>
DG_TARGET void gemm_half(const GemmArgs &a) {
    thread_local std::vector<uint8_t> buf;
    const int64_t chunk = std::min(a.k, kFloatChunk);
    __m512 *const panel = aligned_scratch<__m512>(buf, 2 * chunk);
    const float *x = reinterpret_cast<const float *>(a.x);
    const int64_t ldx = static_cast<int64_t>(a.x_stride / sizeof(float));
    for (int64_t r0 = 0; r0 < a.n_rows; r0 += 2 * kPanelRows) {
        const int64_t rows = std::min<int64_t>(2 * kPanelRows, a.n_rows - r0);
        const int np = rows > kPanelRows ? 2 : 1;
        const __mmask16 mask[2] = {static_cast<__mmask16>((1u << std::min<int64_t>(rows, kPanelRows)) - 1),
                                   static_cast<__mmask16>((1u << std::max<int64_t>(rows - kPanelRows, 0)) - 1)};
        for (int64_t k0 = 0; k0 < a.k; k0 += kFloatChunk) {
            const int64_t kc = std::min(kFloatChunk, a.k - k0);
            for (int p = 0; p < np; ++p)
                pack_half_panel<C>(a.w + (r0 + p * kPanelRows) * a.w_stride, a.w_stride, mask[p], k0, kc, panel + p * kc);
            if (np == 2) float_panel_tiles<2>(panel, kc, k0 == 0, x + k0, ldx, a.n_tokens, a.y + r0, a.ldy, mask);
            else float_panel_tiles<1>(panel, kc, k0 == 0, x + k0, ldx, a.n_tokens, a.y + r0, a.ldy, mask);
        }
    }
}

size_t q8_0_bytes(int64_t k) { return static_cast<size_t>(k / kQK8_0) * sizeof(BlockQ8_0); }
size_t q8_k_bytes(int64_t k) { return static_cast<size_t>(k / kQK_K) * sizeof(BlockQ8_K); }

}  // namespace

GemmKernel gemm_kernel_avx512(TensorType type) {
    switch (type) {
        case TensorType::Q8_0:
            return {gemm_panels<Q8_0Panel>, pack_act_blocks<Q8_0Panel>, act_blocks_bytes<Q8_0Panel>, pack_panel<Q8_0Panel>, panel_bytes};
        case TensorType::Q4_0:
            return {gemm_panels<Q4_0Panel>, pack_act_blocks<Q4_0Panel>, act_blocks_bytes<Q4_0Panel>, pack_panel<Q4_0Panel>, panel_bytes};
        case TensorType::Q5_0:
            return {gemm_panels<Q5_0Panel>, pack_act_blocks<Q5_0Panel>, act_blocks_bytes<Q5_0Panel>, pack_panel<Q5_0Panel>, panel_bytes};
        case TensorType::Q4_1:
        case TensorType::Q5_1: return {nullptr, quantize_q8_0_avx512, q8_0_bytes};
        case TensorType::Q4_K: return {gemm_k<BlockQ4_K>, quantize_q8_k_avx512, q8_k_bytes};
        case TensorType::Q5_K: return {gemm_k<BlockQ5_K>, quantize_q8_k_avx512, q8_k_bytes};
        case TensorType::Q6_K: return {gemm_k<BlockQ6_K>, quantize_q8_k_avx512, q8_k_bytes};
        case TensorType::Q2_K:
        case TensorType::Q3_K:
        case TensorType::IQ4_XS: return {nullptr, quantize_q8_k_avx512, q8_k_bytes};
        case TensorType::F16: return {gemm_half<F16Pairs>};
        case TensorType::BF16: return {gemm_half<BF16Pairs>};
        default: return {};
    }
}

}  // namespace dg

#endif
