// Shared by the CUDA backend's translation units: error checks, block reductions and the views the
// kernels take (plain structs of device pointers, passed by value).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "error.h"
#include "quant/types.h"

namespace dg::cuda {

// Throws dg::Error for a failed CUDA call: out of memory as DGEMMA_ERR_OUT_OF_MEMORY, anything else
// (a kernel fault, a lost device) as DGEMMA_ERR_INTERNAL naming the call.
inline void check(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return;
    const std::string msg = std::string("CUDA: ") + what + ": " + cudaGetErrorString(e);
    throw Error(e == cudaErrorMemoryAllocation ? DGEMMA_ERR_OUT_OF_MEMORY : DGEMMA_ERR_INTERNAL, msg);
}
// After each launch: a bad configuration shows here; faults inside kernels at the next sync.
inline void check_launch(const char *kernel) { check(cudaGetLastError(), kernel); }

inline unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }
// The most blocks a grid's second (or third) dimension takes: kernels with a block row per data row
// launch in chunks of this many rows.
constexpr int64_t kMaxGridRows = 65535;

// A weight matrix (or a stack of experts) in device memory: row r of expert e starts at
// data + e * expert_stride + r * row_stride.
struct WeightView {
    const uint8_t *data = nullptr;
    TensorType type = TensorType::F32;
    int64_t cols = 0, rows = 0;
    size_t row_stride = 0, expert_stride = 0;
};

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `red` is shared scratch of 32 values; the call begins and ends with a barrier.
template <typename T>
__device__ T block_sum(T v, T *red) {
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
    __syncthreads();
    T s = 0;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) s += red[w];
    __syncthreads();
    return s;
}

__device__ inline float block_max(float v, float *red) {
    for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
    __syncthreads();
    float m = -INFINITY;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) m = fmaxf(m, red[w]);
    __syncthreads();
    return m;
}

__device__ inline float warp_sum(float v) {
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// d += A B over one bf16 m16n8k16 step (fragments: mma_layout.h), float32 accumulators.
__device__ inline void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();  // the host selects the tensor set only on compute capability 8.0 and newer
#endif
}

// What a product applies to each output before storing it: the logits' soft cap, cap * tanh(y / cap)
// (Backend::matmul_softcap), or nothing. softcap_kernel computes the same expression, so a capped
// product stores the bits the product and a softcap pass would.
struct Epilogue {
    bool softcap = false;
    float cap = 0.0f;
    __device__ float operator()(float v) const { return softcap ? tanhf(v / cap) * cap : v; }
};

__device__ inline float gelu_tanh(float x) {
    const float c = 0.7978845608028654f;  // sqrt(2 / pi)
    return 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
}

}  // namespace dg::cuda
