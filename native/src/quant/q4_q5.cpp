#include "quant/q4_q5.h"

#include <cmath>

#include "quant/q8_0.h"
#include "quant/quant_common.h"
#include "quant/types.h"

namespace dg {

namespace {

// Codes of block b: q[j] for j in 0..31 (4-bit types have no qh).
void unpack4(const uint8_t *qs, int q[32]) {
    for (int j = 0; j < 16; ++j) {
        q[j] = qs[j] & 0xf;
        q[j + 16] = qs[j] >> 4;
    }
}
void unpack5(const uint8_t *qh, const uint8_t *qs, int q[32]) {
    uint32_t h;
    std::memcpy(&h, qh, 4);
    unpack4(qs, q);
    for (int j = 0; j < 32; ++j) q[j] |= ((h >> j) & 1) << 4;
}
void pack(const int q[32], uint8_t *qh, uint8_t *qs) {
    uint32_t h = 0;
    for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>((q[j] & 0xf) | ((q[j + 16] & 0xf) << 4));
    for (int j = 0; j < 32; ++j) h |= static_cast<uint32_t>(q[j] >> 4) << j;
    if (qh) std::memcpy(qh, &h, 4);
}

// Symmetric rule (Q4_0, Q5_0): d = x[argmax |x|] / -half, q = min(2*half-1, trunc(x/d + half + 0.5)).
float quantize_symmetric(const float *x, int half, int q[32]) {
    float amax = std::fabs(x[0]), max = x[0];  // first element of largest magnitude, like argmax
    for (int j = 1; j < 32; ++j) {
        if (std::fabs(x[j]) > amax) { amax = std::fabs(x[j]); max = x[j]; }
    }
    const float d = max / static_cast<float>(-half);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const float bias = static_cast<float>(half) + 0.5f;
    for (int j = 0; j < 32; ++j) {
        const float v = x[j] * id;
        const int l = static_cast<int>(v + bias);
        q[j] = l < 2 * half - 1 ? l : 2 * half - 1;
    }
    return d;
}

// Affine rule (Q4_1, Q5_1): d = (max - min) / nmax, q = min(nmax, trunc((x - min)/d + 0.5)).
float quantize_affine(const float *x, int nmax, float *min_out, int q[32]) {
    float min = x[0], max = x[0];
    for (int j = 1; j < 32; ++j) {
        min = x[j] < min ? x[j] : min;
        max = x[j] > max ? x[j] : max;
    }
    const float d = (max - min) / static_cast<float>(nmax);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; ++j) {
        const float v = (x[j] - min) * id;
        const int l = static_cast<int>(v + 0.5f);
        q[j] = l < nmax ? l : nmax;
    }
    *min_out = min;
    return d;
}

template <typename Block>
const Block *blocks(const void *p) { return static_cast<const Block *>(p); }

}  // namespace

void q4_0_row_to_float(const void *src, float *dst, int64_t n) {
    const BlockQ4_0 *b = blocks<BlockQ4_0>(src);
    for (int64_t i = 0; i < n / kQK4; ++i, dst += kQK4) {
        int q[32];
        unpack4(b[i].qs, q);
        const float d = f16_to_f32(b[i].d);
        for (int j = 0; j < 32; ++j) dst[j] = d * static_cast<float>(q[j] - 8);
    }
}

void q4_1_row_to_float(const void *src, float *dst, int64_t n) {
    const BlockQ4_1 *b = blocks<BlockQ4_1>(src);
    for (int64_t i = 0; i < n / kQK4; ++i, dst += kQK4) {
        int q[32];
        unpack4(b[i].qs, q);
        const float d = f16_to_f32(b[i].d), m = f16_to_f32(b[i].m);
        for (int j = 0; j < 32; ++j) dst[j] = d * static_cast<float>(q[j]) + m;
    }
}

void q5_0_row_to_float(const void *src, float *dst, int64_t n) {
    const BlockQ5_0 *b = blocks<BlockQ5_0>(src);
    for (int64_t i = 0; i < n / kQK4; ++i, dst += kQK4) {
        int q[32];
        unpack5(b[i].qh, b[i].qs, q);
        const float d = f16_to_f32(b[i].d);
        for (int j = 0; j < 32; ++j) dst[j] = d * static_cast<float>(q[j] - 16);
    }
}

void q5_1_row_to_float(const void *src, float *dst, int64_t n) {
    const BlockQ5_1 *b = blocks<BlockQ5_1>(src);
    for (int64_t i = 0; i < n / kQK4; ++i, dst += kQK4) {
        int q[32];
        unpack5(b[i].qh, b[i].qs, q);
        const float d = f16_to_f32(b[i].d), m = f16_to_f32(b[i].m);
        for (int j = 0; j < 32; ++j) dst[j] = d * static_cast<float>(q[j]) + m;
    }
}

void q4_0_row_from_float(const float *src, void *dst, int64_t n) {
    BlockQ4_0 *b = static_cast<BlockQ4_0 *>(dst);
    for (int64_t i = 0; i < n / kQK4; ++i, src += kQK4) {
        int q[32];
        b[i].d = f32_to_f16(quantize_symmetric(src, 8, q));
        pack(q, nullptr, b[i].qs);
    }
}

void q4_1_row_from_float(const float *src, void *dst, int64_t n) {
    BlockQ4_1 *b = static_cast<BlockQ4_1 *>(dst);
    for (int64_t i = 0; i < n / kQK4; ++i, src += kQK4) {
        int q[32];
        float min;
        b[i].d = f32_to_f16(quantize_affine(src, 15, &min, q));
        b[i].m = f32_to_f16(min);
        pack(q, nullptr, b[i].qs);
    }
}

void q5_0_row_from_float(const float *src, void *dst, int64_t n) {
    BlockQ5_0 *b = static_cast<BlockQ5_0 *>(dst);
    for (int64_t i = 0; i < n / kQK4; ++i, src += kQK4) {
        int q[32];
        b[i].d = f32_to_f16(quantize_symmetric(src, 16, q));
        pack(q, b[i].qh, b[i].qs);
    }
}

void q5_1_row_from_float(const float *src, void *dst, int64_t n) {
    BlockQ5_1 *b = static_cast<BlockQ5_1 *>(dst);
    for (int64_t i = 0; i < n / kQK4; ++i, src += kQK4) {
        int q[32];
        float min;
        b[i].d = f32_to_f16(quantize_affine(src, 31, &min, q));
        b[i].m = f32_to_f16(min);
        pack(q, b[i].qh, b[i].qs);
    }
}

// Per block: sum_j (d q_j - d*off) * (dx y_j) = d dx (sum q y - off sum y); plus m dx sum y for _1.
namespace {
template <typename Block, int kOffset, bool kHasMin, bool kFiveBit>
float vec_dot_generic(const void *w, const void *x, int64_t n) {
    const Block *b = blocks<Block>(w);
    const BlockQ8_0 *y = blocks<BlockQ8_0>(x);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQK4; ++i) {
        int q[32];
        if constexpr (kFiveBit) unpack5(b[i].qh, b[i].qs, q); else unpack4(b[i].qs, q);
        int32_t qy = 0, sy = 0;
        for (int j = 0; j < 32; ++j) {
            qy += q[j] * y[i].qs[j];
            sy += y[i].qs[j];
        }
        const float dx = f16_to_f32(y[i].d);
        sum += static_cast<float>(qy - kOffset * sy) * (f16_to_f32(b[i].d) * dx);
        if constexpr (kHasMin) sum += static_cast<float>(sy) * (f16_to_f32(b[i].m) * dx);
    }
    return sum;
}
}  // namespace

float vec_dot_q4_0_q8_0(const void *w, const void *x, int64_t n) { return vec_dot_generic<BlockQ4_0, 8, false, false>(w, x, n); }
float vec_dot_q4_1_q8_0(const void *w, const void *x, int64_t n) { return vec_dot_generic<BlockQ4_1, 0, true, false>(w, x, n); }
float vec_dot_q5_0_q8_0(const void *w, const void *x, int64_t n) { return vec_dot_generic<BlockQ5_0, 16, false, true>(w, x, n); }
float vec_dot_q5_1_q8_0(const void *w, const void *x, int64_t n) { return vec_dot_generic<BlockQ5_1, 0, true, true>(w, x, n); }

}  // namespace dg
