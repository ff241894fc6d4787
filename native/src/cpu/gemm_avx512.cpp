// AVX-512 VNNI products (cpu/gemm.h) in lane-per-row panels: weight rows go in panels of 16 with
// lane i of every register belonging to row i, so a token's 16 results are one vector and no sum
// is reduced across lanes. Integer sums are exact per block (per group for the K-quants) before the
// float scales apply, as in the vec_dot kernels; each token's sums are the same operations in the
// same order whatever tokens share its tile (docs/backends.md, "CPU kernels").
#include <algorithm>
#include <cstddef>
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
DG_TARGET inline float f16(uint16_t h) { return _cvtsh_ss(h); }

// n objects of T in a per-thread buffer that grows to the largest request, 64-byte aligned.
template <typename T>
inline T *aligned_scratch(std::vector<uint8_t> &buf, int64_t n) {
    const size_t bytes = static_cast<size_t>(n) * sizeof(T) + 64;
    if (buf.size() < bytes) buf.resize(bytes);
    return reinterpret_cast<T *>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t{63});
}

// Asks for the lines of [p, p + bytes) into L2 a few at a time (step() per tile of tokens), so
// the next panels of a product come in while the current ones are swept: a product over few tokens
// (the experts', ~64) otherwise starts each panel pair waiting on L3.
struct Prefetcher {
    const char *p = nullptr;
    const char *end = nullptr;
    int64_t lines_per_step = 0;
    Prefetcher() = default;
    Prefetcher(const void *at, size_t bytes, int64_t steps)
        : p(static_cast<const char *>(at)), end(p + bytes), lines_per_step((static_cast<int64_t>(bytes) / 64 + steps) / std::max<int64_t>(1, steps)) {}
    DG_TARGET void step() {
        for (int64_t i = 0; i < lines_per_step && p < end; ++i, p += 64) _mm_prefetch(p, _MM_HINT_T1);
    }
};

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
struct PanelBlockMin : PanelBlock {  // Q4_1 / Q5_1: x = d * q + m
    __m512 min;                      // lane i: m of row i
};

struct ActBlock {      // one 32-element block of one token, as the panel tiles read it
    int8_t qs[32];     // Q8_0 codes by the reference rule
    int32_t neg;       // -offset * sum(qs)
    float d;           // the block's f16 scale, widened
    float dsum;        // d * sum(qs): the term of the weights' min (Q4_1, Q5_1)
};

// Gathers the dword at `at` (bytes from row 0's block) of every row of the panel (rows where
// `rows` is clear read nothing and give 0).
DG_TARGET inline __m512i gather_rows(const uint8_t *at, __m512i row_offsets, __mmask16 rows) {
    return _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), rows, row_offsets, at, 1);
}

// Lane i: i * stride, the byte offset of row i of a panel.
DG_TARGET inline __m512i off_of(size_t stride) {
    return _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                              _mm512_set1_epi32(static_cast<int>(stride)));
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
    using Out = PanelBlock;
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

// Q4_0, Q5_0, Q4_1, Q5_1: element e < 16 is the low nibble of qs[e], e >= 16 the high nibble of
// qs[e - 16]; the five-bit types add bit e of qh (at byte kQh of the block) as bit 4; the _1 types
// have a min m (the f16 after d) and unsigned codes, x = d * q + m.
template <typename B, int kQs, int kQh, bool kHasMin>
struct Nibble32Panel {
    using Block = B;
    using Out = std::conditional_t<kHasMin, PanelBlockMin, PanelBlock>;
    static constexpr bool kHigh = kQh > 0;
    static constexpr int kOffset = kHasMin ? 0 : kHigh ? 16 : 8, kGroup = 4;  // 4 x 16 nibble bytes per row
    DG_TARGET static void decode(const uint8_t *b0, size_t stride, __m512i off, __mmask16 rows, int64_t n, Out *p) {
        const __m512i m = _mm512_set1_epi8(0x0f);
        __m512i r[16];
        load_transposed(b0 + kQs, stride, rows, 4, sizeof(Block), n, r);
        for (int64_t j = 0; j < n; ++j) {
            for (int q = 0; q < 4; ++q) {
                p[j].codes[q] = _mm512_and_si512(r[4 * j + q], m);
                p[j].codes[q + 4] = _mm512_and_si512(_mm512_srli_epi16(r[4 * j + q], 4), m);
            }
            if constexpr (kHigh) {
                const __m512i qh = gather_rows(b0 + j * sizeof(Block) + kQh, off, rows);
                for (int q = 0; q < 8; ++q) {
                    // Bits 4q .. 4q+3 of qh to bit 0 of bytes 0..3: the product places bit j at 8j (no carries).
                    const __m512i nib = _mm512_and_si512(_mm512_srli_epi32(qh, 4 * q), _mm512_set1_epi32(0xf));
                    const __m512i bits = _mm512_and_si512(_mm512_mullo_epi32(nib, _mm512_set1_epi32(0x204081)), _mm512_set1_epi32(0x01010101));
                    p[j].codes[q] = _mm512_or_si512(p[j].codes[q], _mm512_slli_epi32(bits, 4));
                }
            }
            p[j].scale = low_halves(gather_rows(b0 + j * sizeof(Block), off, rows));
            if constexpr (kHasMin) p[j].min = low_halves(gather_rows(b0 + j * sizeof(Block) + 2, off, rows));
        }
    }
};
using Q4_0Panel = Nibble32Panel<BlockQ4_0, 2, 0, false>;
using Q5_0Panel = Nibble32Panel<BlockQ5_0, 6, 2, false>;
using Q4_1Panel = Nibble32Panel<BlockQ4_1, 4, 0, true>;
using Q5_1Panel = Nibble32Panel<BlockQ5_1, 8, 4, true>;

template <typename P>
size_t act_blocks_bytes(int64_t k) { return static_cast<size_t>(k / 32) * sizeof(ActBlock); }

template <typename P>
DG_TARGET void pack_act_blocks(const float *x, void *dst, int64_t k) {
    ActBlock *out = static_cast<ActBlock *>(dst);
    const int64_t nb = k / 32;
    for (int64_t b0 = 0; b0 < nb; b0 += 16) {
        const int n = static_cast<int>(std::min<int64_t>(16, nb - b0));
        int8_t codes[16][32];
        uint16_t d[16];
        int32_t sum[16];
        if (!avx512::quantize_blocks_q8_0(x + 32 * b0, n, codes, d, sum))
            for (int j = 0; j < n; ++j) {  // an infinite or NaN element: the per-block rule
                const __m256i qs = avx512::quantize_block_q8_0(x + 32 * (b0 + j), &d[j]);
                _mm256_storeu_si256(reinterpret_cast<__m256i *>(codes[j]), qs);
                sum[j] = 0;
                for (int e = 0; e < 32; ++e) sum[j] += codes[j][e];
            }
        for (int j = 0; j < n; ++j) {
            ActBlock &o = out[b0 + j];
            std::memcpy(o.qs, codes[j], sizeof(o.qs));
            o.neg = -P::kOffset * sum[j];
            o.d = f16(d[j]);
            o.dsum = o.d * static_cast<float>(sum[j]);
        }
    }
}

// NT tokens (activation rows x_stride bytes apart) against NP consecutive packed panels of nb
// blocks each (each broadcast activation feeds NP vpdpbusd); y: the first panel's first row for
// the first token; rows[p] marks panel p's rows that are written.
template <typename P, int NP, int NT>
DG_TARGET __attribute__((noinline)) void panel_tile(const typename P::Out *p, int64_t nb, int64_t n_blocks, bool first, const uint8_t *x0, size_t x_stride,
                                 float *y, int64_t ldy, const __mmask16 *rows) {
    const ActBlock *x[NT];
    for (int t = 0; t < NT; ++t) x[t] = reinterpret_cast<const ActBlock *>(x0 + t * x_stride);
    __m512 acc[NP][NT];  // n_blocks blocks from p and x0; unless first, the sums so far come back from y
    for (int k = 0; k < NP; ++k)
        for (int t = 0; t < NT; ++t)
            acc[k][t] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(rows[k], y + t * ldy + k * kPanelRows);
    // C chains of vpdpbusd per (panel, token), registers q = c, c + C, ...: narrow tiles (the last
    // tokens of a sweep) get enough independent chains to cover the instruction's latency. The
    // chains are integer sums, added before the scales: the same block sums whatever C is.
    constexpr int C = NP * NT >= 6 ? 1 : NP * NT >= 4 ? 2 : 4;
    for (int64_t b = 0; b < n_blocks; ++b) {
        __m512i s[C][NP][NT];  // C x NP x NT independent vpdpbusd chains
        for (int t = 0; t < NT; ++t) {
            const __m512i neg = _mm512_set1_epi32(x[t][b].neg);
            for (int k = 0; k < NP; ++k) {
                s[0][k][t] = neg;
                for (int c = 1; c < C; ++c) s[c][k][t] = _mm512_setzero_si512();
            }
        }
        for (int q = 0; q < 8; ++q) {
            for (int t = 0; t < NT; ++t) {
                int32_t codes;
                std::memcpy(&codes, x[t][b].qs + 4 * q, 4);
                const __m512i xv = _mm512_set1_epi32(codes);
                for (int k = 0; k < NP; ++k) s[q % C][k][t] = _mm512_dpbusd_epi32(s[q % C][k][t], p[k * nb + b].codes[q], xv);
            }
        }
        for (int c = 1; c < C; ++c)
            for (int t = 0; t < NT; ++t)
                for (int k = 0; k < NP; ++k) s[0][k][t] = _mm512_add_epi32(s[0][k][t], s[c][k][t]);
        for (int t = 0; t < NT; ++t) {
            const __m512 xd = _mm512_set1_ps(x[t][b].d);
            for (int k = 0; k < NP; ++k)
                acc[k][t] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(s[0][k][t]), xd), p[k * nb + b].scale, acc[k][t]);
            if constexpr (std::is_same_v<typename P::Out, PanelBlockMin>) {
                const __m512 xs = _mm512_set1_ps(x[t][b].dsum);
                for (int k = 0; k < NP; ++k) acc[k][t] = _mm512_fmadd_ps(p[k * nb + b].min, xs, acc[k][t]);
            }
        }
    }
    for (int k = 0; k < NP; ++k)
        for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + t * ldy + k * kPanelRows, rows[k], acc[k][t]);
}

template <typename P, int NP, int NT>
DG_TARGET inline void panel_tiles(const typename P::Out *panel, int64_t nb, int64_t b0, int64_t b1, const GemmArgs &a, float *y,
                                  const __mmask16 *rows, Prefetcher &next) {
    int64_t t = 0;
    for (; t + NT <= a.n_tokens; t += NT) {
        next.step();
        panel_tile<P, NP, NT>(panel + b0, nb, b1 - b0, b0 == 0, a.x + t * a.x_stride + b0 * sizeof(ActBlock), a.x_stride, y + t * a.ldy,
                              a.ldy, rows);
    }
    if constexpr (NT > 2) {
        if (a.n_tokens - t == 2) {  // the last two tokens as one tile
            next.step();
            panel_tile<P, NP, 2>(panel + b0, nb, b1 - b0, b0 == 0, a.x + t * a.x_stride + b0 * sizeof(ActBlock), a.x_stride,
                                 y + t * a.ldy, a.ldy, rows);
            return;
        }
    }
    for (; t < a.n_tokens; ++t) {
        next.step();
        panel_tile<P, NP, 1>(panel + b0, nb, b1 - b0, b0 == 0, a.x + t * a.x_stride + b0 * sizeof(ActBlock), a.x_stride, y + t * a.ldy,
                             a.ldy, rows);
    }
}

// Blocks per sweep of the tokens: two panels of a chunk (576 B per block each, 36 KiB) stay in L1
// while every token passes; longer rows (the full layers' 2048, the 26B's 2816) go in chunks, the
// sums stored after one and reloaded for the next (the same float operations in the same order:
// the same bits). One thread, 704 rows over 512 tokens: k = 2048 206 -> 220 G MAC/s; 1408 rows,
// k = 2816 over 256: 193 -> 203. The tile is not inlined: inlined with its chunk loop, the sweep
// lost ~20% (k <= 1024 included).
constexpr int64_t kBlockChunk = 32;

// One panel (rows <= 16 rows from w0, w_stride apart, k elements) decoded into nb = k / 32 blocks.
template <typename P>
DG_TARGET void decode_panel(const uint8_t *w0, size_t w_stride, int64_t rows, int64_t k, typename P::Out *panel) {
    const int64_t nb = k / 32;
    const __m512i off = off_of(w_stride);
    const __mmask16 mask = static_cast<__mmask16>((1u << rows) - 1);
    for (int64_t b = 0; b < nb; b += P::kGroup)
        P::decode(w0 + b * sizeof(typename P::Block), w_stride, off, mask, std::min<int64_t>(P::kGroup, nb - b), panel + b);
}

template <typename P>
size_t panel_bytes(int64_t k) { return static_cast<size_t>(k / 32) * sizeof(typename P::Out); }

template <typename P>
DG_TARGET void pack_panel(const uint8_t *w0, size_t w_stride, int64_t rows, int64_t k, uint8_t *dst) {
    decode_panel<P>(w0, w_stride, rows, k, reinterpret_cast<typename P::Out *>(dst));
}

// Panels come packed at load (a.packed) or are decoded here once per call; either way they are
// taken two at a time and swept by every token (two panels, 1152 B per block, stay in L1 for rows
// up to ~1300 elements, in L2 beyond).
template <typename P>
DG_TARGET void gemm_panels(const GemmArgs &a) {
    const int64_t nb = a.k / 32;
    thread_local std::vector<uint8_t> buf;
    using Out = typename P::Out;
    Out *const scratch = a.packed ? nullptr : aligned_scratch<Out>(buf, 2 * nb);
    for (int64_t r0 = 0; r0 < a.n_rows; r0 += 2 * kPanelRows) {
        const int64_t rows = std::min<int64_t>(2 * kPanelRows, a.n_rows - r0);
        const int np = rows > kPanelRows ? 2 : 1;
        const __mmask16 mask[2] = {static_cast<__mmask16>((1u << std::min<int64_t>(rows, kPanelRows)) - 1),
                                   static_cast<__mmask16>((1u << std::max<int64_t>(rows - kPanelRows, 0)) - 1)};
        const Out *panel = scratch;
        if (a.packed) {
            panel = reinterpret_cast<const Out *>(a.packed) + r0 / kPanelRows * nb;
        } else {
            for (int k = 0; k < np; ++k)
                decode_panel<P>(a.w + (r0 + k * kPanelRows) * a.w_stride, a.w_stride, std::min<int64_t>(kPanelRows, rows - k * kPanelRows),
                                a.k, scratch + k * nb);
        }
        // The next pair's packs are asked for while this pair is swept: within this call, or after
        // the last pair the caller's next weights.
        Prefetcher next;
        if (a.packed && r0 + 2 * kPanelRows < a.n_rows) {
            const int64_t next_np = a.n_rows - r0 - 2 * kPanelRows > kPanelRows ? 2 : 1;
            next = Prefetcher(panel + 2 * nb, static_cast<size_t>(next_np * nb) * sizeof(Out), (a.n_tokens + 2) / 3);
        } else if (a.prefetch) {
            next = Prefetcher(a.prefetch, a.prefetch_bytes, (a.n_tokens + 2) / 3);
        }
        const int64_t n_chunks = (nb + kBlockChunk - 1) / kBlockChunk, per = (nb + n_chunks - 1) / n_chunks;
        for (int64_t b0 = 0; b0 < nb; b0 += per) {
            const int64_t b1 = std::min(nb, b0 + per);
            if (np == 2) panel_tiles<P, 2, 3>(panel, nb, b0, b1, a, a.y + r0, mask, next);
            else panel_tiles<P, 1, 8>(panel, nb, b0, b1, a, a.y + r0, mask, next);
        }
    }
}

// ---- K-quants (Q4_K, Q5_K, Q6_K) against Q8_K activations, in lane-per-row panels ----
// A super-block of 16 rows decodes to 64 registers of unsigned codes (register q: elements
// 4q .. 4q+3 of the 16 rows) and per-row float scales per group. A group's integer sum (8 or 4
// vpdpbusd) takes its scale in one convert and FMA; Q4_K/Q5_K subtract dmin * sum(m_j * x-sums)
// through 8 vpdpwssd on the activations' 16-element sums; Q6_K's offset of 32 starts each group's
// sum at -32 * its x-sum. One FMA per super-block applies the activation scale.

struct KPanel {         // one super-block (256 elements) of a panel
    __m512i codes[64];  // register q: codes of elements 4q .. 4q+3, lane i = row i
    __m512 scale[16];   // group g, lane i: d * sc_g of row i (Q4_K/Q5_K: 8 groups of 32; Q6_K: 16 of 16)
    __m512i mins[8];    // Q4_K/Q5_K: lane i = the int16 pair (m_p, m_p) of row i
    __m512 dmin;        // Q4_K/Q5_K: dmin of row i
};

struct ActSuper {       // one Q8_K super-block of one token, as the K panel tiles read it
    float d;
    int8_t qs[256];
    int16_t bsums[16];  // sums of 16 elements; as dwords, the pairs (bsums[2p], bsums[2p + 1])
    int32_t neg[16];    // -offset * the sum of group g, for types whose codes carry an offset
};

size_t act_super_bytes(int64_t k) { return static_cast<size_t>(k / kQK_K) * sizeof(ActSuper); }

template <typename P>
DG_TARGET void pack_act_super(const float *x, void *dst, int64_t k) {
    ActSuper *out = static_cast<ActSuper *>(dst);
    for (int64_t i = 0; i < k / kQK_K; ++i) {
        BlockQ8_K b;
        quantize_q8_k_avx512(x + kQK_K * i, &b, kQK_K);  // the reference rule, bit for bit
        out[i].d = b.d;
        std::memcpy(out[i].qs, b.qs, sizeof(b.qs));
        std::memcpy(out[i].bsums, b.bsums, sizeof(b.bsums));
        for (int g = 0; g < P::kGroups; ++g)
            out[i].neg[g] = -P::kOffset * (P::kGroups == 16 ? b.bsums[g] : b.bsums[2 * g] + b.bsums[2 * g + 1]);
    }
}

// Row i's 64 bytes (or 32, upper half zero) at at + i * stride, transposed to dwords.
DG_TARGET inline void rows64(const uint8_t *at, size_t stride, __mmask16 rows, bool half, __m512i (&r)[16]) {
    load_transposed(at, stride, rows, 2, 32, half ? 1 : 2, r);
}

// The first 16 bytes of the rows' Q4_K/Q5_K super-blocks (d, dmin, the 12 packed scale bytes:
// quant/k_quants.h k4_scale_min) unpacked for 16 rows at once, lane i = row i.
DG_TARGET inline void k4_scales(const uint8_t *b0, size_t stride, __mmask16 rows, KPanel &p) {
    __m512i r[16];
    load_transposed(b0, stride, rows, 4, 16, 1, r);  // r[0]: d | dmin << 16; r[1..3]: scale bytes 0-3, 4-7, 8-11
    const __m512 d = low_halves(r[0]);
    p.dmin = low_halves(_mm512_srli_epi32(r[0], 16));
    const __m512i six = _mm512_set1_epi32(63), four = _mm512_set1_epi32(0xf), two = _mm512_set1_epi32(3);
    for (int j = 0; j < 8; ++j) {
        __m512i sc, m;
        if (j < 4) {  // sc = s[j] & 63, m = s[j + 4] & 63
            sc = _mm512_and_si512(_mm512_srli_epi32(r[1], 8 * j), six);
            m = _mm512_and_si512(_mm512_srli_epi32(r[2], 8 * j), six);
        } else {      // i = j - 4: sc = (s[i + 8] & 15) | (s[i] >> 6) << 4, m = (s[i + 8] >> 4) | (s[i + 4] >> 6) << 4
            const int i = j - 4;
            sc = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(r[3], 8 * i), four),
                                 _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(r[1], 8 * i + 6), two), 4));
            m = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(r[3], 8 * i + 4), four),
                                _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(r[2], 8 * i + 6), two), 4));
        }
        p.scale[j] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc));
        p.mins[j] = _mm512_or_si512(m, _mm512_slli_epi32(m, 16));
    }
}

// Q4_K / Q5_K: 64-element chunk k is qs[32k .. 32k+31], low nibbles elements 64k.., high 64k+32..;
// Q5_K's bit j of qh[l] is bit 4 of element 32j + l.
template <typename Block, bool kFiveBit>
struct Q45KPanel {
    static constexpr int kGroups = 8, kOffset = 0;  // groups of 32, codes as stored
    static constexpr bool kMins = true;
    DG_TARGET static void decode(const uint8_t *b0, size_t stride, __mmask16 rows, KPanel &p) {
        const __m512i m = _mm512_set1_epi8(0x0f);
        for (int h = 0; h < 2; ++h) {
            __m512i r[16];
            rows64(b0 + offsetof(Block, qs) + 64 * h, stride, rows, false, r);
            for (int kk = 0; kk < 2; ++kk) {
                const int k = 2 * h + kk;
                for (int q = 0; q < 8; ++q) {
                    p.codes[16 * k + q] = _mm512_and_si512(r[8 * kk + q], m);
                    p.codes[16 * k + 8 + q] = _mm512_and_si512(_mm512_srli_epi16(r[8 * kk + q], 4), m);
                }
            }
        }
        if constexpr (kFiveBit) {
            __m512i qh[16];
            rows64(b0 + offsetof(Block, qh), stride, rows, true, qh);
            for (int j = 0; j < 8; ++j)
                for (int q = 0; q < 8; ++q) {
                    const __m512i bit = _mm512_and_si512(_mm512_srli_epi32(qh[q], j), _mm512_set1_epi32(0x01010101));
                    p.codes[8 * j + q] = _mm512_or_si512(p.codes[8 * j + q], _mm512_slli_epi32(bit, 4));
                }
        }
        k4_scales(b0, stride, rows, p);
    }
};

// Bits shift, shift + 1 of each byte of h as bits 4-5.
DG_TARGET inline __m512i two_bits(__m512i h, int shift) {
    return _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(h, shift), _mm512_set1_epi8(0x03)), 4);
}

// Q6_K: in half n, byte l of ql[64n ..] and of qh[32n ..] give elements 128n + l (+32, +64, +96):
// low nibble of ql[l] and qh bits 0-1, low nibble of ql[l + 32] and bits 2-3, high nibble of ql[l]
// and bits 4-5, high nibble of ql[l + 32] and bits 6-7.
struct Q6KPanel {
    static constexpr int kGroups = 16, kOffset = 32;  // groups of 16, codes q + 32
    static constexpr bool kMins = false;
    DG_TARGET static void decode(const uint8_t *b0, size_t stride, __mmask16 rows, KPanel &p) {
        const __m512i m4 = _mm512_set1_epi8(0x0f);
        for (int n = 0; n < 2; ++n) {
            __m512i ql[16], qh[16];
            rows64(b0 + offsetof(BlockQ6_K, ql) + 64 * n, stride, rows, false, ql);
            rows64(b0 + offsetof(BlockQ6_K, qh) + 32 * n, stride, rows, true, qh);
            for (int w = 0; w < 8; ++w) {
                const __m512i lo = ql[w], hi = ql[8 + w], h = qh[w];
                p.codes[32 * n + w] = _mm512_or_si512(_mm512_and_si512(lo, m4), two_bits(h, 0));
                p.codes[32 * n + 8 + w] = _mm512_or_si512(_mm512_and_si512(hi, m4), two_bits(h, 2));
                p.codes[32 * n + 16 + w] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(lo, 4), m4), two_bits(h, 4));
                p.codes[32 * n + 24 + w] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(hi, 4), m4), two_bits(h, 6));
            }
        }
        __m512i sc[16];  // the 16 int8 group scales: sc[0..3] hold bytes 0-3, 4-7, ...
        load_transposed(b0 + offsetof(BlockQ6_K, scales), stride, rows, 4, 16, 1, sc);
        // d is the block's last 2 bytes: read the dword ending there (scales 14, 15 and d).
        const __m512 d = low_halves(_mm512_srli_epi32(gather_rows(b0 + offsetof(BlockQ6_K, d) - 2, off_of(stride), rows), 16));
        for (int g = 0; g < 16; ++g) {  // byte g % 4 of dword g / 4, sign-extended
            const __m512i v = _mm512_srai_epi32(_mm512_slli_epi32(sc[g / 4], 24 - 8 * (g % 4)), 24);
            p.scale[g] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(v));
        }
    }
};

// Group scales (and nothing else) read per row: scale[g] lane i = f(row i's block, g).
template <typename Block, typename F>
DG_TARGET inline void row_scales(const uint8_t *b0, size_t stride, __mmask16 rows, int groups, F scale_of, __m512 *scale) {
    alignas(64) float v[16][16] = {};  // [group][row]
    for (int i = 0; i < 16; ++i)
        if (rows >> i & 1) scale_of(*reinterpret_cast<const Block *>(b0 + i * stride), v, i);
    for (int g = 0; g < groups; ++g) scale[g] = _mm512_load_ps(v[g]);
}

// Q3_K: element 128n + 32j + l is bits 2j, 2j+1 of qs[32n + l] and, as bit 2, bit 4n + j of
// hmask[l] (set: the code as it is, clear: code - 4), x = d*(sc - 32) * (u - 4) per group of 16:
// unsigned codes u in 0..7, the offset 4 through the groups' sums.
struct Q3KPanel {
    static constexpr int kGroups = 16, kOffset = 4;
    static constexpr bool kMins = false;
    DG_TARGET static void decode(const uint8_t *b0, size_t stride, __mmask16 rows, KPanel &p) {
        __m512i hm[16];
        rows64(b0 + offsetof(BlockQ3_K, hmask), stride, rows, true, hm);
        for (int n = 0; n < 2; ++n) {
            __m512i q[16];
            rows64(b0 + offsetof(BlockQ3_K, qs) + 32 * n, stride, rows, true, q);
            for (int j = 0; j < 4; ++j)
                for (int w = 0; w < 8; ++w) {
                    const __m512i lo = _mm512_and_si512(_mm512_srli_epi32(q[w], 2 * j), _mm512_set1_epi8(0x03));
                    const __m512i hi = _mm512_and_si512(_mm512_srli_epi32(hm[w], 4 * n + j), _mm512_set1_epi8(0x01));
                    p.codes[32 * n + 8 * j + w] = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 2));
                }
        }
        row_scales<BlockQ3_K>(b0, stride, rows, 16, [](const BlockQ3_K &b, float (&v)[16][16], int i) {
            int sc[16];
            q3_k_scales(b.scales, sc);
            const float d = f16(b.d);
            for (int g = 0; g < 16; ++g) v[g][i] = d * static_cast<float>(sc[g]);
        }, p.scale);
    }
};

// Q2_K: element 128n + 32j + l is bits 2j, 2j+1 of qs[32n + l], x = d*sc_g * q - dmin*m_g per
// group g of 16 (sc_g, m_g: the low and high nibbles of scales[g]); the mins as Q4_K's, paired
// (m_2p, m_2p+1) against the activations' 16-element sums.
struct Q2KPanel {
    static constexpr int kGroups = 16, kOffset = 0;
    static constexpr bool kMins = true;
    DG_TARGET static void decode(const uint8_t *b0, size_t stride, __mmask16 rows, KPanel &p) {
        for (int n = 0; n < 2; ++n) {
            __m512i q[16];
            rows64(b0 + offsetof(BlockQ2_K, qs) + 32 * n, stride, rows, true, q);
            for (int j = 0; j < 4; ++j)
                for (int w = 0; w < 8; ++w)
                    p.codes[32 * n + 8 * j + w] = _mm512_and_si512(_mm512_srli_epi32(q[w], 2 * j), _mm512_set1_epi8(0x03));
        }
        alignas(64) float sc[16][16] = {}, dmin[16] = {};
        alignas(64) int32_t mins[8][16] = {};
        for (int i = 0; i < 16; ++i) {
            if (!(rows >> i & 1)) continue;
            const BlockQ2_K &b = *reinterpret_cast<const BlockQ2_K *>(b0 + i * stride);
            const float d = f16(b.d);
            dmin[i] = f16(b.dmin);
            for (int g = 0; g < 16; ++g) sc[g][i] = d * static_cast<float>(b.scales[g] & 0xf);
            for (int q = 0; q < 8; ++q) mins[q][i] = (b.scales[2 * q] >> 4) | ((b.scales[2 * q + 1] >> 4) << 16);
        }
        for (int g = 0; g < 16; ++g) p.scale[g] = _mm512_load_ps(sc[g]);
        for (int q = 0; q < 8; ++q) p.mins[q] = _mm512_load_si512(mins[q]);
        p.dmin = _mm512_load_ps(dmin);
    }
};

// IQ4_XS: element 32g + l is the nibble of qs[16g + l % 16] (high for l >= 16) looked up in
// kIq4nlValues, x = d*(ls_g - 32) * value per group of 32: unsigned codes value + 128, the offset
// through the groups' sums.
struct IQ4XSPanel {
    static constexpr int kGroups = 8, kOffset = 128;
    static constexpr bool kMins = false;
    DG_TARGET static void decode(const uint8_t *b0, size_t stride, __mmask16 rows, KPanel &p) {
        alignas(16) uint8_t lut[16];
        for (int v = 0; v < 16; ++v) lut[v] = static_cast<uint8_t>(kIq4nlValues[v] + 128);
        const __m512i table = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i *>(lut)));
        const __m512i m4 = _mm512_set1_epi8(0x0f);
        for (int h = 0; h < 2; ++h) {
            __m512i r[16];  // dword c: qs[64h + 4c ..], group 4h + c / 4, elements 4 (c % 4) .. (+16 for the high nibbles)
            rows64(b0 + offsetof(BlockIQ4_XS, qs) + 64 * h, stride, rows, false, r);
            for (int c = 0; c < 16; ++c) {
                const int g = 4 * h + c / 4, w = c % 4;
                p.codes[8 * g + w] = _mm512_shuffle_epi8(table, _mm512_and_si512(r[c], m4));
                p.codes[8 * g + 4 + w] = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(r[c], 4), m4));
            }
        }
        row_scales<BlockIQ4_XS>(b0, stride, rows, 8, [](const BlockIQ4_XS &b, float (&v)[16][16], int i) {
            const float d = f16(b.d);
            for (int g = 0; g < 8; ++g) {
                const int ls = ((b.scales_l[g / 2] >> (4 * (g % 2))) & 0xf) | (((b.scales_h >> (2 * g)) & 3) << 4);
                v[g][i] = d * static_cast<float>(ls - 32);
            }
        }, p.scale);
    }
};

DG_TARGET inline __m512i bcast32(const void *p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

// NT tokens against NP consecutive panels (p, p + ns): each activation broadcast feeds NP
// vpdpbusd (one panel alone left the tile bound by its broadcasts: 16 loads per 16 vpdpbusd).
template <typename P, int NP, int NT>
DG_TARGET inline void k_panel_tile(const KPanel *p, int64_t ns, const uint8_t *x0, size_t x_stride, float *y, int64_t ldy,
                                   const __mmask16 (&rows)[2]) {
    const ActSuper *x[NT];
    for (int t = 0; t < NT; ++t) x[t] = reinterpret_cast<const ActSuper *>(x0 + t * x_stride);
    __m512 acc[NP][NT];
    for (int k = 0; k < NP; ++k)
        for (int t = 0; t < NT; ++t) acc[k][t] = _mm512_setzero_ps();
    // C chains of vpdpbusd per (panel, token) within a group (registers q = c, c + C, ...): a narrow
    // tile (the last tokens of a sweep) covers the instruction's latency; integer sums, added before
    // the scale, so the same group sums whatever C is.
    constexpr int C = NP * NT >= 4 ? 1 : NP * NT >= 2 ? 2 : 4;
    for (int64_t i = 0; i < ns; ++i) {
        __m512 f[NP][NT];
        __m512i sc[C][NP][NT];
        for (int k = 0; k < NP; ++k)
            for (int t = 0; t < NT; ++t) f[k][t] = _mm512_setzero_ps();
        constexpr int kRegs = 64 / P::kGroups;  // registers (4 elements) per group
        for (int g = 0; g < P::kGroups; ++g) {
            for (int t = 0; t < NT; ++t) {
                const __m512i start = P::kOffset ? _mm512_set1_epi32(x[t][i].neg[g]) : _mm512_setzero_si512();
                for (int k = 0; k < NP; ++k) {
                    sc[0][k][t] = start;
                    for (int c = 1; c < C; ++c) sc[c][k][t] = _mm512_setzero_si512();
                }
            }
            for (int q = 0; q < kRegs; ++q)
                for (int t = 0; t < NT; ++t) {
                    const __m512i xv = bcast32(x[t][i].qs + 4 * (kRegs * g + q));
                    for (int k = 0; k < NP; ++k)
                        sc[q % C][k][t] = _mm512_dpbusd_epi32(sc[q % C][k][t], p[k * ns + i].codes[kRegs * g + q], xv);
                }
            for (int k = 0; k < NP; ++k)
                for (int t = 0; t < NT; ++t) {
                    for (int c = 1; c < C; ++c) sc[0][k][t] = _mm512_add_epi32(sc[0][k][t], sc[c][k][t]);
                    f[k][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sc[0][k][t]), p[k * ns + i].scale[g], f[k][t]);
                }
        }
        if constexpr (P::kMins) {
            __m512i s[NP][NT];
            for (int k = 0; k < NP; ++k)
                for (int t = 0; t < NT; ++t) s[k][t] = _mm512_setzero_si512();
            for (int q = 0; q < 8; ++q)
                for (int t = 0; t < NT; ++t) {
                    const __m512i xv = bcast32(x[t][i].bsums + 2 * q);
                    for (int k = 0; k < NP; ++k) s[k][t] = _mm512_dpwssd_epi32(s[k][t], p[k * ns + i].mins[q], xv);
                }
            for (int k = 0; k < NP; ++k)
                for (int t = 0; t < NT; ++t) f[k][t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(s[k][t]), p[k * ns + i].dmin, f[k][t]);
        }
        for (int t = 0; t < NT; ++t) {
            const __m512 xd = _mm512_set1_ps(x[t][i].d);
            for (int k = 0; k < NP; ++k) acc[k][t] = _mm512_fmadd_ps(f[k][t], xd, acc[k][t]);
        }
    }
    for (int k = 0; k < NP; ++k)
        for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + t * ldy + k * kPanelRows, rows[k], acc[k][t]);
}

template <typename P, int NP>
DG_TARGET inline void k_panel_tiles(const KPanel *panel, int64_t ns, const GemmArgs &a, float *y, const __mmask16 (&mask)[2]) {
    constexpr int64_t kTokens = NP == 2 ? 4 : 4;
    int64_t t = 0;
    for (; t + kTokens <= a.n_tokens; t += kTokens)
        k_panel_tile<P, NP, kTokens>(panel, ns, a.x + t * a.x_stride, a.x_stride, y + t * a.ldy, a.ldy, mask);
    const uint8_t *xt = a.x + t * a.x_stride;
    switch (a.n_tokens - t) {  // the last tokens as one tile
        case 3: k_panel_tile<P, NP, 3>(panel, ns, xt, a.x_stride, y + t * a.ldy, a.ldy, mask); break;
        case 2: k_panel_tile<P, NP, 2>(panel, ns, xt, a.x_stride, y + t * a.ldy, a.ldy, mask); break;
        case 1: k_panel_tile<P, NP, 1>(panel, ns, xt, a.x_stride, y + t * a.ldy, a.ldy, mask); break;
        default: break;
    }
}

// Panels decoded once per call (a K panel takes 2.25 bytes per weight: not kept), two at a time,
// swept by every token.
template <typename P, typename Block>
DG_TARGET void gemm_k_panels(const GemmArgs &a) {
    const int64_t ns = a.k / kQK_K;
    thread_local std::vector<uint8_t> buf;
    KPanel *const panel = aligned_scratch<KPanel>(buf, 2 * ns);
    for (int64_t r0 = 0; r0 < a.n_rows; r0 += 2 * kPanelRows) {
        const int64_t rows = std::min<int64_t>(2 * kPanelRows, a.n_rows - r0);
        const int np = rows > kPanelRows ? 2 : 1;
        const __mmask16 mask[2] = {static_cast<__mmask16>((1u << std::min<int64_t>(rows, kPanelRows)) - 1),
                                   static_cast<__mmask16>((1u << std::max<int64_t>(rows - kPanelRows, 0)) - 1)};
        for (int k = 0; k < np; ++k)
            for (int64_t i = 0; i < ns; ++i)
                P::decode(a.w + (r0 + k * kPanelRows) * a.w_stride + i * sizeof(Block), a.w_stride, mask[k], panel[k * ns + i]);
        if (np == 2) k_panel_tiles<P, 2>(panel, ns, a, a.y + r0, mask);
        else k_panel_tiles<P, 1>(panel, ns, a, a.y + r0, mask);
    }
}

// ---- float weights (F32, F16, BF16) against float32 activations ----
// The same lane-per-row panels as the 32-element blocks: a panel of 16 rows is widened to float32
// once, element-major (register kk holds element kk of the 16 rows), and each FMA multiplies it by
// one activation broadcast from memory; a token's 16 results are one vector. Long rows go in
// chunks of kFloatChunk elements (the widened chunk stays in L1): the sums are stored after one
// chunk and reloaded for the next, which leaves each sum one FMA chain over k in order, so a
// token's results do not depend on the tokens beside it.

constexpr int64_t kFloatChunk = 512;

// Per type: how a row's elements load (n of them from element k, masked past n) and how a dword of
// the transposed registers widens to kPerDword float32 registers (the first `left` written).
struct F16Elems {
    static constexpr int kPerDword = 2;
    DG_TARGET static __m512i load(const uint8_t *row, int64_t k, int64_t n) {
        return _mm512_maskz_loadu_epi16(static_cast<__mmask32>(n >= 32 ? ~0u : (1u << n) - 1), row + 2 * k);
    }
    DG_TARGET static __m512 widen16(__m256i h) { return _mm512_cvtph_ps(h); }
    DG_TARGET static void widen(__m512i v, __m512 *out, int64_t left) {
        out[0] = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
        if (left > 1) out[1] = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(v, 16)));
    }
};
struct BF16Elems {
    static constexpr int kPerDword = 2;
    DG_TARGET static __m512i load(const uint8_t *row, int64_t k, int64_t n) { return F16Elems::load(row, k, n); }
    DG_TARGET static __m512 widen16(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
    DG_TARGET static void widen(__m512i v, __m512 *out, int64_t left) {
        out[0] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
        if (left > 1) out[1] = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
    }
};
struct F32Elems {
    static constexpr int kPerDword = 1;
    DG_TARGET static __m512i load(const uint8_t *row, int64_t k, int64_t n) {
        return _mm512_maskz_loadu_epi32(static_cast<__mmask16>(n >= 16 ? 0xffff : (1u << n) - 1), row + 4 * k);
    }
    DG_TARGET static void widen(__m512i v, __m512 *out, int64_t) { out[0] = _mm512_castsi512_ps(v); }
};

// Elements [k0, k0 + kc) of the panel's rows (row i at w0 + i * stride, rows where `rows` is set)
// as kc registers: 16 dwords of the 16 rows at a time, loaded (masked at the ends), transposed and
// widened.
template <typename C>
DG_TARGET inline void pack_float_panel(const uint8_t *w0, size_t stride, __mmask16 rows, int64_t k0, int64_t kc, __m512 *panel) {
    constexpr int64_t kStep = 16 * C::kPerDword;
    for (int64_t kk = 0; kk < kc; kk += kStep) {
        const int64_t n = std::min(kStep, kc - kk);
        __m512i r[16];
        for (int i = 0; i < 16; ++i) r[i] = rows >> i & 1 ? C::load(w0 + i * stride, k0 + kk, n) : _mm512_setzero_si512();
        transpose16_epi32(r);
        for (int64_t j = 0; j * C::kPerDword < n; ++j) C::widen(r[j], panel + kk + j * C::kPerDword, n - j * C::kPerDword);
    }
}

// How the float kernel reads a panel element (kk of 16 rows of panel p). WideRead: widened float32
// registers (made per call, or F32 packed at load). WidenRead: the 16-bit values packed at load,
// widened as the first tile of tokens needs them and stored for the tiles after it, so the pack's
// loads (often from L3: the experts' matrices) overlap that tile's FMAs instead of a widening pass
// of their own.
struct WideRead {
    const __m512 *panel;
    int64_t pstride;
    DG_TARGET __m512 read(int p, int64_t kk) const { return _mm512_load_ps(reinterpret_cast<const float *>(panel + p * pstride + kk)); }
};
template <typename C>
struct WidenRead {
    const __m256i *src;  // packed element k0 of panel 0
    int64_t sstride;     // packed elements between panels
    __m512 *dst;         // the widened chunk, panel p at dst + p * dstride
    int64_t dstride;
    const __m256i *next; // the same element of the next pair's panel 0, or null: asked into L1 a
                         // pair ahead (the experts' packs come from memory, a pair is ~1000s of cycles)
    DG_TARGET __m512 read(int p, int64_t kk) const {
        if (next && !(kk & 1)) _mm_prefetch(reinterpret_cast<const char *>(next + p * sstride + kk), _MM_HINT_T0);
        const __m512 w = C::widen16(_mm256_load_si256(src + p * sstride + kk));
        _mm512_store_ps(reinterpret_cast<float *>(dst + p * dstride + kk), w);
        return w;
    }
};

// Where a tile's results go: stored at y (token t's row at y + t * ldy), or, with rows set, added
// times scale[t] to rows[t] + col (GemmArgs::y_rows; one chunk of k only: the sums start at 0).
struct FloatOut {
    float *y;
    int64_t ldy;
    float *const *rows = nullptr;
    const float *scale = nullptr;
    int64_t col = 0;
    FloatOut at(int64_t t) const { return rows ? FloatOut{y, ldy, rows + t, scale + t, col} : FloatOut{y + t * ldy, ldy}; }
};

// NP panels (16 NP rows) x NT tokens over kc elements; each broadcast feeds NP FMAs.
template <int NP, int NT, typename R>
DG_TARGET inline void float_panel_tile(const R &r, int64_t kc, bool first, const float *x0, int64_t ldx, const FloatOut &o,
                                       const __mmask16 (&rows)[2]) {
    __m512 acc[NP][NT];
    for (int p = 0; p < NP; ++p)
        for (int t = 0; t < NT; ++t)
            acc[p][t] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(rows[p], o.y + t * o.ldy + p * kPanelRows);
    for (int64_t kk = 0; kk < kc; ++kk) {
        __m512 w[NP];
        for (int p = 0; p < NP; ++p) w[p] = r.read(p, kk);
        for (int t = 0; t < NT; ++t) {
            const __m512 xv = _mm512_set1_ps(x0[t * ldx + kk]);
            for (int p = 0; p < NP; ++p) acc[p][t] = _mm512_fmadd_ps(w[p], xv, acc[p][t]);
        }
    }
    if (o.rows) {
        for (int t = 0; t < NT; ++t) {
            const __m512 s = _mm512_set1_ps(o.scale[t]);
            for (int p = 0; p < NP; ++p) {
                float *dst = o.rows[t] + o.col + p * kPanelRows;
                _mm512_mask_storeu_ps(dst, rows[p], _mm512_fmadd_ps(acc[p][t], s, _mm512_maskz_loadu_ps(rows[p], dst)));
            }
        }
        return;
    }
    for (int p = 0; p < NP; ++p)
        for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(o.y + t * o.ldy + p * kPanelRows, rows[p], acc[p][t]);
}

// A tile of n < kMax tokens as one tile of exactly n (2n FMA chains rather than runs of single
// tokens, whose 2 chains leave the FMA units waiting on their latency).
template <int NP, int kMax, typename R>
DG_TARGET inline void float_panel_tail(const R &r, int64_t kc, bool first, const float *x, int64_t ldx, int64_t n, const FloatOut &o,
                                       const __mmask16 (&rows)[2]) {
    if constexpr (kMax > 1) {
        if (n == kMax - 1) return float_panel_tile<NP, kMax - 1>(r, kc, first, x, ldx, o, rows);
        return float_panel_tail<NP, kMax - 1>(r, kc, first, x, ldx, n, o, rows);
    }
}

// Every token against NP panels: the first tile reads through `r0` (which may widen the panels as
// it goes), the others through `r`.
template <int NP, typename R0>
DG_TARGET inline void float_panel_tiles(const R0 &r0, const WideRead &r, int64_t kc, bool first, const float *x, int64_t ldx, int64_t n,
                                        const FloatOut &o, const __mmask16 (&rows)[2]) {
    constexpr int64_t kTokens = NP == 2 ? 8 : 12;  // at least 12 FMA chains hide the FMA latency on two ports
    if (n < kTokens) return float_panel_tail<NP, kTokens>(r0, kc, first, x, ldx, n, o, rows);
    float_panel_tile<NP, kTokens>(r0, kc, first, x, ldx, o, rows);
    int64_t t = kTokens;
    for (; t + kTokens <= n; t += kTokens) float_panel_tile<NP, kTokens>(r, kc, first, x + t * ldx, ldx, o.at(t), rows);
    if (t < n) float_panel_tail<NP, kTokens>(r, kc, first, x + t * ldx, ldx, n - t, o.at(t), rows);
}

// Packed at load: F32 as widened panels (64 B per element of 16 rows, the file's size), F16/BF16
// as their 16-bit values (32 B per element of 16 rows, the file's size), panel after panel.
template <typename C>
size_t float_panel_bytes(int64_t k) { return static_cast<size_t>(k) * 16 * sizeof(float) / (C::kPerDword == 2 ? 2 : 1); }

template <typename C>
DG_TARGET void pack_float_panel_at_load(const uint8_t *w0, size_t w_stride, int64_t rows, int64_t k, uint8_t *dst) {
    const __mmask16 mask = static_cast<__mmask16>((1u << rows) - 1);
    if constexpr (C::kPerDword == 1) {
        pack_float_panel<C>(w0, w_stride, mask, 0, k, reinterpret_cast<__m512 *>(dst));
    } else {
        __m256i *out = reinterpret_cast<__m256i *>(dst);
        for (int64_t kk = 0; kk < k; kk += 32) {
            const int64_t n = std::min<int64_t>(32, k - kk);
            __m512i r[16];
            for (int i = 0; i < 16; ++i) r[i] = mask >> i & 1 ? C::load(w0 + i * w_stride, kk, n) : _mm512_setzero_si512();
            transpose16_epi32(r);
            for (int64_t j = 0; 2 * j < n; ++j) {
                out[kk + 2 * j] = _mm512_cvtepi32_epi16(r[j]);
                if (2 * j + 1 < n) out[kk + 2 * j + 1] = _mm512_cvtepi32_epi16(_mm512_srli_epi32(r[j], 16));
            }
        }
    }
}

template <typename C>
DG_TARGET void gemm_float_panels(const GemmArgs &a) {
    thread_local std::vector<uint8_t> buf;
    const int64_t chunk = std::min(a.k, kFloatChunk);
    // Widened panels: made here from the rows, or from 16-bit packs by the first tile of tokens;
    // F32 packs are read in place.
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
            const bool first = k0 == 0;
            const FloatOut y = a.y_rows ? FloatOut{nullptr, 0, a.y_rows, a.y_scale, r0} : FloatOut{a.y + r0, a.ldy};
            const float *const xc = x + k0;
            if constexpr (C::kPerDword == 2) {
                if (a.packed) {
                    const __m256i *pair = reinterpret_cast<const __m256i *>(a.packed) + r0 / kPanelRows * a.k + k0;
                    const bool has_next = r0 + 2 * kPanelRows < a.n_rows;
                    const WidenRead<C> w0{pair, a.k, panel, kc, has_next ? pair + 2 * a.k : nullptr};
                    const WideRead w{panel, kc};
                    if (np == 2) float_panel_tiles<2>(w0, w, kc, first, xc, ldx, a.n_tokens, y, mask);
                    else float_panel_tiles<1>(w0, w, kc, first, xc, ldx, a.n_tokens, y, mask);
                    continue;
                }
            }
            WideRead w{panel, kc};
            if (C::kPerDword == 1 && a.packed) {
                w = {reinterpret_cast<const __m512 *>(a.packed) + r0 / kPanelRows * a.k + k0, a.k};
            } else {
                for (int p = 0; p < np; ++p)
                    pack_float_panel<C>(a.w + (r0 + p * kPanelRows) * a.w_stride, a.w_stride, mask[p], k0, kc, panel + p * kc);
            }
            if (np == 2) float_panel_tiles<2>(w, w, kc, first, xc, ldx, a.n_tokens, y, mask);
            else float_panel_tiles<1>(w, w, kc, first, xc, ldx, a.n_tokens, y, mask);
        }
    }
}


}  // namespace

GemmKernel gemm_kernel_avx512(TensorType type) {
    switch (type) {
        case TensorType::Q8_0:
            return {gemm_panels<Q8_0Panel>, pack_act_blocks<Q8_0Panel>, act_blocks_bytes<Q8_0Panel>, pack_panel<Q8_0Panel>, panel_bytes<Q8_0Panel>};
        case TensorType::Q4_0:
            return {gemm_panels<Q4_0Panel>, pack_act_blocks<Q4_0Panel>, act_blocks_bytes<Q4_0Panel>, pack_panel<Q4_0Panel>, panel_bytes<Q4_0Panel>};
        case TensorType::Q5_0:
            return {gemm_panels<Q5_0Panel>, pack_act_blocks<Q5_0Panel>, act_blocks_bytes<Q5_0Panel>, pack_panel<Q5_0Panel>, panel_bytes<Q5_0Panel>};
        case TensorType::Q4_1:
            return {gemm_panels<Q4_1Panel>, pack_act_blocks<Q4_1Panel>, act_blocks_bytes<Q4_1Panel>, pack_panel<Q4_1Panel>, panel_bytes<Q4_1Panel>};
        case TensorType::Q5_1:
            return {gemm_panels<Q5_1Panel>, pack_act_blocks<Q5_1Panel>, act_blocks_bytes<Q5_1Panel>, pack_panel<Q5_1Panel>, panel_bytes<Q5_1Panel>};
        case TensorType::Q4_K:
            return {gemm_k_panels<Q45KPanel<BlockQ4_K, false>, BlockQ4_K>, pack_act_super<Q45KPanel<BlockQ4_K, false>>, act_super_bytes};
        case TensorType::Q5_K:
            return {gemm_k_panels<Q45KPanel<BlockQ5_K, true>, BlockQ5_K>, pack_act_super<Q45KPanel<BlockQ5_K, true>>, act_super_bytes};
        case TensorType::Q6_K: return {gemm_k_panels<Q6KPanel, BlockQ6_K>, pack_act_super<Q6KPanel>, act_super_bytes};
        case TensorType::Q3_K: return {gemm_k_panels<Q3KPanel, BlockQ3_K>, pack_act_super<Q3KPanel>, act_super_bytes};
        case TensorType::IQ4_XS: return {gemm_k_panels<IQ4XSPanel, BlockIQ4_XS>, pack_act_super<IQ4XSPanel>, act_super_bytes};
        case TensorType::Q2_K: return {gemm_k_panels<Q2KPanel, BlockQ2_K>, pack_act_super<Q2KPanel>, act_super_bytes};
        case TensorType::F32:
            return {gemm_float_panels<F32Elems>, nullptr, nullptr, pack_float_panel_at_load<F32Elems>, float_panel_bytes<F32Elems>, kFloatChunk};
        case TensorType::F16:
            return {gemm_float_panels<F16Elems>, nullptr, nullptr, pack_float_panel_at_load<F16Elems>, float_panel_bytes<F16Elems>, kFloatChunk};
        case TensorType::BF16:
            return {gemm_float_panels<BF16Elems>, nullptr, nullptr, pack_float_panel_at_load<BF16Elems>, float_panel_bytes<BF16Elems>, kFloatChunk};
        default: return {};
    }
}

}  // namespace dg

#endif
