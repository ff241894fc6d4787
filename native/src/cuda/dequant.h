// Element i of a weight row, for every weight type the CUDA backend runs: F32, F16, BF16, Q8_0,
// Q4_K, Q5_K, Q6_K. Plain DG_HD functions over the block structs the CPU uses, with the CPU's
// float operation order, so that tests/test_cuda.py checks them on the host against
// dgemma_dequantize_row, bit for bit, and the kernels read weights exactly as the CPU does.
#pragma once

#include <cstdint>

#include "host_device.h"
#include "quant/float_bits.h"
#include "quant/k_quants.h"
#include "quant/q8_0.h"
#include "quant/types.h"

namespace dg {

// The weight types with a CUDA kernel; any other type is refused at load (no host fallback).
DG_HD bool cuda_weight_type_supported(TensorType t) {
    switch (t) {
        case TensorType::F32: case TensorType::F16: case TensorType::BF16: case TensorType::Q8_0:
        case TensorType::Q4_K: case TensorType::Q5_K: case TensorType::Q6_K:
            return true;
        default:
            return false;
    }
}

// Q4_K / Q5_K element e (0..255) of one super-block: d*sc * q - dmin*m over its 32-element group.
template <typename Block>
DG_HD float q45_k_element(const Block &b, int e, int q) {
    int sc, m;
    k4_scale_min(b.scales, e / 32, &sc, &m);
    const float dl = f16_to_f32(b.d) * static_cast<float>(sc), ml = f16_to_f32(b.dmin) * static_cast<float>(m);
    return mul_rn(dl, static_cast<float>(q)) - ml;
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

}  // namespace dg
