// The int8 tensor-core tile (cuda/int8_mma.h has the form, its index maths and what the host check
// covers): a block of kI8Warps warps multiplies kI8Rows weight rows of NW matrices by 8 NT tokens.
// Per unit of k (kI8UnitK), the rows' raw bytes, the tokens' int8 codes and their scales are copied
// into shared memory by cp.async, kI8Stages units in flight, one barrier a unit; each warp then
// builds its A registers from its 16 rows' bytes and multiplies them on `mma.m16n8k32.s8`.
#pragma once

#include <cuda_runtime.h>

#include "cuda/common.cuh"
#include "cuda/int8_mma.h"

namespace dg::cuda {

// B bytes (4, 8 or 16) from global to shared memory without registers: the first n from gmem, zeros
// after (n = 0: nothing is read, but gmem stays a mapped address aligned to B).
template <int B>
__device__ inline void cp_async_zfill(void *smem, const void *gmem, int n) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    if constexpr (B == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(s), "l"(gmem), "n"(B), "r"(n));
#else
    __trap();  // the host selects the tensor set only on compute capability 8.0 and newer
#endif
}
__device__ inline void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ inline void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// d = A B + c over one k16 group (s8 x s8 -> s32, exact): A rows g, g + 8 at k 4t.., B k 4t.. of token g.
__device__ inline void mma_s8_k16(int32_t (&d)[4], const uint32_t (&a)[2], uint32_t b, const int32_t (&c)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%7,%8,%9,%10};\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(b), "r"(c[0]), "r"(c[1]), "r"(c[2]), "r"(c[3]));
#else
    __trap();
#endif
}

// d = A B + c over one k32 step (s8 x s8 -> s32, exact).
__device__ inline void mma_s8(int32_t (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const int32_t (&c)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(c[0]), "r"(c[1]), "r"(c[2]), "r"(c[3]));
#else
    __trap();
#endif
}

// The operands of a block over rows row0.. of expert e (0 for a dense weight) of NW matrices of one
// type and shape, with the activations' codes and scales in the form of that type.
template <TensorType T, int NW>
__device__ inline I8Operands<NW> i8_operands(const WeightView (&w)[NW], int64_t e, int64_t row0, const int8_t *xq, const float *xd) {
    I8Operands<NW> op;
#pragma unroll
    for (int m = 0; m < NW; ++m) op.w[m] = w[m].data + e * w[m].expert_stride + row0 * w[m].row_stride;
    op.row_stride = w[0].row_stride;
    op.rows_left = w[0].rows - row0;
    op.cols = w[0].cols;
    op.xq = xq;
    op.xd = xd;
    op.xq_stride = i8_padded_cols(w[0].cols);
    op.xd_stride = i8_scales_per_row(I8Weight<T>::kAct, w[0].cols);
    return op;
}

// Issues this thread's copies of unit u into stage s (not committed): i8_stage_copies on cp.async.
template <TensorType T, int NW, int NT>
__device__ inline void i8_load_stage(I8Stage<T, NW, NT> &s, const I8Operands<NW> &op, const int32_t *tok, int64_t u) {
    i8_stage_copies(static_cast<int>(threadIdx.x), s, op, tok, u, [](auto size, void *dst, const void *src, int n) {
        cp_async_zfill<decltype(size)::value>(dst, src, n);
    });
}

// This lane's B registers of k32 step j for the n-tiles in use.
template <TensorType T, int NW, int NT>
__device__ inline void i8_b_regs(const I8Stage<T, NW, NT> &s, int j, int n_used, uint32_t (&b)[NT][2]) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const Coord c = i8_b_coord(lane, r);
            b[nt][r] = nt < n_used ? load_u32(reinterpret_cast<const uint8_t *>(&s.x[8 * nt + c.line][32 * j + c.k])) : 0u;
        }
}

// acc += one super-block of Q4_K rows times the tokens (int8_mma.h: exact sums, then the CPU's combine).
template <int NW, int NT>
__device__ inline void i8_stage_q4_k(const I8Stage<TensorType::Q4_K, NW, NT> &s, int n_used, float (&acc)[NW][NT][4]) {
    using Q = I8Weight<TensorType::Q4_K>;
    const int lane = threadIdx.x % 32, t = lane % 4, r0 = 16 * (threadIdx.x / 32) + lane / 4;
    Q::Head head[NW][2];
#pragma unroll
    for (int m = 0; m < NW; ++m)
#pragma unroll
        for (int h = 0; h < 2; ++h) head[m][h] = Q::head(s.w[m][r0 + 8 * h]);
    int32_t isum[NW][NT][4] = {}, msum[NW][NT][4] = {};
    const int32_t zero[4] = {0, 0, 0, 0};
#pragma unroll
    for (int p = 0; p < 4; ++p) {
        uint32_t cw[NW][2][2];
#pragma unroll
        for (int m = 0; m < NW; ++m)
#pragma unroll
            for (int h = 0; h < 2; ++h) Q::code_words(s.w[m][r0 + 8 * h], p, t, cw[m][h]);
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int j = 2 * p + half;
            uint32_t b[NT][2];
            i8_b_regs(s, j, n_used, b);
#pragma unroll
            for (int m = 0; m < NW; ++m) {
                uint32_t a[4];
                Q::a_regs(cw[m][0], cw[m][1], j, a);
                const uint32_t mg = Q::min_reg(head[m][0], j), mg8 = Q::min_reg(head[m][1], j);
                const uint32_t am[4] = {mg, mg8, mg, mg8};
                const int32_t sc[2] = {Q::sub_scale(head[m][0], j), Q::sub_scale(head[m][1], j)};
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) {
                    if (nt >= n_used) continue;  // uniform over the warp
                    int32_t c[4];
                    mma_s8(c, a, b[nt], zero);
#pragma unroll
                    for (int r = 0; r < 4; ++r) isum[m][nt][r] += sc[r / 2] * c[r];
                    mma_s8(msum[m][nt], am, b[nt], msum[m][nt]);
                }
            }
        }
    }
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
        if (nt >= n_used) continue;
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const float d_x = s.xd[8 * nt + mma_c_coord(lane, r).k][0];
#pragma unroll
            for (int m = 0; m < NW; ++m) acc[m][nt][r] = Q::combine(acc[m][nt][r], d_x, head[m][r / 2], isum[m][nt][r], msum[m][nt][r]);
        }
    }
}

// acc += one super-block of Q6_K rows times the tokens: per 16-element group a k16 product and the
// group's scale into isum, per super-block the CPU's combine. A row's unit sits q6_k_shift bytes into
// its line (row_stride: the matrix's; u: the unit).
template <int NW, int NT>
__device__ inline void i8_stage_q6_k(const I8Stage<TensorType::Q6_K, NW, NT> &s, size_t row_stride, int64_t u, int n_used,
                                     float (&acc)[NW][NT][4]) {
    using Q = I8Weight<TensorType::Q6_K>;
    const int lane = threadIdx.x % 32, t = lane % 4, r0 = 16 * (threadIdx.x / 32) + lane / 4;
    const uint8_t *blk[NW][2];
#pragma unroll
    for (int m = 0; m < NW; ++m)
#pragma unroll
        for (int h = 0; h < 2; ++h) blk[m][h] = s.w[m][r0 + 8 * h] + q6_k_shift(row_stride, r0 + 8 * h, u);
    int32_t isum[NW][NT][4] = {};
    const int32_t zero[4] = {0, 0, 0, 0};
#pragma unroll
    for (int j = 0; j < Q::kSteps; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            uint32_t b[NT];
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                const Coord c = i8_b_coord(lane, 0);
                b[nt] = nt < n_used ? load_u32(reinterpret_cast<const uint8_t *>(&s.x[8 * nt + c.line][32 * j + 16 * h + c.k])) : 0u;
            }
#pragma unroll
            for (int m = 0; m < NW; ++m) {
                const uint32_t a[2] = {Q::a_reg(blk[m][0], j, h, t), Q::a_reg(blk[m][1], j, h, t)};
                const int32_t sc[2] = {Q::group_scale(blk[m][0], 2 * j + h), Q::group_scale(blk[m][1], 2 * j + h)};
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) {
                    if (nt >= n_used) continue;  // uniform over the warp
                    int32_t c[4];
                    mma_s8_k16(c, a, b[nt], zero);
#pragma unroll
                    for (int r = 0; r < 4; ++r) isum[m][nt][r] += sc[r / 2] * c[r];
                }
            }
        }
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
        if (nt >= n_used) continue;
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const float d_x = s.xd[8 * nt + mma_c_coord(lane, r).k][0];
#pragma unroll
            for (int m = 0; m < NW; ++m) acc[m][nt][r] = Q::combine(acc[m][nt][r], d_x, Q::d(blk[m][r / 2]), isum[m][nt][r]);
        }
    }
}

// acc += `blocks` 32-element blocks (8 but in a row's last unit) of Q5_0 / Q8_0 rows times the tokens.
template <TensorType T, int NW, int NT>
__device__ inline void i8_stage_blocks(const I8Stage<T, NW, NT> &s, int blocks, int n_used, float (&acc)[NW][NT][4]) {
    using Q = I8Weight<T>;
    const int lane = threadIdx.x % 32, t = lane % 4, r0 = 16 * (threadIdx.x / 32) + lane / 4;
    const int32_t zero[4] = {0, 0, 0, 0};
#pragma unroll
    for (int b = 0; b < Q::kSteps; ++b) {
        if (b >= blocks) break;  // uniform over the block
        uint32_t bx[NT][2];
        i8_b_regs(s, b, n_used, bx);
#pragma unroll
        for (int m = 0; m < NW; ++m) {
            uint32_t a[4];
            Q::a_regs(s.w[m][r0], s.w[m][r0 + 8], b, t, a);
            const float d_w[2] = {Q::block_d(s.w[m][r0], b), Q::block_d(s.w[m][r0 + 8], b)};
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                if (nt >= n_used) continue;
                int32_t c[4];
                mma_s8(c, a, bx[nt], zero);
#pragma unroll
                for (int r = 0; r < 4; ++r)
                    acc[m][nt][r] = i8_block_combine(acc[m][nt][r], c[r], d_w[r / 2], s.xd[8 * nt + mma_c_coord(lane, r).k][b]);
            }
        }
    }
}

// acc += W_m . X over every unit of k, through kI8Stages stages (st: dynamic shared memory).
// tok must be written, and the block synchronised, before the call.
template <TensorType T, int NW, int NT>
__device__ inline void i8_accumulate(I8Stage<T, NW, NT> *st, const I8Operands<NW> &op, const int32_t *tok, int n_used,
                                     float (&acc)[NW][NT][4]) {
    const int64_t units = i8_units(op.cols);
#pragma unroll
    for (int s = 0; s < kI8Stages - 1; ++s) {
        if (s < units) i8_load_stage(st[s], op, tok, s);
        cp_async_commit();  // empty groups keep the count the wait below assumes
    }
    for (int64_t u = 0; u < units; ++u) {
        cp_async_wait<kI8Stages - 2>();  // unit u has landed (this thread's copies) ...
        __syncthreads();                 // ... everyone's, and unit u - 1's stage is read by all
        const int64_t next = u + kI8Stages - 1;
        if (next < units) i8_load_stage(st[next % kI8Stages], op, tok, next);
        cp_async_commit();
        const I8Stage<T, NW, NT> &s = st[u % kI8Stages];
        if constexpr (T == TensorType::Q4_K)
            i8_stage_q4_k(s, n_used, acc);
        else if constexpr (T == TensorType::Q6_K)
            i8_stage_q6_k(s, op.row_stride, u, n_used, acc);
        else
            i8_stage_blocks(s, i8_unit_bytes_at(T, op.cols, u) / I8Weight<T>::kBlockBytes, n_used, acc);
    }
}

// Calls f(m-independent: nt, r, row within the block, token within the tile) for each accumulator
// of the thread in the n-tiles in use.
template <int NT, typename F>
__device__ inline void i8_for_each(int n_used, F f) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
        if (nt >= n_used) continue;
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const Coord c = mma_c_coord(lane, r);
            f(nt, r, 16 * warp + c.line, 8 * nt + c.k);
        }
    }
}

}  // namespace dg::cuda
