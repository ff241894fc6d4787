// Index maths of the tensor-core tiles (cuda/tile_mma.cuh) as plain functions, so that
// tests/mma_layout_check.cpp checks on the host that the loaders fill every element of a stage
// once, that the warps' fragments cover the output tile once, and that a block's products, done
// the way the fragments say, equal a plain matrix product.
//
// A block computes Y[token][row] = sum_k W[row][k] * X[token][k] for kMmaRows weight rows x N tokens
// (N = 128 for dense passes, 32 for the experts, whose tiles hold ~16 of a pass's 256 rows), in
// chunks of kMmaK. 8 warps in a WR x WC grid; warp w owns MT m16 tiles of rows and NT n8 tiles of
// tokens: rows m0 .. m0 + 16 MT - 1, tokens n0 .. n0 + 8 NT - 1.
//   N = 128: WR = 4, WC = 2, a warp 32 rows x 64 tokens (2 x 8 mma tiles: 16 mma per 8 + 16 fragment
//            words read);
//   N = 32:  WR = 8, WC = 1, a warp 16 rows x 32 tokens (1 x 4).
//
// Shared stage (bf16): w[kMmaRows][kMmaLine], x[N][kMmaLine]; one weight row or token per line, k
// contiguous. 80-byte lines put the 8 lines (g = 0..7) a fragment read touches at words 20 g + q:
// 32 different banks.
//
// Fragments of mma.m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16"), g = lane / 4, q = lane % 4,
// each register two bf16 at k and k + 1:
//   A (M x K, row-major): a0 (g, 2q), a1 (g + 8, 2q), a2 (g, 2q + 8), a3 (g + 8, 2q + 8);
//   B (K x N, column-major): b0 (2q, g), b1 (2q + 8, g);
//   C: c0 (g, 2q), c1 (g, 2q + 1), c2 (g + 8, 2q), c3 (g + 8, 2q + 1).
#pragma once

#include <cstdint>

#include "host_device.h"

namespace dg::cuda {

constexpr int kMmaRows = 128, kMmaK = 32, kMmaThreads = 256, kMmaWarps = kMmaThreads / 32;
constexpr int kMmaLine = kMmaK + 8;  // bf16 per shared line (80 bytes)
constexpr int kMmaWeightGroups = kMmaRows * kMmaK / 8 / kMmaThreads;  // a thread's groups of 8 k per weight operand

template <int N>
struct MmaShape {
    static_assert(N == 128 || N == 32, "tensor-core tile widths: 128 or 32 tokens");
    static constexpr int WC = N == 128 ? 2 : 1, WR = kMmaWarps / WC;
    static constexpr int MT = kMmaRows / (16 * WR), NT = N / (8 * WC);
    // Loader groups of 8 consecutive k a thread for the tokens' operand (N * kMmaK / 8 in all).
    static constexpr int kTokenGroups = (N * kMmaK / 8 + kMmaThreads - 1) / kMmaThreads;
};

struct Coord {
    int line, k;
};

// The first row and token of warp w's part of the tile.
template <int N>
DG_HD int mma_warp_row0(int warp) { return 16 * MmaShape<N>::MT * (warp % MmaShape<N>::WR); }
template <int N>
DG_HD int mma_warp_token0(int warp) { return 8 * MmaShape<N>::NT * (warp / MmaShape<N>::WR); }

// Register r (0..3) of the A fragment of lane: (row within the m16 tile, first k of the pair).
DG_HD Coord mma_a_coord(int lane, int r) { return {lane / 4 + 8 * (r % 2), 2 * (lane % 4) + 8 * (r / 2)}; }
// Register r (0..1) of the B fragment: (token within the n8 tile, first k of the pair).
DG_HD Coord mma_b_coord(int lane, int r) { return {lane / 4, 2 * (lane % 4) + 8 * r}; }
// Accumulator r (0..3): (row within the m16 tile, token within the n8 tile).
DG_HD Coord mma_c_coord(int lane, int r) { return {lane / 4 + 8 * (r / 2), 2 * (lane % 4) + r % 2}; }

// Loader group i of thread t: weights line t / 4 + 64 i, k 8 (t % 4) .. + 7; tokens likewise, group
// index t + 256 i (line index / 4), for groups below N * kMmaK / 8.
DG_HD Coord mma_loader_coord(int t, int i) {
    const int g = t + kMmaThreads * i;
    return {g / 4, 8 * (g % 4)};
}
template <int N>
DG_HD bool mma_token_group_used(int t, int i) { return t + kMmaThreads * i < N * kMmaK / 8; }

// The soft embedding's weight operand is the table turned: its rows (the vocabulary) are the walked k
// and its columns the tile's lines. Group i of thread t, g = t + 256 i: table row k = g % 32 of the
// chunk, columns (lines) 8 (g / 32) .. + 7, so a warp's 32 threads store one line's 32 k at once
// (no bank conflict) and every thread's eight stores are lines line .. line + 7 at its k.
DG_HD Coord mma_turned_loader_coord(int t, int i) {
    const int g = t + kMmaThreads * i;
    return {8 * (g / 32), g % 32};
}

// Split-K of a dense product: a weight of few row tiles leaves most multiprocessors idle while each
// block walks every chunk of k in one chain (run 9: 0.10-0.16 ms for a 2048 x 2816 projection whose
// bytes take 2 us to read). Such a product runs in `slices` ranges of slice_chunks whole chunks (the
// last may have fewer, none is empty), a block per (row tile, token tile, slice), each writing its
// partial sums; a second kernel adds the slices in order. The split depends only on the weight's
// shape and the device, never on the pass's rows, so a row's result does not depend on the other
// rows of its pass. A slice walks at least kMmaMinSliceChunks chunks; a product already of
// sm_count row tiles is not split.
constexpr int kMmaMinSliceChunks = 16, kMmaMaxSlices = 8;
constexpr int64_t kMmaSplitTokens = 256;  // tokens per launch of a split product (bounds its partial sums)

struct MmaSplit {
    int slices;
    int64_t slice_chunks;
};

DG_HD MmaSplit mma_k_split(int64_t rows, int64_t cols, int sm_count) {
    const int64_t row_tiles = (rows + kMmaRows - 1) / kMmaRows, chunks = (cols + kMmaK - 1) / kMmaK;
    int64_t s = 1;
    if (row_tiles < sm_count) {
        s = (sm_count + row_tiles - 1) / row_tiles;  // slices to give every multiprocessor a block
        if (s > chunks / kMmaMinSliceChunks) s = chunks / kMmaMinSliceChunks;
        if (s > kMmaMaxSlices) s = kMmaMaxSlices;
        if (s < 1) s = 1;
    }
    const int64_t per = (chunks + s - 1) / s;
    return {static_cast<int>(per > 0 ? (chunks + per - 1) / per : 1), per};
}

// Floats of the partial sums of any split product over up to kMmaSplitTokens tokens: slices x row
// tiles < 2 sm_count (slices <= ceil(sm_count / row tiles), row tiles < sm_count).
DG_HD int64_t mma_split_partial_floats(int sm_count) { return 2 * static_cast<int64_t>(sm_count) * kMmaRows * kMmaSplitTokens; }

// Tokens per tile of a dense product of `rows` weight rows in `slices` k slices over n tokens on a
// device of sm_count multiprocessors: 128, unless the pass is short or 128 x 128 tiles would leave
// multiprocessors idle: then 32, four times the blocks for four times the weight decoding. Both
// widths give the same bits (each output's chain is its own).
DG_HD int mma_tile_tokens(int64_t rows, int64_t n, int sm_count, int slices = 1) {
    const int64_t wide_blocks = (rows + kMmaRows - 1) / kMmaRows * ((n + 127) / 128) * slices;
    return n <= 32 || wide_blocks < sm_count ? 32 : 128;
}

// Elements per row of a bf16 activation copy: the row's k rounded up to whole chunks (zeros past
// the row), so a chunk's 16-byte loads never need a bound.
DG_HD int64_t mma_padded_cols(int64_t cols) { return (cols + kMmaK - 1) / kMmaK * kMmaK; }

}  // namespace dg::cuda
