// Quantized weights straight into tensor-core fragments, the scales applied after the product
// (MMQ's form, with bf16 activations): the tensor set's kernels for Q4_K and Q5_0, the experts' and
// most projections' types in _M files. Plain functions, so tests/quant_mma_check.cpp runs a warp's
// tile on the host lane by lane, as the kernels do.
//
// Why: the bf16 tiles (tile_mma.cuh) decode every weight element to float, scale it, round it to
// bf16 and store it in shared memory: about 6 instructions an element, and the 26B experts have 761M
// elements a layer (run 10's ncu: the experts' gate/up kernel issue-bound at 0.9 ms a layer, against
// 0.1 ms of weight bytes). Here a lane turns 8 codes into 4 bf16 pairs with a byte permute and one
// logic op each, and the products are taken on the codes themselves.
//
// Both types are, over each run of 32 consecutive k (a "sub-block"), w = a * q + c for small integer
// codes q (Q4_K: a = d * sc, c = -dmin * m, q in 0..15; Q5_0: a = d, c = -16 d, q in 0..31). So
//   sum_k w[k] x[k] = a * sum_k q[k] x[k] + c * sum_k x[k]   over a sub-block,
// and the kernels take sum q x on tensor cores into a fresh accumulator per sub-block, then add
// a * that + c * xs, xs the sub-block's sum of the same bf16 activations (bf16_block_sums). The codes
// go into bf16 as 128 + q (exact: bf16 holds every integer below 256), OR-ed into the bits of 128.0,
// so the sums carry 128 * xs, folded into c: b = c - 128 a.
//
// Fragments of mma.m16n8k16 (mma_layout.h): lane (g, t) = (lane / 4, lane % 4) holds A registers
// (row g, slots 2t, 2t + 1), (g + 8, same), (g, 2t + 8, 2t + 9), (g + 8, same), and B registers
// (slots 2t, 2t + 1 | 2t + 8, 2t + 9) of token g. The slots of a k16 step are any 16 distinct k of
// one sub-block, provided A and B agree: here lane t's slots 2t, 2t + 1 are k0, k0 + 1 and slots
// 2t + 8, 2t + 9 are k0 + 2, k0 + 3, with k0 = Qmma<T>::k0(...). So B is four consecutive bf16 of a token's
// row (one 8-byte load), and A is four consecutive codes: bytes k0 .. k0 + 3 of the packed codes.
//
// Q4_K: a chunk is a 64-element group of a super-block (32 code bytes: low nibbles the first
//   sub-block, high nibbles the second); lane t reads its bytes 8t .. 8t + 7 (step s: 8t + 4s ..)
//   and the super-block's 16-byte head (d, dmin, 12 scale bytes).
// Q5_0: a chunk is a 32-element block (one sub-block): low nibbles of its 16 code bytes are k 0..15
//   (step 0), high nibbles k 16..31 (step 1); lane t reads code bytes 4t .. 4t + 3 and the 32 high
//   bits. The block is 22 bytes, so only 2-byte loads are aligned.
#pragma once

#include <cstdint>
#include <cstring>

#include "cuda/dequant.h"
#include "host_device.h"
#include "quant/float_bits.h"
#include "quant/k_quants.h"
#include "quant/q4_q5.h"
#include "quant/types.h"

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#endif

namespace dg::cuda {

constexpr int kQmmaSub = 32;               // k of one sub-block (one scale)
constexpr uint32_t kBf16x2Of128 = 0x43004300u;  // bf16 pair {128, 128}; 128 + q for q < 128 is 0x4300 | q

DG_HD uint32_t byte_perm(uint32_t a, uint32_t b, uint32_t sel) {
#if defined(__CUDA_ARCH__)
    return __byte_perm(a, b, sel);
#else
    const uint64_t src = (static_cast<uint64_t>(b) << 32) | a;
    uint32_t r = 0;
    for (int i = 0; i < 4; ++i) r |= static_cast<uint32_t>((src >> (8 * ((sel >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
#endif
}

// bf16 pair {128 + code of byte b, 128 + code of byte b + 1} of word u (b = 0 or 2), the code being
// nibble h (0 low, 1 high) of each byte.
DG_HD uint32_t nibble_pair(uint32_t u, int b, int h) {
    const uint32_t spread = byte_perm(u, 0, b == 0 ? 0x4140u : 0x4342u);  // byte b -> bits 0..7, b + 1 -> 16..23
    return ((spread >> (4 * h)) & 0x000F000Fu) | kBf16x2Of128;
}

template <TensorType T>
struct Qmma;

template <>
struct Qmma<TensorType::Q4_K> {
    // kGroups: chunks that share a head (the kernels unroll them, so each chunk's group is a constant).
    static constexpr int kChunk = 64, kSubs = 2, kGroups = 4;
    static constexpr int64_t kBlockBytes = sizeof(BlockQ4_K);
    struct Raw {
        uint32_t q0, q1;              // code bytes 8t .. 8t + 3, 8t + 4 .. 8t + 7 of the group
        uint32_t dd, s0, s1, s2;      // the head: d | dmin << 16, scale bytes 0..3, 4..7, 8..11
    };
    // Chunk c (a group) of a row: super-block c / 4, group c % 4. 16-byte aligned rows (the kernels'
    // host launcher checks): the head is one 16-byte load, the codes one 8-byte load.
    DG_HD static void load(const uint8_t *row, int64_t c, int t, Raw &r) {
        const uint8_t *blk = row + (c / 4) * kBlockBytes;
        const uint8_t *q = blk + 16 + 32 * (c % 4) + 8 * t;
#if defined(__CUDA_ARCH__)
        const uint2 v = __ldg(reinterpret_cast<const uint2 *>(q));
        const uint4 h = __ldg(reinterpret_cast<const uint4 *>(blk));
        r = Raw{v.x, v.y, h.x, h.y, h.z, h.w};
#else
        std::memcpy(&r.q0, q, 4);
        std::memcpy(&r.q1, q + 4, 4);
        std::memcpy(&r.dd, blk, 4);
        std::memcpy(&r.s0, blk + 4, 4);
        std::memcpy(&r.s1, blk + 8, 4);
        std::memcpy(&r.s2, blk + 12, 4);
#endif
    }
    // The first k (within the row) of lane t's four at step s (0, 1) of sub-block h (0, 1) of chunk c:
    // k0 = step_k(c, h, s) + lane_k(t), so a lane's activation pointer carries lane_k once.
    DG_HD static int64_t step_k(int64_t c, int h, int s) { return kChunk * c + kQmmaSub * h + 4 * s; }
    DG_HD static int lane_k(int t) { return 8 * t; }
    DG_HD static int64_t k0(int64_t c, int h, int s, int t) { return step_k(c, h, s) + lane_k(t); }
    // A registers of one row: {slots 2t, 2t + 1}, {slots 2t + 8, 2t + 9}.
    DG_HD static void a_regs(const Raw &r, int h, int s, uint32_t (&a)[2]) {
        const uint32_t u = s == 0 ? r.q0 : r.q1;
        a[0] = nibble_pair(u, 0, h);
        a[1] = nibble_pair(u, 2, h);
    }
    // w = a * (v - 128) + c over sub-block h of a chunk of group `group` (c % kGroups): returns a and
    // b = c - 128 a.
    DG_HD static void scale(const Raw &r, int group, int h, float &a, float &b) {
        const int j = 2 * group + h;
        const auto byte = [&](int i) -> unsigned {
            const uint32_t w = i < 4 ? r.s0 : i < 8 ? r.s1 : r.s2;
            return (w >> (8 * (i & 3))) & 0xffu;
        };
        int sc, m;
        k4_scale_min_of(j, byte(j), byte(j + 4), j >= 4 ? byte(j - 4) : 0u, &sc, &m);
        a = f16_to_f32(static_cast<uint16_t>(r.dd & 0xffff)) * static_cast<float>(sc);
        const float dm = f16_to_f32(static_cast<uint16_t>(r.dd >> 16)) * static_cast<float>(m);
        b = -(128.0f * a + dm);
    }
};

template <>
struct Qmma<TensorType::Q5_0> {
    static constexpr int kChunk = 32, kSubs = 1, kGroups = 1;
    static constexpr int64_t kBlockBytes = sizeof(BlockQ5_0);
    struct Raw {
        uint32_t q;   // code bytes 4t .. 4t + 3
        uint32_t qh;  // the 32 fifth bits
        uint32_t d;   // f16 bits
    };
    DG_HD static void load(const uint8_t *row, int64_t c, int t, Raw &r) {
        const uint8_t *blk = row + c * kBlockBytes;  // 2-byte aligned: 16-bit loads (dequant.h's load_u16)
        r.d = load_u16(blk);
        r.qh = load_u16(blk + 2) | (load_u16(blk + 4) << 16);
        r.q = load_u16(blk + 6 + 4 * t) | (load_u16(blk + 8 + 4 * t) << 16);
    }
    DG_HD static int64_t step_k(int64_t c, int /*h*/, int s) { return kChunk * c + 16 * s; }
    DG_HD static int lane_k(int t) { return 4 * t; }
    DG_HD static int64_t k0(int64_t c, int h, int s, int t) { return step_k(c, h, s) + lane_k(t); }
    // Codes k0 .. k0 + 3: nibble s of bytes 4t .. 4t + 3, bits k0 .. k0 + 3 of qh as their bit 4.
    DG_HD static void a_regs(const Raw &r, int /*h*/, int s, int t, uint32_t (&a)[2]) {
        const uint32_t hb = r.qh >> (16 * s + 4 * t);
        a[0] = nibble_pair(r.q, 0, s) | ((hb & 1u) << 4) | ((hb & 2u) << 19);
        a[1] = nibble_pair(r.q, 2, s) | ((hb & 4u) << 2) | ((hb & 8u) << 17);
    }
    DG_HD static void scale(const Raw &r, int /*group*/, int /*h*/, float &a, float &b) {
        a = f16_to_f32(static_cast<uint16_t>(r.d));
        b = -144.0f * a;  // w = d (q - 16) = d (v - 128) - 16 d
    }
};

// One signature for both (Q4_K's codes do not depend on the lane beyond the load).
template <TensorType T>
DG_HD void qmma_a_regs(const typename Qmma<T>::Raw &r, int h, int s, int t, uint32_t (&a)[2]) {
    if constexpr (T == TensorType::Q4_K) {
        (void)t;
        Qmma<T>::a_regs(r, h, s, a);
    } else {
        Qmma<T>::a_regs(r, h, s, t, a);
    }
}

DG_HD constexpr bool qmma_type(TensorType t) { return t == TensorType::Q4_K || t == TensorType::Q5_0; }

}  // namespace dg::cuda
