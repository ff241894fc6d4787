// The int8 tensor-core products (cuda/int8_mma.h, int8_mma.cuh): the activation quantizer, the
// dense product, and the experts' gate/up and down. DGEMMA_CUDA_INT8=1 routes the tensor set's
// Q4_K, Q6_K, Q5_0 and Q8_0 products here (the backend's int8 scratch; matmul.cu and moe.cu choose).
#include <type_traits>

#include "cuda/expert_group.h"
#include "cuda/int8_mma.cuh"
#include "cuda/kernels.h"

namespace dg::cuda {

namespace {

// Rows of x [n][cols] into codes q [n][i8_padded_cols(cols)] and scales d [n][i8_scales_per_row]:
// block (row, 8 units), a warp a unit, lane l elements 8 l .. 8 l + 7 of it (int8_mma.h's lanes).
constexpr int kQuantWarps = 8;

__global__ void __launch_bounds__(32 * kQuantWarps) i8_quantize_kernel(I8Act format, const float *x, int64_t cols, int8_t *q,
                                                                       float *d) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t row = blockIdx.x, u = static_cast<int64_t>(blockIdx.y) * kQuantWarps + warp;
    const int64_t padded = i8_padded_cols(cols);
    if (u * kI8UnitK >= padded) return;
    const int64_t c0 = u * kI8UnitK + kI8QuantLaneElems * lane;
    const float *xr = x + row * cols;
    float v[kI8QuantLaneElems];
#pragma unroll
    for (int i = 0; i < kI8QuantLaneElems; ++i) v[i] = c0 + i < cols ? xr[c0 + i] : 0.0f;
    int8_t code[kI8QuantLaneElems];
    if (format == I8Act::q8_k) {
        I8Max best{0.0f, 0.0f, 0x7fffffff};
#pragma unroll
        for (int i = 0; i < kI8QuantLaneElems; ++i)  // the lane's first largest, as the CPU's scan
            if (fabsf(v[i]) > best.amax) best = I8Max{fabsf(v[i]), v[i], kI8QuantLaneElems * lane + i};
        for (int o = 16; o > 0; o >>= 1) {
            const I8Max other{__shfl_xor_sync(0xffffffffu, best.amax, o), __shfl_xor_sync(0xffffffffu, best.value, o),
                              __shfl_xor_sync(0xffffffffu, best.index, o)};
            best = i8_pick_max(best, other);
        }
        const float iscale = best.amax == 0.0f ? 0.0f : q8_k_iscale(best.value);
#pragma unroll
        for (int i = 0; i < kI8QuantLaneElems; ++i) code[i] = best.amax == 0.0f ? int8_t{0} : q8_k_code(iscale, v[i]);
        if (lane == 0) d[row * (padded / kI8UnitK) + u] = best.amax == 0.0f ? 0.0f : 1.0f / iscale;
    } else {
        float amax = 0.0f;
#pragma unroll
        for (int i = 0; i < kI8QuantLaneElems; ++i) amax = fmaxf(amax, fabsf(v[i]));
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));  // the four lanes of the 32-element block
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
        const float dd = q8_0_d(amax), id = q8_0_id(dd);
#pragma unroll
        for (int i = 0; i < kI8QuantLaneElems; ++i) code[i] = q8_0_code(id, v[i]);
        if (lane % 4 == 0) d[row * (padded / 32) + u * (kI8UnitK / 32) + lane / 4] = q8_0_scale(dd);
    }
    uint2 packed{0u, 0u};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        packed.x |= static_cast<uint32_t>(static_cast<uint8_t>(code[i])) << (8 * i);
        packed.y |= static_cast<uint32_t>(static_cast<uint8_t>(code[4 + i])) << (8 * i);
    }
    *reinterpret_cast<uint2 *>(q + row * padded + c0) = packed;
}

template <TensorType T, int NW, int NT>
constexpr size_t i8_shared_bytes() {
    return sizeof(I8Stage<T, NW, NT>) * kI8Stages;
}

// The tile's n-tiles in use for `in_tile` tokens.
template <int NT>
__device__ inline int i8_n_used(int64_t in_tile) {
    const int64_t nt = (in_tile + 7) / 8;
    return static_cast<int>(nt < NT ? nt : NT);
}

// y[t][r] = W[r] . x[t]: block (row tile, token tile).
template <TensorType T, int NT>
__global__ void __launch_bounds__(kI8Threads) i8_matmul_kernel(WeightView w, const int8_t *xq, const float *xd, int64_t n, float *y,
                                                              Epilogue ep) {
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ int32_t tok[8 * NT];
    const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kI8Rows, t0 = static_cast<int64_t>(blockIdx.y) * 8 * NT;
    for (int i = threadIdx.x; i < 8 * NT; i += kI8Threads) tok[i] = t0 + i < n ? static_cast<int32_t>(t0 + i) : -1;
    __syncthreads();
    const WeightView ws[1] = {w};
    const I8Operands<1> op = i8_operands<T, 1>(ws, 0, row0, xq, xd);
    const int n_used = i8_n_used<NT>(n - t0);
    float acc[1][NT][4] = {};
    i8_accumulate<T, 1, NT>(reinterpret_cast<I8Stage<T, 1, NT> *>(smem), op, tok, n_used, acc);
    i8_for_each<NT>(n_used, [&](int nt, int r, int row, int token) {
        if (row0 + row < w.rows && t0 + token < n) y[(t0 + token) * w.rows + row0 + row] = ep(acc[0][nt][r]);
    });
}

constexpr int kI8ExpertNT = 4;  // 32 of an expert's slots a block (about 16 of 256 rows at the 26B shapes)
static_assert(8 * kI8ExpertNT == 32, "moe() lists slot tiles of 32 for the int8 experts");

// act[slot][r] = gelu(gate_e[r] . x[token]) * (up_e[r] . x[token]) for the slots of the block's tile
// (blockIdx.y of the grouping's list: expert e, slots s0 ..; tokens order[slot] / k), rows
// [n_slots][gate.rows] float.
template <TensorType T>
__global__ void __launch_bounds__(kI8Threads) i8_gate_up_kernel(WeightView gate, WeightView up, const int8_t *xq, const float *xd,
                                                              int k, const int32_t *offsets, const int32_t *tiles,
                                                              const int32_t *order, float *act) {
    constexpr int NT = kI8ExpertNT;
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ int32_t tok[8 * NT];
    int64_t e, s0;
    if (!group_tile(tiles, blockIdx.y, e, s0)) return;  // uniform over the block, before any barrier
    const int64_t F = gate.rows, first = offsets[e], count = offsets[e + 1] - first;
    const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kI8Rows;
    for (int i = threadIdx.x; i < 8 * NT; i += kI8Threads) tok[i] = s0 + i < count ? order[first + s0 + i] / k : -1;
    __syncthreads();
    const WeightView ws[2] = {gate, up};  // one type, k and row stride (the launcher checks)
    const I8Operands<2> op = i8_operands<T, 2>(ws, e, row0, xq, xd);
    const int n_used = i8_n_used<NT>(count - s0);
    float acc[2][NT][4] = {};
    i8_accumulate<T, 2, NT>(reinterpret_cast<I8Stage<T, 2, NT> *>(smem), op, tok, n_used, acc);
    i8_for_each<NT>(n_used, [&](int nt, int r, int row, int slot) {
        if (row0 + row < F && s0 + slot < count) act[(first + s0 + slot) * F + row0 + row] = gelu_tanh(acc[0][nt][r]) * acc[1][nt][r];
    });
}

// y[slot][r] = down_e[r] . act[slot] for the slots of the block's tile (activation rows: slots).
template <TensorType T>
__global__ void __launch_bounds__(kI8Threads) i8_down_kernel(WeightView down, const int8_t *aq, const float *ad, const int32_t *offsets,
                                                           const int32_t *tiles, float *y) {
    constexpr int NT = kI8ExpertNT;
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ int32_t tok[8 * NT];
    int64_t e, s0;
    if (!group_tile(tiles, blockIdx.y, e, s0)) return;
    const int64_t E = down.rows, first = offsets[e], count = offsets[e + 1] - first;
    const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kI8Rows;
    for (int i = threadIdx.x; i < 8 * NT; i += kI8Threads) tok[i] = s0 + i < count ? static_cast<int32_t>(first + s0 + i) : -1;
    __syncthreads();
    const WeightView ws[1] = {down};
    const I8Operands<1> op = i8_operands<T, 1>(ws, e, row0, aq, ad);
    const int n_used = i8_n_used<NT>(count - s0);
    float acc[1][NT][4] = {};
    i8_accumulate<T, 1, NT>(reinterpret_cast<I8Stage<T, 1, NT> *>(smem), op, tok, n_used, acc);
    i8_for_each<NT>(n_used, [&](int nt, int r, int row, int slot) {
        if (row0 + row < E && s0 + slot < count) y[(first + s0 + slot) * E + row0 + row] = acc[0][nt][r];
    });
}

// f(type) with an int8 type (i8_runs) as a compile-time constant.
template <typename F>
void with_i8_type(TensorType t, F f) {
    if (t == TensorType::Q4_K) f(std::integral_constant<TensorType, TensorType::Q4_K>{});
    else if (t == TensorType::Q6_K) f(std::integral_constant<TensorType, TensorType::Q6_K>{});
    else if (t == TensorType::Q5_0) f(std::integral_constant<TensorType, TensorType::Q5_0>{});
    else f(std::integral_constant<TensorType, TensorType::Q8_0>{});
}

}  // namespace

// Dynamic shared memory above 48 KB is allowed per kernel and device, before any launch (the
// backend calls this once, outside any graph capture).
template <typename Kernel>
void allow_shared(Kernel kernel, size_t bytes) {
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
          "cudaFuncSetAttribute (the int8 tiles' shared memory)");
}

void i8_prepare() {
    for (TensorType t : {TensorType::Q4_K, TensorType::Q6_K, TensorType::Q5_0, TensorType::Q8_0})
        with_i8_type(t, [&](auto type) {
            constexpr TensorType T = decltype(type)::value;
            allow_shared(i8_matmul_kernel<T, 4>, i8_shared_bytes<T, 1, 4>());
            allow_shared(i8_matmul_kernel<T, 8>, i8_shared_bytes<T, 1, 8>());
            allow_shared(i8_gate_up_kernel<T>, i8_shared_bytes<T, 2, kI8ExpertNT>());
            allow_shared(i8_down_kernel<T>, i8_shared_bytes<T, 1, kI8ExpertNT>());
        });
}

bool i8_runs(const WeightView &w) {
    if (!i8_type(w.type) || w.cols <= 0) return false;
    const size_t align = static_cast<size_t>(i8_copy_bytes(w.type));
    // Q6_K rows (210-byte blocks) need only start the matrix and each expert aligned: a line takes
    // the granules around its unit (q6_k_shift).
    const size_t rows = w.type == TensorType::Q6_K ? 0 : w.row_stride;
    return (reinterpret_cast<uintptr_t>(w.data) | rows | w.expert_stride) % align == 0;
}

void i8_quantize(cudaStream_t s, TensorType weight_type, const float *x, int64_t n, int64_t cols, int8_t *q, float *d) {
    if (n <= 0) return;
    const unsigned unit_groups = blocks_for(i8_units(cols), kQuantWarps);
    i8_quantize_kernel<<<dim3(static_cast<unsigned>(n), unit_groups), 32 * kQuantWarps, 0, s>>>(i8_act_of(weight_type), x, cols, q, d);
    check_launch("int8 quantize");
}

void i8_matmul(cudaStream_t s, const WeightView &w, const int8_t *xq, const float *xd, int64_t n, float *y, int sm_count,
               Epilogue ep) {
    if (n <= 0 || w.rows <= 0) return;
    with_i8_type(w.type, [&](auto type) {
        constexpr TensorType T = decltype(type)::value;
        auto launch = [&](auto width) {
            constexpr int NT = decltype(width)::value;
            const size_t bytes = i8_shared_bytes<T, 1, NT>();
            const dim3 grid(blocks_for(w.rows, kI8Rows), blocks_for(n, 8 * NT));
            i8_matmul_kernel<T, NT><<<grid, kI8Threads, bytes, s>>>(w, xq, xd, n, y, ep);
        };
        if (i8_tile_tokens(w.rows, n, sm_count) == 64) launch(std::integral_constant<int, 8>{});
        else launch(std::integral_constant<int, 4>{});
    });
    check_launch("matmul (int8 tensor cores)");
}

void i8_moe_gate_up(cudaStream_t s, const WeightView &gate, const WeightView &up, const int8_t *xq, const float *xd, int k,
                    const int32_t *offsets, const int32_t *tiles, unsigned max_tiles, const int32_t *order, float *act) {
    if (gate.type != up.type || gate.row_stride != up.row_stride || gate.cols != up.cols || gate.rows != up.rows)
        throw Error(DGEMMA_ERR_INTERNAL, "int8 experts: gate and up of different types or shapes");
    with_i8_type(gate.type, [&](auto type) {
        constexpr TensorType T = decltype(type)::value;
        const size_t bytes = i8_shared_bytes<T, 2, kI8ExpertNT>();
        const dim3 grid(blocks_for(gate.rows, kI8Rows), max_tiles);
        i8_gate_up_kernel<T><<<grid, kI8Threads, bytes, s>>>(gate, up, xq, xd, k, offsets, tiles, order, act);
    });
    check_launch("moe gate/up (int8 tensor cores)");
}

void i8_moe_down(cudaStream_t s, const WeightView &down, const int8_t *aq, const float *ad, const int32_t *offsets,
                 const int32_t *tiles, unsigned max_tiles, float *y) {
    with_i8_type(down.type, [&](auto type) {
        constexpr TensorType T = decltype(type)::value;
        const size_t bytes = i8_shared_bytes<T, 1, kI8ExpertNT>();
        const dim3 grid(blocks_for(down.rows, kI8Rows), max_tiles);
        i8_down_kernel<T><<<grid, kI8Threads, bytes, s>>>(down, aq, ad, offsets, tiles, y);
    });
    check_launch("moe down (int8 tensor cores)");
}

}  // namespace dg::cuda
