// Int8 products on tensor cores (DGEMMA_CUDA_INT8=1 under the tensor set): the CPU's integer dot
// products, done by `mma.m16n8k32.s8` on the codes themselves. Plain DG_HD functions, so that
// tests/int8_mma_check.cpp runs a block's tile on the host lane by lane, as cuda/int8_mma.cuh does.
//
// Why: the bf16 tiles decode every weight element to float, scale it and round it to bf16 (about 6
// instructions an element, 761M elements a layer for the 26B experts: 1.48 ms a layer in run 10
// against 0.1 ms of weight bytes), and fetch the blocks with 16-bit loads. Here a block copies its
// weight rows' raw bytes into shared memory (cp.async, three stages), a lane turns 4 codes into one
// int8 register with one or two logic operations, and a k32 product is one instruction.
//
// The arithmetic is the CPU reference's, so each output is the portable vec_dot's value bit for bit
// (quant/k_quants.cpp, quant/q4_q5.cpp, quant/q8_0.cpp):
//   - activations are quantized per row by the CPU's rules (q8_k_row_from_float for K-quant weights:
//     per 256 elements, d = max / -127 with max the first element of largest magnitude; q8_0 for the
//     32-element types: per 32, d = f16(amax / 127), codes lround(x * 127 / amax));
//   - Q4_K: per 32-element sub-block j of a super-block, one mma into a fresh accumulator gives
//     sum q_w q_x exactly; isum += sc_j * that (an integer multiply-add), and a second mma with
//     m_j in every byte of A accumulates msum = sum_j m_j sum q_x; per super-block
//     sum += (d_x d) isum - (d_x dmin) msum, the CPU's expression in its order;
//   - Q6_K: per 16-element group g, one k16 mma gives sum (q_w - 32) q_x; isum += scale_g * that,
//     and per super-block sum += (d_x d) isum;
//   - Q5_0, Q8_0: per 32-element block, c = sum (q_w - offset) q_x from one mma, and
//     sum += float(c) * (d_w d_x).
// Nothing else is rounded, so the tile's results do not depend on the other rows or tokens of the
// pass, nor on how the k range is staged.
//
// Fragments of mma.m16n8k32 with .s8 operands (PTX ISA, "Matrix Fragments for mma.m16n8k32"),
// g = lane / 4, t = lane % 4, four consecutive k per 32-bit register, lowest k in the lowest byte:
//   A (16 x 32, row-major): a0 (row g, k 4t..), a1 (row g + 8, k 4t..), a2 (row g, k 16 + 4t..),
//                           a3 (row g + 8, k 16 + 4t..);
//   B (32 x 8, column-major): b0 (k 4t.., token g), b1 (k 16 + 4t.., token g);
//   C (16 x 8, s32): c0 (row g, token 2t), c1 (row g, 2t + 1), c2 (row g + 8, 2t), c3 (row g + 8, 2t + 1).
// and of mma.m16n8k16 with .s8 (Q6_K's 16-element groups): a0 (row g, k 4t..), a1 (row g + 8, k 4t..),
// b0 (k 4t.., token g), C as above.
//
// A block: kI8Warps warps, warp w owning weight rows 16 w .. 16 w + 15 of the block's kI8Rows, all
// of its 8 NT tokens (NT n8 tiles), over NW matrices of one shape (2: the experts' gate and up).
// k goes in units of kI8UnitK (a Q4_K super-block, 8 blocks of the 32-element types): a stage holds
// one unit of the rows' raw bytes, of the tokens' int8 rows and of their scales.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cuda/dequant.h"
#include "cuda/mma_layout.h"
#include "cuda/quant_mma.h"
#include "host_device.h"
#include "quant/float_bits.h"
#include "quant/k_quants.h"
#include "quant/q4_q5.h"
#include "quant/q8_0.h"
#include "quant/types.h"

namespace dg::cuda {

constexpr int kI8Rows = 64, kI8Warps = 4, kI8Threads = 32 * kI8Warps, kI8Stages = 3;
constexpr int kI8UnitK = 256;              // k per stage
constexpr int kI8XPitch = kI8UnitK + 16;   // bytes per token line of a stage: word pitch 68 = 4 mod 32
static_assert(kI8Rows == 16 * kI8Warps, "a warp owns 16 rows");

// Register r of lane's A fragment: (row within the m16 tile, first of its four k).
DG_HD Coord i8_a_coord(int lane, int r) { return {lane / 4 + 8 * (r % 2), 4 * (lane % 4) + 16 * (r / 2)}; }
// Register r of lane's B fragment: (token within the n8 tile, first of its four k). The k16 form's
// registers are r = 0 of these: A rows g and g + 8 and B at k 4t.. of the group.
DG_HD Coord i8_b_coord(int lane, int r) { return {lane / 4, 4 * (lane % 4) + 16 * r}; }
// Accumulators are mma_c_coord's (the same C layout as m16n8k16).

// --- activations: the CPU's quantization rules --------------------------------------------------
//
// Rows of int8 codes padded to whole units (zeros past the row's k) and one float scale per group
// of kGroup elements (a Q8_0 scale is the f16 value, widened). Scales: [rows][padded / kGroup].
enum class I8Act { q8_k, q8_0 };

DG_HD int i8_act_group(I8Act a) { return a == I8Act::q8_k ? kI8UnitK : 32; }
DG_HD int64_t i8_padded_cols(int64_t cols) { return (cols + kI8UnitK - 1) / kI8UnitK * kI8UnitK; }
DG_HD int64_t i8_scales_per_row(I8Act a, int64_t cols) { return i8_padded_cols(cols) / i8_act_group(a); }

// Q8_K (q8_k_row_from_float): the element of largest magnitude, the first one on ties. The kernel
// reduces lanes' candidates with i8_pick_max, which keeps that order whatever the tree.
struct I8Max {
    float amax, value;
    int index;
};
DG_HD I8Max i8_pick_max(const I8Max &a, const I8Max &b) {
    if (b.amax > a.amax || (b.amax == a.amax && b.index < a.index)) return b;
    return a;
}
DG_HD float q8_k_iscale(float max) { return -127.0f / max; }
// ggml's nearest_int of iscale * x (round half to even through the float mantissa), capped at 127.
DG_HD int8_t q8_k_code(float iscale, float x) {
    const float v = mul_rn(iscale, x) + 12582912.0f;
    int32_t i;
    std::memcpy(&i, &v, 4);
    const int32_t q = (i & 0x007fffff) - 0x00400000;
    return static_cast<int8_t>(q < 127 ? q : 127);
}
// Q8_0 (q8_0_row_from_float): d = amax / 127, id = 1 / d, codes lround(x * id), d stored as f16.
DG_HD float q8_0_d(float amax) { return amax / 127.0f; }
DG_HD float q8_0_id(float d) { return d != 0.0f ? 1.0f / d : 0.0f; }
DG_HD int8_t q8_0_code(float id, float x) { return static_cast<int8_t>(static_cast<int>(roundf(mul_rn(x, id)))); }
DG_HD float q8_0_scale(float d) { return f16_to_f32(f32_to_f16(d)); }

// The activation quantizer's lanes: a warp per unit of a row, lane l holding elements 8 l .. 8 l + 7
// (Q8_0: block l / 4 of the unit, four lanes a block).
constexpr int kI8QuantLaneElems = 8;

// --- weights: codes into A registers ------------------------------------------------------------
//
// Per type: the activation format, the bytes of one unit of a row (kUnitBytes), the bytes of a shared
// line the copies write (kLineBytes) and its pitch (kPitch: rows g = 0..7 of a fragment read fall in
// different banks), the cp.async granule (rows must be aligned to it: i8_runs), and the lane's
// registers of a k32 step from the unit's bytes of rows g and g + 8 (shared memory).
template <TensorType T>
struct I8Weight;

// Q4_K: a unit is one super-block (d, dmin, 12 scale bytes, 128 code bytes); k32 step j is
// sub-block j, codes nibble j % 2 of bytes 32 (j / 2) .. + 31.
template <>
struct I8Weight<TensorType::Q4_K> {
    static constexpr I8Act kAct = I8Act::q8_k;
    static constexpr int kUnitBytes = sizeof(BlockQ4_K), kLineBytes = kUnitBytes, kPitch = kUnitBytes, kCopy = 16, kSteps = 8;
    static_assert(kPitch % 16 == 0 && kPitch / 4 % 32 == 4, "Q4_K lines: 16-byte copies, rows g at banks 4 g");
    // The super-block's scales and mins, 6 bits each in a byte: sc[0] bytes j = 0..3, sc[1] j = 4..7.
    struct Head {
        uint32_t dd;  // d | dmin << 16 (f16 bits)
        uint32_t sc[2], m[2];
    };
    DG_HD static Head head(const uint8_t *unit) {
        const uint32_t w0 = load_u32(unit + 4), w1 = load_u32(unit + 8), w2 = load_u32(unit + 12);
        Head h;
        h.dd = load_u32(unit);
        h.sc[0] = w0 & 0x3f3f3f3fu;
        h.m[0] = w1 & 0x3f3f3f3fu;
        h.sc[1] = (w2 & 0x0f0f0f0fu) | ((w0 >> 2) & 0x30303030u);  // k4_scale_min_of, four groups a word
        h.m[1] = ((w2 >> 4) & 0x0f0f0f0fu) | ((w1 >> 2) & 0x30303030u);
        return h;
    }
    // The code words of lane t for sub-blocks 2p and 2p + 1: bytes 32 p + 4 t .. (k 4t..), + 16 (k 16 + 4t..).
    DG_HD static void code_words(const uint8_t *unit, int p, int t, uint32_t (&w)[2]) {
        w[0] = load_u32(unit + 16 + 32 * p + 4 * t);
        w[1] = load_u32(unit + 16 + 32 * p + 16 + 4 * t);
    }
    // A registers of sub-block j from the code words of rows g (lo) and g + 8 (hi).
    DG_HD static void a_regs(const uint32_t (&lo)[2], const uint32_t (&hi)[2], int j, uint32_t (&a)[4]) {
        const int sh = 4 * (j % 2);
        a[0] = (lo[0] >> sh) & 0x0f0f0f0fu;
        a[1] = (hi[0] >> sh) & 0x0f0f0f0fu;
        a[2] = (lo[1] >> sh) & 0x0f0f0f0fu;
        a[3] = (hi[1] >> sh) & 0x0f0f0f0fu;
    }
    DG_HD static int32_t sub_scale(const Head &h, int j) { return static_cast<int32_t>((h.sc[j / 4] >> (8 * (j % 4))) & 0xffu); }
    // m_j in all four bytes: the A register of the mins' product (the same for both k halves).
    DG_HD static uint32_t min_reg(const Head &h, int j) { return byte_perm(h.m[j / 4], 0, 0x1111u * static_cast<uint32_t>(j % 4)); }
    // The super-block's term, as vec_dot_q4_k_q8_k adds it.
    DG_HD static float combine(float sum, float d_x, const Head &h, int32_t isum, int32_t msum) {
        const float d = f16_to_f32(static_cast<uint16_t>(h.dd & 0xffffu)), dmin = f16_to_f32(static_cast<uint16_t>(h.dd >> 16));
        return sum + (mul_rn(mul_rn(d_x, d), static_cast<float>(isum)) - mul_rn(mul_rn(d_x, dmin), static_cast<float>(msum)));
    }
};

// The 32-element types: a unit is 8 blocks (the last unit of a row may hold fewer); k32 step b is
// block b. Rows are only 2-byte aligned within (22- and 34-byte blocks), so codes come in 16-bit
// halves.
DG_HD uint32_t load_u16_pair(const uint8_t *p) { return load_u16(p) | (load_u16(p + 2) << 16); }

// Four 5-bit codes minus 16 as int8: low nibbles `nib` (masked), fifth bits `bits` (4 bits, code i's
// in bit i): a code below 16 is negative, so its byte is the nibble with 0xf0 above it.
DG_HD uint32_t q5_i8x4(uint32_t nib, uint32_t bits) {
    const uint32_t set = ((bits & 0xfu) * 0x00204081u) & 0x01010101u;  // bit i -> byte i (no carries: distinct positions)
    return nib | (0xf0f0f0f0u - set * 0xf0u);                          // bytes 0xf0 where the bit is clear, 0 where set
}

template <>
struct I8Weight<TensorType::Q5_0> {
    static constexpr I8Act kAct = I8Act::q8_0;
    static constexpr int kBlockBytes = sizeof(BlockQ5_0), kUnitBytes = 8 * kBlockBytes, kLineBytes = kUnitBytes,
                         kPitch = kUnitBytes, kCopy = 4, kSteps = 8;
    static_assert(kPitch % 16 == 0 && kPitch / 4 % 8 == 4, "Q5_0 lines: rows g at distinct multiples of 4 banks");
    // A registers of block b: codes 4t.. (low nibbles of qs[4t..]) and 16 + 4t.. (their high nibbles).
    DG_HD static void a_regs(const uint8_t *row_g, const uint8_t *row_g8, int b, int t, uint32_t (&a)[4]) {
        const uint8_t *rows[2] = {row_g, row_g8};
        for (int h = 0; h < 2; ++h) {
            const uint8_t *blk = rows[h] + kBlockBytes * b;
            const uint32_t qs = load_u16_pair(blk + 6 + 4 * t), qh = load_u16_pair(blk + 2);
            a[h] = q5_i8x4(qs & 0x0f0f0f0fu, qh >> (4 * t));
            a[2 + h] = q5_i8x4((qs >> 4) & 0x0f0f0f0fu, qh >> (16 + 4 * t));
        }
    }
    DG_HD static float block_d(const uint8_t *row, int b) { return f16_to_f32(static_cast<uint16_t>(load_u16(row + kBlockBytes * b))); }
};

template <>
struct I8Weight<TensorType::Q8_0> {
    static constexpr I8Act kAct = I8Act::q8_0;
    static constexpr int kBlockBytes = sizeof(BlockQ8_0), kUnitBytes = 8 * kBlockBytes, kLineBytes = kUnitBytes,
                         kPitch = kUnitBytes, kCopy = 4, kSteps = 8;
    static_assert(kPitch % 16 == 0 && kPitch / 4 % 32 == 4, "Q8_0 lines: rows g at banks 4 g");
    DG_HD static void a_regs(const uint8_t *row_g, const uint8_t *row_g8, int b, int t, uint32_t (&a)[4]) {
        const uint8_t *rows[2] = {row_g, row_g8};
        for (int h = 0; h < 2; ++h) {
            const uint8_t *qs = rows[h] + kBlockBytes * b + 2;
            a[h] = load_u16_pair(qs + 4 * t);
            a[2 + h] = load_u16_pair(qs + 16 + 4 * t);
        }
    }
    DG_HD static float block_d(const uint8_t *row, int b) { return f16_to_f32(static_cast<uint16_t>(load_u16(row + kBlockBytes * b))); }
};

// Q6_K: a unit is one super-block (ql[128], qh[64], 16 int8 scales, d); 16-element group g = 2 j + h
// of k32 step j = 4 n + t4, its element 16 h + l at low nibble t4 / 2 of ql[64 n + 32 (t4 % 2) + 16 h + l]
// and bits 2 t4 of qh[32 n + 16 h + l]. Its 210-byte blocks leave rows only 2-byte aligned, so a line
// holds the 4-byte granules around its unit: the unit starts q6_k_shift bytes in (0 or 2), and the
// last granule brings only the bytes up to the unit's end (cp.async's source size; zeros after).
DG_HD int q6_k_shift(size_t row_stride, int line, int64_t u) {
    // The matrix and the block's first row are 4-byte aligned (i8_runs; 64-row tiles), so the unit's
    // address modulo 4 is that of line * row_stride + 210 u.
    return static_cast<int>((static_cast<uint64_t>(line) * row_stride + static_cast<uint64_t>(u) * sizeof(BlockQ6_K)) & 3u);
}

template <>
struct I8Weight<TensorType::Q6_K> {
    static constexpr I8Act kAct = I8Act::q8_k;
    static constexpr int kUnitBytes = sizeof(BlockQ6_K), kCopy = 4, kGranules = (kUnitBytes + 2 + 3) / 4,
                         kLineBytes = 4 * kGranules, kPitch = 240, kSteps = 8;
    static_assert(kLineBytes <= kPitch && kPitch % 16 == 0 && kPitch / 4 % 32 == 28, "Q6_K lines: rows g at banks 28 g");
    // The A register (codes - 32, int8) of group 2 j + h for lane t, from a row's unit (blk: its line
    // plus its shift).
    DG_HD static uint32_t a_reg(const uint8_t *blk, int j, int h, int t) {
        const int n = j / 4, t4 = j % 4;
        const uint32_t lo = (load_u16_pair(blk + 64 * n + 32 * (t4 % 2) + 16 * h + 4 * t) >> (4 * (t4 / 2))) & 0x0f0f0f0fu;
        const uint32_t hi = (load_u16_pair(blk + 128 + 32 * n + 16 * h + 4 * t) >> (2 * t4)) & 0x03030303u;
        // code c = lo | hi << 4 (0..63) and c - 32 per byte: c + 0x60 stays in its byte; its top bit
        // flipped is c - 32's (two's complement).
        return ((lo | (hi << 4)) + 0x60606060u) ^ 0x80808080u;
    }
    DG_HD static int32_t group_scale(const uint8_t *blk, int g) { return static_cast<int8_t>(blk[192 + g]); }
    DG_HD static float d(const uint8_t *blk) { return f16_to_f32(static_cast<uint16_t>(load_u16(blk + 208))); }
    // The super-block's term, as vec_dot_q6_k_q8_k adds it.
    DG_HD static float combine(float sum, float d_x, float d_w, int32_t isum) { return sum + mul_rn(mul_rn(d_x, d_w), static_cast<float>(isum)); }
};

// A 32-element block's term, as vec_dot_q5_0_q8_0 and vec_dot_q8_0_q8_0 add it.
DG_HD float i8_block_combine(float sum, int32_t c, float d_w, float d_x) { return sum + mul_rn(static_cast<float>(c), mul_rn(d_w, d_x)); }

DG_HD bool i8_k_quant(TensorType t) { return t == TensorType::Q4_K || t == TensorType::Q6_K; }
DG_HD bool i8_type(TensorType t) { return i8_k_quant(t) || t == TensorType::Q5_0 || t == TensorType::Q8_0; }
DG_HD I8Act i8_act_of(TensorType t) { return i8_k_quant(t) ? I8Act::q8_k : I8Act::q8_0; }
DG_HD int i8_copy_bytes(TensorType t) { return t == TensorType::Q4_K ? 16 : 4; }
DG_HD int i8_unit_bytes(TensorType t) {
    return t == TensorType::Q4_K   ? I8Weight<TensorType::Q4_K>::kUnitBytes
           : t == TensorType::Q6_K ? I8Weight<TensorType::Q6_K>::kUnitBytes
           : t == TensorType::Q5_0 ? I8Weight<TensorType::Q5_0>::kUnitBytes
                                   : I8Weight<TensorType::Q8_0>::kUnitBytes;
}
// Row bytes of units u of a row of `cols` elements: whole units but the last of the 32-element types.
DG_HD int i8_unit_bytes_at(TensorType t, int64_t cols, int64_t u) {
    if (i8_k_quant(t)) return i8_unit_bytes(t);
    const int64_t blocks = cols / 32 - 8 * u;
    return static_cast<int>((blocks < 8 ? blocks : 8) * (t == TensorType::Q5_0 ? sizeof(BlockQ5_0) : sizeof(BlockQ8_0)));
}
DG_HD int64_t i8_units(int64_t cols) { return (cols + kI8UnitK - 1) / kI8UnitK; }

// --- a stage and its copies ---------------------------------------------------------------------
template <TensorType T, int NW, int NT>
struct I8Stage {
    static constexpr int kTokens = 8 * NT, kScales = kI8UnitK / (I8Weight<T>::kAct == I8Act::q8_k ? kI8UnitK : 32);
    uint8_t w[NW][kI8Rows][I8Weight<T>::kPitch];
    int8_t x[kTokens][kI8XPitch];
    float xd[kTokens][kScales];
};

// Who copies what into a stage: thread tid takes line `line` (a weight row, or a token) and its
// granules first, first + step, ... below the line's count, so its addresses are one base plus
// constants. Weights: two threads a row (64 rows, 128 threads); tokens: 128 / tokens threads a token,
// 16-byte granules of its unit's 256 codes.
struct I8Span {
    int line, first, step;
};
constexpr int kI8RowThreads = kI8Threads / kI8Rows;
DG_HD I8Span i8_weight_span(int tid) { return {tid / kI8RowThreads, tid % kI8RowThreads, kI8RowThreads}; }
DG_HD I8Span i8_token_span(int tid, int tokens) {
    const int per = kI8Threads / tokens;
    return {tid / per, tid % per, per};
}
constexpr int kI8TokenGranules = kI8UnitK / 16;

// A block's operands: row row0 of each of the NW matrices (rows_left rows from there, row_stride
// bytes apart), k = cols; the tokens' codes xq (rows xq_stride = i8_padded_cols(cols) bytes apart)
// and scales xd (rows xd_stride apart). The block's tokens are rows tok[i] of xq and xd (-1: no
// token, zeros).
template <int NW>
struct I8Operands {
    const uint8_t *w[NW];
    size_t row_stride;
    int64_t rows_left, cols;
    const int8_t *xq;
    const float *xd;
    int64_t xq_stride, xd_stride;
};

// The copies thread tid makes of unit u into stage s: copy(size, dst, src, src_bytes) for each, size
// an integral_constant of the granule (the kernel's cp.async size), src_bytes of it read from src and
// zeros after (0: all zeros; src is then still a mapped address aligned to the granule). Weight rows
// past rows_left, bytes past the row's last block and tokens -1 are zeros.
template <TensorType T, int NW, int NT, typename Copy>
DG_HD void i8_stage_copies(int tid, I8Stage<T, NW, NT> &s, const I8Operands<NW> &op, const int32_t *tok, int64_t u, Copy copy) {
    using Q = I8Weight<T>;
    using S = I8Stage<T, NW, NT>;
    static_assert(kI8Threads % S::kTokens == 0, "whole threads a token");
    constexpr int kGranules = Q::kLineBytes / Q::kCopy;
    const int bytes = i8_unit_bytes_at(T, op.cols, u);
    const I8Span ws = i8_weight_span(tid);
    const bool row_valid = ws.line < op.rows_left;
    // Q6_K: the line starts at the granule holding the unit's first byte (q6_k_shift before it).
    const int shift = T == TensorType::Q6_K ? q6_k_shift(op.row_stride, ws.line, u) : 0;
    for (int m = 0; m < NW; ++m) {
        const uint8_t *src = row_valid ? op.w[m] + ws.line * op.row_stride + u * Q::kUnitBytes - shift : op.w[m];
        for (int g = 0; g < kGranules; g += kI8RowThreads) {
            if (g + ws.first >= kGranules) break;
            const int at = (g + ws.first) * Q::kCopy;
            const int left = row_valid ? shift + bytes - at : 0;  // the unit's bytes from this granule on
            const int n = left < 0 ? 0 : left < Q::kCopy ? left : Q::kCopy;
            copy(std::integral_constant<int, Q::kCopy>{}, &s.w[m][ws.line][at], n > 0 ? src + at : src, n);
        }
    }
    const I8Span ts = i8_token_span(tid, S::kTokens);
    const int32_t r = tok[ts.line];
    const int8_t *xsrc = op.xq + (r >= 0 ? r * op.xq_stride + u * kI8UnitK : 0);
    for (int g = 0; g < kI8TokenGranules; g += ts.step) {
        const int at = 16 * (g + ts.first);
        copy(std::integral_constant<int, 16>{}, &s.x[ts.line][at], xsrc + (r >= 0 ? at : 0), r >= 0 ? 16 : 0);
    }
    if (S::kScales == 1) {
        if (tid < S::kTokens) {
            const int32_t rt = tok[tid];
            copy(std::integral_constant<int, 4>{}, &s.xd[tid][0], op.xd + (rt >= 0 ? rt * op.xd_stride + u : 0), rt >= 0 ? 4 : 0);
        }
    } else if (tid < 2 * S::kTokens) {  // 8 scales a unit: two 16-byte copies a token
        const int32_t rt = tok[tid / 2];
        copy(std::integral_constant<int, 16>{}, &s.xd[tid / 2][4 * (tid % 2)],
             op.xd + (rt >= 0 ? rt * op.xd_stride + 8 * u + 4 * (tid % 2) : 0), rt >= 0 ? 16 : 0);
    }
}

// Tokens a block takes of a dense product over n tokens: 64 (NT = 8: half the weight decoding) when
// that still gives at least 1.5 blocks a multiprocessor (two fit one: a wave is mostly full), else
// 32; the experts take 32 (their ~16 tokens fill two n-tiles). At the 26B shapes over 256 tokens:
// the 4096-row projection 64 (256 blocks for 132 multiprocessors), the 2048- to 2816-row ones 32.
DG_HD int i8_tile_tokens(int64_t rows, int64_t n, int sm_count) {
    const int64_t wide_blocks = (rows + kI8Rows - 1) / kI8Rows * ((n + 63) / 64);
    return n <= 32 || 2 * wide_blocks < 3 * static_cast<int64_t>(sm_count) ? 32 : 64;
}

}  // namespace dg::cuda
