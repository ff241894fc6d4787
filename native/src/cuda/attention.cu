// Attention of one pass segment: one pass over the visible keys with an online softmax (per tile of
// keys: the scores, the running maximum and sum, the output rescaled). Keys: the cached positions a
// query may see (read from the ring in the cache type), then the segment's current rows; which ones,
// attention_span.h. Three kernels:
//   - the tiles (the float set): a block per (16 queries, head); each tile of 32 keys is staged in
//     shared memory once for the 16 queries, then its values in the same buffer;
//   - the same tiles with both products on tf32 tensor cores (the tensor set, head sizes that are a
//     multiple of 64; cuda/attention_mma.h);
//   - the reference (DGEMMA_CUDA_KERNELS=reference): a block per (query, head), keys read from
//     global memory per query.
// Under DGEMMA_CUDA_FLASH=1 the tensor set's segments take flash_attention.cu instead (flash_attention_fits).
#include "attention_span.h"
#include "cuda/attention_mma.h"
#include "cuda/kernels.h"
#include "quant/float_bits.h"

namespace dg::cuda {

namespace {

constexpr int kTile = 128;  // the reference kernel: keys per tile = threads per block

__device__ inline float cache_value(const uint8_t *row, TensorType type, int64_t i) {
    if (type == TensorType::F32) return reinterpret_cast<const float *>(row)[i];
    if (type == TensorType::F16) return f16_to_f32(reinterpret_cast<const uint16_t *>(row)[i]);
    return bf16_to_f32(reinterpret_cast<const uint16_t *>(row)[i]);
}

// Shared: q [d], acc [d], p [kTile].
__global__ void attention_reference_kernel(const float *q, const float *k, const float *v, float *out, int n_head, int n_head_kv,
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

// --- the tiles
//
// Block: kQueries queries (rows i0 ..) of one head, 256 threads = 8 warps. Shared, in floats:
//   qs [kQueries][d + 4]  the queries
//   kv [kKeys][d + 4]     one tile of keys, then the same tile's values (zero past the tile's end)
//   p  [kKeys][kQueries]  the tile's probabilities, a key's 16 queries contiguous (float4 broadcasts)
//   rescale [kQueries], inv_l [kQueries]
// Rows padded by 4 floats: lane j reading float4 e of row j hits banks 4j + e (mod 32), distinct
// within each quarter warp.
// Scores: warp w owns queries 2w and 2w + 1, lane j key j: two dot products in e order. Output:
// thread t owns columns t and t + 256 (head_dim <= 512) of all kQueries rows.
// The block shape both tile kernels share (cuda/attention_mma.h).
constexpr int kQueries = kAttnQueries, kKeys = kAttnKeys, kThreads = kAttnThreads, kMaxDim = kAttnMaxDim, kPad = kAttnPadK;

__host__ __device__ constexpr size_t tile_shared_bytes(int d) {
    return (static_cast<size_t>(kQueries + kKeys) * (d + kPad) + kKeys * kQueries + 2 * kQueries) * sizeof(float);
}

__device__ inline float warp_max(float v) {
    for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// One tile of a query's online softmax, lane = key, s = -inf where the key is not visible: returns
// this lane's exp(s - m'), where m' is the running maximum with this tile's, updates m and the sum l
// (the same in every lane) and gives the factor exp(m - m') the query's earlier terms are rescaled by
// (0 on its first visible tile; a tile before its span leaves it at -inf, 0).
__device__ inline float online_softmax_step(float s, float &m, float &l, float &rescale) {
    const float m_new = fmaxf(m, warp_max(s));
    const float pj = m_new == -INFINITY ? 0.0f : expf(s - m_new);
    rescale = m_new == -INFINITY ? 1.0f : expf(m - m_new);
    l = l * rescale + warp_sum(pj);
    m = m_new;
    return pj;
}

// The loaders' rounds go kLoadBatch at a time, all loads before their stores: the stores (through a
// pointer the compiler cannot prove is shared memory, so may alias the loads) kept every next load
// behind the previous store, one round trip to memory a round (run 10's SASS: 32 a tile for keys,
// 32 for values; the tiles' time went mostly there). The same elements and values, so the same bits.
constexpr int kLoadBatch = 8;

// Elements idx = 0 .. total - 1 of a tile, this thread's (idx = threadIdx.x + kThreads i), as the
// loaders above take them: load(idx) for kLoadBatch of them, then store(idx, value) for the same.
template <typename Load, typename Store>
__device__ inline void load_batched(int total, Load load, Store store) {
    for (int base = threadIdx.x; base < total; base += kLoadBatch * kThreads) {
        float x[kLoadBatch];
#pragma unroll
        for (int b = 0; b < kLoadBatch; ++b) {
            const int idx = base + b * kThreads;
            x[b] = idx < total ? load(idx) : 0.0f;
        }
#pragma unroll
        for (int b = 0; b < kLoadBatch; ++b) {
            const int idx = base + b * kThreads;
            if (idx < total) store(idx, x[b]);
        }
    }
}

// The block's kQueries queries of head h (rows i0 .. of the segment) into qs (rows of ld floats), zero
// past the segment's n_rows.
__device__ inline void load_query_tile(float *qs, int d, int ld, const float *q, const AttentionSegment &g, int64_t i0,
                                       int64_t n_rows, int h, int64_t q_stride) {
    load_batched(
        kQueries * d,
        [&](int idx) {
            const int r = idx / d, e = idx % d;
            return r < n_rows ? q[(g.row0 + i0 + r) * q_stride + static_cast<int64_t>(h) * d + e] : 0.0f;
        },
        [&](int idx, float x) { qs[(idx / d) * ld + idx % d] = x; });
}

// Rows [t0, t0 + kKeys) of the key (or value) sequence into buf (rows of ld floats), zero past t_end.
// Cached rows sit in a ring of g.capacity slots; the slot of t0 + j is found from t0's by at most one
// wrap when the ring holds a whole tile (a 64-bit modulo per element was a library call: 42 of them
// in the tf32 tile's key loop).
__device__ inline void load_key_tile(float *buf, int d, int ld, int64_t t0, int64_t t_end, const AttentionSegment &g,
                                     const uint8_t *cache, const float *cur, int64_t kv_row, int kvh) {
    const int64_t slot0 = t0 < g.n_past ? t0 % g.capacity : 0;
    load_batched(
        kKeys * d,
        [&](int idx) {
            const int j = idx / d, e = idx % d;
            const int64_t kp = t0 + j;
            if (kp >= t_end) return 0.0f;
            if (kp >= g.n_past) return cur[(g.row0 + kp - g.n_past) * kv_row + static_cast<int64_t>(kvh) * d + e];
            int64_t slot = slot0 + j;
            if (g.capacity >= kKeys) slot -= slot >= g.capacity ? g.capacity : 0;
            else slot %= g.capacity;
            return cache_value(cache + static_cast<size_t>(slot) * g.cache_row_bytes, g.cache_type, static_cast<int64_t>(kvh) * d + e);
        },
        [&](int idx, float x) { buf[(idx / d) * ld + idx % d] = x; });
}

__global__ void __launch_bounds__(kThreads) attention_tile_kernel(const float *q, const float *k, const float *v, float *out,
                                                                   int n_head, int n_head_kv, int d, AttentionSegment g) {
    extern __shared__ __align__(16) float sh[];
    const int ld = d + kPad;
    float *qs = sh, *kv = qs + kQueries * ld, *p = kv + kKeys * ld, *rescale = p + kKeys * kQueries, *inv_l = rescale + kQueries;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kQueries;
    const int h = blockIdx.y, kvh = h / (n_head / n_head_kv);
    const int64_t q_stride = static_cast<int64_t>(n_head) * d, kv_row = static_cast<int64_t>(n_head_kv) * d;
    const int64_t n_rows = min(int64_t{kQueries}, g.n - i0);
    const AttentionSpan span{g.n, g.n_past, g.causal, g.window, g.cache_pos0};

    load_query_tile(qs, d, ld, q, g, i0, n_rows, h, q_stride);
    // This warp's two queries: their visible spans and running maximum and sum (same in every lane).
    const int qa = 2 * warp, qb = qa + 1;
    const bool a_ok = qa < n_rows, b_ok = qb < n_rows;
    const int64_t a_lo = span_lo(span, i0 + qa), a_hi = span_hi(span, i0 + qa);
    const int64_t b_lo = span_lo(span, i0 + qb), b_hi = span_hi(span, i0 + qb);
    float ma = -INFINITY, la = 0.0f, mb = -INFINITY, lb = 0.0f;
    float acc[kMaxDim / kThreads][kQueries] = {};

    const int64_t t_lo = span_lo(span, i0), t_end = span_hi(span, i0 + n_rows - 1);
    for (int64_t t0 = t_lo; t0 < t_end; t0 += kKeys) {
        __syncthreads();  // the previous tile's values are consumed (and qs written, the first time)
        load_key_tile(kv, d, ld, t0, t_end, g, g.k_cache, k, kv_row, kvh);
        __syncthreads();
        const int64_t kp = t0 + lane;
        float sa = 0.0f, sb = 0.0f;
        const float4 *kr = reinterpret_cast<const float4 *>(kv + lane * ld);
        const float4 *xa = reinterpret_cast<const float4 *>(qs + qa * ld), *xb = reinterpret_cast<const float4 *>(qs + qb * ld);
        for (int e4 = 0; e4 < d / 4; ++e4) {
            const float4 kk = kr[e4], x = xa[e4], y = xb[e4];
            sa = fmaf(x.x, kk.x, sa); sa = fmaf(x.y, kk.y, sa); sa = fmaf(x.z, kk.z, sa); sa = fmaf(x.w, kk.w, sa);
            sb = fmaf(y.x, kk.x, sb); sb = fmaf(y.y, kk.y, sb); sb = fmaf(y.z, kk.z, sb); sb = fmaf(y.w, kk.w, sb);
        }
        auto update = [&](float s, bool visible, float &m, float &l, int qi) {
            float r;
            p[lane * kQueries + qi] = online_softmax_step(visible ? s : -INFINITY, m, l, r);
            if (lane == 0) rescale[qi] = r;
        };
        update(sa, a_ok && kp >= a_lo && kp < a_hi, ma, la, qa);
        update(sb, b_ok && kp >= b_lo && kp < b_hi, mb, lb, qb);
        __syncthreads();  // p and rescale published; the keys consumed
        load_key_tile(kv, d, ld, t0, t_end, g, g.v_cache, v, kv_row, kvh);
        __syncthreads();
#pragma unroll
        for (int c = 0; c < kMaxDim / kThreads; ++c) {
            const int e = threadIdx.x + c * kThreads;
            if (e >= d) break;
#pragma unroll
            for (int r = 0; r < kQueries; ++r) acc[c][r] *= rescale[r];
            for (int j = 0; j < kKeys; ++j) {
                const float x = kv[j * ld + e];
                const float4 *pj = reinterpret_cast<const float4 *>(p + j * kQueries);
#pragma unroll
                for (int r4 = 0; r4 < kQueries / 4; ++r4) {
                    const float4 w = pj[r4];
                    acc[c][4 * r4] = fmaf(w.x, x, acc[c][4 * r4]);
                    acc[c][4 * r4 + 1] = fmaf(w.y, x, acc[c][4 * r4 + 1]);
                    acc[c][4 * r4 + 2] = fmaf(w.z, x, acc[c][4 * r4 + 2]);
                    acc[c][4 * r4 + 3] = fmaf(w.w, x, acc[c][4 * r4 + 3]);
                }
            }
        }
    }
    if (lane == 0) {
        inv_l[qa] = la > 0.0f ? 1.0f / la : 0.0f;
        inv_l[qb] = lb > 0.0f ? 1.0f / lb : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kMaxDim / kThreads; ++c) {
        const int e = threadIdx.x + c * kThreads;
        if (e >= d) break;
        for (int r = 0; r < n_rows; ++r)
            out[(g.row0 + i0 + r) * q_stride + static_cast<int64_t>(h) * d + e] = acc[c][r] * inv_l[r];
    }
}

__device__ inline uint32_t to_tf32(float x) {
    uint32_t r = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
#endif
    return r;
}

// d[16][8] += a[16][8] . b[8][8], tf32 operands (fragments: cuda/attention_mma.h).
__device__ inline void mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();  // the host selects this kernel only on compute capability 8.0 and newer
#endif
}

// The tensor set's tiles: the float tiles' block, loads and online softmax, the scores and the
// output on tf32 mma (the work split, fragments and shared layout: cuda/attention_mma.h; the same
// algorithm on the host, lane by lane: tests/attention_mma_check.cpp). D, the head dimension, is a
// template argument so that the output accumulators (D / 64 n-tiles) stay in registers.
template <int D>
__global__ void __launch_bounds__(kAttnThreads) attention_mma_kernel(const float *q, const float *k, const float *v, float *out,
                                                                      int n_head, int n_head_kv, AttentionSegment g) {
    constexpr int d = D, tiles = D / 64;
    extern __shared__ __align__(16) float sh[];
    const AttnSmem L = attention_mma_smem(d);
    float *qs = sh + L.q, *kv = sh + L.kv, *s_part = sh + L.s_part, *p = sh + L.p, *rescale = sh + L.rescale,
          *inv_l = sh + L.inv_l;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kAttnQueries;
    const int h = blockIdx.y, kvh = h / (n_head / n_head_kv);
    const int64_t q_stride = static_cast<int64_t>(n_head) * d, kv_row = static_cast<int64_t>(n_head_kv) * d;
    const int64_t n_rows = min(int64_t{kAttnQueries}, g.n - i0);
    const AttentionSpan span{g.n, g.n_past, g.causal, g.window, g.cache_pos0};

    load_query_tile(qs, d, L.ldq, q, g, i0, n_rows, h, q_stride);
    // The softmax: this warp's two queries (lane = key), as the float tiles.
    const int qa = 2 * warp, qb = qa + 1;
    const bool a_ok = qa < n_rows, b_ok = qb < n_rows;
    const int64_t a_lo = span_lo(span, i0 + qa), a_hi = span_hi(span, i0 + qa);
    const int64_t b_lo = span_lo(span, i0 + qb), b_hi = span_hi(span, i0 + qb);
    float ma = -INFINITY, la = 0.0f, mb = -INFINITY, lb = 0.0f;
    // The products: this warp's score n-tile and half, and its output dimensions.
    const AttnScoreWork sw = attention_score_work(warp, d);
    const int dim0 = attention_out_dim0(warp, d);
    static_assert(attention_mma_fits(D) && tiles == attention_out_tiles(D), "head dimensions of whole n-tiles");
    float acc[tiles][4] = {};

    const int64_t t_lo = span_lo(span, i0), t_end = span_hi(span, i0 + n_rows - 1);
    for (int64_t t0 = t_lo; t0 < t_end; t0 += kAttnKeys) {
        __syncthreads();  // the previous tile's values are consumed (and qs written, the first time)
        load_key_tile(kv, d, L.ldk, t0, t_end, g, g.k_cache, k, kv_row, kvh);
        __syncthreads();
        float s[4] = {};
        for (int k0 = sw.k_begin; k0 < sw.k_end; k0 += 8) {
            uint32_t a[4], b[2];
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const Coord c = tf32_a_coord(lane, r);
                a[r] = to_tf32(qs[c.line * L.ldq + k0 + c.k]);
            }
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const Coord c = tf32_b_coord(lane, r);
                b[r] = to_tf32(kv[(8 * sw.nt + c.line) * L.ldk + k0 + c.k]);
            }
            mma_tf32(s, a, b);
        }
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const Coord c = mma_c_coord(lane, r);
            s_part[sw.half * kAttnQueries * kAttnLdP + c.line * kAttnLdP + 8 * sw.nt + c.k] = s[r];
        }
        __syncthreads();  // the scores' halves published
        const int64_t kp = t0 + lane;
        const float sa = s_part[qa * kAttnLdP + lane] + s_part[(kAttnQueries + qa) * kAttnLdP + lane];
        const float sb = s_part[qb * kAttnLdP + lane] + s_part[(kAttnQueries + qb) * kAttnLdP + lane];
        auto update = [&](float x, bool visible, float &m, float &l, int qi) {
            float r;
            p[qi * kAttnLdP + lane] = online_softmax_step(visible ? x : -INFINITY, m, l, r);
            if (lane == 0) rescale[qi] = r;
        };
        update(sa, a_ok && kp >= a_lo && kp < a_hi, ma, la, qa);
        update(sb, b_ok && kp >= b_lo && kp < b_hi, mb, lb, qb);
        __syncthreads();  // p and rescale published; the keys consumed
        load_key_tile(kv, d, L.ldv, t0, t_end, g, g.v_cache, v, kv_row, kvh);
        __syncthreads();
        const float r_lo = rescale[lane / 4], r_hi = rescale[lane / 4 + 8];  // rows g and g + 8
#pragma unroll
        for (int nt = 0; nt < tiles; ++nt) {
            acc[nt][0] *= r_lo;
            acc[nt][1] *= r_lo;
            acc[nt][2] *= r_hi;
            acc[nt][3] *= r_hi;
        }
#pragma unroll
        for (int k0 = 0; k0 < kAttnKeys; k0 += 8) {
            uint32_t a[4];
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const Coord c = tf32_a_coord(lane, r);
                a[r] = to_tf32(p[c.line * kAttnLdP + k0 + c.k]);
            }
#pragma unroll
            for (int nt = 0; nt < tiles; ++nt) {
                uint32_t b[2];
#pragma unroll
                for (int r = 0; r < 2; ++r) {
                    const Coord c = tf32_b_coord(lane, r);
                    b[r] = to_tf32(kv[(k0 + c.k) * L.ldv + dim0 + 8 * nt + c.line]);
                }
                mma_tf32(acc[nt], a, b);
            }
        }
    }
    if (lane == 0) {
        inv_l[qa] = la > 0.0f ? 1.0f / la : 0.0f;
        inv_l[qb] = lb > 0.0f ? 1.0f / lb : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int nt = 0; nt < tiles; ++nt)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const Coord c = mma_c_coord(lane, r);
            if (c.line < n_rows)
                out[(g.row0 + i0 + c.line) * q_stride + static_cast<int64_t>(h) * d + dim0 + 8 * nt + c.k] = acc[nt][r] * inv_l[c.line];
        }
}

}  // namespace

bool attention_tiles_fit(int head_dim) { return head_dim % 4 == 0 && head_dim <= kMaxDim; }

void attention(cudaStream_t s, const float *q, const float *k, const float *v, float *out, int n_head, int n_head_kv,
               int head_dim, const AttentionSegment &g, KernelSet kernels, const FlashScratch *flash) {
    if (g.n <= 0) return;
    if (kernels == KernelSet::tensor && flash && flash_attention_fits(head_dim, n_head, n_head_kv, g)) {
        flash_attention(s, q, k, v, out, n_head, n_head_kv, head_dim, g, *flash);
        return;
    }
    if (kernels == KernelSet::tensor && attention_mma_fits(head_dim)) {
        const size_t shared = static_cast<size_t>(attention_mma_smem(head_dim).floats) * sizeof(float);
        const dim3 grid(blocks_for(g.n, kAttnQueries), static_cast<unsigned>(n_head));
        auto launch = [&](auto dim) {
            constexpr int D = decltype(dim)::value;
            check(cudaFuncSetAttribute(attention_mma_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)),
                  "cudaFuncSetAttribute (attention on tensor cores)");
            attention_mma_kernel<D><<<grid, kAttnThreads, shared, s>>>(q, k, v, out, n_head, n_head_kv, g);
        };
        switch (head_dim) {
            case 64: launch(std::integral_constant<int, 64>{}); break;
            case 128: launch(std::integral_constant<int, 128>{}); break;
            case 192: launch(std::integral_constant<int, 192>{}); break;
            case 256: launch(std::integral_constant<int, 256>{}); break;
            case 320: launch(std::integral_constant<int, 320>{}); break;
            case 384: launch(std::integral_constant<int, 384>{}); break;
            case 448: launch(std::integral_constant<int, 448>{}); break;
            default: launch(std::integral_constant<int, 512>{}); break;  // attention_mma_fits: 512
        }
        check_launch("attention (tensor cores)");
        return;
    }
    if (kernels != KernelSet::reference && attention_tiles_fit(head_dim)) {
        const size_t shared = tile_shared_bytes(head_dim);
        // Above 48 KiB a kernel must ask, on each device (head_dim 512 takes 101 KiB).
        check(cudaFuncSetAttribute(attention_tile_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)),
              "cudaFuncSetAttribute (attention tiles)");
        attention_tile_kernel<<<dim3(blocks_for(g.n, kQueries), static_cast<unsigned>(n_head)), kThreads, shared, s>>>(
            q, k, v, out, n_head, n_head_kv, head_dim, g);
        check_launch("attention (tiles)");
        return;
    }
    const size_t shared = (2 * static_cast<size_t>(head_dim) + kTile) * sizeof(float);
    attention_reference_kernel<<<dim3(static_cast<unsigned>(g.n), static_cast<unsigned>(n_head)), kTile, shared, s>>>(
        q, k, v, out, n_head, n_head_kv, head_dim, g);
    check_launch("attention");
}

}  // namespace dg::cuda
