// AVX-512 activation quantizer for the K-quants without panels (cpu/gemm.h): the reference
// quantizer of Q8_K (quant/k_quants.cpp) bit for bit, 16 elements per instruction.
#include <cstring>

#include "cpu/gemm.h"
#include "cpu/quantize_avx512.h"
#include "quant/k_quants.h"

#if defined(__x86_64__) || defined(_M_X64)

namespace dg {

using avx512::abs_ps;

DG_TARGET void quantize_q8_k_avx512(const float *src, void *dst, int64_t n) {
    for (int64_t i = 0; i < n / kQK_K; ++i, src += kQK_K) {
        BlockQ8_K &b = static_cast<BlockQ8_K *>(dst)[i];
        __m512 m = _mm512_setzero_ps();
        for (int g = 0; g < 16; ++g) m = _mm512_max_ps(m, abs_ps(_mm512_loadu_ps(src + 16 * g)));
        const float amax = _mm512_reduce_max_ps(m);
        std::memset(&b, 0, sizeof(b));
        if (amax == 0.0f) continue;
        float max = 0.0f;  // the first element of largest magnitude, with its sign
        for (int g = 0; g < 16; ++g) {
            const __mmask16 hit = _mm512_cmp_ps_mask(abs_ps(_mm512_loadu_ps(src + 16 * g)), _mm512_set1_ps(amax), _CMP_EQ_OQ);
            if (hit) {
                max = src[16 * g + __builtin_ctz(hit)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        const __m512 s = _mm512_set1_ps(iscale);
        for (int g = 0; g < 16; ++g) {
            const __m512i v = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(src + 16 * g), s)), _mm512_set1_epi32(127));
            _mm_storeu_si128(reinterpret_cast<__m128i *>(b.qs + 16 * g), _mm512_cvtepi32_epi8(v));
            b.bsums[g] = static_cast<int16_t>(_mm512_reduce_add_epi32(v));
        }
        b.d = 1.0f / iscale;
    }
}

}  // namespace dg

#endif
