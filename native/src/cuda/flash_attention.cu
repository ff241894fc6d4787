// Attention on bf16 tensor cores, flash attention's form (DGEMMA_CUDA_FLASH=1 under the
// tensor set; the layout, index maths and softmax arithmetic: cuda/flash_attention.h, run lane by lane
// on the host by tests/flash_attention_check.cpp). A block takes 64 (query, head) rows of one KV head
// (32 above 256 dimensions) and walks its slice of the keys in tiles: keys and values converted to
// bf16 into shared memory, the scores and probabilities in registers. Slices' partial sums (output
// unnormalised, running maximum, sum) are merged by flash_merge_kernel.
#include <cuda_bf16.h>

#include "cuda/flash_attention.h"
#include "cuda/kernels.h"
#include "quant/float_bits.h"

namespace dg::cuda {

namespace {

__device__ inline uint32_t bf16x2(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t *>(&h);
}

__device__ inline void store4_bf16(__nv_bfloat16 *dst, float4 x) {
    const uint2 u{bf16x2(x.x, x.y), bf16x2(x.z, x.w)};
    *reinterpret_cast<uint2 *>(dst) = u;
}

__device__ inline uint32_t lds32(const __nv_bfloat16 *p) { return *reinterpret_cast<const uint32_t *>(p); }

// Elements e .. e + 3 of the row of key j0 + dj of a tile (first key j0, its ring slot slot0 when
// cached) for KV head kvh: cached (ring slot, cache type) or the segment's own (float) rows.
template <int kKeys>
__device__ inline float4 kv_group(const AttentionSegment &g, const uint8_t *cache, const float *cur, int64_t kv_row, int64_t j0,
                                  int dj, int64_t slot0, int64_t n_cached, int64_t e) {
    const int64_t key = j0 + dj;
    if (key >= n_cached + g.n) return float4{0.0f, 0.0f, 0.0f, 0.0f};
    if (key >= n_cached) return *reinterpret_cast<const float4 *>(cur + (g.row0 + key - n_cached) * kv_row + e);
    const uint8_t *row = cache + static_cast<size_t>(fa_slot(slot0, dj, g.capacity, kKeys)) * g.cache_row_bytes;
    if (g.cache_type == TensorType::F32) return *reinterpret_cast<const float4 *>(reinterpret_cast<const float *>(row) + e);
    const uint2 w = *reinterpret_cast<const uint2 *>(reinterpret_cast<const uint16_t *>(row) + e);
    const auto wide = [&](uint32_t h) {
        return g.cache_type == TensorType::F16 ? f16_to_f32(static_cast<uint16_t>(h)) : bf16_to_f32(static_cast<uint16_t>(h));
    };
    return float4{wide(w.x & 0xffffu), wide(w.x >> 16), wide(w.y & 0xffffu), wide(w.y >> 16)};
}

// Block (row block, KV head, slice). part_o null: the block holds all the keys and writes out;
// otherwise it writes its slice's unnormalised output into part_o [slice][n][n_head][D] and its rows'
// maximum and sum into part_ml [slice][n][n_head][2].
template <int D>
__global__ void __launch_bounds__(kFaThreads) flash_attention_kernel(const float *q, const float *k, const float *v, float *out,
                                                                      int n_head, int n_head_kv, AttentionSegment g,
                                                                      int64_t tiles_per_slice, float *part_o, float *part_ml) {
    constexpr FaShape S = fa_shape(D);
    constexpr int kScoreTiles = S.keys / 8, kOutTiles = D / S.split / 8;
    static_assert(S.rows * D / 4 % kFaThreads == 0 && S.keys * D / 4 % kFaThreads == 0, "whole loader rounds");
    extern __shared__ __align__(16) uint8_t smem[];
    __nv_bfloat16 *qs = reinterpret_cast<__nv_bfloat16 *>(smem + S.q), *ks = reinterpret_cast<__nv_bfloat16 *>(smem + S.k),
                  *vs = reinterpret_cast<__nv_bfloat16 *>(smem + S.v);
    const int kvh = blockIdx.y, r = n_head / n_head_kv, slice = blockIdx.z;
    const int64_t rho0 = static_cast<int64_t>(blockIdx.x) * S.rows, n_rows = g.n * r;
    const int64_t n_cached = g.n_past - g.cache_pos0, n_keys = n_cached + g.n;
    const int64_t tile0 = slice * tiles_per_slice, tiles = (n_keys + S.keys - 1) / S.keys;
    const AttentionSpan span{g.n, g.n_past, g.causal, g.window, g.cache_pos0};
    const FaTiles walk = fa_block_keys(span, rho0, S.rows, n_rows, r, S.keys, tile0,
                                       tile0 + tiles_per_slice < tiles ? tile0 + tiles_per_slice : tiles);
    const int64_t q_stride = static_cast<int64_t>(n_head) * D, kv_row = static_cast<int64_t>(n_head_kv) * D;

    constexpr int kQueryRounds = S.rows * D / 4 / kFaThreads, kQueryBatch = 4;  // loads in flight before their stores
    static_assert(kQueryRounds % kQueryBatch == 0, "whole batches of query rounds");
    for (int i0 = 0; i0 < kQueryRounds; i0 += kQueryBatch) {  // the block's query rows, bf16
        float4 x[kQueryBatch];
#pragma unroll
        for (int b = 0; b < kQueryBatch; ++b) {
            const FaGroup gr = fa_row_group(threadIdx.x, i0 + b, D);
            const int64_t rho = rho0 + gr.line;
            x[b] = float4{0.0f, 0.0f, 0.0f, 0.0f};
            if (rho < n_rows) {
                const FaRow fr = fa_row(rho, r, kvh);
                x[b] = *reinterpret_cast<const float4 *>(q + (g.row0 + fr.query) * q_stride + static_cast<int64_t>(fr.head) * D + gr.dim);
            }
        }
#pragma unroll
        for (int b = 0; b < kQueryBatch; ++b) {
            const FaGroup gr = fa_row_group(threadIdx.x, i0 + b, D);
            store4_bf16(qs + gr.line * S.ldq + gr.dim, x[b]);
        }
    }

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row0 = fa_warp_row0(warp, S), dim0 = fa_warp_dim0(warp, S);
    float o[kOutTiles][4] = {};
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // rows g, g + 8: maximum; this lane's part of the sum
    int32_t key_lo[2], key_hi[2];  // the keys rows g, g + 8 see (none past the segment's rows)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int64_t rho = rho0 + row0 + lane / 4 + 8 * h;
        const FaKeys kr = rho < n_rows ? fa_query_keys(span, fa_row(rho, r, kvh).query) : FaKeys{0, 0};
        key_lo[h] = static_cast<int32_t>(kr.lo);
        key_hi[h] = static_cast<int32_t>(kr.hi);
    }

    for (int64_t tile = walk.first; tile < walk.end; ++tile) {
        const int64_t j0 = tile * S.keys, slot0 = j0 < n_cached ? (g.cache_pos0 + j0) % g.capacity : 0;
        __syncthreads();  // the previous tile is consumed (and the queries stored, the first time)
        // kLoadBatch rounds of loads issued before their stores: one round at a time waited on each
        // load in turn (the loads sit behind kv_group's branches, which the compiler does not hoist).
        constexpr int kRounds = S.keys * D / 4 / kFaThreads, kLoadBatch = 4;
        static_assert(kRounds % kLoadBatch == 0, "whole batches of loader rounds");
        for (int i0 = 0; i0 < kRounds; i0 += kLoadBatch) {
            float4 kx[kLoadBatch], vx[kLoadBatch];
#pragma unroll
            for (int b = 0; b < kLoadBatch; ++b) {
                const FaGroup gk = fa_row_group(threadIdx.x, i0 + b, D), gv = fa_value_group(threadIdx.x, i0 + b, S.keys);
                kx[b] = kv_group<S.keys>(g, g.k_cache, k, kv_row, j0, gk.line, slot0, n_cached, static_cast<int64_t>(kvh) * D + gk.dim);
                vx[b] = kv_group<S.keys>(g, g.v_cache, v, kv_row, j0, gv.line, slot0, n_cached, static_cast<int64_t>(kvh) * D + gv.dim);
            }
#pragma unroll
            for (int b = 0; b < kLoadBatch; ++b) {
                const FaGroup gk = fa_row_group(threadIdx.x, i0 + b, D), gv = fa_value_group(threadIdx.x, i0 + b, S.keys);
                store4_bf16(ks + gk.line * S.ldk + gk.dim, kx[b]);
                const float xs[4] = {vx[b].x, vx[b].y, vx[b].z, vx[b].w};
#pragma unroll
                for (int e = 0; e < 4; ++e) vs[(gv.dim + e) * S.ldv + gv.line] = __float2bfloat16_rn(xs[e]);
            }
        }
        __syncthreads();

        float s[kScoreTiles][4] = {};
#pragma unroll 4
        for (int k0 = 0; k0 < D; k0 += 16) {
            uint32_t a[4];
#pragma unroll
            for (int rr = 0; rr < 4; ++rr) {
                const Coord c = mma_a_coord(lane, rr);
                a[rr] = lds32(qs + (row0 + c.line) * S.ldq + k0 + c.k);
            }
#pragma unroll
            for (int nt = 0; nt < kScoreTiles; ++nt) {
                uint32_t b[2];
#pragma unroll
                for (int rr = 0; rr < 2; ++rr) {
                    const Coord c = mma_b_coord(lane, rr);
                    b[rr] = lds32(ks + (8 * nt + c.line) * S.ldk + k0 + c.k);
                }
                mma_bf16_16816(s[nt], a, b);
            }
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {  // rows g + 8 h: this lane's 2 kScoreTiles scores, the quad's maximum
            float x[2 * kScoreTiles];
            float mx = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < kScoreTiles; ++nt)
#pragma unroll
                for (int c = 0; c < 2; ++c) {
                    const int64_t key = j0 + 8 * nt + mma_c_coord(lane, 2 * h + c).k;
                    x[2 * nt + c] = key >= key_lo[h] && key < key_hi[h] ? s[nt][2 * h + c] : -INFINITY;
                    mx = fmaxf(mx, x[2 * nt + c]);
                }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float rescale = fa_softmax_lane(x, mx, m[h], l[h]);
#pragma unroll
            for (int nt = 0; nt < kScoreTiles; ++nt) {
                s[nt][2 * h] = x[2 * nt];
                s[nt][2 * h + 1] = x[2 * nt + 1];
            }
#pragma unroll
            for (int nt = 0; nt < kOutTiles; ++nt) {
                o[nt][2 * h] *= rescale;
                o[nt][2 * h + 1] *= rescale;
            }
        }
#pragma unroll
        for (int kk = 0; kk < S.keys / 16; ++kk) {
            const uint32_t a[4] = {bf16x2(s[2 * kk][0], s[2 * kk][1]), bf16x2(s[2 * kk][2], s[2 * kk][3]),
                                   bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]), bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int nt = 0; nt < kOutTiles; ++nt) {
                uint32_t b[2];
#pragma unroll
                for (int rr = 0; rr < 2; ++rr) {
                    const Coord c = mma_b_coord(lane, rr);
                    b[rr] = lds32(vs + (dim0 + 8 * nt + c.line) * S.ldv + 16 * kk + c.k);
                }
                mma_bf16_16816(o[nt], a, b);
            }
        }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // the rows' sums over their quads
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int64_t rho = rho0 + row0 + lane / 4 + 8 * h;
        if (rho >= n_rows) continue;
        const FaRow fr = fa_row(rho, r, kvh);
        const float inv = part_o || l[h] == 0.0f ? 1.0f : 1.0f / l[h];
        float *dst = part_o ? part_o + ((slice * g.n + fr.query) * n_head + fr.head) * D
                            : out + (g.row0 + fr.query) * q_stride + static_cast<int64_t>(fr.head) * D;
#pragma unroll
        for (int nt = 0; nt < kOutTiles; ++nt) {
            const int dim = dim0 + 8 * nt + 2 * (lane % 4);
            *reinterpret_cast<float2 *>(dst + dim) = float2{o[nt][2 * h] * inv, o[nt][2 * h + 1] * inv};
        }
        if (part_o && dim0 == 0 && lane % 4 == 0) {
            float *ml = part_ml + ((slice * g.n + fr.query) * n_head + fr.head) * 2;
            ml[0] = m[h];
            ml[1] = l[h];
        }
    }
}

// out[row0 + i][h][.] = sum_s e_s O_s / sum_s e_s l_s over the slices (fa_merge_weight): a block per
// (query, head) row, threads over the dimensions.
__global__ void flash_merge_kernel(const float *part_o, const float *part_ml, int slices, int64_t n, int n_head, int d,
                                   int64_t row0, float *out) {
    const int64_t row = blockIdx.x;  // query * n_head + head
    float m_max = -INFINITY;
    for (int s = 0; s < slices; ++s) m_max = fmaxf(m_max, part_ml[(s * n * n_head + row) * 2]);
    float total = 0.0f;
    for (int s = 0; s < slices; ++s) total += fa_merge_weight(part_ml[(s * n * n_head + row) * 2], m_max) * part_ml[(s * n * n_head + row) * 2 + 1];
    const float inv = total > 0.0f ? 1.0f / total : 0.0f;
    float *o = out + (row0 + row / n_head) * static_cast<int64_t>(n_head) * d + (row % n_head) * static_cast<int64_t>(d);
    for (int e = threadIdx.x; e < d; e += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < slices; ++s)
            acc += fa_merge_weight(part_ml[(s * n * n_head + row) * 2], m_max) * part_o[(s * n * n_head + row) * d + e];
        o[e] = acc * inv;
    }
}

template <int D>
void launch_flash(cudaStream_t s, const float *q, const float *k, const float *v, float *out, int n_head, int n_head_kv,
                  const AttentionSegment &g, const FlashScratch &sc) {
    constexpr FaShape S = fa_shape(D);
    const int r = n_head / n_head_kv;
    const int64_t row_blocks = (g.n * r + S.rows - 1) / S.rows, n_keys = g.n_past - g.cache_pos0 + g.n;
    const int64_t key_tiles = (n_keys + S.keys - 1) / S.keys;
    const bool cut = sc.part_o && g.n <= kFaSplitRows &&
                     kFaMaxSlices * g.n * n_head * static_cast<int64_t>(D) <= static_cast<int64_t>(sc.o_floats) &&
                     kFaMaxSlices * g.n * n_head * 2 <= static_cast<int64_t>(sc.ml_floats);
    const FaSlices sl = fa_slices(key_tiles, row_blocks * n_head_kv, sc.sm_count, cut);
    check(cudaFuncSetAttribute(flash_attention_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, S.bytes),
          "cudaFuncSetAttribute (flash attention)");
    const dim3 grid(static_cast<unsigned>(row_blocks), static_cast<unsigned>(n_head_kv), static_cast<unsigned>(sl.slices));
    const bool merged = sl.slices > 1;
    flash_attention_kernel<D><<<grid, kFaThreads, S.bytes, s>>>(q, k, v, out, n_head, n_head_kv, g, sl.tiles_per_slice,
                                                                merged ? sc.part_o : nullptr, merged ? sc.part_ml : nullptr);
    check_launch("attention (flash)");
    if (merged) {
        flash_merge_kernel<<<static_cast<unsigned>(g.n * n_head), 128, 0, s>>>(sc.part_o, sc.part_ml, sl.slices, g.n, n_head, D,
                                                                             g.row0, out);
        check_launch("attention (flash, merging slices)");
    }
}

}  // namespace

bool flash_attention_fits(int head_dim, int n_head, int n_head_kv, const AttentionSegment &g) {
    // key indices in 32 bits (the rows' spans): a segment's keys are its cache and its rows
    return fa_fits(head_dim) && n_head_kv > 0 && n_head % n_head_kv == 0 && g.n > 0 && g.capacity > 0 &&
           g.n_past - g.cache_pos0 + g.n < (int64_t{1} << 31);
}

void flash_attention(cudaStream_t s, const float *q, const float *k, const float *v, float *out, int n_head, int n_head_kv,
                     int head_dim, const AttentionSegment &g, const FlashScratch &sc) {
    switch (head_dim) {
        case 64: launch_flash<64>(s, q, k, v, out, n_head, n_head_kv, g, sc); break;
        case 128: launch_flash<128>(s, q, k, v, out, n_head, n_head_kv, g, sc); break;
        case 192: launch_flash<192>(s, q, k, v, out, n_head, n_head_kv, g, sc); break;
        case 256: launch_flash<256>(s, q, k, v, out, n_head, n_head_kv, g, sc); break;
        case 320: launch_flash<320>(s, q, k, v, out, n_head, n_head_kv, g, sc); break;
        case 384: launch_flash<384>(s, q, k, v, out, n_head, n_head_kv, g, sc); break;
        case 448: launch_flash<448>(s, q, k, v, out, n_head, n_head_kv, g, sc); break;
        default: launch_flash<512>(s, q, k, v, out, n_head, n_head_kv, g, sc); break;  // fa_fits: 512
    }
}

}  // namespace dg::cuda
