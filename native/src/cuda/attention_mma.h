// Index maths of the tensor set's attention tiles (attention.cu, attention_mma_kernel) as plain
// functions, so that tests/attention_mma_check.cpp runs the block's algorithm on the host, fragment
// by fragment, against a plain attention.
//
// The block is the float tiles' (16 queries of one head, tiles of 32 keys, 8 warps; shared: the
// queries, one tile of keys and then of values, scores and probabilities, in floats); its two
// products run on tf32 mma.m16n8k8 (10-bit mantissas, rounded to nearest: a relative error near
// 2^-11 an operand, against bf16's 2^-9; the scores of normalised queries and keys are sums of
// hundreds of products, and their error moves the probabilities):
//   scores S[16][32] = Q K^T: warp w multiplies the 8 keys of n-tile w % 4 over the head dimensions of
//     half w / 4 into s_part[half]; the softmax adds the two halves (first, then second);
//   output O[16][d] = rescale O + P V: warp w owns dimensions w d / 8 .. + d / 8 (d / 64 n-tiles of 8);
//     thread (g, q) holds rows g and g + 8 of each.
//
// Fragments of mma.m16n8k8 with .tf32 operands (PTX ISA, "Matrix Fragments for mma.m16n8k8"),
// g = lane / 4, q = lane % 4, one element a register:
//   A (16 x 8, row-major): a0 (g, q), a1 (g + 8, q), a2 (g, q + 4), a3 (g + 8, q + 4);
//   B (8 x 8, column-major): b0 (k = q, n = g), b1 (k = q + 4, n = g);
//   C: as mma.m16n8k16's (mma_c_coord).
//
// Shared rows are padded so that every fragment read of a warp touches 32 different banks: queries
// and keys (read as A, and as B along the dimension) at d + 4 floats (bank 4 g + q), values (read as
// B along the keys) at d + 8 (bank 8 q + g), scores and probabilities at kAttnLdP = 36 (4 g + q).
#pragma once

#include <cstdint>

#include "cuda/mma_layout.h"

namespace dg::cuda {

constexpr int kAttnQueries = 16, kAttnKeys = 32, kAttnThreads = 256, kAttnMaxDim = 512;
constexpr int kAttnPadK = 4, kAttnPadV = 8, kAttnLdP = kAttnKeys + 4;

// The dimensions the tensor-core tiles take: whole n-tiles per warp of the output and whole k-steps
// per half of the scores.
constexpr DG_HD bool attention_mma_fits(int d) { return d % 64 == 0 && d <= kAttnMaxDim; }

// Register r of a tf32 A fragment: (row, k); of a B fragment: (n, k).
DG_HD Coord tf32_a_coord(int lane, int r) { return {lane / 4 + 8 * (r % 2), lane % 4 + 4 * (r / 2)}; }
DG_HD Coord tf32_b_coord(int lane, int r) { return {lane / 4, lane % 4 + 4 * r}; }

// Shared layout, in floats from the start: queries [16][d + 4], keys or values [32][d + 8] (keys use
// d + 4 of each row), the two halves of the scores [2][16][36], probabilities [16][36], then the
// rescales and 1 / l [16] each.
struct AttnSmem {
    int ldq, ldk, ldv;
    int64_t q, kv, s_part, p, rescale, inv_l, floats;
};
DG_HD AttnSmem attention_mma_smem(int d) {
    AttnSmem s;
    s.ldq = d + kAttnPadK;
    s.ldk = d + kAttnPadK;
    s.ldv = d + kAttnPadV;
    s.q = 0;
    s.kv = s.q + static_cast<int64_t>(kAttnQueries) * s.ldq;
    s.s_part = s.kv + static_cast<int64_t>(kAttnKeys) * s.ldv;
    s.p = s.s_part + 2 * kAttnQueries * kAttnLdP;
    s.rescale = s.p + kAttnQueries * kAttnLdP;
    s.inv_l = s.rescale + kAttnQueries;
    s.floats = s.inv_l + kAttnQueries;
    return s;
}

// Scores: warp w's n-tile (its keys 8 nt ..) and its half of the head dimension [k_begin, k_end).
struct AttnScoreWork {
    int nt, k_begin, k_end, half;
};
DG_HD AttnScoreWork attention_score_work(int warp, int d) {
    return {warp % 4, (warp / 4) * (d / 2), (warp / 4 + 1) * (d / 2), warp / 4};
}
// Output: warp w's first dimension and its n-tiles of 8.
DG_HD int attention_out_dim0(int warp, int d) { return warp * (d / 8); }
constexpr DG_HD int attention_out_tiles(int d) { return d / 64; }

}  // namespace dg::cuda
