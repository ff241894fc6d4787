// Hopper warpgroup products (DGEMMA_CUDA_WGMMA=1, sm_90a; the index maths and stage layout are in
// cuda/wgmma.h, checked on the host by tests/wgmma_layout_check.cpp): the two vocabulary-sized products
// of a step, the logits (lm_head: 262144 rows x 256 tokens x 2816) and the soft embedding (2816
// columns x 256 tokens x 262144), on `wgmma.mma_async.m64n256k16`, whose operands the tensor cores read
// from shared memory themselves. Both are bf16 x bf16 with float32 sums, like the tensor set's
// mma.sync tiles (cuda/tile_mma.cuh), and held to the same 1e-2 against the CPU.
//
// Why: HOPPER.md's rule (a matrix kernel whose SASS shows only HMMA is on the slower path), and run
// 10's numbers: lm_head 4.7 ms and the soft embedding 10.9 ms a step for 0.38 TFLOP each, about 80
// and 35 TFLOP/s on a card measured at about 790 in bf16.
//
// A block: kWgRows weight rows (or table columns) x kWgTokens tokens, two warpgroups, k in stages of
// kWgK. Per stage each thread fetches its weight groups into registers (WeightFetch8), issues its
// token copies (cp.async), starts the warpgroup's two k16 products on the stage the previous
// iteration filled, then decodes its weights into the other stage while they run; one barrier a
// stage. The weights kWgPrefetchStages stages ahead are prefetched into L2 (wgmma.h says why).
// Weights are dequantized once per block; a 256-token pass reads the activations from L2 once per
// 128 rows.
#include <cuda_bf16.h>

#include "cuda/int8_mma.cuh"
#include "cuda/kernels.h"
#include "cuda/tile_gemm.cuh"
#include "cuda/tile_mma.cuh"
#include "cuda/wgmma.h"

namespace dg::cuda {

namespace {

// The sm_90a instructions exist only in that target's code; anything else traps (the host launches
// these kernels only after wg_probe_kernel, from the same cubin, said 1).
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define DG_WGMMA 1
#else
#define DG_WGMMA 0
#endif

__global__ void wg_probe_kernel(int *out) { *out = DG_WGMMA; }

// Shared memory written by ordinary stores and cp.async, read next by the tensor cores (the async
// proxy): each writing thread fences before the barrier (HOPPER.md, "Ordering").
__device__ inline void wg_fence_shared() {
#if DG_WGMMA
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// d += A B for one k16 step of a warpgroup: A = 64 rows x 16 k, B = 256 tokens x 16 k, both K-major
// in shared memory as the descriptors say; d as wgmma.h's accumulator layout.
__device__ inline void wg_mma_step(float (&d)[kWgAcc], uint64_t desc_a, uint64_t desc_b) {
#if DG_WGMMA
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, "
        "%21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, "
        "%40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, "
        "%59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, "
        "%78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, "
        "%97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, "
        "%113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
        "}, %128, %129, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
          "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
          "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
          "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
          "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
          "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
          "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "l"(desc_a), "l"(desc_b), "r"(1));
#else
    __trap();
#endif
}

__device__ inline void wg_begin() {
#if DG_WGMMA
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ inline void wg_commit() {
#if DG_WGMMA
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
// Waits for this warpgroup's products; the empty asm after it ties every accumulator to the wait, so
// no read of one moves above it.
__device__ inline void wg_wait(float (&d)[kWgAcc]) {
#if DG_WGMMA
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#pragma unroll
    for (int i = 0; i < kWgAcc; ++i) asm volatile("" : "+f"(d[i])::"memory");
#endif
}

__device__ inline void prefetch_l2(const uint8_t *p) { asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p)); }

__device__ inline uint32_t bf16_word(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t *>(&h);
}

// The main loop over `stages` stages of k. A: fetch_a(stage index) loads this thread's weight groups
// into registers, store_a(stage bytes, stage index) decodes them into shared memory; load_b(stage
// bytes, stage index) issues the tokens' cp.async copies (not committed).
template <typename FetchA, typename StoreA, typename LoadB>
__device__ inline void wg_accumulate(uint8_t *smem, int64_t stages, float (&acc)[kWgAcc], FetchA fetch_a, StoreA store_a,
                                     LoadB load_b) {
#pragma unroll
    for (int i = 0; i < kWgAcc; ++i) acc[i] = 0.0f;
    if (stages <= 0) return;
    const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    const int group = threadIdx.x / 128;
    fetch_a(0);
    load_b(smem, 0);
    cp_async_commit();
    store_a(smem, 0);
    cp_async_wait<0>();
    wg_fence_shared();
    __syncthreads();
    for (int64_t c = 0; c < stages; ++c) {
        const int st = static_cast<int>(c & 1);
        const bool more = c + 1 < stages;
        uint8_t *next = smem + (st ^ 1) * kWgStageBytes;
        if (more) {
            fetch_a(c + 1);
            load_b(next, c + 1);
            cp_async_commit();
        }
        const uint32_t a = base + st * kWgStageBytes, b = a + kWgStageA;
        wg_begin();
#pragma unroll
        for (int s = 0; s < kWgK / 16; ++s)
            wg_mma_step(acc, wg_descriptor(a + wg_a_step_offset(group, s)), wg_descriptor(b + wg_b_step_offset(s)));
        wg_commit();
        if (more) store_a(next, c + 1);
        cp_async_wait<0>();
        wg_fence_shared();
        wg_wait(acc);
        __syncthreads();
    }
}

// Calls f(row, token, value) for each of this thread's accumulators (wgmma.h's layout; row within
// the block's kWgRows, token within its kWgTokens).
template <typename F>
__device__ inline void wg_for_each_acc(const float (&acc)[kWgAcc], F f) {
#pragma unroll
    for (int i = 0; i < kWgAcc; ++i) {
        const WgCoord o = wg_acc_coord(threadIdx.x, i);
        f(o.line, o.k, acc[i]);
    }
}

// The tokens' operand of a stage: rows row(token line) of bf16 (null: zeros), k0 + 8 (g % 8) of each,
// zeros at or past `cols` (a multiple of 8); a zero fill names `mapped` (any mapped address of the
// operand) as its source, reading none of it.
template <typename RowOf>
__device__ inline void wg_load_tokens(uint8_t *stage, RowOf row, int64_t k0, int64_t cols, const __nv_bfloat16 *mapped) {
#pragma unroll
    for (int i = 0; i < kWgBGroups; ++i) {
        const WgCoord c = wg_group_coord(threadIdx.x, i);
        const __nv_bfloat16 *r = row(c.line);
        const bool in = r && k0 + c.k < cols;
        cp_async_zfill<16>(stage + kWgStageA + wg_offset(c.line, c.k), in ? r + k0 + c.k : mapped, in ? 16 : 0);
    }
}

// y[t][r] = ep(sum_k W[r][k] x[t][k]) for the block's rows and tokens; xb: n rows of bf16, padded
// to mma_padded_cols(w.cols) (zeros past w.cols).
template <TensorType T>
__global__ void __launch_bounds__(kWgThreads, 1) wg_matmul_kernel(WeightView w, const __nv_bfloat16 *xb, int64_t n, float *y,
                                                                   Epilogue ep) {
    extern __shared__ __align__(128) uint8_t smem[];
    const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kWgRows, t0 = static_cast<int64_t>(blockIdx.y) * kWgTokens;
    const int64_t padded = mma_padded_cols(w.cols), stages = (w.cols + kWgK - 1) / kWgK;
    WeightFetch8<T> f[kWgDenseGroups];
    float acc[kWgAcc];
    wg_accumulate(
        smem, stages, acc,
        [&](int64_t c) {
#pragma unroll
            for (int i = 0; i < kWgDenseGroups; ++i) {
                const WgCoord g = wg_group_coord(threadIdx.x, i);
                f[i].fetch(w.data, w.row_stride, w.rows, w.cols, r0 + g.line, c * kWgK + g.k);
                // The row's blocks kWgPrefetchStages ahead, by the thread holding its first k.
                const int64_t k_ahead = (c + kWgPrefetchStages) * kWgK;
                if (g.k == 0 && r0 + g.line < w.rows && k_ahead < w.cols && wg_dense_prefetch_at(T, k_ahead)) {
                    const uint8_t *row = w.data + (r0 + g.line) * w.row_stride;
                    wg_for_each_line(wg_dense_prefetch_bytes(T, k_ahead), [&](int64_t b) { prefetch_l2(row + b); });
                }
            }
        },
        [&](uint8_t *stage, int64_t) {
#pragma unroll
            for (int i = 0; i < kWgDenseGroups; ++i) {
                const WgCoord g = wg_group_coord(threadIdx.x, i);
                float v[8];
                f[i].value(v);
                store8_bf16(reinterpret_cast<__nv_bfloat16 *>(stage + wg_offset(g.line, g.k)), v);
            }
        },
        [&](uint8_t *stage, int64_t c) {
            wg_load_tokens(stage, [&](int tl) { return t0 + tl < n ? xb + (t0 + tl) * padded : nullptr; }, c * kWgK, padded, xb);
        });
    wg_for_each_acc(acc, [&](int row, int t, float v) {
        if (r0 + row < w.rows && t0 + t < n) y[(t0 + t) * w.rows + r0 + row] = ep(v);
    });
}

// The soft embedding's part blockIdx.y: partial[part][t][e] = sum over the part's vocabulary rows v of
// probs[t - t_base][v] table[v][e], for the block's columns e and the tokens t_base .. t_end - 1
// (at most kWgTokens); probs rows are mma_padded_cols(V) wide.
template <TensorType T>
__global__ void __launch_bounds__(kWgThreads, 1) wg_soft_embed_kernel(WeightView table, const __nv_bfloat16 *probs,
                                                                       int64_t t_base, int64_t t_end, int64_t n,
                                                                       int64_t part_rows, float *partial) {
    extern __shared__ __align__(128) uint8_t smem[];
    const int64_t V = table.rows, E = table.cols, Vp = mma_padded_cols(V);
    const int64_t e0 = static_cast<int64_t>(blockIdx.x) * kWgRows, v_begin = static_cast<int64_t>(blockIdx.y) * part_rows;
    const int64_t v_end = min(V, v_begin + part_rows), stages = v_end > v_begin ? (v_end - v_begin + kWgK - 1) / kWgK : 0;
    WeightFetch8<T> f[kWgTurnedGroups][2];
    float acc[kWgAcc];
    wg_accumulate(
        smem, stages, acc,
        [&](int64_t c) {
#pragma unroll
            for (int i = 0; i < kWgTurnedGroups; ++i) {
                const WgCoord g = wg_turned_coord(threadIdx.x, i);
                const int64_t v = v_begin + c * kWgK + g.k;  // rows at or past v_end read as zeros
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    f[i][h].fetch(table.data, table.row_stride, v_end, E, v + h, e0 + g.line);
                    // The pair's rows kWgPrefetchStages ahead, their blocks under the block's columns,
                    // by the threads of the first column group.
                    const int64_t v_ahead = v + h + kWgPrefetchStages * kWgK;
                    if (g.line == 0 && v_ahead < v_end) {
                        const uint8_t *row = table.data + v_ahead * table.row_stride;
                        wg_for_each_line(wg_block_bytes(T, e0, min(static_cast<int64_t>(kWgRows), E - e0)),
                                         [&](int64_t b) { prefetch_l2(row + b); });
                    }
                }
            }
        },
        [&](uint8_t *stage, int64_t) {
#pragma unroll
            for (int i = 0; i < kWgTurnedGroups; ++i) {
                const WgCoord g = wg_turned_coord(threadIdx.x, i);
                float lo[8], hi[8];
                f[i][0].value(lo);
                f[i][1].value(hi);
#pragma unroll
                for (int j = 0; j < 8; ++j)
                    *reinterpret_cast<uint32_t *>(stage + wg_offset(g.line + j, g.k)) = bf16_word(lo[j], hi[j]);
            }
        },
        [&](uint8_t *stage, int64_t c) {
            wg_load_tokens(stage, [&](int tl) { return t_base + tl < t_end ? probs + tl * Vp : nullptr; },
                           v_begin + c * kWgK, Vp, probs);
        });
    float *part = partial + static_cast<int64_t>(blockIdx.y) * n * E;
    wg_for_each_acc(acc, [&](int col, int t, float v) {
        if (e0 + col < E && t_base + t < t_end) part[(t_base + t) * E + e0 + col] = v;
    });
}

}  // namespace

bool wg_prepare() {
    int *d = nullptr, h = 0;
    check(cudaMalloc(&d, sizeof(int)), "cudaMalloc (wgmma probe)");
    wg_probe_kernel<<<1, 1>>>(d);
    const cudaError_t launched = cudaGetLastError();
    const cudaError_t copied = cudaMemcpy(&h, d, sizeof(int), cudaMemcpyDeviceToHost);
    cudaFree(d);
    check(launched, "wgmma probe");
    check(copied, "wgmma probe");
    if (h != 1) return false;
    // Each kernel's dynamic shared memory raised to kWgSmemBytes once, on the current device.
    for (TensorType t : kCudaWeightTypes)
        with_weight_type(t, [&](auto type) {
            constexpr TensorType T = decltype(type)::value;
            check(cudaFuncSetAttribute(wg_matmul_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, kWgSmemBytes),
                  "cudaFuncSetAttribute (wgmma products)");
            check(cudaFuncSetAttribute(wg_soft_embed_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, kWgSmemBytes),
                  "cudaFuncSetAttribute (wgmma soft embedding)");
        });
    return true;
}

bool wg_matmul_runs(const WeightView &w, int64_t n, int sm_count) {
    return n > 0 && w.rows >= static_cast<int64_t>(kWgRows) * sm_count;
}

void wg_matmul(cudaStream_t s, const WeightView &w, const __nv_bfloat16 *xb, int64_t n, float *y, Epilogue ep) {
    for (int64_t t0 = 0; t0 < n; t0 += kWgTokens * kMaxGridRows) {
        const int64_t m = min(kWgTokens * kMaxGridRows, n - t0);
        const dim3 grid(blocks_for(w.rows, kWgRows), blocks_for(m, kWgTokens));
        with_weight_type(w.type, [&](auto type) {
            constexpr TensorType T = decltype(type)::value;
            wg_matmul_kernel<T><<<grid, kWgThreads, kWgSmemBytes, s>>>(w, xb + t0 * mma_padded_cols(w.cols), m, y + t0 * w.rows, ep);
        });
        check_launch("matmul (warpgroup products)");
    }
}

void wg_soft_embed(cudaStream_t s, const WeightView &table, const __nv_bfloat16 *probs, int64_t t_base, int64_t t_end, int64_t n,
                   int parts, float *partial) {
    const int64_t part_rows = wg_part_rows(table.rows, parts);
    for (int64_t t = t_base; t < t_end; t += kWgTokens) {
        const dim3 grid(blocks_for(table.cols, kWgRows), static_cast<unsigned>(parts));
        with_weight_type(table.type, [&](auto type) {
            constexpr TensorType T = decltype(type)::value;
            wg_soft_embed_kernel<T><<<grid, kWgThreads, kWgSmemBytes, s>>>(table, probs + (t - t_base) * mma_padded_cols(table.rows),
                                                                           t, min(t_end, t + kWgTokens), n, part_rows, partial);
        });
        check_launch("soft_embed (warpgroup products)");
    }
}

}  // namespace dg::cuda
