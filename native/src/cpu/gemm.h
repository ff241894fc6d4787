// Products of weight rows with activation rows: the core of the CPU backend's matmul. Kernels exist
// per instruction set and type and are chosen at run time like the vec_dot kernels (cpu/dispatch.h).
// The AVX-512 ones work on lane-per-row panels of kPanelRows rows (one register lane per weight row,
// a token's results one store), which the backend can pack once at load; a set without a kernel for
// a type uses its vec_dot per (row, token) pair, which makes the generic set the reference path.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cpu/dispatch.h"

namespace dg {

// Weight rows [0, n_rows) start w_stride bytes apart; activation rows [0, n_tokens) start x_stride
// bytes apart, as gemm_pack_activations writes them (float32 for types without an integer dot
// product: F32, F16, BF16); rows hold k elements.
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
    // The rows' panels as gemm_pack_weights wrote them (row 0 here is a multiple of kPanelRows of
    // the packed matrix), or null: the kernel reads w (decoding each panel per call if it packs).
    const uint8_t *packed = nullptr;
    // Bytes to ask into L2 while the last panels are swept (the caller's next call's first
    // weights: a matmul task's next row tile), or null. Kernels that prefetch their own next
    // panels take it; the others ignore it.
    const uint8_t *prefetch = nullptr;
    size_t prefetch_bytes = 0;
    // When set, token t's results are not stored at y but added, times y_scale[t], to row y_rows[t]
    // (y_rows[t][r] = fma(dot, y_scale[t], y_rows[t][r]), the same rounding as axpy): the experts'
    // down products summed into their tokens' rows. Kernels that do it in their register tiles say
    // so (GemmKernel::add_rows_max_k); for the others gemm() stores and adds.
    float *const *y_rows = nullptr;
    const float *y_scale = nullptr;
};

// Rows per panel of the packed layouts.
constexpr int64_t kPanelRows = 16;

using GemmFn = void (*)(const GemmArgs &a);
using QuantizeFn = void (*)(const float *x, void *dst, int64_t n);

// A weight type's kernel on one instruction set and the activation rows it takes.
struct GemmKernel {
    GemmFn run = nullptr;       // null: no register-blocked kernel (vec_dot per pair, or the float path)
    QuantizeFn pack = nullptr;  // float row -> the row `run` takes; null: the vec_dot_type's reference quantizer
    size_t (*packed_bytes)(int64_t k) = nullptr;  // bytes of a packed row of k elements (with pack)
    // Weight panels in the kernel's layout, made once at load (null: the kernel reads rows as stored).
    void (*pack_panel)(const uint8_t *w0, size_t w_stride, int64_t rows, int64_t k, uint8_t *dst) = nullptr;
    size_t (*panel_bytes)(int64_t k) = nullptr;  // bytes of one packed panel of rows of k elements
    int64_t add_rows_max_k = 0;  // run adds to GemmArgs::y_rows itself for rows of up to this many elements
};

GemmKernel gemm_kernel(TensorType type, Isa isa);

// Activation rows of k elements in the form `type`'s kernel on the active set takes: quantized to
// the vec_dot_type by its reference rule (bit for bit), possibly laid out for the kernel. Bytes
// per row; 0 for a type without an integer dot product, whose kernels take float32 rows.
size_t gemm_activation_bytes(TensorType type, int64_t k);
void gemm_pack_activations(TensorType type, const float *x, void *dst, int64_t k);

// Weight rows in the layout the active set's kernel for `type` reads, so that no call decodes them
// again (the CPU backend packs its weights at load): bytes for n_rows rows of k elements (0: the
// kernel reads rows as stored), the packing, and the byte offset of row r (a multiple of
// kPanelRows) in the packed matrix.
size_t gemm_packed_bytes(TensorType type, int64_t n_rows, int64_t k);
void gemm_pack_weights(TensorType type, const uint8_t *w, size_t w_stride, int64_t n_rows, int64_t k, uint8_t *dst);
size_t gemm_packed_offset(TensorType type, int64_t r, int64_t k);

// The product with the active set's kernel for `type`, activations from gemm_pack_activations;
// where the set has no kernel, its vec_dot per (row, token) pair, or for a type without one the
// weight rows in float32 (converted into a per-thread tile unless stored as F32) through the float
// kernel dot_tile. Activation rows go in chunks that fit L2 (gemm.cpp).
void gemm(TensorType type, const GemmArgs &a);

#if defined(__x86_64__) || defined(_M_X64)
GemmKernel gemm_kernel_avx2(TensorType type);
GemmKernel gemm_kernel_avxvnni(TensorType type);  // AVX2's, with vpdpbusd for the 32-element blocks
GemmKernel gemm_kernel_avx512(TensorType type);
void quantize_q8_k_avx512(const float *x, void *dst, int64_t n);
#endif

}  // namespace dg
