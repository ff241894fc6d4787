// Row-wise and elementwise ops: RMSNorm, RoPE, the GELU gate, residual add, layer scalars,
// soft-capping and the KV cache store, each the CPU backend's arithmetic in the same float order.
#include "cuda/kernels.h"
#include "quant/float_bits.h"

namespace dg::cuda {

namespace {

constexpr int kThreads = 256;

// The rmsnorm scale of the block's row, 1 / sqrt(mean(x^2) + eps): thread t sums x(i)^2 in double
// over i = t, t + blockDim, ... in order, then block_sum. Every norm kernel here takes it from this
// one function, so a fused kernel's scale has the bits of rmsnorm_kernel's for the same row.
template <typename Load>
__device__ float rms_scale(Load x, int64_t dim, float eps, double *red) {
    double ss = 0.0;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = x(i);
        ss += static_cast<double>(v) * v;
    }
    ss = block_sum(ss, red);
    return static_cast<float>(1.0 / sqrt(ss / static_cast<double>(dim) + eps));
}

// yr[i] = xr[i] * scale (* w[i]) over the row. kNormBatch rounds' loads go before their stores: y
// may be x, so the compiler keeps each load behind the previous store (a memory round trip a
// round); the same values, the same bits.
constexpr int kNormBatch = 4;

__device__ void rms_apply(const float *xr, const float *w, float scale, int64_t dim, float *yr) {
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

// One dimension pair of rotate-half RoPE, rounded product by product (no fused multiply-add), so
// the plain and the fused kernels rotate to the same bits.
__device__ inline void rope_pair(float &a, float &b, float angle) {
    float sn, cs;
    sincosf(angle, &sn, &cs);
    const float ra = __fsub_rn(__fmul_rn(a, cs), __fmul_rn(b, sn)), rb = __fadd_rn(__fmul_rn(b, cs), __fmul_rn(a, sn));
    a = ra;
    b = rb;
}

__global__ void rmsnorm_kernel(const float *x, const float *w, float eps, int64_t dim, float *y) {
    __shared__ double red[32];
    const float *xr = x + static_cast<int64_t>(blockIdx.x) * dim;
    float *yr = y + static_cast<int64_t>(blockIdx.x) * dim;
    const float scale = rms_scale([&](int64_t i) { return xr[i]; }, dim, eps, red);
    rms_apply(xr, w, scale, dim, yr);
}

// Backend::add_rmsnorm's ops on a row in one block: with dw, d's rmsnorm first (the scale from
// rms_scale, the product rounded as rmsnorm stores it: __fmul_rn keeps it from fusing into the add);
// h = h + d, times s[mode[row]] when mode is given, stored; then out = rmsnorm(h) (* w). The sums,
// products and norms of the separate kernels, in their order, so the same bits. out may be h: each
// thread reads back only the elements it stored.
__global__ void add_rmsnorm_kernel(float *h, const float *d, const float *dw, const int32_t *mode, float s0, float s1,
                                   const float *w, float eps, int64_t dim, float *out) {
    __shared__ double red[32];
    const int64_t row = blockIdx.x;
    float *hr = h + row * dim;
    const float *dr = d + row * dim;
    const float d_scale = dw ? rms_scale([&](int64_t i) { return dr[i]; }, dim, eps, red) : 1.0f;
    const bool scaled = mode != nullptr;
    const float s = scaled ? (mode[row] ? s1 : s0) : 1.0f;
    double ss = 0.0;
    for (int64_t base = threadIdx.x; base < dim; base += kNormBatch * static_cast<int64_t>(blockDim.x)) {
        float v[kNormBatch];
#pragma unroll
        for (int b = 0; b < kNormBatch; ++b) {
            const int64_t i = base + b * static_cast<int64_t>(blockDim.x);
            v[b] = i < dim ? hr[i] + (dw ? __fmul_rn(__fmul_rn(dr[i], d_scale), dw[i]) : dr[i]) : 0.0f;
        }
#pragma unroll
        for (int b = 0; b < kNormBatch; ++b) {
            const int64_t i = base + b * static_cast<int64_t>(blockDim.x);
            if (i >= dim) continue;
            if (scaled) v[b] *= s;
            hr[i] = v[b];
            ss += static_cast<double>(v[b]) * v[b];  // rms_scale's order: i = t, t + blockDim, ...
        }
    }
    ss = block_sum(ss, red);
    const float scale = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(dim) + eps));
    rms_apply(hr, w, scale, dim, out + row * dim);
}

__global__ void rope_kernel(float *x, int64_t n, int n_heads, int head_dim, const int32_t *pos, const float *inv_freq,
                            int half) {
    const int64_t id = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (id >= n * n_heads * half) return;
    const int j = static_cast<int>(id % half);
    const int64_t th = id / half;  // token * n_heads + head
    float *v = x + th * head_dim;
    rope_pair(v[j], v[j + half], static_cast<float>(pos[th / n_heads]) * inv_freq[j]);
}

// rmsnorm of a head's row, then its RoPE (Backend::rmsnorm_rope): block = token * n_heads + head.
// Each thread reads its pairs' (and its unrotated elements') inputs after the block's sum and
// writes only them, so the row is rewritten in place without a second barrier.
__global__ void rmsnorm_rope_kernel(float *x, const float *w, float eps, int n_heads, int head_dim, const int32_t *pos,
                                    const float *inv_freq, int n_rot) {
    __shared__ double red[32];
    const int64_t th = blockIdx.x;
    float *xr = x + th * head_dim;
    const float scale = rms_scale([&](int64_t i) { return xr[i]; }, head_dim, eps, red);
    auto normed = [&](int i) { return w ? xr[i] * scale * w[i] : xr[i] * scale; };
    const int half = n_rot / 2;
    const float p = static_cast<float>(pos[th / n_heads]);
    for (int j = threadIdx.x; j < half; j += blockDim.x) {
        float a = normed(j), b = normed(j + half);
        rope_pair(a, b, p * inv_freq[j]);
        xr[j] = a;
        xr[j + half] = b;
    }
    for (int i = n_rot + threadIdx.x; i < head_dim; i += blockDim.x) xr[i] = normed(i);
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
    if (i < count) x[i] = Epilogue{true, cap}(x[i]);
}

// Block (column chunk, row i): row i's slot once per block, its elements a thread each. It was a
// thread per element with a 64-bit division, modulo and ring modulo each (library calls): 2M of
// each per layer and prefill chunk at the 26B shapes.
__global__ void cache_store_kernel(const float *src, int64_t row, int64_t first, int64_t pos_first, uint8_t *dst, TensorType type,
                                   size_t dst_row_bytes, int64_t capacity) {
    const int64_t i = blockIdx.y, c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (c >= row) return;
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

void add_rmsnorm(cudaStream_t s, float *h, const float *d, const float *d_norm, const int32_t *row_mode, const float *scalars,
                 const float *w, float eps, int64_t rows, int64_t dim, float *out) {
    if (rows <= 0) return;
    add_rmsnorm_kernel<<<static_cast<unsigned>(rows), kThreads, 0, s>>>(h, d, d_norm, row_mode, scalars ? scalars[0] : 1.0f,
                                                                         scalars ? scalars[1] : 1.0f, w, eps, dim, out);
    check_launch("add_rmsnorm");
}

void rmsnorm_rope(cudaStream_t s, float *x, int64_t n, const float *w, float eps, int n_heads, int head_dim, const int32_t *pos,
                  const float *inv_freq, int n_rot) {
    if (n * n_heads <= 0) return;
    rmsnorm_rope_kernel<<<static_cast<unsigned>(n * n_heads), kThreads, 0, s>>>(x, w, eps, n_heads, head_dim, pos, inv_freq,
                                                                                n_rot);
    check_launch("rmsnorm_rope");
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
    for (int64_t r = 0; r < count; r += kMaxGridRows) {
        const unsigned rows = static_cast<unsigned>(std::min(kMaxGridRows, count - r));
        cache_store_kernel<<<dim3(blocks_for(row, kThreads), rows), kThreads, 0, s>>>(src, row, row0 + skip + r, pos0 + skip + r,
                                                                                    dst, type, dst_row_bytes, capacity);
        check_launch("cache_store");
    }
}

}  // namespace dg::cuda
