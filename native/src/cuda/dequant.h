// Element i of a weight row, for every weight type the CUDA backend runs: F32, F16, BF16, Q8_0,
// Q4_0, Q4_1, Q5_0, Q5_1 (the fallbacks of K-quant files for rows that are not a multiple of 256),
// Q4_K, Q5_K, Q6_K. Plain DG_HD functions over the block structs the CPU uses, with the CPU's
// float operation order, so that tests/test_cuda.py checks them on the host against
// dgemma_dequantize_row, bit for bit, and the kernels read weights exactly as the CPU does.
#pragma once

#include <cstdint>

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
    const float dl = f16_to_f32(b.d) * static_cast<float>(sc), ml = f16_to_f32(b.dmin) * static_cast<float>(m);
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

// Elements i .. i + 7 of a row of type t (i a multiple of 8): the values dequant gives, bit for bit,
// with each block's scales read and decoded once for the eight (eight consecutive elements share a
// block, and a K-quant's scale group of 32, or Q6_K's of 16). The tile loaders' form.
DG_HD void dequant8(TensorType t, const uint8_t *row, int64_t i, float (&out)[8]) {
    switch (t) {
        case TensorType::Q8_0: {
            const BlockQ8_0 &b = reinterpret_cast<const BlockQ8_0 *>(row)[i / kQK8_0];
            const float d = f16_to_f32(b.d);
            const int j0 = static_cast<int>(i % kQK8_0);
            for (int j = 0; j < 8; ++j) out[j] = d * static_cast<float>(b.qs[j0 + j]);
            return;
        }
        case TensorType::Q4_0: {
            const BlockQ4_0 &b = reinterpret_cast<const BlockQ4_0 *>(row)[i / kQK4];
            const float d = f16_to_f32(b.d);
            const int j0 = static_cast<int>(i % kQK4);
            for (int j = 0; j < 8; ++j) out[j] = d * static_cast<float>(q4_code(b.qs, j0 + j) - 8);
            return;
        }
        case TensorType::Q4_1: {
            const BlockQ4_1 &b = reinterpret_cast<const BlockQ4_1 *>(row)[i / kQK4];
            const float d = f16_to_f32(b.d), m = f16_to_f32(b.m);
            const int j0 = static_cast<int>(i % kQK4);
            for (int j = 0; j < 8; ++j) out[j] = mul_rn(d, static_cast<float>(q4_code(b.qs, j0 + j))) + m;
            return;
        }
        case TensorType::Q5_0: {
            const BlockQ5_0 &b = reinterpret_cast<const BlockQ5_0 *>(row)[i / kQK4];
            const float d = f16_to_f32(b.d);
            const int j0 = static_cast<int>(i % kQK4);
            for (int j = 0; j < 8; ++j) out[j] = d * static_cast<float>(q5_code(b.qh, b.qs, j0 + j) - 16);
            return;
        }
        case TensorType::Q5_1: {
            const BlockQ5_1 &b = reinterpret_cast<const BlockQ5_1 *>(row)[i / kQK4];
            const float d = f16_to_f32(b.d), m = f16_to_f32(b.m);
            const int j0 = static_cast<int>(i % kQK4);
            for (int j = 0; j < 8; ++j) out[j] = mul_rn(d, static_cast<float>(q5_code(b.qh, b.qs, j0 + j))) + m;
            return;
        }
        case TensorType::Q4_K: {
            const BlockQ4_K &b = reinterpret_cast<const BlockQ4_K *>(row)[i / kQK_K];
            const int e = static_cast<int>(i % kQK_K), k = e / 64, h = (e / 32) % 2, l0 = e % 32;
            int sc, m;
            k4_scale_min(b.scales, e / 32, &sc, &m);
            const float dl = f16_to_f32(b.d) * static_cast<float>(sc), ml = f16_to_f32(b.dmin) * static_cast<float>(m);
            for (int j = 0; j < 8; ++j) out[j] = mul_rn(dl, static_cast<float>((b.qs[32 * k + l0 + j] >> (4 * h)) & 0xf)) - ml;
            return;
        }
        case TensorType::Q5_K: {
            const BlockQ5_K &b = reinterpret_cast<const BlockQ5_K *>(row)[i / kQK_K];
            const int e = static_cast<int>(i % kQK_K), k = e / 64, h = (e / 32) % 2, l0 = e % 32;
            int sc, m;
            k4_scale_min(b.scales, e / 32, &sc, &m);
            const float dl = f16_to_f32(b.d) * static_cast<float>(sc), ml = f16_to_f32(b.dmin) * static_cast<float>(m);
            for (int j = 0; j < 8; ++j) {
                const int l = l0 + j;
                const int q = ((b.qs[32 * k + l] >> (4 * h)) & 0xf) | (((b.qh[l] >> (2 * k + h)) & 1) << 4);
                out[j] = mul_rn(dl, static_cast<float>(q)) - ml;
            }
            return;
        }
        case TensorType::Q6_K: {
            const BlockQ6_K &b = reinterpret_cast<const BlockQ6_K *>(row)[i / kQK_K];
            const int e = static_cast<int>(i % kQK_K), n = e / 128, t4 = (e / 32) % 4, l0 = e % 32;
            const float dl = f16_to_f32(b.d) * static_cast<float>(b.scales[e / 16]);
            for (int j = 0; j < 8; ++j) {
                const int l = l0 + j;
                const int lo = (b.ql[64 * n + 32 * (t4 % 2) + l] >> (4 * (t4 / 2))) & 0xf;
                const int hi = (b.qh[32 * n + l] >> (2 * t4)) & 3;
                out[j] = dl * static_cast<float>((lo | (hi << 4)) - 32);
            }
            return;
        }
        default:  // the float types: no shared scale to hoist
            for (int j = 0; j < 8; ++j) out[j] = dequant(t, row, i + j);
    }
}

}  // namespace dg
