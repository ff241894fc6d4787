// Register-blocked products of quantized weight rows with quantized activation rows: the core of
// the CPU backend's matmul. A kernel keeps a tile of several weight rows x several tokens of
// accumulators live, decodes each weight block once for all tokens of the tile and reduces
// horizontally once per tile. Kernels exist per instruction set and type and are chosen at run time
// like the vec_dot kernels (cpu/dispatch.h); a set without one for a type uses its vec_dot per
// (row, token) pair, which makes the generic set the reference path.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cpu/dispatch.h"

namespace dg {

// Weight rows [0, n_rows) start w_stride bytes apart; activation rows [0, n_tokens) start x_stride
// bytes apart, quantized to the weight type's vec_dot_type where it has an integer dot product and
// float32 otherwise (F32, F16, BF16 weights); rows hold k elements.
struct GemmArgs {
    const uint8_t *w;
    size_t w_stride;
    int64_t n_rows;
    const uint8_t *x;
    size_t x_stride;
    int64_t n_tokens;
    int64_t k;
    float *y;  // y[t * ldy + r] = dot(weight row r, activation row t)
    int64_t ldy;
};

using GemmFn = void (*)(const GemmArgs &a);

// The register-blocked kernel of `type` for `isa`; null where the set has none for the type.
GemmFn gemm_kernel(TensorType type, Isa isa);

// The product with the active set's kernel for `type`; where it has none, its vec_dot per (row,
// token) pair, or for a type without one the weight rows in float32 (converted into a per-thread
// tile unless stored as F32) through the float kernel dot_tile.
void gemm(TensorType type, const GemmArgs &a);

using QuantizeFn = void (*)(const float *x, void *dst, int64_t n);

// Quantizes an activation row of n elements to `type` (a vec_dot_type: Q8_0 or Q8_K) with the
// type's reference quantizer, bit for bit, vectorised where the active set has a version.
void quantize_activations(TensorType type, const float *x, void *dst, int64_t n);

#if defined(__x86_64__) || defined(_M_X64)
GemmFn gemm_kernel_avx2(TensorType type);
GemmFn gemm_kernel_avx512(TensorType type);
QuantizeFn quantize_kernel_avx512(TensorType type);
#endif

}  // namespace dg
