// Index maths of the Hopper warpgroup products (cuda/wgmma.cu, DGEMMA_CUDA_WGMMA) as plain
// functions, so that tests/wgmma_layout_check.cpp checks on the host that the loaders fill every
// element of a stage once and conflict-free, and that a block's products, read from shared memory
// the way the PTX ISA's matrix descriptors say, equal a plain matrix product.
//
// A block computes Y[token][row] = sum_k A[row][k] * B[token][k] for kWgRows rows x kWgTokens tokens
// with `wgmma.mma_async.m64n256k16` (bf16 operands, float32 accumulators): two warpgroups, warpgroup
// g owns rows 64 g .. 64 g + 63 and all 256 tokens (128 accumulators a thread). k advances kWgK = 32
// a stage, two k16 steps (64 doubled the loaders' registers: 255 and spills with the accumulators).
// What A and B are:
//   dense (matmul): A = the weight rows, B = the tokens' bf16 activations (k = the weight's columns);
//   turned (soft_embed): A = the table's columns (a line is one embedding dimension e), k = the
//     vocabulary, B = the tokens' bf16 probabilities.
// Both operands are "K-major" in shared memory (the instruction's transpose flags stay 0).
//
// Shared stage (bf16), each operand in core matrices of 8 lines x 8 k (16 bytes a line, 128 bytes):
//   byte of (line, k) = (line / 8) * kWgSbo + (k / 8) * kWgLbo + (line % 8) * 16 + (k % 8) * 2.
// kWgLbo (the descriptor's leading byte offset: adjacent core matrices along k) is 160, not 128, and
// kWgSbo (stride byte offset: adjacent groups of 8 lines) 656, not 4 x 160: the gaps stagger the core
// matrices across the banks so that each loader's warp stores are conflict-free (16-byte stores: an
// 8-lane phase's slots 2 kg + line distinct; the turned loader's words 4 (line group) + 8 (pair / 4)
// + pair % 4 + 4 j distinct; the host check counts them).
//
// Loaders, group i of thread t (g = t + kWgThreads * i):
//   B (tokens, cp.async 16 bytes): token line g / 4, k 8 (g % 4): 4 lanes copy one token's 32 k
//     (64 contiguous bytes of its row);
//   A dense (WeightFetch8: 8 k of one row, one 16-byte store): line g / 4, k 8 (g % 4);
//   A turned (two WeightFetch8: lines e .. e + 7 at table rows k and k + 1, stored as 8 words of the
//     pair (k, k + 1)): pair g % 16 (k = 2 (g % 16)), lines 8 (g / 16) .. + 7.
//
// Accumulators of m64nNk16 (PTX ISA, "wgmma .m64nNk16 register fragment layout for D"): thread t of
// a warpgroup, warp w = t / 32, lane l; register i (0 .. N/2 - 1):
//   row = 16 w + l / 4 + 8 ((i / 2) % 2), token = 8 (i / 4) + 2 (l % 4) + i % 2.
#pragma once

#include <cstdint>

#include "cuda/dequant.h"
#include "host_device.h"

namespace dg::cuda {

constexpr int kWgRows = 128, kWgTokens = 256, kWgK = 32, kWgThreads = 256, kWgGroups = kWgThreads / 128;
constexpr int kWgAcc = kWgTokens / 2;  // accumulators a thread (m64n256: 64 x 256 / 128)
constexpr int kWgLbo = 160, kWgSbo = 656;
static_assert(kWgK == 32 && kWgSbo >= (kWgK / 8 - 1) * kWgLbo + 128, "the loaders' coordinates and the gaps assume 32 k a stage");
constexpr int kWgStageA = kWgRows / 8 * kWgSbo, kWgStageB = kWgTokens / 8 * kWgSbo;  // bytes
constexpr int kWgStageBytes = kWgStageA + kWgStageB, kWgStages = 2;
constexpr int kWgSmemBytes = kWgStages * kWgStageBytes;  // 62976: one block a multiprocessor by its registers
constexpr int kWgBGroups = kWgTokens * kWgK / 8 / kWgThreads;      // 4 token groups a thread a stage
constexpr int kWgDenseGroups = kWgRows * kWgK / 8 / kWgThreads;    // 2 weight groups a thread (dense)
constexpr int kWgTurnedGroups = kWgRows * kWgK / 16 / kWgThreads;  // 1 pair group a thread (turned)

struct WgCoord {
    int line, k;
};

// Byte offset of element (line, k) in an operand's part of a stage.
DG_HD int wg_offset(int line, int k) { return (line / 8) * kWgSbo + (k / 8) * kWgLbo + (line % 8) * 16 + (k % 8) * 2; }

// Group i of thread t: the B loader's and the dense A loader's (first k of 8 consecutive).
DG_HD WgCoord wg_group_coord(int t, int i) {
    const int g = t + kWgThreads * i;
    return {g / (kWgK / 8), 8 * (g % (kWgK / 8))};
}
// Group i of thread t of the turned A loader: lines line .. line + 7 at k and k + 1.
DG_HD WgCoord wg_turned_coord(int t, int i) {
    const int g = t + kWgThreads * i;
    return {8 * (g / (kWgK / 2)), 2 * (g % (kWgK / 2))};
}

// Accumulator i of thread t (0 .. kWgThreads - 1) of a block: (row within the block's kWgRows,
// token within its kWgTokens).
DG_HD WgCoord wg_acc_coord(int t, int i) {
    const int group = t / 128, w = (t % 128) / 32, l = t % 32;
    return {64 * group + 16 * w + l / 4 + 8 * ((i / 2) % 2), 8 * (i / 4) + 2 * (l % 4) + i % 2};
}

// The shared-memory descriptor of an operand whose core matrix (0, 0) starts at byte `addr` of the
// shared window (PTX ISA, "Matrix Descriptor Format"): start address, leading and stride byte offsets
// (each >> 4, 14 bits), base offset 0, no swizzle.
DG_HD uint64_t wg_descriptor(uint32_t addr) {
    return static_cast<uint64_t>((addr >> 4) & 0x3FFF) | static_cast<uint64_t>((kWgLbo >> 4) & 0x3FFF) << 16 |
           static_cast<uint64_t>((kWgSbo >> 4) & 0x3FFF) << 32;
}
// Where the k16 step s (0, 1) of warpgroup g starts in a stage's A (its rows 64 g ..) and B.
DG_HD int wg_a_step_offset(int g, int s) { return g * (64 / 8) * kWgSbo + 2 * s * kWgLbo; }
DG_HD int wg_b_step_offset(int s) { return 2 * s * kWgLbo; }

// Shared-memory banks (4-byte words mod 32) a store touches: for the host check's conflict count.
DG_HD int wg_bank(int byte) { return (byte / 4) % 32; }

// The soft embedding's parts (turned products): the vocabulary split in `parts` ranges of whole
// stages, so that column tiles x parts blocks make whole waves of one block a multiprocessor
// (22 column tiles x 6 parts = 132 at the 26B shapes on 132 multiprocessors), at most max_parts
// (the partial sums' room) and at least one.
DG_HD int wg_soft_embed_parts(int64_t cols, int sm_count, int max_parts) {
    const int64_t tiles = (cols + kWgRows - 1) / kWgRows;
    int64_t p = sm_count / (tiles > 0 ? tiles : 1);
    if (p > max_parts) p = max_parts;
    return p < 1 ? 1 : static_cast<int>(p);
}
DG_HD int64_t wg_part_rows(int64_t n_vocab, int parts) {
    return ((n_vocab + parts - 1) / parts + kWgK - 1) / kWgK * kWgK;
}

// Weights a few stages ahead into L2 (prefetch.global.L2, no registers held): a stage's weight loads
// are issued one stage before their decode, about one product time (~350 ns at 32 k), while a DRAM
// read under load takes about twice that; from L2 about half. A block's rows are prefetched
// kWgPrefetchStages stages ahead, whole quantization blocks at a time: for the dense products the
// block of a row holding k0 when k0 starts one (every stage for 32-element blocks, every 8th for the
// K-quants' 256), for the soft embedding each new table row's blocks under the block's 128 columns.
constexpr int kWgPrefetchStages = 4;

struct WgBlockShape {
    int64_t elements, bytes;
};
DG_HD WgBlockShape wg_block_shape(TensorType t) {
    switch (t) {
        case TensorType::F32: return {1, 4};
        case TensorType::F16:
        case TensorType::BF16: return {1, 2};
        case TensorType::Q8_0: return {kQK8_0, sizeof(BlockQ8_0)};
        case TensorType::Q4_0: return {kQK4, sizeof(BlockQ4_0)};
        case TensorType::Q4_1: return {kQK4, sizeof(BlockQ4_1)};
        case TensorType::Q5_0: return {kQK4, sizeof(BlockQ5_0)};
        case TensorType::Q5_1: return {kQK4, sizeof(BlockQ5_1)};
        case TensorType::Q4_K: return {kQK_K, sizeof(BlockQ4_K)};
        case TensorType::Q5_K: return {kQK_K, sizeof(BlockQ5_K)};
        case TensorType::Q6_K: return {kQK_K, sizeof(BlockQ6_K)};
        default: return {1, 4};  // unreachable: load_weight refuses other types
    }
}

// Bytes first .. last (inclusive, from the row's start) of the whole blocks holding elements
// k0 .. k0 + count - 1.
struct WgByteRange {
    int64_t first, last;
};
DG_HD WgByteRange wg_block_bytes(TensorType t, int64_t k0, int64_t count) {
    const WgBlockShape b = wg_block_shape(t);
    return {k0 / b.elements * b.bytes, ((k0 + count - 1) / b.elements + 1) * b.bytes - 1};
}
// Whether a dense product prefetches the blocks from element k0 (a stage's first): when k0 starts a
// block (every stage for blocks of 1 or 32 elements, every 8th for 256).
DG_HD bool wg_dense_prefetch_at(TensorType t, int64_t k0) { return k0 % wg_block_shape(t).elements == 0; }
// The dense products' prefetch range for stage k0: the blocks of max(kWgK, block) elements from k0.
DG_HD WgByteRange wg_dense_prefetch_bytes(TensorType t, int64_t k0) {
    const int64_t e = wg_block_shape(t).elements;
    return wg_block_bytes(t, k0, e > kWgK ? e : kWgK);
}
// Calls f(byte) for bytes of the range whose 128-byte lines are every line it touches: first, every
// 128 bytes after it, and last (the line of last may lie past the steps).
template <typename F>
DG_HD void wg_for_each_line(WgByteRange r, F f) {
    for (int64_t b = r.first; b <= r.last; b += 128) f(b);
    f(r.last);
}

}  // namespace dg::cuda
