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

// Lane i of the result = the sum of the 16 lanes of v[m(i)], m(i) = 4 * (i % 4) + i / 4: with
// v[4 * b + a] the sum for (a, b) of a 4 x 4 tile, 128-bit quarter a holds b = 0..3 in order.
// A transposing tree: 45 instructions for the 16 horizontal sums of a tile instead of ~120.
DG_TARGET inline __m512 reduce16(const __m512 *v) {
    __m512 u[8], w[4], z[2];
    for (int i = 0; i < 8; ++i)  // 8 lanes per vector: v[2i] in quarters 0-1, v[2i + 1] in 2-3
        u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44), _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xee));
    for (int i = 0; i < 4; ++i)  // 4 lanes per vector: quarter q holds v[4i + q]
        w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0x88), _mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0xdd));
    for (int i = 0; i < 2; ++i)  // quarter q: [v[8i + q] x2, v[8i + 4 + q] x2] interleaved
        z[i] = _mm512_add_ps(_mm512_unpacklo_ps(w[2 * i], w[2 * i + 1]), _mm512_unpackhi_ps(w[2 * i], w[2 * i + 1]));
    // quarter q: v[q], v[4 + q], v[8 + q], v[12 + q]
    const __m512d a = _mm512_castps_pd(z[0]), b = _mm512_castps_pd(z[1]);
    return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
}

}  // namespace avx512
}  // namespace dg

#endif
