// AVX2 activation quantizers for the AVX2 matrix products (cpu/gemm_avx2.cpp): the reference
// rules of Q8_0 and Q8_K (quant/q8_0.cpp, quant/k_quants.cpp) bit for bit, 8 elements per
// instruction. Only for translation units compiled for x86-64; call only where AVX2 is supported.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/k_quants.h"
#include "quant/types.h"

#define DG_TARGET __attribute__((target("avx2,fma,f16c")))

namespace dg {
namespace avx2 {

DG_TARGET inline __m256 abs_ps(__m256 v) { return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }

DG_TARGET inline float hmax(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

DG_TARGET inline int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

// std::lround: round half away from zero (exact: v - trunc(v) is representable).
DG_TARGET inline __m256i round_away(__m256 v) {
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 up = _mm256_cmp_ps(abs_ps(_mm256_sub_ps(v, t)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    const __m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MIN))));
    return _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(up, one)));
}

// Four vectors of 8 int32 in -128..127 -> 32 bytes in order.
DG_TARGET inline __m256i pack_bytes(__m256i a, __m256i b, __m256i c, __m256i d) {
    // packs work within 128-bit lanes: dword j of the packed vector holds 4 codes of a, b, c, d, a, ...
    const __m256i v = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// One Q8_0 block of 32 floats by the reference rule: *d gets the f16 scale, *sum the sum of the
// codes, the result the 32 codes.
DG_TARGET inline __m256i quantize_block_q8_0(const float *src, uint16_t *d, int32_t *sum) {
    __m256 x[4];
    for (int j = 0; j < 4; ++j) x[j] = _mm256_loadu_ps(src + 8 * j);
    const float amax = hmax(_mm256_max_ps(_mm256_max_ps(abs_ps(x[0]), abs_ps(x[1])), _mm256_max_ps(abs_ps(x[2]), abs_ps(x[3]))));
    const float scale = amax / 127.0f;
    const float id = scale != 0.0f ? 1.0f / scale : 0.0f;
    *d = f32_to_f16(scale);
    const __m256 s = _mm256_set1_ps(id);
    __m256i q[4];
    // Codes clamped to the bytes pack_bytes saturates to: the same for finite input (|code| <= 127),
    // and for an infinite or NaN element (code INT_MIN) a sum that matches the stored codes and
    // cannot overflow.
    for (int j = 0; j < 4; ++j)
        q[j] = _mm256_max_epi32(_mm256_min_epi32(round_away(_mm256_mul_ps(x[j], s)), _mm256_set1_epi32(127)), _mm256_set1_epi32(-128));
    *sum = hsum_epi32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
    return pack_bytes(q[0], q[1], q[2], q[3]);
}

// A row of n elements as Q8_K blocks by the reference rule (the scale from the first element of
// largest magnitude, codes rounded half to even like ggml's nearest_int, at most 127).
DG_TARGET inline void quantize_row_q8_k(const float *src, void *dst, int64_t n) {
    for (int64_t i = 0; i < n / kQK_K; ++i, src += kQK_K) {
        BlockQ8_K &b = static_cast<BlockQ8_K *>(dst)[i];
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < 32; ++j) m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(src + 8 * j)));
        const float amax = hmax(m);
        std::memset(&b, 0, sizeof(b));
        if (amax == 0.0f) continue;
        float max = 0.0f;
        for (int j = 0; j < 32; ++j) {
            const int hit = _mm256_movemask_ps(_mm256_cmp_ps(abs_ps(_mm256_loadu_ps(src + 8 * j)), _mm256_set1_ps(amax), _CMP_EQ_OQ));
            if (hit) {
                max = src[8 * j + __builtin_ctz(static_cast<unsigned>(hit))];
                break;
            }
        }
        const float iscale = -127.0f / max;
        const __m256 s = _mm256_set1_ps(iscale);
        for (int j = 0; j < 8; ++j) {  // 32 elements: groups 2j, 2j + 1
            __m256i q[4];
            for (int h = 0; h < 4; ++h)
                q[h] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(src + 32 * j + 8 * h), s)), _mm256_set1_epi32(127));
            _mm256_storeu_si256(reinterpret_cast<__m256i *>(b.qs + 32 * j), pack_bytes(q[0], q[1], q[2], q[3]));
            b.bsums[2 * j] = static_cast<int16_t>(hsum_epi32(_mm256_add_epi32(q[0], q[1])));
            b.bsums[2 * j + 1] = static_cast<int16_t>(hsum_epi32(_mm256_add_epi32(q[2], q[3])));
        }
        b.d = 1.0f / iscale;
    }
}

}  // namespace avx2
}  // namespace dg
