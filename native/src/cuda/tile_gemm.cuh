// Tiled products for many activation rows: a block computes a kTileRows x kTileTokens tile of
// Y[token][row] = sum_c W[row][c] * X[token][c], walking c in chunks of kTileK. Each chunk's weight
// tile is dequantized once into shared memory (dequant.h, the CPU's values) and reused by every
// token of the tile; each thread accumulates a 4 x 4 sub-tile in float32 registers. The products
// stay float32 (the same class of rounding as the per-row kernels, another summation order); they
// take over from those kernels at kTileMinTokens rows, where reusing a dequantized tile pays.
//
// Thread t of the 256: rows 4 * (t % 16) .. + 3 and tokens 4 * (t / 16) .. + 3 of the tile.
// Loads: thread t fills row (or token) t / 4, elements 8 * (t % 4) .. + 7 of the chunk.
#pragma once

#include <string>
#include <type_traits>
#include <utility>

#include "cuda/common.cuh"
#include "cuda/dequant.h"

namespace dg::cuda {

constexpr int kTileRows = 64, kTileTokens = 64, kTileK = 32, kTileThreads = 256;
constexpr int64_t kTileMinTokens = 16;
constexpr int kTilePad = 4;  // keeps rows 16-byte aligned for float4 reads

// Shared memory of one operand tile: [kTileK][kTileRows + kTilePad] floats, column c of the chunk
// as a row, so that the inner loop reads 4 consecutive rows (or tokens) as one float4.
struct TileOperand {
    float v[kTileK][kTileRows + kTilePad];
};
static_assert(kTileRows == kTileTokens, "one operand layout serves weights and activations");

// Weight rows row0 .. row0 + 63 (rows past `n_rows` read as 0), chunk c0 .. c0 + 31 of a matrix of
// type T whose row r starts at base + r * row_stride.
template <TensorType T>
__device__ inline void load_weight_tile(TileOperand &s, const uint8_t *base, size_t row_stride, int64_t n_rows,
                                        int64_t n_cols, int64_t row0, int64_t c0) {
    const int t = threadIdx.x, r = t / 4, k0 = 8 * (t % 4);
    const int64_t row = row0 + r;
    const uint8_t *p = base + row * row_stride;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const int64_t c = c0 + k0 + j;
        s.v[k0 + j][r] = row < n_rows && c < n_cols ? dequant(T, p, c) : 0.0f;
    }
}

// Activation rows: token i of the tile reads x_row(i) (null past the tile's tokens: zeros).
__device__ inline void load_activation_tile(TileOperand &s, const float *x_row, int64_t n_cols, int64_t c0) {
    const int t = threadIdx.x, i = t / 4, k0 = 8 * (t % 4);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const int64_t c = c0 + k0 + j;
        s.v[k0 + j][i] = x_row && c < n_cols ? x_row[c] : 0.0f;
    }
}

// acc[a][b] += W[row 4 * (t % 16) + a] . X[token 4 * (t / 16) + b] over one chunk.
__device__ inline void tile_multiply(const TileOperand &w, const TileOperand &x, float acc[4][4]) {
    const int tr = 4 * (threadIdx.x % 16), tt = 4 * (threadIdx.x / 16);
#pragma unroll 8
    for (int k = 0; k < kTileK; ++k) {
        const float4 a = *reinterpret_cast<const float4 *>(&w.v[k][tr]);
        const float4 b = *reinterpret_cast<const float4 *>(&x.v[k][tt]);
        const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
    }
}

// The tile's row (0..63) and token (0..63) of accumulator acc[a][b] for this thread.
__device__ inline int tile_row(int a) { return 4 * (threadIdx.x % 16) + a; }
__device__ inline int tile_token(int b) { return 4 * (threadIdx.x / 16) + b; }

// Calls f(std::integral_constant<TensorType, T>{}) for the weight type t (one of kCudaWeightTypes),
// so that a kernel template's dequant(T, ...) folds to one type's code.
template <typename F, size_t... I>
void with_weight_type_impl(TensorType t, F &&f, std::index_sequence<I...>) {
    const bool found = ((t == kCudaWeightTypes[I] ? (f(std::integral_constant<TensorType, kCudaWeightTypes[I]>{}), true) : false) || ...);
    if (!found) throw Error(DGEMMA_ERR_UNSUPPORTED, "CUDA: weight type " + std::to_string(static_cast<unsigned>(t)) + " has no kernel");
}
template <typename F>
void with_weight_type(TensorType t, F &&f) {
    with_weight_type_impl(t, std::forward<F>(f), std::make_index_sequence<std::size(kCudaWeightTypes)>{});
}

}  // namespace dg::cuda
