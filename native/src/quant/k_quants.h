// ggml's K-quants: super-blocks of 256 elements split into 16- or 32-element groups, each with its
// own small integer scale (and min) on top of an f16 super-scale. Element e of a super-block belongs
// to group e / 16 (Q2_K, Q3_K, Q6_K) or e / 32 (Q4_K, Q5_K, IQ4_XS).
//
//   Q2_K (84 B):  scales[16] (low nibble: scale, high nibble: min), qs[64], d, dmin
//                 x = d*sc * q - dmin*m,  q in 0..3:  bits 2j.. of qs[32n + l] for e = 128n + 32j + l
//   Q3_K (110 B): hmask[32], qs[64], scales[12] (16 x 6 bit), d
//                 x = d*(sc - 32) * (q - 4), q = low 2 bits as Q2_K | bit (4n + j) of hmask[l] << 2
//   Q4_K (144 B): d, dmin, scales[12] (8 x 6-bit scale + 8 x 6-bit min), qs[128]
//                 x = d*sc * q - dmin*m,  q: nibble h of qs[32k + l] for e = 64k + 32h + l
//   Q5_K (176 B): d, dmin, scales[12], qh[32], qs[128]; q = Q4_K nibble | bit (e / 32) of qh[l] << 4
//   Q6_K (210 B): ql[128], qh[64], scales[16] (int8), d
//                 x = d*sc * (q - 32); for e = 128n + 32t + l: low 4 bits = nibble (t / 2) of
//                 ql[64n + 32(t % 2) + l], high 2 bits = bits 2t.. of qh[32n + l]
//   IQ4_XS (136 B): d, scales_h (uint16), scales_l[4], qs[128]; group g has the 6-bit scale
//                 ls = nibble (g % 2) of scales_l[g / 2] | bits 2g.. of scales_h << 4, and
//                 x = d*(ls - 32) * kIq4nlValues[q], q: nibble of qs[16g + l % 16], high for l >= 16
//   Q8_K (292 B): d (float32), qs[256] (int8), bsums[16] (sum of each 16-element group)
//                 the activation type of the K-quant dot products; x = d * q.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace dg {

constexpr int64_t kQK_K = 256;

struct BlockQ2_K { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; };
struct BlockQ3_K { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; };
struct BlockQ4_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; };
struct BlockQ5_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; };
struct BlockQ6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; };
struct BlockIQ4_XS { uint16_t d, scales_h; uint8_t scales_l[4]; uint8_t qs[128]; };
struct BlockQ8_K { float d; int8_t qs[256]; int16_t bsums[16]; };
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110 && sizeof(BlockQ4_K) == 144, "K sizes");
static_assert(sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210 && sizeof(BlockIQ4_XS) == 136, "K sizes");
static_assert(sizeof(BlockQ8_K) == 292, "Q8_K size");

// The non-linear 4-bit grid of IQ4_NL / IQ4_XS.
constexpr int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// Q4_K / Q5_K: the 6-bit scale and min of group j (0..7) from the 12 packed bytes.
// The same from the three bytes it reads: sj = s[j], sj4 = s[j + 4], sjm4 = s[j - 4] (j >= 4 only).
DG_HD void k4_scale_min_of(int j, unsigned sj, unsigned sj4, unsigned sjm4, int *sc, int *m) {
    if (j < 4) {
        *sc = static_cast<int>(sj & 63);
        *m = static_cast<int>(sj4 & 63);
    } else {
        *sc = static_cast<int>((sj4 & 0xf) | ((sjm4 >> 6) << 4));
        *m = static_cast<int>((sj4 >> 4) | ((sj >> 6) << 4));
    }
}

DG_HD void k4_scale_min(const uint8_t *s, int j, int *sc, int *m) {
    k4_scale_min_of(j, s[j], s[j + 4], j >= 4 ? s[j - 4] : 0u, sc, m);
}

// Q3_K: the 16 signed group scales (sc - 32, in -32..31) from the 12 packed bytes.
inline void q3_k_scales(const uint8_t *s, int out[16]) {
    for (int j = 0; j < 16; ++j) {
        const int lo = j < 8 ? s[j] & 0xf : s[j - 8] >> 4;
        const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        out[j] = (lo | (hi << 4)) - 32;
    }
}

// IQ4_XS: the signed scale (ls - 32) of group j (0..7).
inline int iq4_xs_scale(const BlockIQ4_XS &b, int j) {
    return (((b.scales_l[j / 2] >> (4 * (j % 2))) & 0xf) | (((b.scales_h >> (2 * j)) & 3) << 4)) - 32;
}

void q2_k_row_to_float(const void *src, float *dst, int64_t n);
void q3_k_row_to_float(const void *src, float *dst, int64_t n);
void q4_k_row_to_float(const void *src, float *dst, int64_t n);
void q5_k_row_to_float(const void *src, float *dst, int64_t n);
void q6_k_row_to_float(const void *src, float *dst, int64_t n);
void iq4_xs_row_to_float(const void *src, float *dst, int64_t n);
void q8_k_row_to_float(const void *src, float *dst, int64_t n);

// Reference quantizers (ggml's quantize_row_*_ref, no importance matrix).
void q2_k_row_from_float(const float *src, void *dst, int64_t n);
void q3_k_row_from_float(const float *src, void *dst, int64_t n);
void q4_k_row_from_float(const float *src, void *dst, int64_t n);
void q5_k_row_from_float(const float *src, void *dst, int64_t n);
void q6_k_row_from_float(const float *src, void *dst, int64_t n);
void iq4_xs_row_from_float(const float *src, void *dst, int64_t n);
void q8_k_row_from_float(const float *src, void *dst, int64_t n);

// Portable reference dot products against Q8_K activations.
float vec_dot_q2_k_q8_k(const void *w, const void *x, int64_t n);
float vec_dot_q3_k_q8_k(const void *w, const void *x, int64_t n);
float vec_dot_q4_k_q8_k(const void *w, const void *x, int64_t n);
float vec_dot_q5_k_q8_k(const void *w, const void *x, int64_t n);
float vec_dot_q6_k_q8_k(const void *w, const void *x, int64_t n);
float vec_dot_iq4_xs_q8_k(const void *w, const void *x, int64_t n);

}  // namespace dg
