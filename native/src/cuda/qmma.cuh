// Warp tiles of quantized weights on tensor cores, the scales applied after the product
// (cuda/quant_mma.h has the form, its index maths and the host check). A warp owns 16 weight rows
// (of NW matrices sharing a shape, e.g. the experts' gate and up) and up to kQmmaTokens tokens; it
// reads its rows' bytes straight into registers, one chunk ahead, with no shared memory and no
// barrier, and each row's bytes once per token tile. Tokens' operands are bf16 rows padded to whole
// chunks (to_bf16_rows) with their 32-element sums (bf16_block_sums), read through L1.
#pragma once

#include <cuda_bf16.h>

#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/mma_layout.h"
#include "cuda/quant_mma.h"

namespace dg::cuda {

constexpr int kQmmaNT = 4, kQmmaTokens = 8 * kQmmaNT;  // a warp's tokens: 4 n8 tiles
constexpr int kQmmaWarps = 4, kQmmaThreads = 32 * kQmmaWarps, kQmmaWarpRows = 16;

// Whether a weight's rows meet the loads of its Qmma form: Q4_K reads 16-byte heads, Q5_0 16-bit words.
inline bool qmma_runs(const WeightView &w) {
    if (!qmma_type(w.type)) return false;
    const size_t align = w.type == TensorType::Q4_K ? 16 : 2;
    return (reinterpret_cast<uintptr_t>(w.data) | w.row_stride | w.expert_stride) % align == 0;
}

// f(type) with the weight's Q4_K or Q5_0 as a compile-time constant (qmma_runs(w) holds).
template <typename F>
void with_qmma_type(TensorType t, F f) {
    if (t == TensorType::Q4_K) f(std::integral_constant<TensorType, TensorType::Q4_K>{});
    else f(std::integral_constant<TensorType, TensorType::Q5_0>{});
}

// A thread's operands. row[w][half]: row g + 8 half of matrix w; x_row[nt]: the row (of x, rows
// x_stride bf16 apart) of token g of n-tile nt; sums_row[nt][j]: the row (of sums, sums_stride
// apart) of token 2t + j of n-tile nt, the accumulators' columns. Past the matrix or the tile's
// tokens the callers name a valid row instead (the tile's first): a column or row of the product
// depends on its own operands only, so the extra ones are computed and not stored, with no test
// in the loop. n-tiles from n_used on are skipped (the test is uniform over the warp).
template <int NW>
struct QmmaOperands {
    const uint8_t *row[NW][2];
    const __nv_bfloat16 *x;
    const float *sums;
    int64_t x_stride, sums_stride;
    int32_t x_row[kQmmaNT], sums_row[kQmmaNT][2];
    int n_used;
};

// The token operands of a tile of `in_tile` tokens (at least one): row_of(sl) is the row, in x (x_stride
// bf16 apart) and in sums (x_stride / 32 apart), of the tile's token sl; past in_tile the tile's first
// (computed, not stored).
template <int NW, typename RowOf>
__device__ inline void qmma_bind_tokens(QmmaOperands<NW> &op, const __nv_bfloat16 *x, const float *sums, int64_t x_stride,
                                        int64_t in_tile, RowOf row_of) {
    const int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
    const auto row = [&](int sl) { return static_cast<int32_t>(row_of(sl < in_tile ? sl : 0)); };
    op.x = x;
    op.x_stride = x_stride;
    op.sums = sums;
    op.sums_stride = x_stride / kQmmaSub;
#pragma unroll
    for (int nt = 0; nt < kQmmaNT; ++nt) {
        op.x_row[nt] = row(8 * nt + g);
#pragma unroll
        for (int j = 0; j < 2; ++j) op.sums_row[nt][j] = row(8 * nt + 2 * t + j);
    }
    op.n_used = static_cast<int>((in_tile + 7) / 8 < kQmmaNT ? (in_tile + 7) / 8 : kQmmaNT);
}

// acc[w][nt][r] += sum over k < K of W_w[row][k] x[token][k], for the thread's accumulators (C
// fragment r of n-tile nt: row g + 8 (r / 2), token 8 nt + 2t + r % 2). K: a multiple of the chunk
// times Q's groups. The chunks of a group run unrolled, so each one's scale bytes are constants;
// the activation and sum pointers carry the lane's offsets, so a load's address is a pointer plus
// a constant for each chunk.
template <TensorType T, int NW>
__device__ inline void qmma_accumulate(const QmmaOperands<NW> &op, int64_t K, float (&acc)[NW][kQmmaNT][4]) {
    using Q = Qmma<T>;
    using Raw = typename Q::Raw;
    const int t = threadIdx.x % 4;
    const __nv_bfloat16 *xp[kQmmaNT];
    const float *sp[kQmmaNT][2];
#pragma unroll
    for (int nt = 0; nt < kQmmaNT; ++nt) {
        xp[nt] = op.x + op.x_row[nt] * op.x_stride + Q::lane_k(t);
#pragma unroll
        for (int j = 0; j < 2; ++j) sp[nt][j] = op.sums + op.sums_row[nt][j] * op.sums_stride;
    }
    // One chunk loaded ahead for a single matrix; two (the experts' gate and up) load at the top of
    // each chunk instead: their raw words twice would not fit two blocks a multiprocessor.
    constexpr bool kAhead = NW == 1;
    Raw raw[NW][2], next[NW][2];
    const auto load = [&](int64_t c, Raw (&r)[NW][2]) {
#pragma unroll
        for (int w = 0; w < NW; ++w)
#pragma unroll
            for (int half = 0; half < 2; ++half) Q::load(op.row[w][half], c, t, r[w][half]);
    };
    const int64_t chunks = K / Q::kChunk;
    if (kAhead && chunks > 0) load(0, raw);
    for (int64_t c0 = 0; c0 < chunks; c0 += Q::kGroups) {
#pragma unroll
        for (int group = 0; group < Q::kGroups; ++group) {
            const int64_t c = c0 + group;
            if (!kAhead) load(c, raw);
            else if (c + 1 < chunks) load(c + 1, next);
#pragma unroll
            for (int h = 0; h < Q::kSubs; ++h) {
                const int64_t sub = Q::kChunk / kQmmaSub * c + h;
                uint32_t b[2][kQmmaNT][2];
                float xs[kQmmaNT][2];
#pragma unroll
                for (int nt = 0; nt < kQmmaNT; ++nt) {
                    if (nt >= op.n_used) continue;
#pragma unroll
                    for (int s = 0; s < 2; ++s) {
                        const uint2 v = __ldg(reinterpret_cast<const uint2 *>(xp[nt] + Q::step_k(c, h, s)));
                        b[s][nt][0] = v.x;
                        b[s][nt][1] = v.y;
                    }
#pragma unroll
                    for (int j = 0; j < 2; ++j) xs[nt][j] = __ldg(sp[nt][j] + sub);
                }
#pragma unroll
                for (int w = 0; w < NW; ++w) {
                    float tmp[kQmmaNT][4] = {};
#pragma unroll
                    for (int s = 0; s < 2; ++s) {
                        uint32_t lo[2], hi[2];  // rows g, g + 8
                        qmma_a_regs<T>(raw[w][0], h, s, t, lo);
                        qmma_a_regs<T>(raw[w][1], h, s, t, hi);
                        const uint32_t a[4] = {lo[0], hi[0], lo[1], hi[1]};
#pragma unroll
                        for (int nt = 0; nt < kQmmaNT; ++nt)
                            if (nt < op.n_used) mma_bf16_16816(tmp[nt], a, b[s][nt]);
                    }
                    float a_lo, b_lo, a_hi, b_hi;
                    Q::scale(raw[w][0], group, h, a_lo, b_lo);
                    Q::scale(raw[w][1], group, h, a_hi, b_hi);
#pragma unroll
                    for (int nt = 0; nt < kQmmaNT; ++nt) {
                        if (nt >= op.n_used) continue;
                        acc[w][nt][0] = fmaf(a_lo, tmp[nt][0], fmaf(b_lo, xs[nt][0], acc[w][nt][0]));
                        acc[w][nt][1] = fmaf(a_lo, tmp[nt][1], fmaf(b_lo, xs[nt][1], acc[w][nt][1]));
                        acc[w][nt][2] = fmaf(a_hi, tmp[nt][2], fmaf(b_hi, xs[nt][0], acc[w][nt][2]));
                        acc[w][nt][3] = fmaf(a_hi, tmp[nt][3], fmaf(b_hi, xs[nt][1], acc[w][nt][3]));
                    }
                }
            }
            if (kAhead && c + 1 < chunks) {
#pragma unroll
                for (int w = 0; w < NW; ++w)
#pragma unroll
                    for (int half = 0; half < 2; ++half) raw[w][half] = next[w][half];
            }
        }
    }
}

// Calls f(nt, r, row, token) for each accumulator of the thread: row within the warp's 16, token
// within its kQmmaTokens.
template <typename F>
__device__ inline void qmma_for_each(int n_used, F f) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int nt = 0; nt < kQmmaNT; ++nt)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            if (nt >= n_used) continue;
            const Coord c = mma_c_coord(lane, r);
            f(nt, r, c.line, 8 * nt + c.k);
        }
}

// sums[i] = the float sum, in k order, of the 32 bf16 of block i of rows [n][padded] (padded a
// multiple of 32): the sub-block sums the scale-after form needs.
void bf16_block_sums(cudaStream_t s, const __nv_bfloat16 *rows, int64_t n, int64_t padded, float *sums);

}  // namespace dg::cuda
