// AVX2 register-blocked kernels (cpu/gemm.h) for the 32-element block types: one block per 256-bit
// register, 2 rows x 3 tokens of accumulators (16 registers). Weights decode to signed values once
// per tile; vpmaddubsw multiplies |w| with the activations carrying w's sign (|w| <= 128 and
// activations are never -128, so no pair of products saturates int16). The K-quants use their
// vec_dot kernels.
#include <immintrin.h>

#include <cstring>

#include "cpu/gemm.h"
#include "quant/q4_q5.h"
#include "quant/q8_0.h"

#if defined(__x86_64__) || defined(_M_X64)

#define DG_TARGET __attribute__((target("avx2,fma,f16c")))

namespace dg {
namespace {

DG_TARGET inline __m256i load256(const void *p) { return _mm256_loadu_si256(static_cast<const __m256i *>(p)); }
DG_TARGET inline float f16(uint16_t h) { return _cvtsh_ss(h); }

DG_TARGET inline __m256i nibbles(const uint8_t *qs) {  // 16 bytes -> 32 codes: low nibbles, then high
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i *>(qs));
    const __m128i m = _mm_set1_epi8(0x0f);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

struct Q8_0Values {
    using Block = BlockQ8_0;
    DG_TARGET static __m256i values(const Block &b) { return load256(b.qs); }
};

struct Q4_0Values {
    using Block = BlockQ4_0;
    DG_TARGET static __m256i values(const Block &b) { return _mm256_sub_epi8(nibbles(b.qs), _mm256_set1_epi8(8)); }
};

struct Q5_0Values {
    using Block = BlockQ5_0;
    DG_TARGET static __m256i values(const Block &b) {
        uint32_t h;
        std::memcpy(&h, b.qh, 4);
        const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(h)),
                                                   _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
        const __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ull));
        const __m256i high = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10));
        return _mm256_sub_epi8(_mm256_or_si256(nibbles(b.qs), high), _mm256_set1_epi8(16));
    }
};

template <typename C, int NR, int NT>
DG_TARGET inline void tile32(const GemmArgs &a, int64_t r0, int64_t t0) {
    using Block = typename C::Block;
    const Block *w[NR];
    const BlockQ8_0 *x[NT];
    for (int r = 0; r < NR; ++r) w[r] = reinterpret_cast<const Block *>(a.w + (r0 + r) * a.w_stride);
    for (int t = 0; t < NT; ++t) x[t] = reinterpret_cast<const BlockQ8_0 *>(a.x + (t0 + t) * a.x_stride);
    __m256 acc[NR][NT];
    for (int r = 0; r < NR; ++r)
        for (int t = 0; t < NT; ++t) acc[r][t] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < a.k / 32; ++b) {
        __m256i v[NR], mag[NR];
        float ws[NR];
        for (int r = 0; r < NR; ++r) {
            v[r] = C::values(w[r][b]);
            mag[r] = _mm256_sign_epi8(v[r], v[r]);
            ws[r] = f16(w[r][b].d);
        }
        for (int t = 0; t < NT; ++t) {
            const __m256i xv = load256(x[t][b].qs);
            const float xs = f16(x[t][b].d);
            for (int r = 0; r < NR; ++r) {
                const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(mag[r], _mm256_sign_epi8(xv, v[r])), ones);
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(ws[r] * xs), acc[r][t]);
            }
        }
    }
    for (int r = 0; r < NR; ++r)
        for (int t = 0; t < NT; ++t) {
            __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc[r][t]), _mm256_extractf128_ps(acc[r][t], 1));
            s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            s = _mm_add_ss(s, _mm_movehdup_ps(s));
            a.y[(t0 + t) * a.ldy + r0 + r] = _mm_cvtss_f32(s);
        }
}

template <typename C>
DG_TARGET void gemm32(const GemmArgs &a) {
    constexpr int NR = 2, NT = 3;
    int64_t r = 0;
    for (; r + NR <= a.n_rows; r += NR) {
        int64_t t = 0;
        for (; t + NT <= a.n_tokens; t += NT) tile32<C, NR, NT>(a, r, t);
        for (; t < a.n_tokens; ++t) tile32<C, NR, 1>(a, r, t);
    }
    for (; r < a.n_rows; ++r) {
        int64_t t = 0;
        for (; t + NT <= a.n_tokens; t += NT) tile32<C, 1, NT>(a, r, t);
        for (; t < a.n_tokens; ++t) tile32<C, 1, 1>(a, r, t);
    }
}

}  // namespace

GemmKernel gemm_kernel_avx2(TensorType type) {  // activations as the reference quantizer writes them
    switch (type) {
        case TensorType::Q8_0: return {gemm32<Q8_0Values>};
        case TensorType::Q4_0: return {gemm32<Q4_0Values>};
        case TensorType::Q5_0: return {gemm32<Q5_0Values>};
        default: return {};
    }
}

}  // namespace dg

#endif
