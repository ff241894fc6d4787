// AVX-512 building blocks shared by the AVX-512 kernels (cpu/gemm_avx512.cpp, the float kernels in
// cpu/kernels.cpp) and activation quantizers (cpu/gemm_quantize_avx512.cpp). Only for code that
// runs after checking the CPU.
#pragma once

#if defined(__x86_64__) || defined(_M_X64)

// GCC 12's AVX-512 headers pass self-initialised "undefined" registers as the unused merge operand
// of unmasked intrinsics, which -Wuninitialized reports once they are inlined into target functions.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstdint>

#include "quant/types.h"

#define DG_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

namespace dg {
namespace avx512 {

DG_TARGET inline __m512 abs_ps(__m512 v) {
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff)));
}

// std::lround: round half away from zero (exact: v - trunc(v) is representable).
DG_TARGET inline __m512i round_away(__m512 v) {
    const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __mmask16 up = _mm512_cmp_ps_mask(abs_ps(_mm512_sub_ps(v, t)), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    const __m512 one = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(_mm512_set1_ps(1.0f)),
                                                           _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(INT32_MIN))));
    return _mm512_cvttps_epi32(_mm512_mask_add_ps(t, up, t, one));
}

// One Q8_0 block of 32 floats by the reference rule (quant/q8_0.cpp): *d gets the f16 scale,
// the result the 32 codes.
DG_TARGET inline __m256i quantize_block_q8_0(const float *src, uint16_t *d) {
    const __m512 x0 = _mm512_loadu_ps(src), x1 = _mm512_loadu_ps(src + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(abs_ps(x0), abs_ps(x1)));
    const float scale = amax / 127.0f;
    const float id = scale != 0.0f ? 1.0f / scale : 0.0f;
    *d = f32_to_f16(scale);
    const __m512 s = _mm512_set1_ps(id);
    return _mm256_set_m128i(_mm512_cvtepi32_epi8(round_away(_mm512_mul_ps(x1, s))),
                            _mm512_cvtepi32_epi8(round_away(_mm512_mul_ps(x0, s))));
}

// Lane i of the result = the 16 lanes of v[m(i)] combined by op (an associative, commutative
// one: add, max), m(i) = 4 * (i % 4) + i / 4: with v[4 * b + a] the value for (a, b) of a 4 x 4
// tile, 128-bit quarter a holds b = 0..3 in order. A transposing tree: 45 instructions for the 16
// horizontal reductions instead of ~120.
template <typename Op>
DG_TARGET inline __m512 reduce16_by(const __m512 *v, Op op) {
    __m512 u[8], w[4], z[2];
    for (int i = 0; i < 8; ++i)  // 8 lanes per vector: v[2i] in quarters 0-1, v[2i + 1] in 2-3
        u[i] = op(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44), _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xee));
    for (int i = 0; i < 4; ++i)  // 4 lanes per vector: quarter q holds v[4i + q]
        w[i] = op(_mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0x88), _mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0xdd));
    for (int i = 0; i < 2; ++i)  // quarter q: [v[8i + q] x2, v[8i + 4 + q] x2] interleaved
        z[i] = op(_mm512_unpacklo_ps(w[2 * i], w[2 * i + 1]), _mm512_unpackhi_ps(w[2 * i], w[2 * i + 1]));
    // quarter q: v[q], v[4 + q], v[8 + q], v[12 + q]
    const __m512d a = _mm512_castps_pd(z[0]), b = _mm512_castps_pd(z[1]);
    return op(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
}

struct AddPs {
    DG_TARGET __m512 operator()(__m512 a, __m512 b) const { return _mm512_add_ps(a, b); }
};
struct MaxPs {
    DG_TARGET __m512 operator()(__m512 a, __m512 b) const { return _mm512_max_ps(a, b); }
};

DG_TARGET inline __m512 reduce16(const __m512 *v) { return reduce16_by(v, AddPs{}); }

// Lane j of the result = op over the 16 lanes of v[j] (v[j] for j >= n: the identity `none`).
template <typename Op>
DG_TARGET inline __m512 reduce16_lanes(const __m512 *v, int n, __m512 none, Op op) {
    __m512 t[16];
    for (int j = 0; j < 16; ++j) t[4 * (j % 4) + j / 4] = j < n ? v[j] : none;
    return reduce16_by(t, op);
}

// Q8_0 blocks of 32 floats by the reference rule (quant/q8_0.cpp), up to 16 at a time: the
// blocks' scales come from one transposing max tree and one vector division instead of a
// horizontal max and two scalar divisions each. n blocks from src: codes[j] gets block j's 32
// codes, d16[j] its f16 scale and sum[j] the sum of its codes. False (nothing written) when an
// amax is not finite: the caller then takes the per-block path, whose conversion rules for
// infinities and NaN the vector conversion does not share.
DG_TARGET inline bool quantize_blocks_q8_0(const float *src, int n, int8_t (*codes)[32], uint16_t *d16, int32_t *sum) {
    __m512 m[16];
    for (int j = 0; j < n; ++j)
        m[j] = _mm512_max_ps(abs_ps(_mm512_loadu_ps(src + 32 * j)), abs_ps(_mm512_loadu_ps(src + 32 * j + 16)));
    const __m512 amax = reduce16_lanes(m, n, _mm512_setzero_ps(), MaxPs{});
    if (_mm512_cmp_ps_mask(amax, _mm512_set1_ps(__builtin_inff()), _CMP_NLT_UQ)) return false;  // inf or NaN
    const __m512 scale = _mm512_div_ps(amax, _mm512_set1_ps(127.0f));
    const __mmask16 nonzero = _mm512_cmp_ps_mask(scale, _mm512_setzero_ps(), _CMP_NEQ_OQ);
    alignas(64) float id[16];
    _mm512_store_ps(id, _mm512_maskz_div_ps(nonzero, _mm512_set1_ps(1.0f), scale));
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(d16), _mm512_cvtps_ph(scale, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    __m512 sums[16];
    for (int j = 0; j < n; ++j) {
        const __m512 s = _mm512_set1_ps(id[j]);
        const __m256i q = _mm256_set_m128i(_mm512_cvtepi32_epi8(round_away(_mm512_mul_ps(_mm512_loadu_ps(src + 32 * j + 16), s))),
                                           _mm512_cvtepi32_epi8(round_away(_mm512_mul_ps(_mm512_loadu_ps(src + 32 * j), s))));
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(codes[j]), q);
        // 8 partial sums (exact as floats: |sum| <= 32 * 127)
        sums[j] = _mm512_cvtepi32_ps(_mm512_zextsi256_si512(_mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), q)));
    }
    const __m512 total = reduce16_lanes(sums, n, _mm512_setzero_ps(), AddPs{});
    alignas(64) int32_t s32[16];
    _mm512_store_si512(s32, _mm512_cvtps_epi32(total));
    for (int j = 0; j < n; ++j) sum[j] = s32[j];
    return true;
}

}  // namespace avx512
}  // namespace dg

#endif
