// Attention on bf16 tensor cores (DGEMMA_CUDA_FLASH=1 under the tensor set): the index maths,
// shared layout and softmax arithmetic of attention.cu's flash kernel as plain functions, so that
// tests/flash_attention_check.cpp runs a block on the host lane by lane against a plain attention.
//
// Why: the tensor set's tf32 tiles take 16 queries of one head a block (256 blocks, one wave at the
// 26B shapes), load every key and value tile through registers between four barriers, and re-read a
// KV head's keys for each of its query heads and query tiles: 0.53 ms a sliding layer in run 10 for
// about 3 GFLOP. Here a block takes 64 (query, head) rows of one KV head, so the heads that share it
// (GQA) and 32 queries read each key tile once; the scores stay in registers (flash attention's form:
// the accumulators of S = Q K^T are the A fragments of P V), and the keys are cut into slices over
// blocks when the rows alone give too few blocks, their partial sums merged by a second kernel.
//
// Decoder segments (a canvas: every query sees the same keys, the cached positions [cache_pos0,
// n_past) and all n of the segment's rows) and encoder segments (the prompt and committed canvases:
// causal, and windowed in sliding layers) take it: a row's scores outside its query's span
// (attention_span.h, the tiles' and the CPU's rule) are -inf, and a block walks only the key tiles
// its queries' spans reach (fa_block_keys).
//
// Block: kFaWarps warps. Rows rho = 0 .. rows - 1 of KV head kvh: query rho / r, head kvh r + rho % r
// (r = n_head / n_head_kv). Warp w owns the 16 rows 16 (w / split) .. and the output dimensions
// (w % split) D / split .. (split = 2 above 256 dimensions, so a warp's output stays 128 floats a
// lane; both warps of a row group compute its scores). Per tile of `keys` keys:
//   S[16][keys] = Q K^T: m16n8k16 bf16, A = the warp's query rows (shared), B = K (shared, [key][dim]);
//   online softmax per row in registers (a row's values sit in the 4 lanes of a quad);
//   O[16][D / split] = rescale O + P V: A = P from the S accumulators (rounded to bf16), B = V
//   (shared, turned: [dim][key]).
// Fragments of m16n8k16 (mma_layout.h): A a0 (g, 2t), a1 (g + 8, 2t), a2 (g, 2t + 8), a3 (g + 8, 2t + 8);
// B b0 (k 2t, n g), b1 (k 2t + 8, n g); C c0 (g, 2t), c1 (g, 2t + 1), c2 (g + 8, 2t), c3 (g + 8, 2t + 1).
// So the C registers of score n-tiles 2 kk and 2 kk + 1 are, pairwise, the A registers of P's k-step kk.
#pragma once

#include <cmath>
#include <cstdint>

#include "attention_span.h"
#include "cuda/mma_layout.h"
#include "host_device.h"

namespace dg::cuda {

constexpr int kFaWarps = 4, kFaThreads = 32 * kFaWarps, kFaMaxDim = 512;
constexpr int kFaMaxSlices = 4;      // key slices a segment may be cut into (the partial sums' scratch)
constexpr int64_t kFaSplitRows = 256;  // segments of up to this many rows may be cut (a canvas); longer ones have blocks enough

// The head dimensions the kernel takes: whole k16 steps and n8 tiles per warp.
DG_HD bool fa_fits(int d) { return d % 64 == 0 && d >= 64 && d <= kFaMaxDim; }

struct FaShape {
    int d, split, rows, keys;  // head dim; warps per row group; (query, head) rows a block; keys a tile
    int ldq, ldk, ldv;         // bf16 per shared line: queries and keys [.][d + 8], values turned [d][keys + 8]
    int q, k, v, bytes;        // byte offsets of the three operands, and the total
};
constexpr DG_HD FaShape fa_shape(int d) {
    FaShape s{};
    s.d = d;
    s.split = d > 256 ? 2 : 1;
    s.rows = 16 * kFaWarps / s.split;
    s.keys = d > 256 ? 32 : 64;
    s.ldq = d + 8;  // 16 bytes of padding: a fragment read's 8 rows g at words 4 g + t (distinct banks)
    s.ldk = d + 8;
    s.ldv = s.keys + 8;
    s.q = 0;
    s.k = s.q + 2 * s.rows * s.ldq;
    s.v = s.k + 2 * s.keys * s.ldk;
    s.bytes = s.v + 2 * d * s.ldv;
    return s;
}

// Row rho of a KV head's rows.
struct FaRow {
    int64_t query;
    int head;
};
// (32-bit unsigned division: a segment's rows times its group stay far below 2^32, and a 64-bit one is a
// library call.)
DG_HD FaRow fa_row(int64_t rho, int r, int kvh) {
    const uint32_t i = static_cast<uint32_t>(rho), q = i / static_cast<uint32_t>(r);
    return {static_cast<int64_t>(q), kvh * r + static_cast<int>(i - q * static_cast<uint32_t>(r))};
}
DG_HD int fa_warp_row0(int warp, const FaShape &s) { return 16 * (warp / s.split); }
DG_HD int fa_warp_dim0(int warp, const FaShape &s) { return (warp % s.split) * (s.d / s.split); }

// Key slices: blocks (KV heads x row blocks) below two a multiprocessor cut the keys' tiles into up to
// kFaMaxSlices slices of whole tiles, none empty; `cut`: whether the segment may be cut at all (its
// partial sums fit the scratch).
struct FaSlices {
    int slices;
    int64_t tiles_per_slice;
};
DG_HD FaSlices fa_slices(int64_t key_tiles, int64_t blocks, int sm_count, bool cut) {
    int64_t s = 1;
    if (cut && blocks < 2 * static_cast<int64_t>(sm_count)) s = (2 * static_cast<int64_t>(sm_count) + blocks - 1) / blocks;
    if (s > kFaMaxSlices) s = kFaMaxSlices;
    if (s > key_tiles) s = key_tiles;
    if (s < 1) s = 1;
    const int64_t per = (key_tiles + s - 1) / s;
    return {static_cast<int>((key_tiles + per - 1) / per), per};
}

// Loaders (thread t of kFaThreads), each a 4-element group of one row:
//   queries: group i of t is row (t + T i) / (d / 4), dims 4 ((t + T i) % (d / 4)): a row's groups
//     consecutive over threads (coalesced reads of its floats); rows * d / 4 groups;
//   keys: the same over the tile's keys;
//   values: key (t + T i) % keys, dims 4 ((t + T i) / keys): consecutive threads take consecutive keys
//     of the same dimensions, so their stores into the turned tile are consecutive bf16 (no conflicts).
struct FaGroup {
    int line, dim;
};
DG_HD FaGroup fa_row_group(int t, int i, int d) {
    const int g = t + kFaThreads * i;
    return {g / (d / 4), 4 * (g % (d / 4))};
}
DG_HD FaGroup fa_value_group(int t, int i, int keys) {
    const int g = t + kFaThreads * i;
    return {g % keys, 4 * (g / keys)};
}

// The keys j (0 .. n_cached + n - 1, position cache_pos0 + j) query i of a segment sees: [lo, hi).
struct FaKeys {
    int64_t lo, hi;
};
DG_HD FaKeys fa_query_keys(const AttentionSpan &span, int64_t i) {
    return {span_lo(span, i) - span.cache_pos0, span_hi(span, i) - span.cache_pos0};
}
// The key tiles a block of rows [rho0, rho0 + rows) (its queries first .. last: spans grow with the
// query) reaches, within [tile0, tile_end) (its slice): [first, end), empty when first >= end.
struct FaTiles {
    int64_t first, end;
};
DG_HD FaTiles fa_block_keys(const AttentionSpan &span, int64_t rho0, int rows, int64_t n_rows, int r, int keys, int64_t tile0,
                            int64_t tile_end) {
    const int64_t last = (rho0 + rows < n_rows ? rho0 + rows : n_rows) - 1;
    const int64_t lo = fa_query_keys(span, rho0 / r).lo, hi = fa_query_keys(span, last / r).hi;
    const int64_t first = lo / keys, end = (hi + keys - 1) / keys;
    return {first > tile0 ? first : tile0, end < tile_end ? end : tile_end};
}

// Key j of a segment (0 .. n_cached + n - 1): cached position cache_pos0 + j (ring slot
// position % capacity) while j < n_cached, then the segment's row j - n_cached.
struct FaKey {
    bool cached;
    int64_t at;  // ring slot, or the segment's row
};
DG_HD FaKey fa_key(int64_t j, int64_t n_cached, int64_t cache_pos0, int64_t capacity) {
    if (j < n_cached) return {true, (cache_pos0 + j) % capacity};
    return {false, j - n_cached};
}
// The same slot found from the slot of the tile's first key, slot0 = (cache_pos0 + j0) % capacity, for
// key j0 + dj (dj < keys): at most one wrap when the ring holds a whole tile, the modulo only below
// that (a 64-bit modulo per element is a library call of dozens of instructions).
DG_HD int64_t fa_slot(int64_t slot0, int64_t dj, int64_t capacity, int keys) {
    const int64_t s = slot0 + dj;
    if (capacity >= keys) return s >= capacity ? s - capacity : s;
    return s % capacity;
}

// The online softmax of one row over a tile, in one lane: x[i] its scores (-inf for keys past the
// segment), m the row's running maximum (the quad's max already folded in by the caller: tile_max),
// l this lane's part of the running sum. Returns the factor the row's earlier terms are scaled by and
// writes the probabilities over x.
template <int N>
DG_HD float fa_softmax_lane(float (&x)[N], float tile_max, float &m, float &l) {
    const float m_new = m > tile_max ? m : tile_max;
    const float rescale = m_new == -INFINITY ? 1.0f : expf(m - m_new);
    float sum = 0.0f;
    for (int i = 0; i < N; ++i) {
        x[i] = m_new == -INFINITY ? 0.0f : expf(x[i] - m_new);
        sum += x[i];
    }
    l = l * rescale + sum;
    m = m_new;
    return rescale;
}

// Merging a row's slices: out = sum_s e_s O_s / sum_s e_s l_s, e_s = exp(m_s - max m).
DG_HD float fa_merge_weight(float m_s, float m_max) { return m_s == -INFINITY ? 0.0f : expf(m_s - m_max); }

}  // namespace dg::cuda
