// Q8_0: blocks of 32 int8 values with one f16 scale; x = d * q.
#pragma once

#include <cstdint>

namespace dg {

constexpr int64_t kQK8_0 = 32;
struct BlockQ8_0 {
    uint16_t d;           // f16 scale
    int8_t qs[kQK8_0];
};
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block is 34 bytes");

void q8_0_row_to_float(const void *src, float *dst, int64_t n);
void q8_0_row_from_float(const float *src, void *dst, int64_t n);
// Portable reference dot product of two Q8_0 rows.
float vec_dot_q8_0_q8_0(const void *w, const void *x, int64_t n);

}  // namespace dg
