// Tensor-core tiles (DGEMMA_CUDA_KERNELS=tensor; sm_80 and newer): a block multiplies kMmaRows
// weight rows by N tokens (index maths and shapes: cuda/mma_layout.h) with `mma.sync.m16n8k16`,
// bf16 operands, float32 accumulators. bf16 keeps 8 significant bits, so each operand carries a
// relative rounding error up to 2^-9 and a long dot product one near 1e-3: this set is held to
// 1e-2 against the CPU on dequantized weights, not to the float bound. Each output is one chain
// of k16 products in k order whatever else shares its tile, so a row's result does not depend on
// the other rows of its pass (a batch gives each sequence what it gets alone).
//
// Activations come as bf16 rows padded to whole chunks (to_bf16_rows below; the experts' hidden
// activations are written so by their gate/up kernel): a thread's 8 elements of a chunk are one
// 16-byte load. Weights are dequantized by WeightFetch8 (dequant.h's values), rounded to bf16 once
// per block; a dense pass of 256 tokens dequantizes each weight element twice, the experts once.
//
// Pipeline: two shared stages. While the warps multiply stage c % 2, each thread holds chunk c + 1's
// raw words in registers (fetched before the products), then decodes and stores them into the
// other stage: one barrier per chunk.
#pragma once

#include <cuda_bf16.h>

#include "cuda/mma_layout.h"
#include "cuda/tile_gemm.cuh"

namespace dg::cuda {

// NW weight operands (1, or 2 for the experts' gate and up) and the tokens' operand of one chunk.
template <int N, int NW>
struct __align__(16) MmaStage {
    __nv_bfloat16 w[NW][kMmaRows][kMmaLine];
    __nv_bfloat16 x[N][kMmaLine];
};

template <int N, int NW>
using MmaAcc = float[NW][MmaShape<N>::MT][MmaShape<N>::NT][4];

__device__ inline void store8_bf16(__nv_bfloat16 *dst, const float (&f)[8]) {
    __align__(16) __nv_bfloat162 h[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) h[j] = __floats2bfloat162_rn(f[2 * j], f[2 * j + 1]);
    *reinterpret_cast<uint4 *>(dst) = *reinterpret_cast<const uint4 *>(h);
}

// This thread's weight groups (mma_loader_coord) of rows row0 .. row0 + kMmaRows - 1 of NW matrices
// of type T sharing a shape: fetch() issues the loads of chunk c0, store() decodes them into a stage.
template <TensorType T, int NW>
struct MmaWeightLoader {
    static constexpr int G = kMmaWeightGroups;
    WeightFetch8<T> f[NW][G];
    const uint8_t *base[NW];
    size_t row_stride[NW];
    int64_t n_rows = 0, n_cols = 0, row0 = 0;

    __device__ void fetch(int64_t c0) {
#pragma unroll
        for (int m = 0; m < NW; ++m)
#pragma unroll
            for (int i = 0; i < G; ++i) {
                const Coord c = mma_loader_coord(threadIdx.x, i);
                f[m][i].fetch(base[m], row_stride[m], n_rows, n_cols, row0 + c.line, c0 + c.k);
            }
    }
    template <int N>
    __device__ void store(MmaStage<N, NW> &s) const {
#pragma unroll
        for (int m = 0; m < NW; ++m)
#pragma unroll
            for (int i = 0; i < G; ++i) {
                const Coord c = mma_loader_coord(threadIdx.x, i);
                float v[8];
                f[m][i].value(v);
                store8_bf16(&s.w[m][c.line][c.k], v);
            }
    }
};

// This thread's token groups: row[i] is the bf16 row (padded to mma_padded_cols) of group i's token,
// or null past the tile's tokens (zeros).
template <int N>
struct MmaTokenLoader {
    static constexpr int G = MmaShape<N>::kTokenGroups;
    const __nv_bfloat16 *row[G];
    uint4 v[G];

    // Sets row[i] = row_of(token within the tile) for the groups this thread loads.
    template <typename RowOf>
    __device__ void bind(RowOf row_of) {
#pragma unroll
        for (int i = 0; i < G; ++i)
            row[i] = mma_token_group_used<N>(threadIdx.x, i) ? row_of(mma_loader_coord(threadIdx.x, i).line) : nullptr;
    }
    __device__ void fetch(int64_t c0) {
#pragma unroll
        for (int i = 0; i < G; ++i)
            v[i] = row[i] ? *reinterpret_cast<const uint4 *>(row[i] + c0 + mma_loader_coord(threadIdx.x, i).k) : uint4{0, 0, 0, 0};
    }
    template <int NW>
    __device__ void store(MmaStage<N, NW> &s) const {
#pragma unroll
        for (int i = 0; i < G; ++i)
            if (mma_token_group_used<N>(threadIdx.x, i)) {
                const Coord c = mma_loader_coord(threadIdx.x, i);
                *reinterpret_cast<uint4 *>(&s.x[c.line][c.k]) = v[i];
            }
    }
};

__device__ inline uint32_t bf16_pair(const __nv_bfloat16 (&line)[kMmaLine], int k) {
    return *reinterpret_cast<const uint32_t *>(&line[k]);
}

// acc[m] += W_m . X over one stage (kMmaK), the warp's MT x NT mma tiles. Partial (the experts' tiles:
// a 32-slot tile holds about 16 slots at the 26B shapes): n-tiles whose tokens all lie at or past
// n_valid (none of their outputs is stored) are skipped. A compile-time choice: the check cost the
// dense 32-token tiles 15 registers a thread.
template <int N, int NW, bool Partial = false>
__device__ inline void mma_stage(const MmaStage<N, NW> &s, MmaAcc<N, NW> &acc, int n_valid = N) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr int MT = MmaShape<N>::MT, NT = MmaShape<N>::NT;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int m0 = mma_warp_row0<N>(warp), n0 = mma_warp_token0<N>(warp);
#pragma unroll
    for (int ks = 0; ks < kMmaK; ks += 16) {
        uint32_t b[NT][2];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const Coord c = mma_b_coord(lane, r);
                b[nt][r] = bf16_pair(s.x[n0 + 8 * nt + c.line], ks + c.k);
            }
#pragma unroll
        for (int m = 0; m < NW; ++m)
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                uint32_t a[4];
#pragma unroll
                for (int r = 0; r < 4; ++r) {
                    const Coord c = mma_a_coord(lane, r);
                    a[r] = bf16_pair(s.w[m][m0 + 16 * mt + c.line], ks + c.k);
                }
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) {
                    if (Partial && n0 + 8 * nt >= n_valid) continue;  // warp-uniform
                    float(&d)[4] = acc[m][mt][nt];
                    asm volatile(
                        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                        "{%0,%1,%2,%3};\n"
                        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[nt][0]), "r"(b[nt][1]));
                }
            }
    }
#else
    __trap();  // the host selects this set only on compute capability 8.0 and newer
#endif
}

// acc += W . X over chunks c_begin .. c_end - 1 of the columns (all of them by default), chunk by
// chunk (the pipeline of the header comment); Partial: the tile's first n_valid tokens are in use (mma_stage).
template <TensorType T, int N, int NW, bool Partial = false>
__device__ inline void mma_accumulate(MmaStage<N, NW> (&st)[2], MmaWeightLoader<T, NW> &w, MmaTokenLoader<N> &x,
                                      MmaAcc<N, NW> &acc, int64_t c_begin = 0, int64_t c_end = -1, int n_valid = N) {
    const int64_t chunks = c_end < 0 ? (w.n_cols + kMmaK - 1) / kMmaK : c_end;
    if (c_begin >= chunks) return;
    w.fetch(c_begin * kMmaK);
    x.fetch(c_begin * kMmaK);
    w.store(st[0]);
    x.store(st[0]);
    __syncthreads();
    for (int64_t c = c_begin; c < chunks; ++c) {
        const bool more = c + 1 < chunks;
        if (more) {
            w.fetch((c + 1) * kMmaK);
            x.fetch((c + 1) * kMmaK);
        }
        mma_stage<N, NW, Partial>(st[(c - c_begin) % 2], acc, n_valid);  // the first chunk went to stage 0
        if (more) {
            w.store(st[(c + 1 - c_begin) % 2]);
            x.store(st[(c + 1 - c_begin) % 2]);
        }
        __syncthreads();
    }
}

// Calls f(mt, nt, r, row, token) for each of this thread's accumulators acc[.][mt][nt][r], with its
// tile-relative weight row and token.
template <int N, typename F>
__device__ inline void mma_for_each(F f) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int m0 = mma_warp_row0<N>(warp), n0 = mma_warp_token0<N>(warp);
#pragma unroll
    for (int mt = 0; mt < MmaShape<N>::MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < MmaShape<N>::NT; ++nt)
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const Coord c = mma_c_coord(lane, r);
                f(mt, nt, r, m0 + 16 * mt + c.line, n0 + 8 * nt + c.k);
            }
}

// Host launcher (matmul.cu): out[t][0 .. padded) = bf16(x[t][c]) for c < cols, 0 past them, for n
// rows; padded = mma_padded_cols(cols).
void to_bf16_rows(cudaStream_t s, const float *x, int64_t n, int64_t cols, __nv_bfloat16 *out);

}  // namespace dg::cuda
