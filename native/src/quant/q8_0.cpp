#include "quant/q8_0.h"

#include <cmath>

#include "quant/types.h"

namespace dg {

void q8_0_row_to_float(const void *src, float *dst, int64_t n) {
    const BlockQ8_0 *b = static_cast<const BlockQ8_0 *>(src);
    for (int64_t i = 0; i < n / kQK8_0; ++i) {
        const float d = f16_to_f32(b[i].d);
        for (int64_t j = 0; j < kQK8_0; ++j) dst[i * kQK8_0 + j] = d * static_cast<float>(b[i].qs[j]);
    }
}

// ggml's rule: d = max|x| / 127 (stored as f16), q = round(x / d) with the f32 reciprocal.
void q8_0_row_from_float(const float *src, void *dst, int64_t n) {
    BlockQ8_0 *b = static_cast<BlockQ8_0 *>(dst);
    for (int64_t i = 0; i < n / kQK8_0; ++i) {
        const float *x = src + i * kQK8_0;
        float amax = 0.0f;
        for (int64_t j = 0; j < kQK8_0; ++j) amax = std::fmax(amax, std::fabs(x[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = f32_to_f16(d);
        for (int64_t j = 0; j < kQK8_0; ++j) b[i].qs[j] = static_cast<int8_t>(std::lround(x[j] * id));
    }
}

float vec_dot_q8_0_q8_0(const void *w, const void *x, int64_t n) {
    const BlockQ8_0 *a = static_cast<const BlockQ8_0 *>(w);
    const BlockQ8_0 *b = static_cast<const BlockQ8_0 *>(x);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQK8_0; ++i) {
        int32_t s = 0;
        for (int64_t j = 0; j < kQK8_0; ++j) s += a[i].qs[j] * b[i].qs[j];
        sum += static_cast<float>(s) * (f16_to_f32(a[i].d) * f16_to_f32(b[i].d));
    }
    return sum;
}

}  // namespace dg
