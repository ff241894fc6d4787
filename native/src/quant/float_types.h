// Row conversions for the float types F32, F16 and BF16.
#pragma once

#include <cstdint>

namespace dg {

void f32_row_to_float(const void *src, float *dst, int64_t n);
void f32_row_from_float(const float *src, void *dst, int64_t n);
void f16_row_to_float(const void *src, float *dst, int64_t n);
void f16_row_from_float(const float *src, void *dst, int64_t n);
void bf16_row_to_float(const void *src, float *dst, int64_t n);
void bf16_row_from_float(const float *src, void *dst, int64_t n);

}  // namespace dg
