// Element i of a weight row, for every weight type the CUDA backend runs: F32, F16, BF16, Q8_0,
// Q4_0, Q4_1, Q5_0, Q5_1 (the fallbacks of K-quant files for rows that are not a multiple of 256),
// Q4_K, Q5_K, Q6_K. Plain DG_HD functions over the block structs the CPU uses, with the CPU's
// float operation order, so that tests/test_cuda.py checks them on the host against
// dgemma_dequantize_row, bit for bit, and the kernels read weights exactly as the CPU does.
#pragma once

#include <cstdint>
#include <cstring>

#include "host_device.h"
#include "quant/float_bits.h"
#include "quant/k_quants.h"
#include "quant/q4_q5.h"
#include "quant/q8_0.h"
#include "quant/types.h"

namespace dg {

// The weight types with a CUDA kernel; any other type is refused at load (no host fallback).
constexpr TensorType kCudaWeightTypes[] = {TensorType::F32,  TensorType::F16,  TensorType::BF16, TensorType::Q8_0,
                                           TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1,
                                           TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K};

DG_HD bool cuda_weight_type_supported(TensorType t) {
    for (TensorType s : kCudaWeightTypes)
        if (s == t) return true;
    return false;
}

// Q4_K / Q5_K element e (0..255) of one super-block: d*sc * q - dmin*m over its 32-element group.
template <typename Block>
DG_HD float q45_k_element(const Block &b, int e, int q) {
    int sc, m;
    k4_scale_min(b.scales, e / 32, &sc, &m);
    const float dl = f16_to_f32(b.d) * static_cast<float>(sc), ml = mul_rn(f16_to_f32(b.dmin), static_cast<float>(m));
    return mul_rn(dl, static_cast<float>(q)) - ml;
}

// Code j (0..31) of a 32-element Q4_0/Q4_1 block: low nibbles first, then high nibbles.
DG_HD int q4_code(const uint8_t *qs, int j) { return (qs[j % 16] >> (4 * (j / 16))) & 0xf; }

// Code j of a Q5_0/Q5_1 block: the nibble, and bit j of the little-endian qh as bit 4.
DG_HD int q5_code(const uint8_t *qh, const uint8_t *qs, int j) {
    return q4_code(qs, j) | (((qh[j / 8] >> (j % 8)) & 1) << 4);
}

// Element i of a row of type t starting at `row` (the row's first block).
DG_HD float dequant(TensorType t, const uint8_t *row, int64_t i) {
    switch (t) {
        case TensorType::F32: return reinterpret_cast<const float *>(row)[i];
        case TensorType::F16: return f16_to_f32(reinterpret_cast<const uint16_t *>(row)[i]);
        case TensorType::BF16: return bf16_to_f32(reinterpret_cast<const uint16_t *>(row)[i]);
        case TensorType::Q8_0: {
            const BlockQ8_0 &b = reinterpret_cast<const BlockQ8_0 *>(row)[i / kQK8_0];
            return f16_to_f32(b.d) * static_cast<float>(b.qs[i % kQK8_0]);
        }
        case TensorType::Q4_0: {
            const BlockQ4_0 &b = reinterpret_cast<const BlockQ4_0 *>(row)[i / kQK4];
            return f16_to_f32(b.d) * static_cast<float>(q4_code(b.qs, static_cast<int>(i % kQK4)) - 8);
        }
        case TensorType::Q4_1: {  // d*q + m, rounded after the product as on the CPU
            const BlockQ4_1 &b = reinterpret_cast<const BlockQ4_1 *>(row)[i / kQK4];
            return mul_rn(f16_to_f32(b.d), static_cast<float>(q4_code(b.qs, static_cast<int>(i % kQK4))))
                   + f16_to_f32(b.m);
        }
        case TensorType::Q5_0: {
            const BlockQ5_0 &b = reinterpret_cast<const BlockQ5_0 *>(row)[i / kQK4];
            return f16_to_f32(b.d) * static_cast<float>(q5_code(b.qh, b.qs, static_cast<int>(i % kQK4)) - 16);
        }
        case TensorType::Q5_1: {
            const BlockQ5_1 &b = reinterpret_cast<const BlockQ5_1 *>(row)[i / kQK4];
            return mul_rn(f16_to_f32(b.d), static_cast<float>(q5_code(b.qh, b.qs, static_cast<int>(i % kQK4))))
                   + f16_to_f32(b.m);
        }
        case TensorType::Q4_K: {
            const BlockQ4_K &b = reinterpret_cast<const BlockQ4_K *>(row)[i / kQK_K];
            const int e = static_cast<int>(i % kQK_K), k = e / 64, h = (e / 32) % 2, l = e % 32;
            return q45_k_element(b, e, (b.qs[32 * k + l] >> (4 * h)) & 0xf);
        }
        case TensorType::Q5_K: {
            const BlockQ5_K &b = reinterpret_cast<const BlockQ5_K *>(row)[i / kQK_K];
            const int e = static_cast<int>(i % kQK_K), k = e / 64, h = (e / 32) % 2, l = e % 32;
            const int q = ((b.qs[32 * k + l] >> (4 * h)) & 0xf) | (((b.qh[l] >> (2 * k + h)) & 1) << 4);
            return q45_k_element(b, e, q);
        }
        case TensorType::Q6_K: {
            const BlockQ6_K &b = reinterpret_cast<const BlockQ6_K *>(row)[i / kQK_K];
            const int e = static_cast<int>(i % kQK_K), n = e / 128, t4 = (e / 32) % 4, l = e % 32;
            const int lo = (b.ql[64 * n + 32 * (t4 % 2) + l] >> (4 * (t4 / 2))) & 0xf;
            const int hi = (b.qh[32 * n + l] >> (2 * t4)) & 3;
            const float dl = f16_to_f32(b.d) * static_cast<float>(b.scales[e / 16]);
            return dl * static_cast<float>((lo | (hi << 4)) - 32);
        }
        default:
            return 0.0f;  // unreachable: load_weight refuses other types
    }
}

// --- eight elements at a time: the tile loaders' form ---------------------------------------------
//
// Elements i .. i + 7 of a row (i a multiple of 8) share one block, and a K-quant's scale group of
// 32 (Q6_K's of 16). gather8 only loads: the 16-bit words (32-bit for F32) of that block that the
// eight elements need, into registers, with no arithmetic on them; decode8 then computes the values
// dequant gives, bit for bit. A loader issues gather8 for its next chunk before multiplying the
// current one, so the loads are in flight during the multiply. Every block field read is at an even
// offset (block sizes are even) and a row's blocks start at even bytes.
struct Raw8 {
    uint32_t r[18];     // loaded words, per type as gather8 lays them out
    int a = 0, b = 0, c = 0;  // shifts and groups from the element index alone
};

// One aligned word (W: uint16_t or uint32_t) at p, zero-extended: a plain load on the device; on
// the host, memcpy (the host check's buffers carry no alignment promise).
template <typename W>
DG_HD uint32_t load_word(const uint8_t *p) {
#if defined(__CUDA_ARCH__)
    return *reinterpret_cast<const W *>(p);
#else
    W v;
    std::memcpy(&v, p, sizeof(W));
    return v;
#endif
}
DG_HD uint32_t load_u16(const uint8_t *p) { return load_word<uint16_t>(p); }
DG_HD uint32_t load_u32(const uint8_t *p) { return load_word<uint32_t>(p); }

// Byte j of the little-endian 16-bit words w[0], w[1], ...
DG_HD uint32_t byte_at(const uint32_t *w, int j) { return (w[j / 2] >> (8 * (j % 2))) & 0xffu; }

DG_HD void gather8(TensorType t, const uint8_t *row, int64_t i_signed, Raw8 &g) {
    // i >= 0: unsigned, so the block and offset divisions are shifts and masks (signed ones cost
    // sign fix-ups in every loader).
    const uint64_t i = static_cast<uint64_t>(i_signed);
    switch (t) {
        case TensorType::F32:
            for (int j = 0; j < 8; ++j) g.r[j] = load_u32(row + 4 * (i + j));
            return;
        case TensorType::F16:
        case TensorType::BF16:
            for (int j = 0; j < 8; ++j) g.r[j] = load_u16(row + 2 * (i + j));
            return;
        case TensorType::Q8_0: {  // r0 d, r1..4 qs[j0 .. j0 + 7]
            const uint8_t *blk = row + i / kQK8_0 * sizeof(BlockQ8_0);
            const int j0 = static_cast<int>(i % kQK8_0);
            g.r[0] = load_u16(blk);
            for (int q = 0; q < 4; ++q) g.r[1 + q] = load_u16(blk + 2 + j0 + 2 * q);
            return;
        }
        case TensorType::Q4_0:
        case TensorType::Q4_1: {  // r0 d, (Q4_1: r1 m), then qs[j0 % 16 ..] whose nibble a holds the codes
            const uint8_t *blk = row + i / kQK4 * (t == TensorType::Q4_0 ? sizeof(BlockQ4_0) : sizeof(BlockQ4_1));
            const int j0 = static_cast<int>(i % kQK4), head = t == TensorType::Q4_0 ? 1 : 2;
            g.r[0] = load_u16(blk);
            if (head == 2) g.r[1] = load_u16(blk + 2);
            for (int q = 0; q < 4; ++q) g.r[head + q] = load_u16(blk + 2 * head + j0 % 16 + 2 * q);
            g.a = 4 * (j0 / 16);
            return;
        }
        case TensorType::Q5_0:
        case TensorType::Q5_1: {  // r0 d, (Q5_1: r1 m), the word holding qh[j0 / 8] (byte b / 8 of it), qs
            const bool q51 = t == TensorType::Q5_1;
            const uint8_t *blk = row + i / kQK4 * (q51 ? sizeof(BlockQ5_1) : sizeof(BlockQ5_0));
            const int j0 = static_cast<int>(i % kQK4), head = q51 ? 2 : 1, hb = j0 / 8;
            g.r[0] = load_u16(blk);
            if (q51) g.r[1] = load_u16(blk + 2);
            g.r[head] = load_u16(blk + 2 * head + (hb & ~1));
            for (int q = 0; q < 4; ++q) g.r[head + 1 + q] = load_u16(blk + 2 * head + 4 + j0 % 16 + 2 * q);
            g.a = 4 * (j0 / 16);
            g.b = 8 * (hb & 1);
            return;
        }
        case TensorType::Q4_K:
        case TensorType::Q5_K: {  // r0 d, r1 dmin, r2..4 the words of scales[j], [j + 4], [j - 4], r8..11 qs, (Q5_K: r12..15 qh)
            const bool q5 = t == TensorType::Q5_K;
            const uint8_t *blk = row + i / kQK_K * (q5 ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K));
            const int e = static_cast<int>(i % kQK_K), k = e / 64, h = (e / 32) % 2, l0 = e % 32;
            const int qs_at = q5 ? 48 : 16;
            g.r[0] = load_u16(blk);
            g.r[1] = load_u16(blk + 2);
            const int j = e / 32;  // the scale group: k4_scale_min_of's three bytes, each in its word
            g.r[2] = load_u16(blk + 4 + (j & ~1));
            g.r[3] = load_u16(blk + 4 + ((j + 4) & ~1));
            g.r[4] = load_u16(blk + 4 + (j >= 4 ? (j - 4) & ~1 : 0));
            for (int q = 0; q < 4; ++q) g.r[8 + q] = load_u16(blk + qs_at + 32 * k + l0 + 2 * q);
            if (q5)
                for (int q = 0; q < 4; ++q) g.r[12 + q] = load_u16(blk + 16 + l0 + 2 * q);
            g.a = e / 32;      // the scale group
            g.b = 4 * h;       // the nibble
            g.c = 2 * k + h;   // Q5_K: the qh bit
            return;
        }
        case TensorType::Q6_K: {  // r0..3 ql, r4..7 qh, r8 the word holding scales[e / 16], r9 d
            const uint8_t *blk = row + i / kQK_K * sizeof(BlockQ6_K);
            const int e = static_cast<int>(i % kQK_K), n = e / 128, t4 = (e / 32) % 4, l0 = e % 32, si = e / 16;
            for (int q = 0; q < 4; ++q) g.r[q] = load_u16(blk + 64 * n + 32 * (t4 % 2) + l0 + 2 * q);
            for (int q = 0; q < 4; ++q) g.r[4 + q] = load_u16(blk + 128 + 32 * n + l0 + 2 * q);
            g.r[8] = load_u16(blk + 192 + (si & ~1));
            g.r[9] = load_u16(blk + 208);
            g.a = 4 * (t4 / 2);
            g.b = 2 * t4;
            g.c = 8 * (si & 1);
            return;
        }
        default:
            return;  // unreachable: load_weight refuses other types
    }
}

DG_HD void decode8(TensorType t, const Raw8 &g, float (&out)[8]) {
    switch (t) {
        case TensorType::F32:
            for (int j = 0; j < 8; ++j) std::memcpy(&out[j], &g.r[j], 4);
            return;
        case TensorType::F16:
            for (int j = 0; j < 8; ++j) out[j] = f16_to_f32(static_cast<uint16_t>(g.r[j]));
            return;
        case TensorType::BF16:
            for (int j = 0; j < 8; ++j) out[j] = bf16_to_f32(static_cast<uint16_t>(g.r[j]));
            return;
        case TensorType::Q8_0: {
            const float d = f16_to_f32(static_cast<uint16_t>(g.r[0]));
            for (int j = 0; j < 8; ++j) out[j] = d * static_cast<float>(static_cast<int8_t>(byte_at(g.r + 1, j)));
            return;
        }
        case TensorType::Q4_0: {
            const float d = f16_to_f32(static_cast<uint16_t>(g.r[0]));
            for (int j = 0; j < 8; ++j) out[j] = d * static_cast<float>(static_cast<int>((byte_at(g.r + 1, j) >> g.a) & 0xf) - 8);
            return;
        }
        case TensorType::Q4_1: {
            const float d = f16_to_f32(static_cast<uint16_t>(g.r[0])), m = f16_to_f32(static_cast<uint16_t>(g.r[1]));
            for (int j = 0; j < 8; ++j) out[j] = mul_rn(d, static_cast<float>((byte_at(g.r + 2, j) >> g.a) & 0xf)) + m;
            return;
        }
        case TensorType::Q5_0: {
            const float d = f16_to_f32(static_cast<uint16_t>(g.r[0]));
            const uint32_t qh = (g.r[1] >> g.b) & 0xff;
            for (int j = 0; j < 8; ++j) {
                const int code = static_cast<int>(((byte_at(g.r + 2, j) >> g.a) & 0xf) | (((qh >> j) & 1) << 4));
                out[j] = d * static_cast<float>(code - 16);
            }
            return;
        }
        case TensorType::Q5_1: {
            const float d = f16_to_f32(static_cast<uint16_t>(g.r[0])), m = f16_to_f32(static_cast<uint16_t>(g.r[1]));
            const uint32_t qh = (g.r[2] >> g.b) & 0xff;
            for (int j = 0; j < 8; ++j) {
                const uint32_t code = ((byte_at(g.r + 3, j) >> g.a) & 0xf) | (((qh >> j) & 1) << 4);
                out[j] = mul_rn(d, static_cast<float>(code)) + m;
            }
            return;
        }
        case TensorType::Q4_K:
        case TensorType::Q5_K: {
            const int sh = 8 * (g.a & 1);  // j, j + 4 and j - 4 share a parity
            int sc, m;
            k4_scale_min_of(g.a, (g.r[2] >> sh) & 0xff, (g.r[3] >> sh) & 0xff, (g.r[4] >> sh) & 0xff, &sc, &m);
            const float dl = f16_to_f32(static_cast<uint16_t>(g.r[0])) * static_cast<float>(sc);
            const float ml = mul_rn(f16_to_f32(static_cast<uint16_t>(g.r[1])), static_cast<float>(m));
            for (int j = 0; j < 8; ++j) {
                uint32_t q = (byte_at(g.r + 8, j) >> g.b) & 0xf;
                if (t == TensorType::Q5_K) q |= ((byte_at(g.r + 12, j) >> g.c) & 1) << 4;
                out[j] = mul_rn(dl, static_cast<float>(q)) - ml;
            }
            return;
        }
        case TensorType::Q6_K: {
            const float dl = f16_to_f32(static_cast<uint16_t>(g.r[9])) * static_cast<float>(static_cast<int8_t>((g.r[8] >> g.c) & 0xff));
            for (int j = 0; j < 8; ++j) {
                const int lo = static_cast<int>((byte_at(g.r, j) >> g.a) & 0xf), hi = static_cast<int>((byte_at(g.r + 4, j) >> g.b) & 3);
                out[j] = dl * static_cast<float>((lo | (hi << 4)) - 32);
            }
            return;
        }
        default:
            for (int j = 0; j < 8; ++j) out[j] = 0.0f;  // unreachable: load_weight refuses other types
    }
}

// Elements i .. i + 7 of a row of type t (i a multiple of 8), as dequant gives them.
DG_HD void dequant8(TensorType t, const uint8_t *row, int64_t i, float (&out)[8]) {
    Raw8 g;
    gather8(t, row, i, g);
    decode8(t, g, out);
}

}  // namespace dg
