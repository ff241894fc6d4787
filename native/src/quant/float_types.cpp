// F32, F16 and BF16 rows.
#include "quant/float_types.h"
#include "quant/types.h"

#include <cmath>
#include <cstring>

namespace dg {

void f32_row_to_float(const void *src, float *dst, int64_t n) { std::memcpy(dst, src, static_cast<size_t>(n) * 4); }
void f32_row_from_float(const float *src, void *dst, int64_t n) { std::memcpy(dst, src, static_cast<size_t>(n) * 4); }

void f16_row_to_float(const void *src, float *dst, int64_t n) {
    const uint16_t *s = static_cast<const uint16_t *>(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
}
void f16_row_from_float(const float *src, void *dst, int64_t n) {
    uint16_t *d = static_cast<uint16_t *>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
}

void bf16_row_to_float(const void *src, float *dst, int64_t n) {
    const uint16_t *s = static_cast<const uint16_t *>(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
}
void bf16_row_from_float(const float *src, void *dst, int64_t n) {
    uint16_t *d = static_cast<uint16_t *>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
}

}  // namespace dg
