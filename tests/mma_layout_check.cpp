// Host check of cuda/mma_layout.h, the tensor-core tiles' index maths, for both tile widths:
//   - the loaders' groups fill every element of a stage's weight and token operands exactly once;
//   - a warp's fragment reads (mma_a_coord, mma_b_coord) hit 32 different shared-memory banks;
//   - a block's products, emulated as the mma instruction does them (the fragment layout restated
//     below from the PTX ISA's tables, not from mma_layout.h: the registers are loaded where the
//     kernel loads them and interpreted where the hardware reads them) and stored where
//     mma_c_coord says, cover the output tile once and equal a plain product.
// Integer-valued operands keep every sum exact. Prints the number of outputs compared; exits 1 on any
// disagreement, printing it.
#include <cstdio>
#include <random>
#include <vector>

#include "cuda/mma_layout.h"

using namespace dg::cuda;

namespace {

int failures = 0;
void fail(const char *what, int a, int b) {
    if (++failures <= 20) std::printf("FAIL %s (%d, %d)\n", what, a, b);
}

// PTX ISA, "Matrix Fragments for mma.m16n8k16" (.bf16), element i of a thread's fragment, groupID =
// lane >> 2, threadID_in_group = lane % 4; register j holds elements 2j and 2j + 1.
//   A: row = groupID for a0, a1, a4, a5, groupID + 8 for a2, a3, a6, a7;
//      col = threadID_in_group * 2 + (i & 1) for a0..a3, + 8 for a4..a7.
//   B: row (k) = threadID_in_group * 2 + (i & 1) for b0, b1, + 8 for b2, b3; col (n) = groupID.
//   C: row = groupID for c0, c1, groupID + 8 for c2, c3; col = threadID_in_group * 2 + (i & 1).
struct RowCol {
    int row, col;
};
RowCol ptx_a(int lane, int i) {
    const int g = lane >> 2, q = lane % 4;
    const bool lower = i == 2 || i == 3 || i == 6 || i == 7;
    return {g + (lower ? 8 : 0), q * 2 + (i & 1) + (i >= 4 ? 8 : 0)};
}
RowCol ptx_b(int lane, int i) { return {(lane % 4) * 2 + (i & 1) + (i >= 2 ? 8 : 0), lane >> 2}; }
RowCol ptx_c(int lane, int i) { return {(lane >> 2) + (i >= 2 ? 8 : 0), (lane % 4) * 2 + (i & 1)}; }

// The 32-bit word of shared memory holding element (line, k) of an operand with kMmaLine bf16 a line.
int word_of(int line, int k) { return (line * kMmaLine + k) / 2; }

template <int N>
long check() {
    using S = MmaShape<N>;
    static_assert(S::WR * S::WC == kMmaWarps && 16 * S::MT * S::WR == kMmaRows && 8 * S::NT * S::WC == N, "shape");
    // Loaders.
    std::vector<int> w_seen(kMmaRows * kMmaK), x_seen(N * kMmaK);
    for (int t = 0; t < kMmaThreads; ++t) {
        for (int i = 0; i < kMmaWeightGroups; ++i) {
            const Coord c = mma_loader_coord(t, i);
            for (int j = 0; j < 8; ++j) ++w_seen[c.line * kMmaK + c.k + j];
        }
        for (int i = 0; i < S::kTokenGroups; ++i)
            if (mma_token_group_used<N>(t, i)) {
                const Coord c = mma_loader_coord(t, i);
                if (c.line >= N) fail("token group past the tile", t, i);
                else
                    for (int j = 0; j < 8; ++j) ++x_seen[c.line * kMmaK + c.k + j];
            }
    }
    for (int e = 0; e < kMmaRows * kMmaK; ++e)
        if (w_seen[e] != 1) fail("weight element loaded other than once", e / kMmaK, e % kMmaK);
    // The turned loader (the soft embedding's table): each element once; a warp's j-th stores fall
    // in 32 different banks or share a word.
    std::vector<int> turned_seen(kMmaRows * kMmaK);
    for (int t = 0; t < kMmaThreads; ++t)
        for (int i = 0; i < kMmaWeightGroups; ++i) {
            const Coord c = mma_turned_loader_coord(t, i);
            for (int j = 0; j < 8; ++j) ++turned_seen[(c.line + j) * kMmaK + c.k];
        }
    for (int e = 0; e < kMmaRows * kMmaK; ++e)
        if (turned_seen[e] != 1) fail("turned weight element loaded other than once", e / kMmaK, e % kMmaK);
    for (int warp = 0; warp < kMmaWarps; ++warp)
        for (int i = 0; i < kMmaWeightGroups; ++i)
            for (int j = 0; j < 8; ++j) {
                int words_in_bank[32] = {}, last_word[32];
                for (int lane = 0; lane < 32; ++lane) {
                    const Coord c = mma_turned_loader_coord(32 * warp + lane, i);
                    const int w = word_of(c.line + j, c.k), b = w % 32;
                    if (words_in_bank[b] == 0 || last_word[b] != w) ++words_in_bank[b];
                    last_word[b] = w;
                }
                for (int b = 0; b < 32; ++b)
                    if (words_in_bank[b] > 1) fail("turned store: bank conflict", warp, j);
            }
    for (int e = 0; e < N * kMmaK; ++e)
        if (x_seen[e] != 1) fail("token element loaded other than once", e / kMmaK, e % kMmaK);

    // Products over one chunk of random integers.
    std::mt19937 rng(N);
    std::vector<long> W(kMmaRows * kMmaK), X(N * kMmaK), Y(kMmaRows * N, 0), want(kMmaRows * N, 0);
    for (long &v : W) v = static_cast<long>(rng() % 17) - 8;
    for (long &v : X) v = static_cast<long>(rng() % 13) - 6;
    for (int r = 0; r < kMmaRows; ++r)
        for (int t = 0; t < N; ++t)
            for (int k = 0; k < kMmaK; ++k) want[r * N + t] += W[r * kMmaK + k] * X[t * kMmaK + k];
    std::vector<int> y_seen(kMmaRows * N);
    for (int warp = 0; warp < kMmaWarps; ++warp) {
        const int m0 = mma_warp_row0<N>(warp), n0 = mma_warp_token0<N>(warp);
        std::vector<long> acc(S::MT * S::NT * 32 * 4, 0);  // [mt][nt][lane][r]
        for (int ks = 0; ks < kMmaK; ks += 16)
            for (int mt = 0; mt < S::MT; ++mt)
                for (int nt = 0; nt < S::NT; ++nt) {
                    // What each lane's registers hold: the kernel loads register r, half h, from
                    // (line, k + h) of its coordinate; the mma reads them as the PTX tables say.
                    long A[16][16], B[16][8];
                    int a_seen[16][16] = {}, b_seen[16][8] = {};
                    for (int r = 0; r < 4; ++r) {
                        int banks[32] = {};
                        for (int lane = 0; lane < 32; ++lane) {
                            const Coord c = mma_a_coord(lane, r);
                            ++banks[word_of(m0 + 16 * mt + c.line, ks + c.k) % 32];
                            for (int h = 0; h < 2; ++h) {
                                const RowCol at = ptx_a(lane, 2 * r + h);
                                A[at.row][at.col] = W[(m0 + 16 * mt + c.line) * kMmaK + ks + c.k + h];
                                ++a_seen[at.row][at.col];
                            }
                        }
                        for (int b = 0; b < 32; ++b)
                            if (banks[b] != 1) fail("A fragment read: bank conflict", r, b);
                    }
                    for (int r = 0; r < 2; ++r) {
                        int banks[32] = {};
                        for (int lane = 0; lane < 32; ++lane) {
                            const Coord c = mma_b_coord(lane, r);
                            ++banks[word_of(n0 + 8 * nt + c.line, ks + c.k) % 32];
                            for (int h = 0; h < 2; ++h) {
                                const RowCol at = ptx_b(lane, 2 * r + h);
                                B[at.row][at.col] = X[(n0 + 8 * nt + c.line) * kMmaK + ks + c.k + h];
                                ++b_seen[at.row][at.col];
                            }
                        }
                        for (int b = 0; b < 32; ++b)
                            if (banks[b] != 1) fail("B fragment read: bank conflict", r, b);
                    }
                    for (int i = 0; i < 16; ++i)
                        for (int j = 0; j < 16; ++j)
                            if (a_seen[i][j] != 1) fail("A fragment element held other than once", i, j);
                    for (int i = 0; i < 16; ++i)
                        for (int j = 0; j < 8; ++j)
                            if (b_seen[i][j] != 1) fail("B fragment element held other than once", i, j);
                    for (int lane = 0; lane < 32; ++lane)
                        for (int r = 0; r < 4; ++r) {
                            const RowCol at = ptx_c(lane, r);
                            long d = 0;
                            for (int k = 0; k < 16; ++k) d += A[at.row][k] * B[k][at.col];
                            acc[((mt * S::NT + nt) * 32 + lane) * 4 + r] += d;
                        }
                }
        for (int mt = 0; mt < S::MT; ++mt)
            for (int nt = 0; nt < S::NT; ++nt)
                for (int lane = 0; lane < 32; ++lane)
                    for (int r = 0; r < 4; ++r) {
                        const Coord c = mma_c_coord(lane, r);
                        const int row = m0 + 16 * mt + c.line, t = n0 + 8 * nt + c.k;
                        Y[row * N + t] = acc[((mt * S::NT + nt) * 32 + lane) * 4 + r];
                        ++y_seen[row * N + t];
                    }
    }
    for (int e = 0; e < kMmaRows * N; ++e) {
        if (y_seen[e] != 1) fail("output stored other than once", e / N, e % N);
        if (Y[e] != want[e]) fail("output differs from the plain product", e / N, e % N);
    }
    if (mma_padded_cols(1) != kMmaK || mma_padded_cols(kMmaK) != kMmaK || mma_padded_cols(2816) != 2816 ||
        mma_padded_cols(176) != 192)
        fail("mma_padded_cols", 0, 0);
    // Tile widths: short passes and grids that would leave multiprocessors idle take 32 tokens.
    if (mma_tile_tokens(4096, 16, 132) != 32 || mma_tile_tokens(2048, 256, 132) != 32 ||
        mma_tile_tokens(262144, 256, 132) != 128 || mma_tile_tokens(2048, 8192, 132) != 128 ||
        mma_tile_tokens(4096, 512, 132) != 32 || mma_tile_tokens(8192, 512, 132) != 128 || mma_tile_tokens(4096, 256, 132) != 32)
        fail("mma_tile_tokens", 0, 0);
    if (mma_tile_tokens(2048, 256, 132, 5) != 128 || mma_tile_tokens(2048, 64, 132, 5) != 32)
        fail("mma_tile_tokens with k slices", 0, 0);
    // K slices: every chunk in exactly one slice, none empty; a split only below sm_count row tiles,
    // of at least kMmaMinSliceChunks chunks a slice; the partial sums within their bound.
    for (int sm : {1, 16, 78, 114, 132, 170})
        for (int64_t rows = 1; rows <= 40000; rows = rows * 3 / 2 + 7)
            for (int64_t cols : {1, 31, 32, 176, 511, 512, 704, 2112, 2816, 4096, 5632, 16384, 262144}) {
                const MmaSplit sp = mma_k_split(rows, cols, sm);
                const int64_t chunks = (cols + kMmaK - 1) / kMmaK, row_tiles = (rows + kMmaRows - 1) / kMmaRows;
                const bool covered = sp.slices >= 1 && sp.slice_chunks >= 1 && (sp.slices - 1) * sp.slice_chunks < chunks &&
                                     chunks <= sp.slices * sp.slice_chunks;
                if (!covered) fail("k slices cover the chunks once, none empty", static_cast<int>(rows), static_cast<int>(cols));
                if (sp.slices > 1 && (row_tiles >= sm || sp.slices > kMmaMaxSlices || sp.slice_chunks < kMmaMinSliceChunks))
                    fail("k split where none belongs", static_cast<int>(rows), static_cast<int>(cols));
                if (sp.slices > 1 && sp.slices * row_tiles * kMmaRows * kMmaSplitTokens > mma_split_partial_floats(sm))
                    fail("split partial sums past their bound", static_cast<int>(rows), static_cast<int>(cols));
            }
    // The 26B-A4B shapes on 132 multiprocessors: a 2048 x 2816 projection in 5 slices of 18 chunks;
    // the lm_head (262144 rows) whole.
    if (mma_k_split(2048, 2816, 132).slices != 5 || mma_k_split(2048, 2816, 132).slice_chunks != 18 ||
        mma_k_split(262144, 2816, 132).slices != 1 || mma_k_split(2048, 256, 132).slices != 1)
        fail("mma_k_split at the 26B shapes", 0, 0);
    return static_cast<long>(kMmaRows) * N;
}

}  // namespace

int main() {
    const long n = check<32>() + check<128>();
    std::printf("outputs compared %ld\n", n);
    return failures ? 1 : 0;
}
