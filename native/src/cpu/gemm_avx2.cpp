// AVX2 register-blocked kernels (cpu/gemm.h). AVX2 has no vpdpbusd: an integer dot of 4 unsigned x
// 4 signed bytes per 32-bit lane is vpmaddubsw (u8 x s8 -> pairs summed to s16, saturating) then
// vpmaddwd with ones (-> s32). Each comment on a kernel bounds its pairs below the saturation.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/quantize_avx2.h"
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

DG_TARGET inline __m256i nibbles(const uint8_t *qs) {  // 16 bytes -> 32 codes: low nibbles, then high
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i *>(qs));
    const __m128i m = _mm_set1_epi8(0x0f);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

// ---- 32-element blocks (Q8_0, Q4_0, Q5_0) against Q8_0 activations ----
// Weight rows go in panels of 8, decoded once per call, lane i of every register belonging to row
// i: register q of a block holds elements 4q .. 4q+3 of the 8 rows, and vpmaddubsw + vpmaddwd
// against the token's 4 activation codes (broadcast) add 32 products to 8 rows' sums. A block's sum
// stays integer; one conversion, one multiply and one FMA per block apply the two scales, and a
// token's 8 results leave as one vector (no horizontal reduction). Each token's results are the
// same operations in the same order whatever tokens share its tile.
//
// No vpmaddubsw pair saturates. Activations are Q8_0 codes by the reference rule, |x| <= 127.
// - Q4_0 / Q5_0 take unsigned codes u = w + 8 (0..15) or w + 16 (0..31); the offset comes back
//   through the activation block's sum, which starts each block's integer sum. A pair is at most
//   2 * 15 * 127 = 3810 (Q4_0) or 2 * 31 * 127 = 7874 (Q5_0) in magnitude, so the pairs of 8
//   (Q4_0: 30480) or 4 (Q5_0: 31496) registers are summed in int16 before one vpmaddwd.
// - Q8_0 codes w span -128..127, too wide for an offset (2 * 255 * 127 > 32767): the unsigned side
//   is |w| <= 128 and the activation carries w's sign, a pair at most 2 * 128 * 127 = 32512.

// Rows per panel: one 256-bit register of dwords. Panels of 16 rows (two registers per column, one
// broadcast for both) measured 5-20% slower: their accumulators do not fit the 16 registers.
constexpr int kPanel32 = 8;

struct NoMin {};
struct PanelMin {  // Q4_1 / Q5_1: x = d * q + m
    __m256 min;    // lane i: m of row i
};

template <typename C>
struct PanelBlock : std::conditional_t<C::kMin, PanelMin, NoMin> {  // one 32-element block of a panel
    __m256i codes[8];                   // register q, lane i: elements 4q .. 4q+3 of row i, unsigned
    __m256i signs[C::kSigned ? 8 : 1];  // Q8_0: the signed codes, whose signs go onto the activations
    __m256 scale;                       // lane i: d of row i (0 past the last row)
};

struct ActBlock {   // one 32-element block of one token, as the panel tiles read it
    int8_t qs[32];  // Q8_0 codes by the reference rule
    int32_t neg;    // -offset * sum(qs)
    float d;        // the block's f16 scale, widened
    float dsum;     // d * sum(qs): the term of the weights' min (Q4_1, Q5_1)
};

// Per type: the codes of a block in element order (signed, or for the _1 types the unsigned q of
// x = d * q + m), the offset to unsigned codes (0: the sign trick, or already unsigned) and the
// registers whose int16 pairs may be summed before widening.
struct Q8_0Codes {
    using Block = BlockQ8_0;
    static constexpr bool kSigned = true, kMin = false;
    static constexpr int kOffset = 0, kSum16 = 1;
    DG_TARGET static __m256i values(const Block &b) { return load256(b.qs); }
};

struct Q4_0Codes {
    using Block = BlockQ4_0;
    static constexpr bool kSigned = false, kMin = false;
    static constexpr int kOffset = 8, kSum16 = 8;
    DG_TARGET static __m256i values(const Block &b) { return _mm256_sub_epi8(nibbles(b.qs), _mm256_set1_epi8(8)); }
};

// 32 codes of 0..31: the nibbles of qs and, as bit 4, bit e of the little-endian qh.
DG_TARGET inline __m256i five_bit_codes(const uint8_t *qh, const uint8_t *qs) {
    uint32_t h;
    std::memcpy(&h, qh, 4);
    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(h)),
                                               _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
    const __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ull));
    const __m256i high = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10));
    return _mm256_or_si256(nibbles(qs), high);
}

struct Q5_0Codes {
    using Block = BlockQ5_0;
    static constexpr bool kSigned = false, kMin = false;
    static constexpr int kOffset = 16, kSum16 = 4;
    DG_TARGET static __m256i values(const Block &b) { return _mm256_sub_epi8(five_bit_codes(b.qh, b.qs), _mm256_set1_epi8(16)); }
};

// Q4_1 / Q5_1: unsigned codes already, pairs bounded as Q4_0's and Q5_0's.
struct Q4_1Codes {
    using Block = BlockQ4_1;
    static constexpr bool kSigned = false, kMin = true;
    static constexpr int kOffset = 0, kSum16 = 8;
    DG_TARGET static __m256i values(const Block &b) { return nibbles(b.qs); }
};

struct Q5_1Codes {
    using Block = BlockQ5_1;
    static constexpr bool kSigned = false, kMin = true;
    static constexpr int kOffset = 0, kSum16 = 4;
    DG_TARGET static __m256i values(const Block &b) { return five_bit_codes(b.qh, b.qs); }
};

// r[j] = column j of the 8 x 8 matrix of dwords whose row i is r[i].
DG_TARGET inline void transpose8_epi32(__m256i (&r)[8]) {
    __m256i t[8], u[8];
    for (int i = 0; i < 4; ++i) {  // per 128-bit lane: r[2i][c], r[2i+1][c], r[2i][c+1], r[2i+1][c+1]
        t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 2; ++g) {  // u[4g + c], 128-bit lane L: rows 4g .. 4g+3 of column 4L + c
        u[4 * g] = _mm256_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 1] = _mm256_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 2] = _mm256_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        u[4 * g + 3] = _mm256_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
    for (int c = 0; c < 4; ++c) {
        r[c] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x20);
        r[4 + c] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x31);
    }
}

// One panel (rows <= 8 rows from w0, w_stride apart, k elements) decoded into k / 32 blocks.
template <typename C>
DG_TARGET void decode_panel(const uint8_t *w0, size_t w_stride, int64_t rows, int64_t k, PanelBlock<C> *panel) {
    using Block = typename C::Block;
    for (int64_t b = 0; b < k / 32; ++b) {
        __m256i r[8];
        alignas(32) float d[8] = {}, m[8] = {};
        for (int i = 0; i < 8; ++i) {
            r[i] = _mm256_setzero_si256();
            if (i >= rows) continue;
            const Block &blk = reinterpret_cast<const Block *>(w0 + i * w_stride)[b];
            r[i] = C::values(blk);
            d[i] = f16(blk.d);
            if constexpr (C::kMin) m[i] = f16(blk.m);
        }
        transpose8_epi32(r);
        PanelBlock<C> &p = panel[b];
        for (int q = 0; q < 8; ++q) {
            if constexpr (C::kSigned) {
                p.codes[q] = _mm256_sign_epi8(r[q], r[q]);  // -128 gives 0x80: 128 as unsigned
                p.signs[q] = r[q];
            } else {
                p.codes[q] = _mm256_add_epi8(r[q], _mm256_set1_epi8(C::kOffset));
            }
        }
        p.scale = _mm256_load_ps(d);
        if constexpr (C::kMin) p.min = _mm256_load_ps(m);
    }
}

template <typename C>
size_t act_blocks_bytes(int64_t k) { return static_cast<size_t>(k / 32) * sizeof(ActBlock); }

template <typename C>
DG_TARGET void pack_act_blocks(const float *x, void *dst, int64_t k) {
    ActBlock *out = static_cast<ActBlock *>(dst);
    for (int64_t b = 0; b < k / 32; ++b) {
        uint16_t d;
        int32_t sum;
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(out[b].qs), avx2::quantize_block_q8_0(x + 32 * b, &d, &sum));
        out[b].neg = -C::kOffset * sum;
        out[b].d = f16(d);
        out[b].dsum = out[b].d * static_cast<float>(sum);
    }
}

// A panel's results for NT tokens (ldy apart): the first `rows` lanes of each vector.
template <int NT>
DG_TARGET inline void store_panel(const __m256 (&acc)[NT], float *y, int64_t ldy, int64_t rows) {
    if (rows == kPanel32) {
        for (int t = 0; t < NT; ++t) _mm256_storeu_ps(y + t * ldy, acc[t]);
    } else {
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rows)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (int t = 0; t < NT; ++t) _mm256_maskstore_ps(y + t * ldy, mask, acc[t]);
    }
}

// NT tokens (activation rows x_stride bytes apart) against one panel of nb blocks; y: the panel's
// first row for the first token; `rows` rows are written.
template <typename C, int NT>
DG_TARGET inline void panel_tile(const PanelBlock<C> *p, int64_t nb, const uint8_t *x0, size_t x_stride, float *y,
                                 int64_t ldy, int64_t rows) {
    const ActBlock *x[NT];
    for (int t = 0; t < NT; ++t) x[t] = reinterpret_cast<const ActBlock *>(x0 + t * x_stride);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const PanelBlock<C> &w = p[b];
        for (int t = 0; t < NT; ++t) {
            __m256i s = _mm256_set1_epi32(x[t][b].neg);
            for (int q0 = 0; q0 < 8; q0 += C::kSum16) {
                __m256i s16 = _mm256_setzero_si256();
                for (int q = q0; q < q0 + C::kSum16; ++q) {
                    int32_t codes;
                    std::memcpy(&codes, x[t][b].qs + 4 * q, 4);
                    __m256i xv = _mm256_set1_epi32(codes);
                    if constexpr (C::kSigned) xv = _mm256_sign_epi8(xv, w.signs[q]);
                    const __m256i pair = _mm256_maddubs_epi16(w.codes[q], xv);
                    s16 = q == q0 ? pair : _mm256_add_epi16(s16, pair);
                }
                s = _mm256_add_epi32(s, _mm256_madd_epi16(s16, ones));
            }
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(x[t][b].d)), w.scale, acc[t]);
            if constexpr (C::kMin) acc[t] = _mm256_fmadd_ps(w.min, _mm256_set1_ps(x[t][b].dsum), acc[t]);
        }
    }
    store_panel<NT>(acc, y, ldy, rows);
}

// Each panel is decoded once per call and swept by every token in tiles of 4 (a panel, 544 B per
// block, stays in L1 for rows up to ~1800 elements). tile(NT, ...) is the instruction set's tile;
// inlined into its caller, whose target it takes.
template <typename C, typename Tile>
__attribute__((always_inline)) inline void sweep_panels(const GemmArgs &a, Tile tile) {
    constexpr int64_t kTokens = 4;
    const int64_t nb = a.k / 32;
    thread_local std::vector<uint8_t> buf;
    PanelBlock<C> *const panel = aligned_scratch<PanelBlock<C>>(buf, nb);
    for (int64_t r0 = 0; r0 < a.n_rows; r0 += kPanel32) {
        const int64_t rows = std::min<int64_t>(kPanel32, a.n_rows - r0);
        decode_panel<C>(a.w + r0 * a.w_stride, a.w_stride, rows, a.k, panel);
        int64_t t = 0;
        for (; t + kTokens <= a.n_tokens; t += kTokens) tile(std::integral_constant<int, kTokens>{}, panel, nb, t, r0, rows);
        for (; t < a.n_tokens; ++t) tile(std::integral_constant<int, 1>{}, panel, nb, t, r0, rows);
    }
}

template <typename C>
DG_TARGET void gemm_panels(const GemmArgs &a) {
    sweep_panels<C>(a, [&](auto nt, const PanelBlock<C> *panel, int64_t nb, int64_t t, int64_t r0, int64_t rows) {
        panel_tile<C, decltype(nt)::value>(panel, nb, a.x + t * a.x_stride, a.x_stride, a.y + r0 + t * a.ldy, a.ldy, rows);
    });
}

// ---- AVX-VNNI: the same panels with vpdpbusd ----
// vpdpbusd on 256-bit registers adds 4 u8 x s8 products per lane into int32 without an int16 step,
// so nothing saturates and Q8_0 takes plain offset codes u = w + 128 like Q4_0 and Q5_0.

#define DG_TARGET_VNNI __attribute__((target("avx2,fma,f16c,avxvnni")))

struct Q8_0VnniCodes {
    using Block = BlockQ8_0;
    static constexpr bool kSigned = false, kMin = false;
    static constexpr int kOffset = 128;
    DG_TARGET static __m256i values(const Block &b) { return load256(b.qs); }
};

template <typename C, int NT>
DG_TARGET_VNNI inline void panel_tile_vnni(const PanelBlock<C> *p, int64_t nb, const uint8_t *x0, size_t x_stride, float *y,
                                           int64_t ldy, int64_t rows) {
    const ActBlock *x[NT];
    for (int t = 0; t < NT; ++t) x[t] = reinterpret_cast<const ActBlock *>(x0 + t * x_stride);
    __m256 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const PanelBlock<C> &w = p[b];
        __m256i s[NT];  // NT independent vpdpbusd chains
        for (int t = 0; t < NT; ++t) s[t] = _mm256_set1_epi32(x[t][b].neg);
        for (int q = 0; q < 8; ++q)
            for (int t = 0; t < NT; ++t) {
                int32_t codes;
                std::memcpy(&codes, x[t][b].qs + 4 * q, 4);
                s[t] = _mm256_dpbusd_avx_epi32(s[t], w.codes[q], _mm256_set1_epi32(codes));
            }
        for (int t = 0; t < NT; ++t) {
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(s[t]), _mm256_set1_ps(x[t][b].d)), w.scale, acc[t]);
            if constexpr (C::kMin) acc[t] = _mm256_fmadd_ps(w.min, _mm256_set1_ps(x[t][b].dsum), acc[t]);
        }
    }
    store_panel<NT>(acc, y, ldy, rows);
}

template <typename C>
DG_TARGET_VNNI void gemm_panels_vnni(const GemmArgs &a) {
    static_assert(!C::kSigned, "vpdpbusd takes unsigned weight codes");
    sweep_panels<C>(a, [&](auto nt, const PanelBlock<C> *panel, int64_t nb, int64_t t, int64_t r0, int64_t rows) {
        panel_tile_vnni<C, decltype(nt)::value>(panel, nb, a.x + t * a.x_stride, a.x_stride, a.y + r0 + t * a.ldy, a.ldy, rows);
    });
}

// ---- K-quants (Q4_K, Q5_K, Q6_K) against Q8_K, in lane-per-row panels (AVX2 and AVX-VNNI) ----
// The AVX-512 K panels (gemm_avx512.cpp) on 8 rows: a super-block of the panel is 64 registers of
// unsigned codes (register q: elements 4q .. 4q+3, lane i = row i), per-row float scales per group
// and, for Q4_K/Q5_K, int16 mins. A group's integer sum (8 or 4 vpdpbusd, exact) takes its scale in
// one convert and FMA; Q4_K/Q5_K subtract dmin * sum(m_g * x-sum_g) through 8 vpdpwssd on the
// activations' 16-element sums; Q6_K's offset of 32 starts each group's sum at -32 * its x-sum. One
// FMA per super-block applies the activation scale. Each token's sums are the same operations in
// the same order whatever tokens share its tile. AVX2 forms the same integer sums with vpmaddubsw
// and vpmaddwd (k_panel_tile_avx2).

struct KPanel8 {        // one super-block (256 elements) of an 8-row panel
    __m256i codes[64];  // register q: codes of elements 4q .. 4q+3, lane i = row i
    __m256 scale[16];   // group g, lane i: d * sc_g of row i (Q4_K/Q5_K: 8 groups of 32; Q6_K: 16 of 16)
    __m256i mins[8];    // Q4_K/Q5_K: lane i = the int16 pair (m_g, m_g) of row i
    __m256 dmin;        // Q4_K/Q5_K: dmin of row i
};

// Bytes [off, off + 32) of each of the panel's rows (row i at b0 + i * stride; zeros past `rows`)
// as 8 registers, register p = dword p of every row (lane i = row i).
DG_TARGET inline void rows32(const uint8_t *b0, size_t stride, int64_t rows, size_t off, __m256i (&r)[8]) {
    for (int i = 0; i < 8; ++i) r[i] = i < rows ? load256(b0 + i * stride + off) : _mm256_setzero_si256();
    transpose8_epi32(r);
}

// Q4_K / Q5_K: 64-element chunk k is qs[32k .. 32k+31], low nibbles elements 64k.., high 64k+32..;
// Q5_K's bit j of qh[l] is bit 4 of element 32j + l. Scales per row through k4_scale_min.
template <typename Block, bool kFiveBit>
struct Q45KPanel8 {
    static constexpr int kGroups = 8, kOffset = 0;  // groups of 32, codes as stored
    static constexpr bool kMins = true;
    // AVX2 (vpmaddubsw): registers whose int16 pair sums add up before widening. A pair is at most
    // 2 * 15 * 128 = 3840 (Q4_K) or 2 * 31 * 128 = 7936 (Q5_K) in magnitude: 8 or 4 of them fit.
    static constexpr int kSum16 = kFiveBit ? 4 : 8;
    DG_TARGET static void decode(const uint8_t *b0, size_t stride, int64_t rows, KPanel8 &p) {
        const __m256i m = _mm256_set1_epi8(0x0f);
        for (int k = 0; k < 4; ++k) {
            __m256i r[8];
            rows32(b0, stride, rows, offsetof(Block, qs) + 32 * k, r);
            for (int q = 0; q < 8; ++q) {
                p.codes[16 * k + q] = _mm256_and_si256(r[q], m);
                p.codes[16 * k + 8 + q] = _mm256_and_si256(_mm256_srli_epi16(r[q], 4), m);
            }
        }
        if constexpr (kFiveBit) {
            __m256i qh[8];
            rows32(b0, stride, rows, offsetof(Block, qh), qh);
            for (int j = 0; j < 8; ++j)
                for (int q = 0; q < 8; ++q) {
                    const __m256i bit = _mm256_and_si256(_mm256_srli_epi32(qh[q], j), _mm256_set1_epi32(0x01010101));
                    p.codes[8 * j + q] = _mm256_or_si256(p.codes[8 * j + q], _mm256_slli_epi32(bit, 4));
                }
        }
        alignas(32) float sc[8][8] = {}, dmin[8] = {};
        alignas(32) int32_t mn[8][8] = {};
        for (int64_t i = 0; i < rows; ++i) {
            const Block &b = *reinterpret_cast<const Block *>(b0 + i * stride);
            const float d = f16(b.d);
            dmin[i] = f16(b.dmin);
            for (int g = 0; g < 8; ++g) {
                int s, mm;
                k4_scale_min(b.scales, g, &s, &mm);
                sc[g][i] = d * static_cast<float>(s);
                mn[g][i] = mm | (mm << 16);
            }
        }
        for (int g = 0; g < 8; ++g) {
            p.scale[g] = _mm256_load_ps(sc[g]);
            p.mins[g] = _mm256_load_si256(reinterpret_cast<const __m256i *>(mn[g]));
        }
        p.dmin = _mm256_load_ps(dmin);
    }
};

// Bits shift, shift + 1 of each byte of h as bits 4-5.
DG_TARGET inline __m256i two_bits(__m256i h, int shift) {
    return _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, shift), _mm256_set1_epi8(0x03)), 4);
}

// Q6_K: in half n, byte l of ql[64n ..] and of qh[32n ..] give elements 128n + l (+32, +64, +96):
// low nibble of ql[l] and qh bits 0-1, low nibble of ql[l + 32] and bits 2-3, high nibble of ql[l]
// and bits 4-5, high nibble of ql[l + 32] and bits 6-7.
struct Q6KPanel8 {
    static constexpr int kGroups = 16, kOffset = 32;  // groups of 16, codes q + 32
    static constexpr bool kMins = false;
    static constexpr int kSum16 = 2;  // codes q + 32 <= 63: a pair is at most 2 * 63 * 128 = 16128
    DG_TARGET static void decode(const uint8_t *b0, size_t stride, int64_t rows, KPanel8 &p) {
        const __m256i m4 = _mm256_set1_epi8(0x0f);
        for (int n = 0; n < 2; ++n) {
            __m256i lo[8], hi[8], h[8];
            rows32(b0, stride, rows, offsetof(BlockQ6_K, ql) + 64 * n, lo);
            rows32(b0, stride, rows, offsetof(BlockQ6_K, ql) + 64 * n + 32, hi);
            rows32(b0, stride, rows, offsetof(BlockQ6_K, qh) + 32 * n, h);
            for (int w = 0; w < 8; ++w) {
                p.codes[32 * n + w] = _mm256_or_si256(_mm256_and_si256(lo[w], m4), two_bits(h[w], 0));
                p.codes[32 * n + 8 + w] = _mm256_or_si256(_mm256_and_si256(hi[w], m4), two_bits(h[w], 2));
                p.codes[32 * n + 16 + w] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lo[w], 4), m4), two_bits(h[w], 4));
                p.codes[32 * n + 24 + w] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(hi[w], 4), m4), two_bits(h[w], 6));
            }
        }
        alignas(32) float sc[16][8] = {};
        for (int64_t i = 0; i < rows; ++i) {
            const BlockQ6_K &b = *reinterpret_cast<const BlockQ6_K *>(b0 + i * stride);
            const float d = f16(b.d);
            for (int g = 0; g < 16; ++g) sc[g][i] = d * static_cast<float>(b.scales[g]);
        }
        for (int g = 0; g < 16; ++g) p.scale[g] = _mm256_load_ps(sc[g]);
    }
};

// Q3_K: element 128n + 32j + l is bits 2j, 2j+1 of qs[32n + l] and, as bit 2, bit 4n + j of
// hmask[l]: unsigned codes u = value + 4 in 0..7, x = d*(sc - 32) * (u - 4) per group of 16.
struct Q3KPanel8 {
    static constexpr int kGroups = 16, kOffset = 4;
    static constexpr bool kMins = false;
    static constexpr int kSum16 = 4;  // a pair is at most 2 * 7 * 128 = 1792: a group's 4 registers fit
    DG_TARGET static void decode(const uint8_t *b0, size_t stride, int64_t rows, KPanel8 &p) {
        __m256i hm[8];
        rows32(b0, stride, rows, offsetof(BlockQ3_K, hmask), hm);
        for (int n = 0; n < 2; ++n) {
            __m256i q[8];
            rows32(b0, stride, rows, offsetof(BlockQ3_K, qs) + 32 * n, q);
            for (int j = 0; j < 4; ++j)
                for (int w = 0; w < 8; ++w) {
                    const __m256i lo = _mm256_and_si256(_mm256_srli_epi32(q[w], 2 * j), _mm256_set1_epi8(0x03));
                    const __m256i hi = _mm256_and_si256(_mm256_srli_epi32(hm[w], 4 * n + j), _mm256_set1_epi8(0x01));
                    p.codes[32 * n + 8 * j + w] = _mm256_or_si256(lo, _mm256_slli_epi32(hi, 2));
                }
        }
        alignas(32) float sc[16][8] = {};
        for (int64_t i = 0; i < rows; ++i) {
            const BlockQ3_K &b = *reinterpret_cast<const BlockQ3_K *>(b0 + i * stride);
            int s[16];
            q3_k_scales(b.scales, s);
            const float d = f16(b.d);
            for (int g = 0; g < 16; ++g) sc[g][i] = d * static_cast<float>(s[g]);
        }
        for (int g = 0; g < 16; ++g) p.scale[g] = _mm256_load_ps(sc[g]);
    }
};

// Q2_K: element 128n + 32j + l is bits 2j, 2j+1 of qs[32n + l], x = d*sc_g * q - dmin*m_g per group
// g of 16 (sc_g, m_g: the nibbles of scales[g]); the mins paired (m_2p, m_2p+1) against the
// activations' 16-element sums.
struct Q2KPanel8 {
    static constexpr int kGroups = 16, kOffset = 0;
    static constexpr bool kMins = true;
    static constexpr int kSum16 = 4;  // codes 0..3: a pair is at most 768
    DG_TARGET static void decode(const uint8_t *b0, size_t stride, int64_t rows, KPanel8 &p) {
        for (int n = 0; n < 2; ++n) {
            __m256i q[8];
            rows32(b0, stride, rows, offsetof(BlockQ2_K, qs) + 32 * n, q);
            for (int j = 0; j < 4; ++j)
                for (int w = 0; w < 8; ++w)
                    p.codes[32 * n + 8 * j + w] = _mm256_and_si256(_mm256_srli_epi32(q[w], 2 * j), _mm256_set1_epi8(0x03));
        }
        alignas(32) float sc[16][8] = {}, dmin[8] = {};
        alignas(32) int32_t mins[8][8] = {};
        for (int64_t i = 0; i < rows; ++i) {
            const BlockQ2_K &b = *reinterpret_cast<const BlockQ2_K *>(b0 + i * stride);
            const float d = f16(b.d);
            dmin[i] = f16(b.dmin);
            for (int g = 0; g < 16; ++g) sc[g][i] = d * static_cast<float>(b.scales[g] & 0xf);
            for (int q = 0; q < 8; ++q) mins[q][i] = (b.scales[2 * q] >> 4) | ((b.scales[2 * q + 1] >> 4) << 16);
        }
        for (int g = 0; g < 16; ++g) p.scale[g] = _mm256_load_ps(sc[g]);
        for (int q = 0; q < 8; ++q) p.mins[q] = _mm256_load_si256(reinterpret_cast<const __m256i *>(mins[q]));
        p.dmin = _mm256_load_ps(dmin);
    }
};

// IQ4_XS (AVX-VNNI only: its unsigned codes, values + 128, are too wide for vpmaddubsw's pairs):
// element 32g + l is the nibble of qs[16g + l % 16] (high for l >= 16) looked up in kIq4nlValues,
// x = d*(ls_g - 32) * value per group of 32.
struct IQ4XSPanel8 {
    static constexpr int kGroups = 8, kOffset = 128;
    static constexpr bool kMins = false;
    static constexpr int kSum16 = 0;
    DG_TARGET static void decode(const uint8_t *b0, size_t stride, int64_t rows, KPanel8 &p) {
        alignas(16) uint8_t lut[16];
        for (int v = 0; v < 16; ++v) lut[v] = static_cast<uint8_t>(kIq4nlValues[v] + 128);
        const __m256i table = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i *>(lut)));
        const __m256i m4 = _mm256_set1_epi8(0x0f);
        for (int h = 0; h < 4; ++h) {
            __m256i r[8];  // dword c: qs[32h + 4c ..], group 2h + c / 4, elements 4 (c % 4) .. (+16 high)
            rows32(b0, stride, rows, offsetof(BlockIQ4_XS, qs) + 32 * h, r);
            for (int c = 0; c < 8; ++c) {
                const int g = 2 * h + c / 4, w = c % 4;
                p.codes[8 * g + w] = _mm256_shuffle_epi8(table, _mm256_and_si256(r[c], m4));
                p.codes[8 * g + 4 + w] = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(r[c], 4), m4));
            }
        }
        alignas(32) float sc[8][8] = {};
        for (int64_t i = 0; i < rows; ++i) {
            const BlockIQ4_XS &b = *reinterpret_cast<const BlockIQ4_XS *>(b0 + i * stride);
            const float d = f16(b.d);
            for (int g = 0; g < 8; ++g) {
                const int ls = ((b.scales_l[g / 2] >> (4 * (g % 2))) & 0xf) | (((b.scales_h >> (2 * g)) & 3) << 4);
                sc[g][i] = d * static_cast<float>(ls - 32);
            }
        }
        for (int g = 0; g < 8; ++g) p.scale[g] = _mm256_load_ps(sc[g]);
    }
};

DG_TARGET inline __m256i bcast32(const void *p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

// The start of group g's integer sum: -offset x the group's activation sum (0 without an offset).
template <typename P>
DG_TARGET inline __m256i group_start(const BlockQ8_K &x, int g) {
    if constexpr (P::kOffset == 0) return _mm256_setzero_si256();
    const int sum = P::kGroups == 16 ? x.bsums[g] : x.bsums[2 * g] + x.bsums[2 * g + 1];
    return _mm256_set1_epi32(-P::kOffset * sum);
}

template <typename P, int NT>
DG_TARGET_VNNI inline void k_panel_tile_vnni(const KPanel8 *p, int64_t ns, const uint8_t *x0, size_t x_stride, float *y,
                                             int64_t ldy, int64_t rows) {
    const BlockQ8_K *x[NT];
    for (int t = 0; t < NT; ++t) x[t] = reinterpret_cast<const BlockQ8_K *>(x0 + t * x_stride);
    __m256 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < ns; ++i) {
        const KPanel8 &w = p[i];
        __m256 f[NT];
        __m256i s[NT];
        for (int t = 0; t < NT; ++t) f[t] = _mm256_setzero_ps();
        constexpr int kRegs = 64 / P::kGroups;  // registers (4 elements) per group
        for (int g = 0; g < P::kGroups; ++g) {
            for (int t = 0; t < NT; ++t) s[t] = group_start<P>(x[t][i], g);
            for (int q = 0; q < kRegs; ++q)
                for (int t = 0; t < NT; ++t)
                    s[t] = _mm256_dpbusd_avx_epi32(s[t], w.codes[kRegs * g + q], bcast32(x[t][i].qs + 4 * (kRegs * g + q)));
            for (int t = 0; t < NT; ++t) f[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t]), w.scale[g], f[t]);
        }
        if constexpr (P::kMins) {
            for (int t = 0; t < NT; ++t) s[t] = _mm256_setzero_si256();
            for (int q = 0; q < 8; ++q)
                for (int t = 0; t < NT; ++t) s[t] = _mm256_dpwssd_avx_epi32(s[t], w.mins[q], bcast32(x[t][i].bsums + 2 * q));
            for (int t = 0; t < NT; ++t) f[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(s[t]), w.dmin, f[t]);
        }
        for (int t = 0; t < NT; ++t) acc[t] = _mm256_fmadd_ps(f[t], _mm256_set1_ps(x[t][i].d), acc[t]);
    }
    store_panel<NT>(acc, y, ldy, rows);
}

// AVX2's form of k_panel_tile_vnni: no vpdpbusd, so a group's sum is vpmaddubsw (int16 pairs,
// kSum16 registers added in int16 without saturating) then vpmaddwd with ones into int32, and the
// mins' sum vpmaddwd then an add. The same integer sums, so the same results.
template <typename P, int NT>
DG_TARGET inline void k_panel_tile_avx2(const KPanel8 *p, int64_t ns, const uint8_t *x0, size_t x_stride, float *y,
                                        int64_t ldy, int64_t rows) {
    const BlockQ8_K *x[NT];
    for (int t = 0; t < NT; ++t) x[t] = reinterpret_cast<const BlockQ8_K *>(x0 + t * x_stride);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < ns; ++i) {
        const KPanel8 &w = p[i];
        __m256 f[NT];
        __m256i s[NT];
        for (int t = 0; t < NT; ++t) f[t] = _mm256_setzero_ps();
        static_assert(P::kSum16 > 0, "codes too wide for vpmaddubsw's int16 pairs");
        constexpr int kRegs = 64 / P::kGroups;
        for (int g = 0; g < P::kGroups; ++g) {
            for (int t = 0; t < NT; ++t) s[t] = group_start<P>(x[t][i], g);
            for (int q0 = 0; q0 < kRegs; q0 += P::kSum16) {
                __m256i s16[NT];
                for (int q = q0; q < q0 + P::kSum16; ++q)
                    for (int t = 0; t < NT; ++t) {
                        const __m256i pair = _mm256_maddubs_epi16(w.codes[kRegs * g + q], bcast32(x[t][i].qs + 4 * (kRegs * g + q)));
                        s16[t] = q == q0 ? pair : _mm256_add_epi16(s16[t], pair);
                    }
                for (int t = 0; t < NT; ++t) s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(s16[t], ones));
            }
            for (int t = 0; t < NT; ++t) f[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t]), w.scale[g], f[t]);
        }
        if constexpr (P::kMins) {
            for (int t = 0; t < NT; ++t) s[t] = _mm256_setzero_si256();
            for (int q = 0; q < 8; ++q)
                for (int t = 0; t < NT; ++t) s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(w.mins[q], bcast32(x[t][i].bsums + 2 * q)));
            for (int t = 0; t < NT; ++t) f[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(s[t]), w.dmin, f[t]);
        }
        for (int t = 0; t < NT; ++t) acc[t] = _mm256_fmadd_ps(f[t], _mm256_set1_ps(x[t][i].d), acc[t]);
    }
    store_panel<NT>(acc, y, ldy, rows);
}

// Panels decoded once per call (2.8 KiB per super-block of 8 rows: a panel of 2816-element rows
// stays in L1), swept by every token in tiles of kTokens. Tile(NT) is the instruction set's tile;
// inlined into its caller, whose target it takes.
template <typename P, typename Block, int64_t kTokens, typename Tile>
__attribute__((always_inline)) inline void sweep_k_panels(const GemmArgs &a, Tile tile) {
    const int64_t ns = a.k / kQK_K;
    thread_local std::vector<uint8_t> buf;
    KPanel8 *const panel = aligned_scratch<KPanel8>(buf, ns);
    for (int64_t r0 = 0; r0 < a.n_rows; r0 += kPanel32) {
        const int64_t rows = std::min<int64_t>(kPanel32, a.n_rows - r0);
        for (int64_t i = 0; i < ns; ++i) P::decode(a.w + r0 * a.w_stride + i * sizeof(Block), a.w_stride, rows, panel[i]);
        int64_t t = 0;
        for (; t + kTokens <= a.n_tokens; t += kTokens) tile(std::integral_constant<int, kTokens>{}, panel, ns, t, r0, rows);
        for (; t < a.n_tokens; ++t) tile(std::integral_constant<int, 1>{}, panel, ns, t, r0, rows);
    }
}

template <typename P, typename Block>
DG_TARGET_VNNI void gemm_k_panels_vnni(const GemmArgs &a) {
    sweep_k_panels<P, Block, 4>(a, [&](auto nt, const KPanel8 *panel, int64_t ns, int64_t t, int64_t r0, int64_t rows) {
        k_panel_tile_vnni<P, decltype(nt)::value>(panel, ns, a.x + t * a.x_stride, a.x_stride, a.y + r0 + t * a.ldy,
                                                            a.ldy, rows);
    });
}

template <typename P, typename Block>
DG_TARGET void gemm_k_panels_avx2(const GemmArgs &a) {
    sweep_k_panels<P, Block, 3>(a, [&](auto nt, const KPanel8 *panel, int64_t ns, int64_t t, int64_t r0, int64_t rows) {
        k_panel_tile_avx2<P, decltype(nt)::value>(panel, ns, a.x + t * a.x_stride, a.x_stride, a.y + r0 + t * a.ldy, a.ldy, rows);
    });
}

size_t q8_k_bytes(int64_t k) { return static_cast<size_t>(k / kQK_K) * sizeof(BlockQ8_K); }

// ---- float weights (F32, F16, BF16) against float32 activations ----
// The AVX-512 float panels (gemm_avx512.cpp) on 8 rows: a chunk of kFloatChunk elements of a panel
// is widened to float32, element-major (register kk holds element kk of the 8 rows), and each FMA
// multiplies it by one broadcast activation; a token's 8 results are one vector. The sums are
// stored after a chunk and reloaded for the next, so each is one FMA chain over k in order: a
// token's results do not depend on the tokens beside it (and equal the AVX-512 panels' bits).

constexpr int64_t kFloatChunk = 512;

// Per type: elements k .. k + 7 of a row as float32 (n < 8 of them: the rest read as 0).
struct F32Elems8 {
    static constexpr size_t kBytes = 4;
    DG_TARGET static __m256 widen(const uint8_t *at) { return _mm256_loadu_ps(reinterpret_cast<const float *>(at)); }
};
struct F16Elems8 {
    static constexpr size_t kBytes = 2;
    DG_TARGET static __m256 widen(const uint8_t *at) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(at))); }
};
struct BF16Elems8 {
    static constexpr size_t kBytes = 2;
    DG_TARGET static __m256 widen(const uint8_t *at) {
        const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(at)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    }
};

template <typename C>
DG_TARGET inline __m256 load8(const uint8_t *row, int64_t k, int64_t n) {
    if (n >= 8) return C::widen(row + k * C::kBytes);
    alignas(32) uint8_t tail[8 * 4] = {};  // the last elements of a row, zero-padded
    std::memcpy(tail, row + k * C::kBytes, static_cast<size_t>(n) * C::kBytes);
    return C::widen(tail);
}

// Elements [k0, k0 + kc) of the panel's `rows` rows (row i at w0 + i * stride) as kc registers.
template <typename C>
DG_TARGET void widen_float_panel(const uint8_t *w0, size_t stride, int64_t rows, int64_t k0, int64_t kc, __m256 *panel) {
    for (int64_t kk = 0; kk < kc; kk += 8) {
        const int64_t n = std::min<int64_t>(8, kc - kk);
        __m256i r[8];
        for (int i = 0; i < 8; ++i)
            r[i] = i < rows ? _mm256_castps_si256(load8<C>(w0 + i * stride, k0 + kk, n)) : _mm256_setzero_si256();
        transpose8_epi32(r);
        for (int64_t j = 0; j < n; ++j) panel[kk + j] = _mm256_castsi256_ps(r[j]);
    }
}

// NP panels (8 NP rows, panel p's elements kc apart) x NT tokens over kc elements; each broadcast
// feeds NP FMAs. first: the sums start at 0, else at y (the previous chunks').
template <int NP, int NT>
DG_TARGET inline void float_panel_tile(const __m256 *panel, int64_t kc, bool first, const float *x0, int64_t ldx, float *y,
                                       int64_t ldy, const int64_t (&rows)[2]) {
    __m256 acc[NP][NT];
    for (int p = 0; p < NP; ++p) {
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rows[p])), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (int t = 0; t < NT; ++t)
            acc[p][t] = first ? _mm256_setzero_ps() : _mm256_maskload_ps(y + t * ldy + p * kPanel32, mask);
    }
    for (int64_t kk = 0; kk < kc; ++kk) {
        __m256 w[NP];
        for (int p = 0; p < NP; ++p) w[p] = _mm256_load_ps(reinterpret_cast<const float *>(panel + p * kc + kk));
        for (int t = 0; t < NT; ++t) {
            const __m256 xv = _mm256_broadcast_ss(x0 + t * ldx + kk);
            for (int p = 0; p < NP; ++p) acc[p][t] = _mm256_fmadd_ps(w[p], xv, acc[p][t]);
        }
    }
    for (int p = 0; p < NP; ++p) store_panel<NT>(acc[p], y + p * kPanel32, ldy, rows[p]);
}

template <int NP>
DG_TARGET inline void float_panel_tiles(const __m256 *panel, int64_t kc, bool first, const float *x, int64_t ldx, int64_t n,
                                        float *y, int64_t ldy, const int64_t (&rows)[2]) {
    constexpr int64_t kTokens = NP == 2 ? 6 : 12;  // 12 FMA chains hide the FMA latency; 16 registers
    int64_t t = 0;
    for (; t + kTokens <= n; t += kTokens) float_panel_tile<NP, kTokens>(panel, kc, first, x + t * ldx, ldx, y + t * ldy, ldy, rows);
    for (; t < n; ++t) float_panel_tile<NP, 1>(panel, kc, first, x + t * ldx, ldx, y + t * ldy, ldy, rows);
}

template <typename C>
DG_TARGET void gemm_float_panels(const GemmArgs &a) {
    thread_local std::vector<uint8_t> buf;
    __m256 *const panel = aligned_scratch<__m256>(buf, 2 * std::min(a.k, kFloatChunk));
    const float *x = reinterpret_cast<const float *>(a.x);
    const int64_t ldx = static_cast<int64_t>(a.x_stride / sizeof(float));
    for (int64_t r0 = 0; r0 < a.n_rows; r0 += 2 * kPanel32) {
        const int64_t left = a.n_rows - r0;
        const int64_t rows[2] = {std::min<int64_t>(left, kPanel32), std::max<int64_t>(std::min<int64_t>(left - kPanel32, kPanel32), 0)};
        const int np = rows[1] > 0 ? 2 : 1;
        for (int64_t k0 = 0; k0 < a.k; k0 += kFloatChunk) {
            const int64_t kc = std::min(kFloatChunk, a.k - k0);
            for (int p = 0; p < np; ++p)
                widen_float_panel<C>(a.w + (r0 + p * kPanel32) * a.w_stride, a.w_stride, rows[p], k0, kc, panel + p * kc);
            if (np == 2) float_panel_tiles<2>(panel, kc, k0 == 0, x + k0, ldx, a.n_tokens, a.y + r0, a.ldy, rows);
            else float_panel_tiles<1>(panel, kc, k0 == 0, x + k0, ldx, a.n_tokens, a.y + r0, a.ldy, rows);
        }
    }
}

}  // namespace

GemmKernel gemm_kernel_avx2(TensorType type) {
    switch (type) {
        case TensorType::Q8_0: return {gemm_panels<Q8_0Codes>, pack_act_blocks<Q8_0Codes>, act_blocks_bytes<Q8_0Codes>};
        case TensorType::Q4_0: return {gemm_panels<Q4_0Codes>, pack_act_blocks<Q4_0Codes>, act_blocks_bytes<Q4_0Codes>};
        case TensorType::Q5_0: return {gemm_panels<Q5_0Codes>, pack_act_blocks<Q5_0Codes>, act_blocks_bytes<Q5_0Codes>};
        case TensorType::Q4_1: return {gemm_panels<Q4_1Codes>, pack_act_blocks<Q4_1Codes>, act_blocks_bytes<Q4_1Codes>};
        case TensorType::Q5_1: return {gemm_panels<Q5_1Codes>, pack_act_blocks<Q5_1Codes>, act_blocks_bytes<Q5_1Codes>};
        case TensorType::Q4_K: return {gemm_k_panels_avx2<Q45KPanel8<BlockQ4_K, false>, BlockQ4_K>, avx2::quantize_row_q8_k, q8_k_bytes};
        case TensorType::Q5_K: return {gemm_k_panels_avx2<Q45KPanel8<BlockQ5_K, true>, BlockQ5_K>, avx2::quantize_row_q8_k, q8_k_bytes};
        case TensorType::Q6_K: return {gemm_k_panels_avx2<Q6KPanel8, BlockQ6_K>, avx2::quantize_row_q8_k, q8_k_bytes};
        case TensorType::Q3_K: return {gemm_k_panels_avx2<Q3KPanel8, BlockQ3_K>, avx2::quantize_row_q8_k, q8_k_bytes};
        case TensorType::Q2_K: return {gemm_k_panels_avx2<Q2KPanel8, BlockQ2_K>, avx2::quantize_row_q8_k, q8_k_bytes};
        case TensorType::F32: return {gemm_float_panels<F32Elems8>};
        case TensorType::F16: return {gemm_float_panels<F16Elems8>};
        case TensorType::BF16: return {gemm_float_panels<BF16Elems8>};
        default: return {};
    }
}

GemmKernel gemm_kernel_avxvnni(TensorType type) {
    switch (type) {
        case TensorType::Q8_0:
            return {gemm_panels_vnni<Q8_0VnniCodes>, pack_act_blocks<Q8_0VnniCodes>, act_blocks_bytes<Q8_0VnniCodes>};
        case TensorType::Q4_0: return {gemm_panels_vnni<Q4_0Codes>, pack_act_blocks<Q4_0Codes>, act_blocks_bytes<Q4_0Codes>};
        case TensorType::Q5_0: return {gemm_panels_vnni<Q5_0Codes>, pack_act_blocks<Q5_0Codes>, act_blocks_bytes<Q5_0Codes>};
        case TensorType::Q4_1: return {gemm_panels_vnni<Q4_1Codes>, pack_act_blocks<Q4_1Codes>, act_blocks_bytes<Q4_1Codes>};
        case TensorType::Q5_1: return {gemm_panels_vnni<Q5_1Codes>, pack_act_blocks<Q5_1Codes>, act_blocks_bytes<Q5_1Codes>};
        case TensorType::Q4_K: return {gemm_k_panels_vnni<Q45KPanel8<BlockQ4_K, false>, BlockQ4_K>, avx2::quantize_row_q8_k, q8_k_bytes};
        case TensorType::Q5_K: return {gemm_k_panels_vnni<Q45KPanel8<BlockQ5_K, true>, BlockQ5_K>, avx2::quantize_row_q8_k, q8_k_bytes};
        case TensorType::Q6_K: return {gemm_k_panels_vnni<Q6KPanel8, BlockQ6_K>, avx2::quantize_row_q8_k, q8_k_bytes};
        case TensorType::Q3_K: return {gemm_k_panels_vnni<Q3KPanel8, BlockQ3_K>, avx2::quantize_row_q8_k, q8_k_bytes};
        case TensorType::Q2_K: return {gemm_k_panels_vnni<Q2KPanel8, BlockQ2_K>, avx2::quantize_row_q8_k, q8_k_bytes};
        case TensorType::IQ4_XS: return {gemm_k_panels_vnni<IQ4XSPanel8, BlockIQ4_XS>, avx2::quantize_row_q8_k, q8_k_bytes};
        default: return gemm_kernel_avx2(type);
    }
}

}  // namespace dg

#endif
