// Row-wise and elementwise ops: RMSNorm, RoPE, the GELU gate, residual add, layer scalars,
// soft-capping and the KV cache store, each the CPU backend's arithmetic in the same float order.
#include "cuda/kernels.h"
#include "quant/float_bits.h"

namespace dg::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void rmsnorm_kernel(const float *x, const float *w, float eps, int64_t dim, float *y) {
    __shared__ double red[32];
    const float *xr = x + static_cast<int64_t>(blockIdx.x) * dim;
    float *yr = y + static_cast<int64_t>(blockIdx.x) * dim;
    double ss = 0.0;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += static_cast<double>(xr[i]) * xr[i];
    ss = block_sum(ss, red);
    const float scale = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(dim) + eps));
    // kNormBatch rounds' loads before their stores: y may be x, so the compiler keeps each load behind
    // the previous store (a memory round trip a round); the same values, the same bits.
    constexpr int kNormBatch = 4;
    for (int64_t base = threadIdx.x; base < dim; base += kNormBatch * static_cast<int64_t>(blockDim.x)) {
        float v[kNormBatch], wv[kNormBatch];
#pragma unroll
        for (int b = 0; b < kNormBatch; ++b) {
            const int64_t i = base + b * static_cast<int64_t>(blockDim.x);
            v[b] = i < dim ? xr[i] : 0.0f;
            wv[b] = w && i < dim ? w[i] : 0.0f;
        }
#pragma unroll
        for (int b = 0; b < kNormBatch; ++b) {
            const int64_t i = base + b * static_cast<int64_t>(blockDim.x);
            if (i < dim) yr[i] = w ? v[b] * scale * wv[b] : v[b] * scale;
        }
    }
}

__global__ void rope_kernel(float *x, int64_t n, int n_heads, int head_dim, const int32_t *pos, const float *inv_freq,
                            int half) {
    const int64_t id = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (id >= n * n_heads * half) return;
    const int j = static_cast<int>(id % half);
    const int64_t th = id / half;  // token * n_heads + head
    const float angle = static_cast<float>(pos[th / n_heads]) * inv_freq[j];
    float sn, cs;
    sincosf(angle, &sn, &cs);
    float *v = x + th * head_dim;
    const float a = v[j], b = v[j + half];
    v[j] = a * cs - b * sn;
    v[j + half] = b * cs + a * sn;
}

__global__ void gelu_mul_kernel(const float *g, const float *u, int64_t count, float *o) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < count) o[i] = gelu_tanh(g[i]) * u[i];
}

__global__ void add_kernel(float *y, const float *x, int64_t count) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < count) y[i] += x[i];
}

__global__ void scale_rows_kernel(float *x, int64_t count, int64_t width, const int32_t *mode, float s0, float s1) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < count) x[i] *= mode[i / width] ? s1 : s0;
}

__global__ void softcap_kernel(float *x, int64_t count, float cap) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < count) x[i] = tanhf(x[i] / cap) * cap;
}

__global__ void cache_store_kernel(const float *src, int64_t row, int64_t first, int64_t count, int64_t pos_first,
                                   uint8_t *dst, TensorType type, size_t dst_row_bytes, int64_t capacity) {
    const int64_t id = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (id >= count * row) return;
    const int64_t i = id / row, c = id % row;
    const float v = src[(first + i) * row + c];
    uint8_t *o = dst + static_cast<size_t>((pos_first + i) % capacity) * dst_row_bytes;
    if (type == TensorType::F32) reinterpret_cast<float *>(o)[c] = v;
    else if (type == TensorType::F16) reinterpret_cast<uint16_t *>(o)[c] = f32_to_f16(v);
    else reinterpret_cast<uint16_t *>(o)[c] = f32_to_bf16(v);
}

}  // namespace

void rmsnorm(cudaStream_t s, const float *x, const float *w, float eps, int64_t rows, int64_t dim, float *y) {
    if (rows <= 0) return;
    rmsnorm_kernel<<<static_cast<unsigned>(rows), kThreads, 0, s>>>(x, w, eps, dim, y);
    check_launch("rmsnorm");
}

void rope(cudaStream_t s, float *x, int64_t n, int n_heads, int head_dim, const int32_t *pos, const float *inv_freq,
          int n_rot) {
    const int64_t total = n * n_heads * (n_rot / 2);
    if (total <= 0) return;
    rope_kernel<<<blocks_for(total, kThreads), kThreads, 0, s>>>(x, n, n_heads, head_dim, pos, inv_freq, n_rot / 2);
    check_launch("rope");
}

void gelu_mul(cudaStream_t s, const float *gate, const float *up, int64_t count, float *out) {
    if (count <= 0) return;
    gelu_mul_kernel<<<blocks_for(count, kThreads), kThreads, 0, s>>>(gate, up, count, out);
    check_launch("gelu_mul");
}

void add(cudaStream_t s, float *y, const float *x, int64_t count) {
    if (count <= 0) return;
    add_kernel<<<blocks_for(count, kThreads), kThreads, 0, s>>>(y, x, count);
    check_launch("add");
}

void scale_rows(cudaStream_t s, float *x, int64_t rows, int64_t width, const int32_t *row_mode, float s0, float s1) {
    if (rows * width <= 0) return;
    scale_rows_kernel<<<blocks_for(rows * width, kThreads), kThreads, 0, s>>>(x, rows * width, width, row_mode, s0, s1);
    check_launch("scale_rows");
}

void softcap(cudaStream_t s, float *x, int64_t count, float cap) {
    if (count <= 0) return;
    softcap_kernel<<<blocks_for(count, kThreads), kThreads, 0, s>>>(x, count, cap);
    check_launch("softcap");
}

void cache_store(cudaStream_t s, const float *src, int64_t row, int64_t row0, int64_t skip, int64_t n, int64_t pos0,
                 uint8_t *dst, TensorType type, size_t dst_row_bytes, int64_t capacity) {
    const int64_t count = n - skip;
    if (count <= 0 || capacity <= 0) return;
    cache_store_kernel<<<blocks_for(count * row, kThreads), kThreads, 0, s>>>(src, row, row0 + skip, count, pos0 + skip, dst,
                                                                             type, dst_row_bytes, capacity);
    check_launch("cache_store");
}

}  // namespace dg::cuda
