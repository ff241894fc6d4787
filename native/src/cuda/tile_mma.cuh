// Tensor-core tiles (DGEMMA_CUDA_KERNELS=tensor; sm_80 and newer): the tiled products of
// tile_gemm.cuh with the chunk's weights and activations rounded to bf16 in shared memory and
// multiplied by `mma.sync.m16n8k16` into float32 accumulators. bf16 keeps 8 significant bits, so
// each operand carries a relative rounding error up to 2^-9 and a long dot product one near 1e-3:
// this set is held to 1e-2 against the CPU on dequantized weights, not to the float bound. Each
// output is still one chain of k16 products in column order, so a row's result does not depend on
// the other rows of its pass.
//
// Block: 64 weight rows x 64 tokens, 256 threads = 8 warps; warp w owns rows 16 * (w % 4) .. + 15
// and tokens 32 * (w / 4) .. + 31 (four n8 tiles). Shared operands: [64][kTileK + 8] bf16, one row
// (weight row or token) per line, k contiguous: 80-byte lines put the 8 rows a fragment load
// touches on 8 different bank groups.
//
// Fragment layout of m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16"), g = lane / 4,
// q = lane % 4: A (row-major M x K) a0 = (g, 2q..2q+1), a1 = (g + 8, 2q..), a2 = (g, 2q + 8..),
// a3 = (g + 8, 2q + 8..); B (K x N, column-major) b0 = (2q..2q+1, g), b1 = (2q + 8.., g);
// C c0, c1 = (g, 2q..2q+1), c2, c3 = (g + 8, 2q..2q+1).
#pragma once

#include <cuda_bf16.h>

#include "cuda/tile_gemm.cuh"

namespace dg::cuda {

constexpr int kMmaLine = kTileK + 8;  // bf16 per shared line (80 bytes)

struct __align__(16) MmaOperand {  // 16-byte stores of 8 bf16
    __nv_bfloat16 v[kTileRows][kMmaLine];
};
static_assert(sizeof(__nv_bfloat16) * kMmaLine % 16 == 0, "lines stay 16-byte aligned");

// Thread t fills line t / 4, k = 8 * (t % 4) .. + 7, from 8 floats.
__device__ inline void store8_bf16(MmaOperand &s, const float (&f)[8]) {
    const int t = threadIdx.x;
    __align__(16) __nv_bfloat162 h[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) h[j] = __floats2bfloat162_rn(f[2 * j], f[2 * j + 1]);
    *reinterpret_cast<uint4 *>(&s.v[t / 4][8 * (t % 4)]) = *reinterpret_cast<const uint4 *>(h);
}

// Thread t's part of the weight operand: line t / 4, k = 8 * (t % 4) .. + 7 (the float tiles' loader
// position, so WeightFetch8 serves both).
template <TensorType T>
__device__ inline void store_weight_mma(MmaOperand &s, const WeightFetch8<T> &w) {
    float f[8];
    w.value(f);
    store8_bf16(s, f);
}

// This thread's 8 activations of a chunk (line t / 4, as the weights), fetched then stored.
struct ActivationFetchMma {
    float v[8];
    __device__ void fetch(const float *x_row, int64_t n_cols, int64_t c0) {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const int64_t c = c0 + 8 * (threadIdx.x % 4) + j;
            v[j] = x_row && c < n_cols ? x_row[c] : 0.0f;
        }
    }
    __device__ void store(MmaOperand &s) const { store8_bf16(s, v); }
};

__device__ inline uint32_t pair_at(const MmaOperand &s, int line, int k) {
    return *reinterpret_cast<const uint32_t *>(&s.v[line][k]);
}

// acc[j] (the warp's n8 tile j) += W . X over one chunk of kTileK.
__device__ inline void mma_chunk(const MmaOperand &w, const MmaOperand &x, float (&acc)[4][4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
    const int m0 = 16 * (warp % 4), n0 = 32 * (warp / 4);
#pragma unroll
    for (int ks = 0; ks < kTileK; ks += 16) {
        const uint32_t a0 = pair_at(w, m0 + g, ks + 2 * q), a1 = pair_at(w, m0 + g + 8, ks + 2 * q);
        const uint32_t a2 = pair_at(w, m0 + g, ks + 2 * q + 8), a3 = pair_at(w, m0 + g + 8, ks + 2 * q + 8);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const uint32_t b0 = pair_at(x, n0 + 8 * j + g, ks + 2 * q), b1 = pair_at(x, n0 + 8 * j + g, ks + 2 * q + 8);
            asm volatile(
                "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                "{%0,%1,%2,%3};\n"
                : "+f"(acc[j][0]), "+f"(acc[j][1]), "+f"(acc[j][2]), "+f"(acc[j][3])
                : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
        }
    }
#else
    __trap();  // the host selects this set only on compute capability 8.0 and newer
#endif
}

// acc += W[row0 .. row0 + 63] . X[the tile's tokens] over all columns (as tile_accumulate).
template <TensorType T>
__device__ inline void mma_accumulate(MmaOperand &ws, MmaOperand &xs, const uint8_t *base, size_t row_stride,
                                      int64_t n_rows, int64_t n_cols, int64_t row0, const float *x_row,
                                      float (&acc)[4][4]) {
    WeightFetch8<T> w;
    ActivationFetchMma x;
    const int64_t my_row = row0 + weight_loader_row();
    w.fetch(base, row_stride, n_rows, n_cols, my_row, weight_loader_k());
    x.fetch(x_row, n_cols, 0);
    for (int64_t c0 = 0; c0 < n_cols; c0 += kTileK) {
        store_weight_mma<T>(ws, w);
        x.store(xs);
        __syncthreads();
        if (c0 + kTileK < n_cols) {  // the next chunk's loads in flight during this chunk's products
            w.fetch(base, row_stride, n_rows, n_cols, my_row, c0 + kTileK + weight_loader_k());
            x.fetch(x_row, n_cols, c0 + kTileK);
        }
        mma_chunk(ws, xs, acc);
        __syncthreads();
    }
}

// Calls out(row, token, value) with the tile-relative row and token of each accumulator.
template <typename Out>
__device__ inline void mma_store(const float (&acc)[4][4], Out out) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
    const int m0 = 16 * (warp % 4), n0 = 32 * (warp / 4);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int n = n0 + 8 * j + 2 * q;
        out(m0 + g, n, acc[j][0]);
        out(m0 + g, n + 1, acc[j][1]);
        out(m0 + g + 8, n, acc[j][2]);
        out(m0 + g + 8, n + 1, acc[j][3]);
    }
}

// The token of the tile this thread's activation load fills.
__device__ inline int mma_loader_token() { return threadIdx.x / 4; }

}  // namespace dg::cuda
