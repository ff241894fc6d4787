// K-quants and IQ4_XS: unpacking, dequantization, Q8_K and the portable dot products.
#include "quant/k_quants.h"

#include <cmath>

#include "quant/quant_common.h"
#include "quant/types.h"

namespace dg {

namespace {

// Unsigned codes of one super-block in element order (layouts in k_quants.h).
void codes(const BlockQ2_K &b, uint8_t q[256]) {
    for (int n = 0; n < 2; ++n)
        for (int j = 0; j < 4; ++j)
            for (int l = 0; l < 32; ++l) q[128 * n + 32 * j + l] = (b.qs[32 * n + l] >> (2 * j)) & 3;
}
void codes(const BlockQ3_K &b, uint8_t q[256]) {  // q - 4 is the signed value
    for (int n = 0; n < 2; ++n)
        for (int j = 0; j < 4; ++j)
            for (int l = 0; l < 32; ++l)
                q[128 * n + 32 * j + l] = static_cast<uint8_t>(((b.qs[32 * n + l] >> (2 * j)) & 3) |
                                                               (((b.hmask[l] >> (4 * n + j)) & 1) << 2));
}
void codes(const BlockQ4_K &b, uint8_t q[256]) {
    for (int k = 0; k < 4; ++k)
        for (int l = 0; l < 32; ++l) {
            q[64 * k + l] = b.qs[32 * k + l] & 0xf;
            q[64 * k + 32 + l] = b.qs[32 * k + l] >> 4;
        }
}
void codes(const BlockQ5_K &b, uint8_t q[256]) {
    for (int k = 0; k < 4; ++k)
        for (int l = 0; l < 32; ++l) {
            q[64 * k + l] = static_cast<uint8_t>((b.qs[32 * k + l] & 0xf) | (((b.qh[l] >> (2 * k)) & 1) << 4));
            q[64 * k + 32 + l] = static_cast<uint8_t>((b.qs[32 * k + l] >> 4) | (((b.qh[l] >> (2 * k + 1)) & 1) << 4));
        }
}
void codes(const BlockQ6_K &b, uint8_t q[256]) {  // q - 32 is the signed value
    for (int n = 0; n < 2; ++n)
        for (int t = 0; t < 4; ++t)
            for (int l = 0; l < 32; ++l) {
                const int lo = (b.ql[64 * n + 32 * (t % 2) + l] >> (4 * (t / 2))) & 0xf;
                const int hi = (b.qh[32 * n + l] >> (2 * t)) & 3;
                q[128 * n + 32 * t + l] = static_cast<uint8_t>(lo | (hi << 4));
            }
}
void codes(const BlockIQ4_XS &b, uint8_t q[256]) {  // indices into kIq4nlValues
    for (int g = 0; g < 8; ++g)
        for (int l = 0; l < 16; ++l) {
            q[32 * g + l] = b.qs[16 * g + l] & 0xf;
            q[32 * g + 16 + l] = b.qs[16 * g + l] >> 4;
        }
}

template <typename Block>
const Block *as(const void *p) { return static_cast<const Block *>(p); }

// sum_{e in group} a[e] * y[e] for `len` elements starting at e0.
int32_t group_dot(const uint8_t *q, int offset, const int8_t *y, int e0, int len) {
    int32_t s = 0;
    for (int e = e0; e < e0 + len; ++e) s += (q[e] - offset) * y[e];
    return s;
}

}  // namespace

// ---- dequantization (float32 op order of gguf.quants: group scale first, then times the code) ----

void q2_k_row_to_float(const void *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n / kQK_K; ++i, dst += kQK_K) {
        const BlockQ2_K &b = as<BlockQ2_K>(src)[i];
        uint8_t q[256];
        codes(b, q);
        const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
        for (int g = 0; g < 16; ++g) {
            const float dl = d * static_cast<float>(b.scales[g] & 0xf);
            const float ml = dmin * static_cast<float>(b.scales[g] >> 4);
            for (int e = 16 * g; e < 16 * g + 16; ++e) dst[e] = dl * static_cast<float>(q[e]) - ml;
        }
    }
}

void q3_k_row_to_float(const void *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n / kQK_K; ++i, dst += kQK_K) {
        const BlockQ3_K &b = as<BlockQ3_K>(src)[i];
        uint8_t q[256];
        int sc[16];
        codes(b, q);
        q3_k_scales(b.scales, sc);
        const float d = f16_to_f32(b.d);
        for (int g = 0; g < 16; ++g) {
            const float dl = d * static_cast<float>(sc[g]);
            for (int e = 16 * g; e < 16 * g + 16; ++e) dst[e] = dl * static_cast<float>(q[e] - 4);
        }
    }
}

template <typename Block>
static void q45_k_row_to_float(const void *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n / kQK_K; ++i, dst += kQK_K) {
        const Block &b = as<Block>(src)[i];
        uint8_t q[256];
        codes(b, q);
        const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
        for (int g = 0; g < 8; ++g) {
            int sc, m;
            k4_scale_min(b.scales, g, &sc, &m);
            const float dl = d * static_cast<float>(sc), ml = dmin * static_cast<float>(m);
            for (int e = 32 * g; e < 32 * g + 32; ++e) dst[e] = dl * static_cast<float>(q[e]) - ml;
        }
    }
}
void q4_k_row_to_float(const void *src, float *dst, int64_t n) { q45_k_row_to_float<BlockQ4_K>(src, dst, n); }
void q5_k_row_to_float(const void *src, float *dst, int64_t n) { q45_k_row_to_float<BlockQ5_K>(src, dst, n); }

void q6_k_row_to_float(const void *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n / kQK_K; ++i, dst += kQK_K) {
        const BlockQ6_K &b = as<BlockQ6_K>(src)[i];
        uint8_t q[256];
        codes(b, q);
        const float d = f16_to_f32(b.d);
        for (int g = 0; g < 16; ++g) {
            const float dl = d * static_cast<float>(b.scales[g]);
            for (int e = 16 * g; e < 16 * g + 16; ++e) dst[e] = dl * static_cast<float>(q[e] - 32);
        }
    }
}

void iq4_xs_row_to_float(const void *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n / kQK_K; ++i, dst += kQK_K) {
        const BlockIQ4_XS &b = as<BlockIQ4_XS>(src)[i];
        uint8_t q[256];
        codes(b, q);
        const float d = f16_to_f32(b.d);
        for (int g = 0; g < 8; ++g) {
            const float dl = d * static_cast<float>(iq4_xs_scale(b, g));
            for (int e = 32 * g; e < 32 * g + 32; ++e) dst[e] = dl * static_cast<float>(kIq4nlValues[q[e]]);
        }
    }
}

void q8_k_row_to_float(const void *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n / kQK_K; ++i, dst += kQK_K) {
        const BlockQ8_K &b = as<BlockQ8_K>(src)[i];
        for (int e = 0; e < 256; ++e) dst[e] = b.d * static_cast<float>(b.qs[e]);
    }
}

// ggml's rule: d = max / -127 with max the signed value of largest magnitude, q = round(x / d).
void q8_k_row_from_float(const float *src, void *dst, int64_t n) {
    for (int64_t i = 0; i < n / kQK_K; ++i, src += kQK_K) {
        BlockQ8_K &b = static_cast<BlockQ8_K *>(dst)[i];
        float amax = 0.0f, max = 0.0f;
        for (int e = 0; e < 256; ++e) {
            if (std::fabs(src[e]) > amax) { amax = std::fabs(src[e]); max = src[e]; }
        }
        std::memset(&b, 0, sizeof(b));
        if (amax == 0.0f) continue;
        const float iscale = -127.0f / max;
        for (int e = 0; e < 256; ++e) {
            const int v = nearest_int(iscale * src[e]);
            b.qs[e] = static_cast<int8_t>(v < 127 ? v : 127);
        }
        for (int g = 0; g < 16; ++g) {
            int s = 0;
            for (int e = 16 * g; e < 16 * g + 16; ++e) s += b.qs[e];
            b.bsums[g] = static_cast<int16_t>(s);
        }
        b.d = 1.0f / iscale;
    }
}

// ---- dot products: exact integer sums per super-block, then dx * (d * isum - dmin * msum) ----

float vec_dot_q2_k_q8_k(const void *w, const void *x, int64_t n) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQK_K; ++i) {
        const BlockQ2_K &b = as<BlockQ2_K>(w)[i];
        const BlockQ8_K &y = as<BlockQ8_K>(x)[i];
        uint8_t q[256];
        codes(b, q);
        int32_t isum = 0, msum = 0;
        for (int g = 0; g < 16; ++g) {
            isum += (b.scales[g] & 0xf) * group_dot(q, 0, y.qs, 16 * g, 16);
            msum += (b.scales[g] >> 4) * y.bsums[g];
        }
        sum += (y.d * f16_to_f32(b.d)) * static_cast<float>(isum) - (y.d * f16_to_f32(b.dmin)) * static_cast<float>(msum);
    }
    return sum;
}

float vec_dot_q3_k_q8_k(const void *w, const void *x, int64_t n) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQK_K; ++i) {
        const BlockQ3_K &b = as<BlockQ3_K>(w)[i];
        const BlockQ8_K &y = as<BlockQ8_K>(x)[i];
        uint8_t q[256];
        int sc[16];
        codes(b, q);
        q3_k_scales(b.scales, sc);
        int32_t isum = 0;
        for (int g = 0; g < 16; ++g) isum += sc[g] * group_dot(q, 4, y.qs, 16 * g, 16);
        sum += (y.d * f16_to_f32(b.d)) * static_cast<float>(isum);
    }
    return sum;
}

template <typename Block>
static float vec_dot_q45_k(const void *w, const void *x, int64_t n) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQK_K; ++i) {
        const Block &b = as<Block>(w)[i];
        const BlockQ8_K &y = as<BlockQ8_K>(x)[i];
        uint8_t q[256];
        codes(b, q);
        int32_t isum = 0, msum = 0;
        for (int g = 0; g < 8; ++g) {
            int sc, m;
            k4_scale_min(b.scales, g, &sc, &m);
            isum += sc * group_dot(q, 0, y.qs, 32 * g, 32);
            msum += m * (y.bsums[2 * g] + y.bsums[2 * g + 1]);
        }
        sum += (y.d * f16_to_f32(b.d)) * static_cast<float>(isum) - (y.d * f16_to_f32(b.dmin)) * static_cast<float>(msum);
    }
    return sum;
}
float vec_dot_q4_k_q8_k(const void *w, const void *x, int64_t n) { return vec_dot_q45_k<BlockQ4_K>(w, x, n); }
float vec_dot_q5_k_q8_k(const void *w, const void *x, int64_t n) { return vec_dot_q45_k<BlockQ5_K>(w, x, n); }

float vec_dot_q6_k_q8_k(const void *w, const void *x, int64_t n) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQK_K; ++i) {
        const BlockQ6_K &b = as<BlockQ6_K>(w)[i];
        const BlockQ8_K &y = as<BlockQ8_K>(x)[i];
        uint8_t q[256];
        codes(b, q);
        int32_t isum = 0;
        for (int g = 0; g < 16; ++g) isum += b.scales[g] * group_dot(q, 32, y.qs, 16 * g, 16);
        sum += (y.d * f16_to_f32(b.d)) * static_cast<float>(isum);
    }
    return sum;
}

float vec_dot_iq4_xs_q8_k(const void *w, const void *x, int64_t n) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQK_K; ++i) {
        const BlockIQ4_XS &b = as<BlockIQ4_XS>(w)[i];
        const BlockQ8_K &y = as<BlockQ8_K>(x)[i];
        uint8_t q[256];
        codes(b, q);
        int32_t isum = 0;
        for (int g = 0; g < 8; ++g) {
            int32_t s = 0;
            for (int e = 32 * g; e < 32 * g + 32; ++e) s += kIq4nlValues[q[e]] * y.qs[e];
            isum += iq4_xs_scale(b, g) * s;
        }
        sum += (y.d * f16_to_f32(b.d)) * static_cast<float>(isum);
    }
    return sum;
}

}  // namespace dg
