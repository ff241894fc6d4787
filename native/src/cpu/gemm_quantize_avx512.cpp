// AVX-512 activation quantizers (cpu/gemm.h): the reference quantizers of Q8_0 and Q8_K
// (quant/q8_0.cpp, quant/k_quants.cpp) bit for bit, 16 elements per instruction.
#pragma GCC diagnostic ignored "-Wuninitialized"  // GCC 12's AVX-512 headers, see gemm_avx512.cpp
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>

#include "cpu/gemm.h"
#include "quant/k_quants.h"
#include "quant/q8_0.h"
#include "quant/types.h"

#if defined(__x86_64__) || defined(_M_X64)

#define DG_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

namespace dg {
namespace {

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

DG_TARGET void quantize_q8_0(const float *src, void *dst, int64_t n) {
    BlockQ8_0 *b = static_cast<BlockQ8_0 *>(dst);
    for (int64_t i = 0; i < n / kQK8_0; ++i) {
        const __m512 x0 = _mm512_loadu_ps(src + 32 * i), x1 = _mm512_loadu_ps(src + 32 * i + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(abs_ps(x0), abs_ps(x1)));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = f32_to_f16(d);
        const __m512 s = _mm512_set1_ps(id);
        _mm_storeu_si128(reinterpret_cast<__m128i *>(b[i].qs), _mm512_cvtepi32_epi8(round_away(_mm512_mul_ps(x0, s))));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(b[i].qs + 16), _mm512_cvtepi32_epi8(round_away(_mm512_mul_ps(x1, s))));
    }
}

// ggml's nearest_int (round half to even) is the default rounding mode of vcvtps2dq.
DG_TARGET void quantize_q8_k(const float *src, void *dst, int64_t n) {
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

}  // namespace

QuantizeFn quantize_kernel_avx512(TensorType type) {
    switch (type) {
        case TensorType::Q8_0: return quantize_q8_0;
        case TensorType::Q8_K: return quantize_q8_k;
        default: return nullptr;
    }
}

}  // namespace dg

#endif
