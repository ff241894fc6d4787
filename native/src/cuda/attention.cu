// Attention of one pass segment, one block per (query, head), one pass over the visible keys with an
// online softmax (tiles of kTile keys: their scores, the running maximum and sum, the output
// rescaled). Keys: the cached positions a query may see (read from the ring in the cache type),
// then the segment's current rows. Visibility as the CPU backend (see PassSegment).
#include "cuda/kernels.h"
#include "quant/float_bits.h"

namespace dg::cuda {

namespace {

constexpr int kTile = 128;  // keys per tile = threads per block

__device__ inline float cache_value(const uint8_t *row, TensorType type, int64_t i) {
    if (type == TensorType::F32) return reinterpret_cast<const float *>(row)[i];
    if (type == TensorType::F16) return f16_to_f32(reinterpret_cast<const uint16_t *>(row)[i]);
    return bf16_to_f32(reinterpret_cast<const uint16_t *>(row)[i]);
}

// Shared: q [d], acc [d], p [kTile].
__global__ void attention_kernel(const float *q, const float *k, const float *v, float *out, int n_head, int n_head_kv,
                                 int d, AttentionSegment g) {
    extern __shared__ float sh[];
    __shared__ float red[32];
    float *qs = sh, *acc = sh + d, *p = sh + 2 * d;
    const int64_t i = blockIdx.x;  // query row within the segment
    const int h = blockIdx.y, kvh = h / (n_head / n_head_kv);
    const int64_t q_stride = static_cast<int64_t>(n_head) * d, kv_row = static_cast<int64_t>(n_head_kv) * d;
    const int64_t pos = g.n_past + i;
    // Visible keys: cached positions [c0, n_past), current rows [cur0, cur_end).
    int64_t c0 = g.cache_pos0;
    if (g.window > 0) c0 = max(c0, pos - g.window + 1);
    c0 = min(c0, g.n_past);
    const int64_t cur0 = g.window > 0 ? max(int64_t{0}, pos - g.window + 1 - g.n_past) : 0;
    const int64_t cur_end = g.causal ? i + 1 : g.n;
    const int64_t n_cached = g.n_past - c0, n_keys = n_cached + (cur_end - cur0);
    const float *qr = q + (g.row0 + i) * q_stride + static_cast<int64_t>(h) * d;
    for (int e = threadIdx.x; e < d; e += blockDim.x) {
        qs[e] = qr[e];
        acc[e] = 0.0f;
    }
    __syncthreads();
    float m = -INFINITY, l = 0.0f;
    for (int64_t j0 = 0; j0 < n_keys; j0 += kTile) {
        const int64_t j = j0 + threadIdx.x;
        float score = -INFINITY;
        if (j < n_keys) {
            float dot = 0.0f;
            if (j < n_cached) {
                const uint8_t *row = g.k_cache + static_cast<size_t>((c0 + j) % g.capacity) * g.cache_row_bytes;
                for (int e = 0; e < d; ++e) dot += qs[e] * cache_value(row, g.cache_type, static_cast<int64_t>(kvh) * d + e);
            } else {
                const float *kr = k + (g.row0 + cur0 + (j - n_cached)) * kv_row + static_cast<int64_t>(kvh) * d;
                for (int e = 0; e < d; ++e) dot += qs[e] * kr[e];
            }
            score = dot;
        }
        const float m_new = fmaxf(m, block_max(score, red));
        const float pj = j < n_keys ? expf(score - m_new) : 0.0f;
        p[threadIdx.x] = pj;
        const float tile_sum = block_sum(pj, red);  // its barriers also publish p
        const float rescale = expf(m - m_new);       // 0 on the first tile (m = -inf)
        l = l * rescale + tile_sum;
        const int64_t nt = min(int64_t{kTile}, n_keys - j0);
        for (int e = threadIdx.x; e < d; e += blockDim.x) {
            float a = acc[e] * rescale;
            for (int64_t jj = 0; jj < nt; ++jj) {
                const int64_t key = j0 + jj;
                float val;
                if (key < n_cached) {
                    const uint8_t *row = g.v_cache + static_cast<size_t>((c0 + key) % g.capacity) * g.cache_row_bytes;
                    val = cache_value(row, g.cache_type, static_cast<int64_t>(kvh) * d + e);
                } else {
                    val = v[(g.row0 + cur0 + (key - n_cached)) * kv_row + static_cast<int64_t>(kvh) * d + e];
                }
                a += p[jj] * val;
            }
            acc[e] = a;
        }
        m = m_new;
        __syncthreads();
    }
    float *o = out + (g.row0 + i) * q_stride + static_cast<int64_t>(h) * d;
    for (int e = threadIdx.x; e < d; e += blockDim.x) o[e] = acc[e] / l;
}

}  // namespace

void attention(cudaStream_t s, const float *q, const float *k, const float *v, float *out, int n_head, int n_head_kv,
               int head_dim, const AttentionSegment &g) {
    if (g.n <= 0) return;
    const size_t shared = (2 * static_cast<size_t>(head_dim) + kTile) * sizeof(float);
    attention_kernel<<<dim3(static_cast<unsigned>(g.n), static_cast<unsigned>(n_head)), kTile, shared, s>>>(
        q, k, v, out, n_head, n_head_kv, head_dim, g);
    check_launch("attention");
}

}  // namespace dg::cuda
