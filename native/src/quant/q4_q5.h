// Q4_0, Q4_1, Q5_0, Q5_1: ggml's 32-element blocks with 4- or 5-bit codes.
//
//   Q4_0 (18 B): d f16, qs[16]          x = d * (q - 8),   q in 0..15
//   Q4_1 (20 B): d f16, m f16, qs[16]   x = d * q + m,     q in 0..15
//   Q5_0 (22 B): d f16, qh[4], qs[16]   x = d * (q - 16),  q in 0..31
//   Q5_1 (24 B): d f16, m f16, qh[4], qs[16]
// Element j < 16 sits in the low nibble of qs[j], element j + 16 in its high nibble. For the 5-bit
// types bit 4 of element j is bit j of the little-endian uint32 qh.
// The dot products take activations quantized to Q8_0.
#pragma once

#include <cstdint>

namespace dg {

constexpr int64_t kQK4 = 32;  // elements per block of all four types

struct BlockQ4_0 { uint16_t d; uint8_t qs[16]; };
struct BlockQ4_1 { uint16_t d, m; uint8_t qs[16]; };
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; };
static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20, "Q4 block sizes");
static_assert(sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24, "Q5 block sizes");

void q4_0_row_to_float(const void *src, float *dst, int64_t n);
void q4_1_row_to_float(const void *src, float *dst, int64_t n);
void q5_0_row_to_float(const void *src, float *dst, int64_t n);
void q5_1_row_to_float(const void *src, float *dst, int64_t n);

void q4_0_row_from_float(const float *src, void *dst, int64_t n);
void q4_1_row_from_float(const float *src, void *dst, int64_t n);
void q5_0_row_from_float(const float *src, void *dst, int64_t n);
void q5_1_row_from_float(const float *src, void *dst, int64_t n);

// Portable reference dot products against Q8_0 activations.
float vec_dot_q4_0_q8_0(const void *w, const void *x, int64_t n);
float vec_dot_q4_1_q8_0(const void *w, const void *x, int64_t n);
float vec_dot_q5_0_q8_0(const void *w, const void *x, int64_t n);
float vec_dot_q5_1_q8_0(const void *w, const void *x, int64_t n);

}  // namespace dg
