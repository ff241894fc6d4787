// The arithmetic of the sampler contract that every backend must reproduce bit for bit: the draw
// mapping, the raw-value conversions, and exp/log written with plain IEEE double operations (no
// library calls, no fused multiply-add: this file and its users compile with -ffp-contract=off,
// and CUDA code calls the same functions with __dmul_rn/__dadd_rn semantics), so a device sampler
// computes the same entropies and draws as the CPU reference on the same logits.
#pragma once

#include <cstdint>
#include <cstring>

#include "host_device.h"

namespace dg {

// Vocabulary chunk of the blocked reductions: sums over a row of V run as tree sums over chunks
// of kSamplerChunk values (zero padded), then over the chunks in order (sampler.h).
constexpr int64_t kSamplerChunk = 1024;

// Index k of the raw draw for (canvas, step, kind, position) of one sequence:
//   canvas     0, 1, ... in the sequence's generation;
//   step_index 0 for the canvas's initial ids, then s = N - n + 1 for the step counting down n;
//   kind       0: the initial id (step 0) or the step's uniform for the categorical draw,
//              1: the step's re-noise candidate id;
//   position   0 .. C - 1.
DG_HD uint64_t draw_index(int64_t canvas, int64_t step_index, int kind, int64_t position, int64_t n_canvas,
                          int max_steps) {
    return ((static_cast<uint64_t>(canvas) * static_cast<uint64_t>(max_steps + 1) + static_cast<uint64_t>(step_index)) *
                2u + static_cast<uint64_t>(kind)) * static_cast<uint64_t>(n_canvas) + static_cast<uint64_t>(position);
}

// Value k of the sequence's splitmix64 stream (the k-th output of a generator seeded with `seed`).
DG_HD uint64_t draw_value(uint64_t seed, uint64_t k) {
    uint64_t z = seed + (k + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// A token id uniform in [0, n_vocab): the high 64 bits of v * n_vocab.
DG_HD int32_t draw_token(uint64_t v, int64_t n_vocab) {
    const uint64_t hi = v >> 32, lo = v & 0xffffffffull, n = static_cast<uint64_t>(n_vocab);
    return static_cast<int32_t>((hi * n + ((lo * n) >> 32)) >> 32);
}

// A uniform in [0, 1) with 24 bits: (v >> 40) / 2^24.
DG_HD float draw_uniform(uint64_t v) { return static_cast<float>(v >> 40) * (1.0f / 16777216.0f); }

DG_HD double bits_to_double(uint64_t u) {
    double d;
    std::memcpy(&d, &u, sizeof d);
    return d;
}

// e^x for x <= 0 (the shifted logits), 0 below -708 and for NaN. Relative error below 2e-16.
// Branch-free (selects only), so a loop over a chunk vectorises; results do not depend on that.
DG_HD double sampler_exp(double x) {
    const bool in_range = x >= -708.0;  // false for NaN
    const double xc = in_range ? x : -708.0;
    const double log2e = 1.4426950408889634, ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    // n = round-half-away of xc * log2e (<= 0): the integer part of t - 0.5, exact by a cast.
    const int32_t n = static_cast<int32_t>(xc * log2e - 0.5);
    const double nd = static_cast<double>(n);
    const double r = (xc - nd * ln2_hi) - nd * ln2_lo;  // |r| <= 0.35
    // Taylor to r^13 / 13!, Horner.
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    const double e = p * bits_to_double(static_cast<uint64_t>(static_cast<int64_t>(n) + 1023) << 52);  // 2^n, n >= -1022
    return in_range ? e : 0.0;
}

// Natural log of s >= 1 (a softmax normaliser: its largest term is e^0 = 1). Error below 2e-16.
DG_HD double sampler_log(double s) {
    uint64_t u;
    std::memcpy(&u, &s, sizeof u);
    int64_t e = static_cast<int64_t>((u >> 52) & 0x7ff) - 1023;
    double m = bits_to_double((u & 0x000fffffffffffffull) | 0x3ff0000000000000ull);  // [1, 2)
    if (m > 1.4142135623730951) {
        m = m * 0.5;
        e += 1;
    }
    const double f = m - 1.0, w = f / (2.0 + f), w2 = w * w;  // log(m) = 2 atanh(w), |w| <= 0.1716
    double p = 1.0 / 23.0;
    p = p * w2 + 1.0 / 21.0;
    p = p * w2 + 1.0 / 19.0;
    p = p * w2 + 1.0 / 17.0;
    p = p * w2 + 1.0 / 15.0;
    p = p * w2 + 1.0 / 13.0;
    p = p * w2 + 1.0 / 11.0;
    p = p * w2 + 1.0 / 9.0;
    p = p * w2 + 1.0 / 7.0;
    p = p * w2 + 1.0 / 5.0;
    p = p * w2 + 1.0 / 3.0;
    p = p * w2 + 1.0;
    const double ed = static_cast<double>(e);
    return (2.0 * w * p + ed * 1.90821492927058770002e-10) + ed * 6.93147180369123816490e-01;
}

// Sum of x[0 .. kSamplerChunk) by halving: x[i] += x[i + h] for h = 512, 256, .., 1; destroys x.
DG_HD double chunk_tree_sum(double *x) {
    for (int64_t h = kSamplerChunk / 2; h >= 1; h /= 2)
        for (int64_t i = 0; i < h; ++i) x[i] = x[i] + x[i + h];
    return x[0];
}

// The same tree as 32 lanes compute it (a device warp): lane l holds elements l + 32 q, q < 32, so
// the levels h = 512 .. 32 pair elements of one lane (q and q + h / 32) and h = 16 .. 1 pair lanes
// (l and l + h). ea(q, e, a) gives lane l's element q of two chunks summed together (the sampler's
// e and e * d); this folds the lane's levels, adding in the contract's order (x[i] + x[i + h]), and
// returns the lane's partial sums: lanes 0 .. 31's values are x[0 .. 31] after level 32. The
// cross-lane levels are the caller's (v = v + v of lane l + h). Sixteen pairs at a time keep 32
// doubles live instead of 64.
constexpr int kChunkLanes = 32;
static_assert(kSamplerChunk == kChunkLanes * kChunkLanes, "a lane holds one element of each 32-element row of a chunk");

template <typename EA>
DG_HD void chunk_lane_sums(EA ea, double &e_sum, double &a_sum) {
    double e[kChunkLanes / 2], a[kChunkLanes / 2];
    for (int q = 0; q < kChunkLanes / 2; ++q) {  // level 512: q + (q + 16)
        double e0, a0, e1, a1;
        ea(q, e0, a0);
        ea(q + kChunkLanes / 2, e1, a1);
        e[q] = e0 + e1;
        a[q] = a0 + a1;
    }
    for (int h = kChunkLanes / 4; h >= 1; h /= 2)  // levels 256 .. 32
        for (int q = 0; q < h; ++q) {
            e[q] = e[q] + e[q + h];
            a[q] = a[q] + a[q + h];
        }
    e_sum = e[0];
    a_sum = a[0];
}

}  // namespace dg
