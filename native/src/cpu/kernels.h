// Float32 inner kernels of the CPU backend, compiled per instruction set (generic, AVX2, AVX-512)
// and chosen at run time by the active ISA (cpu/dispatch.h, dgemma_set_cpu_isa), like the
// quantized dot products. The generic version is the portable reference path.
#pragma once

#include <cstdint>

namespace dg {

// y[t][r] = dot(x[t], w[r]) for t < n_tokens, r < n_rows; rows of length k.
void dot_tile(const float *x, int64_t ldx, int64_t n_tokens, const float *w, int64_t ldw, int64_t n_rows, int64_t k,
              float *y, int64_t ldy);

// o[a][:] += sum_m p[a][m] * v[m][:] for a < nb, m < n; rows of d values (attention's weighted sum).
void accumulate_rows(const float *p, int64_t ldp, int64_t nb, const float *v, int64_t ldv, int64_t n, int64_t d,
                     float *o, int64_t ldo);

// out[i] = gelu_tanh(gate[i]) * up[i] (out may alias gate): the active set's vectorised form
// x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3), with a polynomial exp; the generic set's
// is the reference 0.5 x (1 + tanh(u)) with std::tanh.
void gelu_tanh_mul(const float *gate, const float *up, float *out, int64_t n);

// x[i] = tanh(x[i] / cap) * cap (logit soft-capping): vectorised through a polynomial expm1 (a few
// float ulps); the generic set's is std::tanh.
void softcap(float *x, int64_t n, float cap);

// Returns the sum over i of exp(x[i] - shift) (accumulated in double) and, unless out is null, writes
// out[i] = exp(x[i] - shift) * scale (out may alias x): softmax's two passes. Vectorised through the
// polynomial exp (relative error about 2e-7); the generic set's is std::exp.
double exp_sum(const float *x, int64_t n, float shift, float scale, float *out);

// The sum of x[i]^2 in double (RMS norm): lane-wise sums, then across lanes.
double sum_squares(const float *x, int64_t n);

// y[r][i] = x[r][i] * scale_r * w[i] for rows r < n_rows of dim values (w null: x[r][i] * scale_r),
// scale_r = 1 / sqrt(sum_squares(x[r]) / dim + eps) (the RMS norm; y may alias x). Every set rounds
// the same operations in the same order, so the only difference between sets is sum_squares'.
void rmsnorm_rows(const float *x, const float *w, float eps, float *y, int64_t n_rows, int64_t dim);

// y[i] += x[i] * a: the active set's vectorised form fuses the multiply-add (one rounding); the
// generic set's rounds the product first. With a = 1, y[i] + x[i] on every set.
void axpy(float *y, const float *x, float a, int64_t n);

// RoPE on one head's vector of 2 half values: (v[j], v[j + half]) rotated by (cs[j], cs[half + j]) =
// (cos, sin) of its angle; the active set's vectorised form may fuse the multiply-adds.
void rope_rotate(float *v, const float *cs, int64_t half);

// x = softmax(x) in place (-inf entries become 0; at least one entry finite): max, exp_sum, scale.
void softmax(float *x, int64_t n);

// The largest of x[0, n) (-inf for n = 0): the same value on every set.
float max_value(const float *x, int64_t n);

}  // namespace dg
