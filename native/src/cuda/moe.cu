// The router and the experts, all on the device: tokens grouped by expert on the device, one launch
// per projection covering every expert (experts without tokens return at once), the weighted sum
// in increasing expert id as the CPU. No host round trip. The projections have a per-row reference
// kernel (a warp per weight row, kSlots slots at a time), a tiled one (cuda/tile_gemm.cuh: each
// expert's weight tile dequantized once for up to 64 of its slots), the tensor set's bf16 tiles, and
// its int8 tiles (int8_mma.cu) when the backend gives their scratch, chosen as in matmul.cu.
#include "cuda/dequant.h"
#include "cuda/expert_group.h"
#include "cuda/kernels.h"
#include "cuda/qmma.cuh"
#include "cuda/tile_gemm.cuh"
#include "cuda/tile_mma.cuh"
#include "router_math.h"

namespace dg::cuda {

namespace {

constexpr int kRouteThreads = 256;

// The router's input for one token, by the block: z = rmsnorm_noscale(x) * scale * E^-1/2 (the sum
// of squares in double, as the CPU). `red`: shared scratch of 32.
__device__ void route_input_row(const float *xr, int64_t E, const float *scale, float eps, float *z, double *red) {
    double ss = 0.0;
    for (int64_t i = threadIdx.x; i < E; i += blockDim.x) ss += static_cast<double>(xr[i]) * xr[i];
    ss = block_sum(ss, red);
    const float inv_rms = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(E) + eps));
    const float root = static_cast<float>(1.0 / sqrt(static_cast<double>(E)));
    // 4 rounds' loads before their stores (z may alias them for all the compiler knows: each load would
    // wait behind the previous store); the same values, the same bits.
    for (int64_t base = threadIdx.x; base < E; base += 4 * static_cast<int64_t>(blockDim.x)) {
        float v[4], sv[4];
#pragma unroll
        for (int b = 0; b < 4; ++b) {
            const int64_t i = base + b * static_cast<int64_t>(blockDim.x);
            v[b] = i < E ? xr[i] : 0.0f;
            sv[b] = i < E ? scale[i] : 0.0f;
        }
#pragma unroll
        for (int b = 0; b < 4; ++b) {
            const int64_t i = base + b * static_cast<int64_t>(blockDim.x);
            if (i < E) z[i] = v[b] * inv_rms * sv[b] * root;
        }
    }
}

// One block per token: z as route_input_row; p = softmax(W z); top-k of p (ties to the lower id)
// renormalised, times per_expert_scale. Shared: z [E] then p [X].
__global__ void route_kernel(WeightView w, const float *x, const float *scale, const float *pes, float eps, int k,
                             int32_t *expert, float *weight) {
    extern __shared__ float sh[];
    __shared__ double red[32];
    const int64_t E = w.cols, X = w.rows, t = blockIdx.x;
    float *z = sh, *p = sh + E;
    route_input_row(x + t * E, E, scale, eps, z, red);
    __syncthreads();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int64_t e = warp; e < X; e += blockDim.x / 32) {
        const uint8_t *row = w.data + e * w.row_stride;
        float acc = 0.0f;
        for (int64_t i = lane; i < E; i += 32) acc += dequant(w.type, row, i) * z[i];
        acc = warp_sum(acc);
        if (lane == 0) p[e] = acc;
    }
    __syncthreads();
    if (threadIdx.x == 0) route_top_k(p, X, k, pes, expert + t * k, weight + t * k);
}

// The router in three launches (the default sets): z = rmsnorm_noscale(x) * scale * E^-1/2 per
// token (route_input_kernel), the logits z . W^T, a warp per (token, expert) (route_logits_kernel),
// then softmax and top-k per token, a warp each (route_select_kernel, route_top_k_one_pass's
// arithmetic). route_kernel above is the reference (route_top_k); the logits are its sums, term for
// term (lane-strided, then warp_sum), in float32 under every set: the top-k choice is sensitive to
// rounding.
__global__ void route_input_kernel(const float *x, int64_t E, const float *scale, float eps, float *z) {
    __shared__ double red[32];
    const int64_t t = blockIdx.x;
    route_input_row(x + t * E, E, scale, eps, z + t * E, red);
}

constexpr int kRouteWarps = 8;  // experts per block of route_logits_kernel, one warp each

// Block (token, expert group): logits[t][e] = W[e] . z[t] for experts e = kRouteWarps * blockIdx.y + warp.
__global__ void route_logits_kernel(WeightView w, const float *z, float *logits) {
    const int64_t E = w.cols, X = w.rows, t = blockIdx.x;
    const int64_t e = static_cast<int64_t>(blockIdx.y) * kRouteWarps + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (e >= X) return;
    const uint8_t *row = w.data + e * w.row_stride;
    const float *zt = z + t * E;
    float acc = 0.0f;
    for (int64_t i = lane; i < E; i += 32) acc += dequant(w.type, row, i) * zt[i];
    acc = warp_sum(acc);
    if (lane == 0) logits[t * X + e] = acc;
}

// The same sums, term for term (so the same bits), with kRouteTokens tokens' inputs staged in shared
// memory and each warp walking kRouteExpertsPerWarp experts: the router's weight rows are read once per
// kRouteTokens tokens instead of once per token (a warp per (token, expert) moved 22 KB for 2816 FMA:
// 0.137 ms a layer at the 26B shapes, run 10). The weight type is a template argument: with it a
// run-time switch per element (dequant on w.type), each iteration waited on its own load (SASS: one
// load a pass, behind the switch's branches); constant, the loop unrolls and its loads go out together.
constexpr int kRouteTokens = 4, kRouteExpertsPerWarp = 4;

__host__ inline bool route_logits_staged(int64_t E) { return kRouteTokens * E * int64_t{sizeof(float)} <= 48 * 1024; }

template <TensorType T>
__global__ void route_logits_staged_kernel(WeightView w, const float *z, int64_t n, float *logits) {
    extern __shared__ float zs[];  // [kRouteTokens][E]
    const int64_t E = w.cols, X = w.rows, t0 = static_cast<int64_t>(blockIdx.x) * kRouteTokens;
    const int64_t tn = min(static_cast<int64_t>(kRouteTokens), n - t0);
    for (int64_t i = threadIdx.x; i < kRouteTokens * E; i += blockDim.x) zs[i] = i < tn * E ? z[t0 * E + i] : 0.0f;
    __syncthreads();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int j = 0; j < kRouteExpertsPerWarp; ++j) {
        const int64_t e = (static_cast<int64_t>(blockIdx.y) * kRouteWarps + warp) * kRouteExpertsPerWarp + j;
        if (e >= X) return;
        const uint8_t *row = w.data + e * w.row_stride;
        float acc[kRouteTokens] = {};
#pragma unroll 4
        for (int64_t i = lane; i < E; i += 32) {
            const float wv = dequant(T, row, i);
#pragma unroll
            for (int tt = 0; tt < kRouteTokens; ++tt) acc[tt] += wv * zs[tt * E + i];
        }
#pragma unroll
        for (int tt = 0; tt < kRouteTokens; ++tt) {
            const float a = warp_sum(acc[tt]);
            if (lane == 0 && tt < tn) logits[(t0 + tt) * X + e] = a;
        }
    }
}

// A warp per token, the token's logits staged in shared memory: route_top_k_one_pass's arithmetic
// (router_math.h) with its independent parts over the lanes. The maximum (the same in any order),
// each exponential and each scaling per element; the double sum in expert order on lane 0; the
// top k as k rounds of a warp arg-max by (probability, then the lower id), which is the order the
// one-pass insertion keeps; the renormalisation on lane 0 in slot order. So the same experts,
// order and weights bit for bit. (One thread per token, reading its row from global memory three
// times, had 256 threads for a 256-row pass.)
constexpr int kSelectWarps = 4;

__host__ inline int select_warps(int64_t X) {
    return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(kSelectWarps, 48 * 1024 / (X * int64_t{sizeof(float)}))));
}

__global__ void route_select_kernel(const float *logits, int64_t n, int64_t X, int k, const float *pes, int32_t *expert,
                                    float *weight) {
    extern __shared__ float staged[];  // [warps per block][X]
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t t = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + warp;
    if (t >= n) return;  // a whole warp; the block never synchronises
    float *p = staged + static_cast<int64_t>(warp) * X;
    const float *z = logits + t * X;
    float mx = -INFINITY;
    for (int64_t e = lane; e < X; e += 32) {
        const float v = z[e];
        p[e] = v;
        mx = v > mx ? v : mx;
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float u = __shfl_xor_sync(0xffffffffu, mx, o);
        mx = u > mx ? u : mx;
    }
    for (int64_t e = lane; e < X; e += 32) p[e] = expf(p[e] - mx);
    __syncwarp();
    float inv = 0.0f;
    if (lane == 0) {
        double sum = 0.0;
        for (int64_t e = 0; e < X; ++e) sum += p[e];
        inv = static_cast<float>(1.0 / sum);
    }
    inv = __shfl_sync(0xffffffffu, inv, 0);
    for (int64_t e = lane; e < X; e += 32) p[e] *= inv;
    __syncwarp();
    int32_t *ids = expert + t * k;
    float *wt = weight + t * k;
    for (int j = 0; j < k; ++j) {
        float bv = -INFINITY;
        int64_t bi = X;
        for (int64_t e = lane; e < X; e += 32)  // a lane's experts in increasing id: strict > keeps the lower
            if (p[e] > bv) {
                bv = p[e];
                bi = e;
            }
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) {
                bv = ov;
                bi = oi;
            }
        }
        if (lane == 0) {
            ids[j] = static_cast<int32_t>(bi);
            wt[j] = bv;
            p[bi] = -1.0f;  // below every probability: out of the later rounds
        }
        __syncwarp();
    }
    if (lane == 0) {
        float total = 0.0f;
        for (int j = 0; j < k; ++j) total += wt[j];
        for (int j = 0; j < k; ++j) wt[j] = wt[j] / total * pes[ids[j]];
    }
}

// The exclusive prefix sum of v over the block's threads in thread order, and the block's total.
// Two warp scans (the threads', then the warps' sums); blockDim.x a multiple of 32.
__device__ int32_t block_exclusive_scan(int32_t v, int32_t *warp_sums, int32_t &total) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
    int32_t x = v;  // inclusive within the warp
    for (int o = 1; o < 32; o *= 2) {
        const int32_t y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    if (lane == 31) warp_sums[warp] = x;
    __syncthreads();
    if (warp == 0) {
        int32_t w = lane < n_warps ? warp_sums[lane] : 0;
        for (int o = 1; o < 32; o *= 2) {
            const int32_t y = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += y;
        }
        if (lane < n_warps) warp_sums[lane] = w;  // inclusive over the warps
    }
    __syncthreads();
    total = warp_sums[n_warps - 1];
    return x - v + (warp > 0 ? warp_sums[warp - 1] : 0);
}

// Groups the n * k assignments by expert (cuda/expert_group.h: tasks, entries, runs). The exclusive
// prefix over the count entries runs on all threads (a run of entries each, then
// block_exclusive_scan): it was one thread's loop with a 64-bit modulo per entry, and with a cache
// line per lane in the segment walks, most of the experts' non-product time (run 10: 240 us a layer
// beside 1241 us of products). Shared: the counts [X * S], then each (e, seg)'s first slot.
__global__ void __launch_bounds__(kGroupThreads) group_kernel(const int32_t *expert, int total, int X, int W, int32_t *offsets,
                                                              int32_t *order, int32_t *slot_of, int32_t *tiles) {
    extern __shared__ int32_t first[];
    __shared__ int32_t warp_sums[kGroupThreads / 32];
    const int S = group_segments(X), len = (total + S - 1) / S, tasks = X * S;
    for (int t = threadIdx.x; t < tasks; t += blockDim.x) {
        const GroupTask task = group_task(t, X);
        const int end = min(total, (task.seg + 1) * len);
        int32_t c = 0;
        for (int i = task.seg * len; i < end; ++i) c += expert[i] == task.e;
        first[group_entry(task, S)] = c;
    }
    __syncthreads();
    const GroupRun run = group_run(threadIdx.x, tasks, blockDim.x);
    int32_t run_count = 0;
    for (int r = run.r0; r < run.r1; ++r) run_count += first[r];
    int32_t all = 0;
    int32_t slot = block_exclusive_scan(run_count, warp_sums, all);  // its barriers: every run read before any write
    for (int r = run.r0; r < run.r1; ++r) {  // a thread rewrites only its own run
        const int32_t c = first[r];
        if (r % S == 0) offsets[r / S] = slot;
        first[r] = slot;
        slot += c;
    }
    if (threadIdx.x == 0) offsets[X] = all;
    __syncthreads();
    // The slot tiles of width W, expert by expert: a run of experts a thread, their tile counts scanned.
    const GroupRun experts = group_run(threadIdx.x, X, blockDim.x);
    auto slots_of = [&](int e) { return (e + 1 < X ? first[(e + 1) * S] : all) - first[e * S]; };
    int32_t run_tiles = 0;
    for (int e = experts.r0; e < experts.r1; ++e) run_tiles += group_expert_tiles(slots_of(e), W);
    int32_t n_tiles = 0;
    int32_t tile = block_exclusive_scan(run_tiles, warp_sums, n_tiles);
    for (int e = experts.r0; e < experts.r1; ++e)
        for (int s0 = 0, count = slots_of(e); s0 < count; s0 += W, ++tile) {
            tiles[1 + 2 * tile] = e;
            tiles[2 + 2 * tile] = s0;
        }
    if (threadIdx.x == 0) tiles[0] = n_tiles;
    for (int t = threadIdx.x; t < tasks; t += blockDim.x) {
        const GroupTask task = group_task(t, X);
        const int end = min(total, (task.seg + 1) * len);
        int32_t next = first[group_entry(task, S)];
        for (int i = task.seg * len; i < end; ++i)
            if (expert[i] == task.e) {
                order[next] = i;
                slot_of[i] = next++;
            }
    }
}

constexpr int kRowsPerBlock = 8;  // one warp per weight row
constexpr int kSlots = 8;         // slots per pass of a warp

// act[s][r] = gelu(gate_e[r] . x_s) * (up_e[r] . x_s) for the slots s of expert e = blockIdx.y.
__global__ void gate_up_kernel(WeightView gate, WeightView up, const float *x, int k, const int32_t *offsets,
                               const int32_t *order, float *act) {
    const int64_t e = blockIdx.y, F = gate.rows, K = gate.cols;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + warp;
    if (r >= F) return;
    const uint8_t *gr = gate.data + e * gate.expert_stride + r * gate.row_stride;
    const uint8_t *ur = up.data + e * up.expert_stride + r * up.row_stride;
    for (int32_t s0 = offsets[e]; s0 < offsets[e + 1]; s0 += kSlots) {
        const int ns = min(kSlots, offsets[e + 1] - s0);
        float g[kSlots] = {}, u[kSlots] = {};
        for (int64_t c = lane; c < K; c += 32) {
            const float gv = dequant(gate.type, gr, c), uv = dequant(up.type, ur, c);
#pragma unroll
            for (int j = 0; j < kSlots; ++j)
                if (j < ns) {
                    const float xv = x[static_cast<int64_t>(order[s0 + j] / k) * K + c];
                    g[j] += gv * xv;
                    u[j] += uv * xv;
                }
        }
#pragma unroll
        for (int j = 0; j < kSlots; ++j) {
            const float gs = warp_sum(g[j]), us = warp_sum(u[j]);
            if (lane == 0 && j < ns) act[static_cast<int64_t>(s0 + j) * F + r] = gelu_tanh(gs) * us;
        }
    }
}

// y[s][r] = down_e[r] . act[s] for the slots s of expert e = blockIdx.y.
__global__ void down_kernel(WeightView down, const float *act, const int32_t *offsets, float *y) {
    const int64_t e = blockIdx.y, E = down.rows, F = down.cols;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + warp;
    if (r >= E) return;
    const uint8_t *dr = down.data + e * down.expert_stride + r * down.row_stride;
    for (int32_t s0 = offsets[e]; s0 < offsets[e + 1]; s0 += kSlots) {
        const int ns = min(kSlots, offsets[e + 1] - s0);
        float acc[kSlots] = {};
        for (int64_t c = lane; c < F; c += 32) {
            const float dv = dequant(down.type, dr, c);
#pragma unroll
            for (int j = 0; j < kSlots; ++j)
                if (j < ns) acc[j] += dv * act[static_cast<int64_t>(s0 + j) * F + c];
        }
#pragma unroll
        for (int j = 0; j < kSlots; ++j) {
            const float v = warp_sum(acc[j]);
            if (lane == 0 && j < ns) y[static_cast<int64_t>(s0 + j) * E + r] = v;
        }
    }
}

// The tiled gate/up: blockIdx = (row tile, slot tile of the grouping's list; past its end: return).
template <TensorType T, int N>
__global__ void __launch_bounds__(kTileThreads) gate_up_tiled_kernel(WeightView gate, WeightView up, const float *x, int k,
                                                                     const int32_t *offsets, const int32_t *tiles,
                                                                     const int32_t *order, float *act) {
    __shared__ TileOperand<kTileRows> gs, us;
    __shared__ TileOperand<N> xs;
    int64_t e, s0;
    if (!group_tile(tiles, blockIdx.y, e, s0)) return;
    const int64_t F = gate.rows, K = gate.cols, first = offsets[e], count = offsets[e + 1] - first;
    const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kTileRows;
    const int64_t my_slot = s0 + loader_token<N>();
    const float *xr = my_slot < count ? x + static_cast<int64_t>(order[first + my_slot] / k) * K : nullptr;
    const uint8_t *gb = gate.data + e * gate.expert_stride, *ub = up.data + e * up.expert_stride;
    float g[4][N / 16] = {}, u[4][N / 16] = {};
    // As tile_accumulate, with two weight tiles: the next chunk fetched before this one's multiplies.
    WeightFetch8<T> gw, uw;
    ActivationFetch<N> xf;
    const int64_t my_row = row0 + weight_loader_row();
    gw.fetch(gb, gate.row_stride, F, K, my_row, weight_loader_k());
    uw.fetch(ub, up.row_stride, F, K, my_row, weight_loader_k());
    xf.fetch(xr, K, 0);
    for (int64_t c0 = 0; c0 < K; c0 += kTileK) {
        store_weight_tile<T>(gs, gw);
        store_weight_tile<T>(us, uw);
        xf.store(xs);
        __syncthreads();
        if (c0 + kTileK < K) {
            gw.fetch(gb, gate.row_stride, F, K, my_row, c0 + kTileK + weight_loader_k());
            uw.fetch(ub, up.row_stride, F, K, my_row, c0 + kTileK + weight_loader_k());
            xf.fetch(xr, K, c0 + kTileK);
        }
        tile_multiply<N>(gs, xs, g);
        tile_multiply<N>(us, xs, u);
        __syncthreads();
    }
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < N / 16; ++b) g[a][b] = gelu_tanh(g[a][b]) * u[a][b];
    tile_store<N>(g, [&](int r, int sl, float v) {
        if (row0 + r < F && s0 + sl < count) act[(first + s0 + sl) * F + row0 + r] = v;
    });
}

// The tiled down projection: y[s] = down_e . act[s], blocks as in gate_up_tiled_kernel.
template <TensorType T, int N>
__global__ void __launch_bounds__(kTileThreads) down_tiled_kernel(WeightView down, const float *act, const int32_t *offsets,
                                                                  const int32_t *tiles, float *y) {
    __shared__ TileOperand<kTileRows> ws;
    __shared__ TileOperand<N> xs;
    int64_t e, s0;
    if (!group_tile(tiles, blockIdx.y, e, s0)) return;
    const int64_t E = down.rows, F = down.cols, first = offsets[e], count = offsets[e + 1] - first;
    const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kTileRows;
    const int64_t my_slot = s0 + loader_token<N>();
    const float *xr = my_slot < count ? act + (first + my_slot) * F : nullptr;
    float acc[4][N / 16] = {};
    tile_accumulate<T, N>(ws, xs, down.data + e * down.expert_stride, down.row_stride, E, F, row0, xr, acc);
    tile_store<N>(acc, [&](int r, int sl, float v) {
        if (row0 + r < E && s0 + sl < count) y[(first + s0 + sl) * E + row0 + r] = v;
    });
}

// The tensor-core experts (cuda/tile_mma.cuh): tiles of kMmaRows weight rows x kExpertSlots slots
// (an expert holds about n k / n_expert of a pass's n rows: 16 of 256 at the 26B shapes). Gate and
// up are multiplied in one pass over the columns, sharing the tokens' operand; the hidden
// activations go out as bf16 rows of mma_padded_cols(F), the down product's operand (rows F ..
// padded are written too: their weights read as zeros, so they hold gelu(0) * 0 = 0).
// Two blocks a multiprocessor: the chunk loop waits on its weight loads (one chunk fetched ahead),
// and at 146-167 registers a thread (Q4_K-Q6_K) one block of 8 warps was all a multiprocessor held;
// capped at 128, ptxas spills 16-104 bytes a thread (L1-resident) for twice the loads in flight.
constexpr int kExpertSlots = 32;
static_assert(kExpertSlots == 32 && kQmmaTokens == 32, "moe() lists slot tiles of 32 for the tensor-core kernels");

template <TensorType T>
__global__ void __launch_bounds__(kMmaThreads, 2) gate_up_mma_kernel(WeightView gate, WeightView up, const __nv_bfloat16 *xb,
                                                                  int k, const int32_t *offsets, const int32_t *tiles,
                                                                  const int32_t *order, __nv_bfloat16 *act) {
    constexpr int N = kExpertSlots;
    __shared__ MmaStage<N, 2> st[2];
    int64_t e, s0;
    if (!group_tile(tiles, blockIdx.y, e, s0)) return;
    const int64_t F = gate.rows, K = gate.cols, first = offsets[e], count = offsets[e + 1] - first;
    const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kMmaRows, Kp = mma_padded_cols(K), Fp = mma_padded_cols(F);
    MmaWeightLoader<T, 2> wl;
    wl.base[0] = gate.data + e * gate.expert_stride;
    wl.base[1] = up.data + e * up.expert_stride;
    wl.row_stride[0] = gate.row_stride;
    wl.row_stride[1] = up.row_stride;
    wl.n_rows = F;
    wl.n_cols = K;
    wl.row0 = row0;
    MmaTokenLoader<N> xl;
    xl.bind([&](int sl) { return s0 + sl < count ? xb + static_cast<int64_t>(order[first + s0 + sl] / k) * Kp : nullptr; });
    MmaAcc<N, 2> acc = {};
    mma_accumulate<T, N, 2, true>(st, wl, xl, acc, 0, -1, static_cast<int>(count - s0 < N ? count - s0 : N));
    mma_for_each<N>([&](int mt, int nt, int r, int row, int sl) {
        if (row0 + row < Fp && s0 + sl < count)
            act[(first + s0 + sl) * Fp + row0 + row] = __float2bfloat16_rn(gelu_tanh(acc[0][mt][nt][r]) * acc[1][mt][nt][r]);
    });
}

template <TensorType T>
__global__ void __launch_bounds__(kMmaThreads) down_mma_kernel(WeightView down, const __nv_bfloat16 *act,
                                                                const int32_t *offsets, const int32_t *tiles, float *y) {
    constexpr int N = kExpertSlots;
    __shared__ MmaStage<N, 1> st[2];
    int64_t e, s0;
    if (!group_tile(tiles, blockIdx.y, e, s0)) return;
    const int64_t E = down.rows, F = down.cols, first = offsets[e], count = offsets[e + 1] - first;
    const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kMmaRows, Fp = mma_padded_cols(F);
    MmaWeightLoader<T, 1> wl;
    wl.base[0] = down.data + e * down.expert_stride;
    wl.row_stride[0] = down.row_stride;
    wl.n_rows = E;
    wl.n_cols = F;
    wl.row0 = row0;
    MmaTokenLoader<N> xl;
    xl.bind([&](int sl) { return s0 + sl < count ? act + (first + s0 + sl) * Fp : nullptr; });
    MmaAcc<N, 1> acc = {};
    mma_accumulate<T, N, 1, true>(st, wl, xl, acc, 0, -1, static_cast<int>(count - s0 < N ? count - s0 : N));
    mma_for_each<N>([&](int mt, int nt, int r, int row, int sl) {
        if (row0 + row < E && s0 + sl < count) y[(first + s0 + sl) * E + row0 + row] = acc[0][mt][nt][r];
    });
}

// The same two products for Q4_K and Q5_0 weights (qmma.cuh: codes into fragments, scales after).
// Block (row group, token tile, expert): 4 warps of 16 rows each, kQmmaTokens of the expert's slots.
template <TensorType T>
__global__ void __launch_bounds__(kQmmaThreads, 2) gate_up_qmma_kernel(WeightView gate, WeightView up, const __nv_bfloat16 *xb,
                                                                    const float *x_sums, int k, const int32_t *offsets,
                                                                    const int32_t *tiles, const int32_t *order,
                                                                    __nv_bfloat16 *act) {
    const int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4;
    int64_t e, s0;
    if (!group_tile(tiles, blockIdx.y, e, s0)) return;
    const int64_t F = gate.rows, K = gate.cols, first = offsets[e], count = offsets[e + 1] - first;
    const int64_t Kp = mma_padded_cols(K), Fp = mma_padded_cols(F);
    const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * kQmmaWarps + warp) * kQmmaWarpRows;
    if (row0 >= Fp) return;
    QmmaOperands<2> op;
#pragma unroll
    for (int half = 0; half < 2; ++half) {  // rows past F: row F - 1 (stored as zeros below)
        const int64_t r = min(row0 + g + 8 * half, F - 1);
        op.row[0][half] = gate.data + e * gate.expert_stride + r * gate.row_stride;
        op.row[1][half] = up.data + e * up.expert_stride + r * up.row_stride;
    }
    qmma_bind_tokens(op, xb, x_sums, Kp, count - s0, [&](int sl) { return order[first + s0 + sl] / k; });
    float acc[2][kQmmaNT][4] = {};
    qmma_accumulate<T, 2>(op, K, acc);
    qmma_for_each(op.n_used, [&](int nt, int r, int row, int sl) {
        if (s0 + sl < count)  // rows F .. Fp: zeros, the padding the down product reads
            act[(first + s0 + sl) * Fp + row0 + row] =
                __float2bfloat16_rn(row0 + row < F ? gelu_tanh(acc[0][nt][r]) * acc[1][nt][r] : 0.0f);
    });
}

template <TensorType T>
__global__ void __launch_bounds__(kQmmaThreads, 3) down_qmma_kernel(WeightView down, const __nv_bfloat16 *act,
                                                                 const float *act_sums, const int32_t *offsets,
                                                                 const int32_t *tiles, float *y) {
    const int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4;
    int64_t e, s0;
    if (!group_tile(tiles, blockIdx.y, e, s0)) return;
    const int64_t E = down.rows, F = down.cols, first = offsets[e], count = offsets[e + 1] - first;
    const int64_t Fp = mma_padded_cols(F);
    const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * kQmmaWarps + warp) * kQmmaWarpRows;
    if (row0 >= E) return;
    QmmaOperands<1> op;
#pragma unroll
    for (int half = 0; half < 2; ++half)  // rows past E: row E - 1 (not stored)
        op.row[0][half] = down.data + e * down.expert_stride + min(row0 + g + 8 * half, E - 1) * down.row_stride;
    qmma_bind_tokens(op, act, act_sums, Fp, count - s0, [&](int sl) { return first + s0 + sl; });
    float acc[1][kQmmaNT][4] = {};
    qmma_accumulate<T, 1>(op, F, acc);
    qmma_for_each(op.n_used, [&](int nt, int r, int row, int sl) {
        if (s0 + sl < count && row0 + row < E) y[(first + s0 + sl) * E + row0 + row] = acc[0][nt][r];
    });
}

// out[t] = sum_j weight[t][j] * y[slot(t, j)], the slots taken in increasing expert id. Block t:
// thread j < k puts token t's assignment j at its rank among the k (smaller ids first; the top-k's
// ids are distinct, and equal ids would keep their order) (shared: slot [k], then weight [k]), then
// every thread sums its elements over them. (One thread ordering all k, k^2 dependent reads, was
// the block's first microseconds.)
__global__ void combine_kernel(const float *y, const int32_t *expert, const float *weight, const int32_t *slot_of, int k,
                               int64_t E, float *out) {
    extern __shared__ int32_t ordered_slot[];
    float *ordered_weight = reinterpret_cast<float *>(ordered_slot + k);
    const int64_t t = blockIdx.x;
    for (int j = threadIdx.x; j < k; j += blockDim.x) {
        const int32_t e = expert[t * k + j];
        int rank = 0;
        for (int c = 0; c < k; ++c) {
            const int32_t ec = expert[t * k + c];
            rank += ec < e || (ec == e && c < j);
        }
        ordered_slot[rank] = slot_of[t * k + j];
        ordered_weight[rank] = weight[t * k + j];
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < E; i += blockDim.x) {
        float o = 0.0f;
        for (int jj = 0; jj < k; ++jj) o += y[static_cast<int64_t>(ordered_slot[jj]) * E + i] * ordered_weight[jj];
        out[t * E + i] = o;
    }
}

}  // namespace

void route(cudaStream_t s, const WeightView &w, const float *x, int64_t n, const float *scale,
           const float *per_expert_scale, float eps, int k, int32_t *expert, float *weight, const RouteScratch &r,
           KernelSet kernels) {
    if (n <= 0) return;
    if (kernels != KernelSet::reference) {
        route_input_kernel<<<static_cast<unsigned>(n), kRouteThreads, 0, s>>>(x, w.cols, scale, eps, r.z);
        check_launch("route input");
        if (route_logits_staged(w.cols)) {
            const dim3 grid(blocks_for(n, kRouteTokens), blocks_for(w.rows, kRouteWarps * kRouteExpertsPerWarp));
            with_weight_type(w.type, [&](auto type) {
                route_logits_staged_kernel<decltype(type)::value>
                    <<<grid, 32 * kRouteWarps, static_cast<size_t>(kRouteTokens * w.cols) * sizeof(float), s>>>(w, r.z, n, r.logits);
            });
        } else {
            route_logits_kernel<<<dim3(static_cast<unsigned>(n), blocks_for(w.rows, kRouteWarps)), 32 * kRouteWarps, 0, s>>>(
                w, r.z, r.logits);
        }
        check_launch("route logits");
        if (w.rows * static_cast<int64_t>(sizeof(float)) > 48 * 1024)
            throw Error(DGEMMA_ERR_UNSUPPORTED, "CUDA route: " + std::to_string(w.rows) +
                                                    " experts exceed the selection's 48 KB of shared memory (12288 at most)");
        const int warps = select_warps(w.rows);
        route_select_kernel<<<blocks_for(n, warps), 32 * warps, static_cast<size_t>(warps * w.rows) * sizeof(float), s>>>(
            r.logits, n, w.rows, k, per_expert_scale, expert, weight);
        check_launch("route selection");
        return;
    }
    const size_t shared = static_cast<size_t>(w.cols + w.rows) * sizeof(float);
    if (shared > 48 * 1024)
        throw Error(DGEMMA_ERR_UNSUPPORTED, "CUDA route: n_embd + n_expert = " + std::to_string(w.cols + w.rows) +
                                                " floats exceed the kernel's 48 KB of shared memory");
    route_kernel<<<static_cast<unsigned>(n), kRouteThreads, shared, s>>>(w, x, scale, per_expert_scale, eps, k, expert, weight);
    check_launch("route");
}

void moe(cudaStream_t s, const WeightView &gate, const WeightView &up, const WeightView &down, int64_t n_expert,
         const float *x, int64_t n, const int32_t *expert, const float *weight, int k, float *out, const MoeScratch &m,
         KernelSet kernels) {
    if (n <= 0) return;
    // Counts for X * S <= max(X, kGroupThreads) entries beside the scan's warp sums.
    constexpr size_t kGroupShared = 48 * 1024 - sizeof(int32_t) * (kGroupThreads / 32);
    if (static_cast<size_t>(n_expert) > kGroupShared / sizeof(int32_t))
        throw Error(DGEMMA_ERR_UNSUPPORTED, "CUDA experts: " + std::to_string(n_expert) +
                                                " experts exceed the grouping kernel's shared memory (" +
                                                std::to_string(kGroupShared / sizeof(int32_t)) + " at most)");
    const int X = static_cast<int>(n_expert), slots = static_cast<int>(n * k);
    const size_t group_shared = static_cast<size_t>(X * group_segments(X)) * sizeof(int32_t);
    // Gate and up share one type in every file seen (one tensor, or two of one quantization); a file
    // that mixes them runs the per-row kernels. The float tiles' width follows the mean tokens per
    // expert; the grouping lists the slot tiles of the width that runs (W).
    const bool int8 = kernels == KernelSet::tensor && m.x_q8 && gate.type == up.type && gate.row_stride == up.row_stride &&
                      i8_runs(gate) && i8_runs(up) && i8_runs(down);
    const bool mma = !int8 && kernels == KernelSet::tensor && gate.type == up.type;
    const bool tiled = kernels != KernelSet::tensor && kernels != KernelSet::reference && gate.type == up.type;
    int W = 32;  // kI8ExpertTokens, kExpertSlots, kQmmaTokens
    if (tiled) with_tile_width(slots / X, [&](auto width) { W = decltype(width)::value; });
    group_kernel<<<1, kGroupThreads, group_shared, s>>>(expert, slots, X, W, m.offsets, m.order, m.slot_of, m.tiles);
    check_launch("moe grouping");
    const unsigned tiles = static_cast<unsigned>(group_tiles_bound(slots, X, W));
    if (int8) {
        i8_quantize(s, gate.type, x, n, gate.cols, m.x_q8, m.x_q8_d);
        i8_moe_gate_up(s, gate, up, m.x_q8, m.x_q8_d, k, m.offsets, m.tiles, tiles, m.order, m.act);
        i8_quantize(s, down.type, m.act, slots, down.cols, m.act_q8, m.act_q8_d);
        i8_moe_down(s, down, m.act_q8, m.act_q8_d, m.offsets, m.tiles, tiles, m.y);
    } else if (mma) {
        to_bf16_rows(s, x, n, gate.cols, m.x_bf16);
        const int64_t Fp = mma_padded_cols(gate.rows);
        if (m.x_sums && qmma_runs(gate) && qmma_runs(up)) {
            bf16_block_sums(s, m.x_bf16, n, mma_padded_cols(gate.cols), m.x_sums);
            const dim3 grid(blocks_for(Fp, kQmmaWarps * kQmmaWarpRows), tiles);
            with_qmma_type(gate.type, [&](auto type) {
                gate_up_qmma_kernel<decltype(type)::value><<<grid, kQmmaThreads, 0, s>>>(gate, up, m.x_bf16, m.x_sums, k,
                                                                                       m.offsets, m.tiles, m.order, m.act_bf16);
            });
            check_launch("moe gate/up (tensor cores, quantized)");
        } else {
            const dim3 grid(blocks_for(gate.rows, kMmaRows), tiles);
            with_weight_type(gate.type, [&](auto type) {
                gate_up_mma_kernel<decltype(type)::value><<<grid, kMmaThreads, 0, s>>>(gate, up, m.x_bf16, k, m.offsets,
                                                                                     m.tiles, m.order, m.act_bf16);
            });
            check_launch("moe gate/up (tensor cores)");
        }
        if (m.act_sums && qmma_runs(down)) {
            bf16_block_sums(s, m.act_bf16, slots, Fp, m.act_sums);
            const dim3 grid_down(blocks_for(down.rows, kQmmaWarps * kQmmaWarpRows), tiles);
            with_qmma_type(down.type, [&](auto type) {
                down_qmma_kernel<decltype(type)::value><<<grid_down, kQmmaThreads, 0, s>>>(down, m.act_bf16, m.act_sums,
                                                                                         m.offsets, m.tiles, m.y);
            });
            check_launch("moe down (tensor cores, quantized)");
        } else {
            const dim3 grid_down(blocks_for(down.rows, kMmaRows), tiles);
            with_weight_type(down.type, [&](auto type) {
                down_mma_kernel<decltype(type)::value><<<grid_down, kMmaThreads, 0, s>>>(down, m.act_bf16, m.offsets, m.tiles, m.y);
            });
            check_launch("moe down (tensor cores)");
        }
    } else if (tiled) {
        with_tile_width(slots / X, [&](auto width) {
            constexpr int N = decltype(width)::value;
            static_assert(N >= kGroupMinTile, "the tile scratch is sized for kGroupMinTile");
            const dim3 grid(blocks_for(gate.rows, kTileRows), tiles);
            with_weight_type(gate.type, [&](auto type) {
                gate_up_tiled_kernel<decltype(type)::value, N><<<grid, kTileThreads, 0, s>>>(gate, up, x, k, m.offsets, m.tiles,
                                                                                              m.order, m.act);
            });
            check_launch("moe gate/up (tiled)");
            const dim3 grid_down(blocks_for(down.rows, kTileRows), tiles);
            with_weight_type(down.type, [&](auto type) {
                down_tiled_kernel<decltype(type)::value, N><<<grid_down, kTileThreads, 0, s>>>(down, m.act, m.offsets, m.tiles, m.y);
            });
            check_launch("moe down (tiled)");
        });
    } else {
        gate_up_kernel<<<dim3(blocks_for(gate.rows, kRowsPerBlock), static_cast<unsigned>(n_expert)), 32 * kRowsPerBlock, 0, s>>>(
            gate, up, x, k, m.offsets, m.order, m.act);
        check_launch("moe gate/up");
        down_kernel<<<dim3(blocks_for(down.rows, kRowsPerBlock), static_cast<unsigned>(n_expert)), 32 * kRowsPerBlock, 0, s>>>(
            down, m.act, m.offsets, m.y);
        check_launch("moe down");
    }
    combine_kernel<<<static_cast<unsigned>(n), 256, static_cast<size_t>(k) * (sizeof(int32_t) + sizeof(float)), s>>>(
        m.y, expert, weight, m.slot_of, k, down.rows, out);
    check_launch("moe combine");
}

}  // namespace dg::cuda
