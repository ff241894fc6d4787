// Reference quantizers of the K-quants and IQ4_XS, after ggml's quantize_row_*_ref (no importance
// matrix): per group a least-squares fit of scale (and min) over a small sweep of candidate scales,
// then the group scales themselves quantized to 4, 6 or 8 bits, then the codes re-rounded against
// the scales actually stored.
#include <cmath>

#include "quant/k_quants.h"
#include "quant/quant_common.h"
#include "quant/types.h"

namespace dg {

namespace {

int clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

// Fits x ~ scale * L - min with L in 0..nmax under weights w (ggml's make_qkx2_quants): start from
// the min/max grid, then try nstep + 1 grids of (nmax + rmin + rdelta*is) steps, each refined by a
// weighted least-squares solve for (scale, min); keeps the lowest weighted error (|.| or squared).
// Returns scale; *neg_min = -min >= 0.
float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L, float *neg_min,
                    float rmin, float rdelta, int nstep, bool use_mad) {
    float min = x[0], max = x[0], sum_w = w[0], sum_x = w[0] * x[0];
    for (int i = 1; i < n; ++i) {
        min = x[i] < min ? x[i] : min;
        max = x[i] > max ? x[i] : max;
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *neg_min = -min;
        return 0.0f;
    }
    auto error = [&](const uint8_t *l, float s, float m) {
        float e = 0;
        for (int i = 0; i < n; ++i) {
            float diff = s * l[i] + m - x[i];
            diff = use_mad ? std::fabs(diff) : diff * diff;
            e += w[i] * diff;
        }
        return e;
    };
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(clamp(nearest_int(iscale * (x[i] - min)), 0, nmax));
    float best_error = error(L, scale, min);
    uint8_t laux[32];
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            const int l = clamp(nearest_int(iscale * (x[i] - min)), 0, nmax);
            laux[i] = static_cast<uint8_t>(l);
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        const float det = sum_w * sum_l2 - sum_l * sum_l;
        if (det <= 0) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        const float cur_error = error(laux, this_scale, this_min);
        if (cur_error < best_error) {
            for (int i = 0; i < n; ++i) L[i] = laux[i];
            best_error = cur_error;
            scale = this_scale;
            min = this_min;
        }
    }
    *neg_min = -min;
    return scale;
}

// Symmetric fit x ~ scale * (L - nmax), L - nmax in -nmax..nmax-1, weights x^2 (ggml's make_qx_quants
// with rmse_type 1): the best of 19 candidate grids around nmax / max|x|, each least-squares refined.
float fit_scale_symmetric(int n, int nmax, const float *x, int8_t *L) {
    float amax = 0, max = 0;
    for (int i = 0; i < n; ++i) {
        if (std::fabs(x[i]) > amax) { amax = std::fabs(x[i]); max = x[i]; }
    }
    if (amax < kGroupMaxEps) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.0f;
    }
    auto fit = [&](float iscale, float *sumlx, float *suml2) {
        *sumlx = *suml2 = 0;
        for (int i = 0; i < n; ++i) {
            const int l = clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
            const float w = x[i] * x[i];
            *sumlx += w * x[i] * l;
            *suml2 += w * l * l;
        }
    };
    auto assign = [&](float iscale) {
        for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(nmax + clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1));
    };
    float iscale = -nmax / max, sumlx, suml2;
    fit(iscale, &sumlx, &suml2);
    assign(iscale);
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        fit(iscale, &sumlx, &suml2);
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            assign(iscale);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

// Q3_K's group fit (ggml's make_q3_quants with do_rmse): round against nmax / max, then up to five
// passes that move single codes to their least-squares optimum while the weighted fit improves.
// L receives codes offset by nmax (0..2*nmax-1).
float fit_scale_q3(int n, int nmax, const float *x, int8_t *L) {
    float amax = 0, max = 0;
    for (int i = 0; i < n; ++i) {
        if (std::fabs(x[i]) > amax) { amax = std::fabs(x[i]); max = x[i]; }
    }
    if (amax < kGroupMaxEps) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.0f;
    }
    const float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        const int l = clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = static_cast<int8_t>(l);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx <= 0) continue;
            float sl2 = suml2 - w * L[i] * L[i];
            const int new_l = clamp(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
            if (new_l == L[i]) continue;
            slx += w * x[i] * new_l;
            sl2 += w * new_l * new_l;
            if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = static_cast<int8_t>(new_l);
                sumlx = slx;
                suml2 = sl2;
                ++n_changed;
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
    return sumlx / suml2;
}

// Packs 2-bit codes L[256] (element order) into qs[64]: bits 2j.. of qs[32n + l] hold e = 128n + 32j + l.
void pack_2bit(const uint8_t *L, uint8_t *qs) {
    for (int n = 0; n < 2; ++n)
        for (int l = 0; l < 32; ++l) {
            const uint8_t *e = L + 128 * n + l;
            qs[32 * n + l] = static_cast<uint8_t>(e[0] | (e[32] << 2) | (e[64] << 4) | (e[96] << 6));
        }
}

// Q4_K / Q5_K: packs 6-bit scales and mins of the 8 groups into 12 bytes.
void pack_k4_scales(const uint8_t ls[8], const uint8_t lm[8], uint8_t *s) {
    for (int j = 0; j < 8; ++j) {
        if (j < 4) {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = static_cast<uint8_t>((ls[j] & 0xf) | ((lm[j] & 0xf) << 4));
            s[j - 4] |= static_cast<uint8_t>((ls[j] >> 4) << 6);
            s[j] |= static_cast<uint8_t>((lm[j] >> 4) << 6);
        }
    }
}

// Q4_K / Q5_K share everything but the code width (nmax 15 or 31) and the fit's sweep.
template <typename Block>
void quantize_q45_k(const float *x, Block &b, int nmax, float rmin, int nstep, uint8_t L[256]) {
    float scales[8], mins[8], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
        const float *xj = x + 32 * j;
        float sum_x2 = 0, w[32];
        for (int l = 0; l < 32; ++l) sum_x2 += xj[l] * xj[l];
        const float av_x = std::sqrt(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) w[l] = av_x + std::fabs(xj[l]);
        scales[j] = fit_scale_min(32, nmax, xj, w, L + 32 * j, &mins[j], rmin, 0.1f, nstep, false);
        max_scale = scales[j] > max_scale ? scales[j] : max_scale;
        max_min = mins[j] > max_min ? mins[j] : max_min;
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; ++j) {
        ls[j] = static_cast<uint8_t>(nearest_int(inv_scale * scales[j]));
        lm[j] = static_cast<uint8_t>(nearest_int(inv_min * mins[j]));
        ls[j] = ls[j] < 63 ? ls[j] : 63;
        lm[j] = lm[j] < 63 ? lm[j] : 63;
    }
    std::memset(b.scales, 0, 12);
    pack_k4_scales(ls, lm, b.scales);
    b.d = f32_to_f16(max_scale / 63.f);
    b.dmin = f32_to_f16(max_min / 63.f);
    for (int j = 0; j < 8; ++j) {
        int sc, m;
        k4_scale_min(b.scales, j, &sc, &m);
        const float d = f16_to_f32(b.d) * sc;
        if (d == 0.0f) continue;
        const float dm = f16_to_f32(b.dmin) * m;
        for (int l = 0; l < 32; ++l) L[32 * j + l] = static_cast<uint8_t>(clamp(nearest_int((x[32 * j + l] + dm) / d), 0, nmax));
    }
}

// Index of the grid value nearest to v (ties to the upper one, like ggml's best_index_int8).
int nearest_iq4nl(float v) {
    if (v <= kIq4nlValues[0]) return 0;
    if (v >= kIq4nlValues[15]) return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        (v < kIq4nlValues[mid] ? hi : lo) = mid;
    }
    return v - kIq4nlValues[hi - 1] < kIq4nlValues[hi] - v ? hi - 1 : hi;
}

}  // namespace

void q2_k_row_from_float(const float *src, void *dst, int64_t n) {
    for (int64_t i = 0; i < n / kQK_K; ++i, src += kQK_K) {
        BlockQ2_K &b = static_cast<BlockQ2_K *>(dst)[i];
        uint8_t L[256];
        float scales[16], mins[16], max_scale = 0, max_min = 0;
        for (int j = 0; j < 16; ++j) {
            float w[16];
            for (int l = 0; l < 16; ++l) w[l] = std::fabs(src[16 * j + l]);
            scales[j] = fit_scale_min(16, 3, src + 16 * j, w, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, true);
            max_scale = scales[j] > max_scale ? scales[j] : max_scale;
            max_min = mins[j] > max_min ? mins[j] : max_min;
        }
        std::memset(b.scales, 0, 16);
        b.d = b.dmin = f32_to_f16(0.0f);
        if (max_scale > 0) {
            const float iscale = 15.f / max_scale;
            for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<uint8_t>(nearest_int(iscale * scales[j]));
            b.d = f32_to_f16(max_scale / 15.f);
        }
        if (max_min > 0) {
            const float iscale = 15.f / max_min;
            for (int j = 0; j < 16; ++j) b.scales[j] |= static_cast<uint8_t>(nearest_int(iscale * mins[j]) << 4);
            b.dmin = f32_to_f16(max_min / 15.f);
        }
        for (int j = 0; j < 16; ++j) {
            const float d = f16_to_f32(b.d) * (b.scales[j] & 0xf);
            if (d == 0.0f) continue;
            const float dm = f16_to_f32(b.dmin) * (b.scales[j] >> 4);
            for (int l = 0; l < 16; ++l) L[16 * j + l] = static_cast<uint8_t>(clamp(nearest_int((src[16 * j + l] + dm) / d), 0, 3));
        }
        pack_2bit(L, b.qs);
    }
}

void q3_k_row_from_float(const float *src, void *dst, int64_t n) {
    for (int64_t i = 0; i < n / kQK_K; ++i, src += kQK_K) {
        BlockQ3_K &b = static_cast<BlockQ3_K *>(dst)[i];
        int8_t L[256];
        float scales[16], max_scale = 0, amax = 0;
        for (int j = 0; j < 16; ++j) {
            scales[j] = fit_scale_q3(16, 4, src + 16 * j, L + 16 * j);
            if (std::fabs(scales[j]) > amax) { amax = std::fabs(scales[j]); max_scale = scales[j]; }
        }
        std::memset(b.scales, 0, 12);
        b.d = f32_to_f16(0.0f);
        if (max_scale != 0.0f) {
            const float iscale = -32.f / max_scale;
            for (int j = 0; j < 16; ++j) {
                const int l = clamp(static_cast<int8_t>(nearest_int(iscale * scales[j])), -32, 31) + 32;
                if (j < 8) b.scales[j] = static_cast<uint8_t>(l & 0xf);
                else b.scales[j - 8] |= static_cast<uint8_t>((l & 0xf) << 4);
                b.scales[j % 4 + 8] |= static_cast<uint8_t>((l >> 4) << (2 * (j / 4)));
            }
            b.d = f32_to_f16(1 / iscale);
        }
        int sc[16];
        q3_k_scales(b.scales, sc);
        for (int j = 0; j < 16; ++j) {
            const float d = f16_to_f32(b.d) * sc[j];
            if (d == 0.0f) continue;
            for (int l = 0; l < 16; ++l) L[16 * j + l] = static_cast<int8_t>(clamp(nearest_int(src[16 * j + l] / d), -4, 3) + 4);
        }
        // High bit of e = 128n + 32j + l goes to bit 4n + j of hmask[l]; the low two bits as Q2_K.
        uint8_t low[256];
        std::memset(b.hmask, 0, 32);
        for (int e = 0; e < 256; ++e) {
            if (L[e] > 3) b.hmask[e % 32] |= static_cast<uint8_t>(1 << (e / 32));
            low[e] = static_cast<uint8_t>(L[e] & 3);
        }
        pack_2bit(low, b.qs);
    }
}

void q4_k_row_from_float(const float *src, void *dst, int64_t n) {
    for (int64_t i = 0; i < n / kQK_K; ++i, src += kQK_K) {
        BlockQ4_K &b = static_cast<BlockQ4_K *>(dst)[i];
        uint8_t L[256];
        quantize_q45_k(src, b, 15, -1.0f, 20, L);
        for (int k = 0; k < 4; ++k)
            for (int l = 0; l < 32; ++l) b.qs[32 * k + l] = static_cast<uint8_t>(L[64 * k + l] | (L[64 * k + 32 + l] << 4));
    }
}

void q5_k_row_from_float(const float *src, void *dst, int64_t n) {
    for (int64_t i = 0; i < n / kQK_K; ++i, src += kQK_K) {
        BlockQ5_K &b = static_cast<BlockQ5_K *>(dst)[i];
        uint8_t L[256];
        quantize_q45_k(src, b, 31, -0.5f, 15, L);
        std::memset(b.qh, 0, 32);
        for (int k = 0; k < 4; ++k)
            for (int l = 0; l < 32; ++l) {
                const uint8_t lo = L[64 * k + l], hi = L[64 * k + 32 + l];
                b.qs[32 * k + l] = static_cast<uint8_t>((lo & 0xf) | ((hi & 0xf) << 4));
                b.qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * k)) | ((hi >> 4) << (2 * k + 1)));
            }
    }
}

void q6_k_row_from_float(const float *src, void *dst, int64_t n) {
    for (int64_t i = 0; i < n / kQK_K; ++i, src += kQK_K) {
        BlockQ6_K &b = static_cast<BlockQ6_K *>(dst)[i];
        int8_t L[256];
        float scales[16], max_scale = 0, max_abs_scale = 0;
        for (int j = 0; j < 16; ++j) {
            scales[j] = fit_scale_symmetric(16, 32, src + 16 * j, L + 16 * j);
            if (std::fabs(scales[j]) > max_abs_scale) { max_abs_scale = std::fabs(scales[j]); max_scale = scales[j]; }
        }
        std::memset(&b, 0, sizeof(b));
        if (max_abs_scale < kGroupMaxEps) continue;
        const float iscale = -128.f / max_scale;
        b.d = f32_to_f16(1 / iscale);
        for (int j = 0; j < 16; ++j) {
            const int l = nearest_int(iscale * scales[j]);
            b.scales[j] = static_cast<int8_t>(l < 127 ? l : 127);
        }
        for (int j = 0; j < 16; ++j) {
            const float d = f16_to_f32(b.d) * b.scales[j];
            if (d == 0.0f) continue;
            for (int l = 0; l < 16; ++l) L[16 * j + l] = static_cast<int8_t>(clamp(nearest_int(src[16 * j + l] / d), -32, 31) + 32);
        }
        for (int nh = 0; nh < 2; ++nh)
            for (int l = 0; l < 32; ++l) {
                const int8_t *e = L + 128 * nh + l;
                b.ql[64 * nh + l] = static_cast<uint8_t>((e[0] & 0xf) | ((e[64] & 0xf) << 4));
                b.ql[64 * nh + 32 + l] = static_cast<uint8_t>((e[32] & 0xf) | ((e[96] & 0xf) << 4));
                b.qh[32 * nh + l] = static_cast<uint8_t>((e[0] >> 4) | ((e[32] >> 4) << 2) | ((e[64] >> 4) << 4) | ((e[96] >> 4) << 6));
            }
    }
}

// ggml's IQ4_XS reference (quantize_row_iq4_nl_impl with 32-element groups, weights x^2, 7 tries).
void iq4_xs_row_from_float(const float *src, void *dst, int64_t n) {
    constexpr int kTries = 7;
    const float v0 = kIq4nlValues[0];
    for (int64_t i = 0; i < n / kQK_K; ++i, src += kQK_K) {
        BlockIQ4_XS &b = static_cast<BlockIQ4_XS *>(dst)[i];
        float scales[8], max_scale = 0, amax_scale = 0;
        for (int g = 0; g < 8; ++g) {
            const float *x = src + 32 * g;
            float amax = 0, max = 0;
            for (int j = 0; j < 32; ++j) {
                if (std::fabs(x[j]) > amax) { amax = std::fabs(x[j]); max = x[j]; }
            }
            scales[g] = 0;
            if (amax < kGroupMaxEps) continue;
            auto fit = [&](float id, float *sumqx, float *sumq2) {
                *sumqx = *sumq2 = 0;
                for (int j = 0; j < 32; ++j) {
                    const float q = kIq4nlValues[nearest_iq4nl(id * x[j])], w = x[j] * x[j];
                    *sumqx += w * q * x[j];
                    *sumq2 += w * q * q;
                }
            };
            float sumqx, sumq2;
            fit(1 / (-max / v0), &sumqx, &sumq2);
            float d = sumqx / sumq2, best = d * sumqx;
            for (int itry = -kTries; itry <= kTries; ++itry) {
                fit((itry + v0) / max, &sumqx, &sumq2);
                if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                    d = sumqx / sumq2;
                    best = d * sumqx;
                }
            }
            scales[g] = d;
            if (std::fabs(d) > amax_scale) { amax_scale = std::fabs(d); max_scale = d; }
        }
        const float d = -max_scale / 32;
        b.d = f32_to_f16(d);
        b.scales_h = 0;
        std::memset(b.scales_l, 0, 4);
        const float id = d != 0.0f ? 1 / d : 0.f;
        for (int g = 0; g < 8; ++g) {
            const int l = clamp(nearest_int(id * scales[g]), -32, 31);
            const float dl = d * l, idl = dl != 0.0f ? 1 / dl : 0.f;
            uint8_t L[32];
            for (int j = 0; j < 32; ++j) L[j] = static_cast<uint8_t>(nearest_iq4nl(idl * src[32 * g + j]));
            for (int j = 0; j < 16; ++j) b.qs[16 * g + j] = static_cast<uint8_t>(L[j] | (L[16 + j] << 4));
            b.scales_l[g / 2] |= static_cast<uint8_t>(((l + 32) & 0xf) << (4 * (g % 2)));
            b.scales_h |= static_cast<uint16_t>(((l + 32) >> 4) << (2 * g));
        }
    }
}

}  // namespace dg
