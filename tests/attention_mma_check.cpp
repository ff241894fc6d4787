// Host check of the tensor set's attention tiles (cuda/attention_mma.h, attention.cu's
// attention_mma_kernel): one block's algorithm run on the host as the kernel runs it, warp by warp
// and lane by lane. Every mma operand is gathered from the lanes' registers through the fragment
// coordinates (each element of a fragment supplied exactly once), multiplied, and scattered back
// through mma_c_coord; shared memory is addressed with the kernel's layout. Checked against a plain
// attention in double: with exact operands to 1e-5 (the index maths), with tf32 operands (rounded
// to nearest, as cvt.rna) to 8e-3 (the device's op check holds the set to 1e-2; 60 trials here gave
// at most 2e-3). Random head
// sizes, visible spans per query (empty ones included), partial tiles and rows. Prints the outputs
// compared; exits 1 on any failure.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/attention_mma.h"

using namespace dg::cuda;

namespace {

int failures = 0;

void fail(const char *what, int a, int b) {
    if (failures++ < 20) std::printf("FAIL: %s (%d, %d)\n", what, a, b);
}

float tf32(float x) {  // cvt.rna.tf32.f32: 10 mantissa bits, ties away from zero
    uint32_t u;
    std::memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & ~0x1fffu;
    std::memcpy(&x, &u, 4);
    return x;
}

// D[16][8] += A[16][8] . B[8][8] for one warp: A's and B's elements gathered from the lanes'
// registers (a(lane, r), b(lane, r)), the result added to c(lane, r).
template <typename A, typename B, typename C>
void warp_mma(A a, B b, C c, int id) {
    float am[16][8], bm[8][8];
    int seen_a[16][8] = {}, seen_b[8][8] = {};
    for (int lane = 0; lane < 32; ++lane) {
        for (int r = 0; r < 4; ++r) {
            const Coord x = tf32_a_coord(lane, r);
            am[x.line][x.k] = a(lane, r);
            ++seen_a[x.line][x.k];
        }
        for (int r = 0; r < 2; ++r) {
            const Coord x = tf32_b_coord(lane, r);
            bm[x.k][x.line] = b(lane, r);
            ++seen_b[x.k][x.line];
        }
    }
    for (int i = 0; i < 16; ++i)
        for (int k = 0; k < 8; ++k)
            if (seen_a[i][k] != 1) fail("A fragment element supplied other than once", id, i * 8 + k);
    for (int k = 0; k < 8; ++k)
        for (int j = 0; j < 8; ++j)
            if (seen_b[k][j] != 1) fail("B fragment element supplied other than once", id, k * 8 + j);
    for (int lane = 0; lane < 32; ++lane)
        for (int r = 0; r < 4; ++r) {
            const Coord x = mma_c_coord(lane, r);
            float s = 0.0f;
            for (int k = 0; k < 8; ++k) s += am[x.line][k] * bm[k][x.k];
            c(lane, r) += s;
        }
}

// One block: n_rows queries (<= 16) of head dimension d over keys [t_lo, t_end), query i seeing
// [lo[i], hi[i]). Returns out[16][d] (rows past n_rows untouched: zeros).
std::vector<float> block(int d, int n_rows, const std::vector<float> &Q, const std::vector<float> &K,
                         const std::vector<float> &V, const std::vector<int> &lo, const std::vector<int> &hi, int t_lo,
                         int t_end, bool round) {
    auto op = [&](float x) { return round ? tf32(x) : x; };
    const AttnSmem L = attention_mma_smem(d);
    std::vector<float> sh(static_cast<size_t>(L.floats), std::nanf(""));
    float *qs = sh.data() + L.q, *kv = sh.data() + L.kv, *s_part = sh.data() + L.s_part, *p = sh.data() + L.p;
    float *rescale = sh.data() + L.rescale, *inv_l = sh.data() + L.inv_l;
    for (int r = 0; r < kAttnQueries; ++r)
        for (int e = 0; e < d; ++e) qs[r * L.ldq + e] = r < n_rows ? Q[r * d + e] : 0.0f;
    float m[kAttnQueries], l[kAttnQueries];
    for (int i = 0; i < kAttnQueries; ++i) m[i] = -INFINITY, l[i] = 0.0f;
    const int tiles = attention_out_tiles(d);
    std::vector<float> acc(static_cast<size_t>(8 * 32 * tiles * 4), 0.0f);  // [warp][lane][tile][r]
    auto accum = [&](int w, int lane, int nt, int r) -> float & { return acc[((w * 32 + lane) * tiles + nt) * 4 + r]; };
    for (int t0 = t_lo; t0 < t_end; t0 += kAttnKeys) {
        for (int j = 0; j < kAttnKeys; ++j)
            for (int e = 0; e < d; ++e) kv[j * L.ldk + e] = t0 + j < t_end ? K[(t0 + j) * d + e] : 0.0f;
        std::vector<int> written(2 * kAttnQueries * kAttnKeys, 0);
        for (int w = 0; w < 8; ++w) {
            const AttnScoreWork sw = attention_score_work(w, d);
            float s[32][4] = {};
            for (int k0 = sw.k_begin; k0 < sw.k_end; k0 += 8)
                warp_mma([&](int lane, int r) { const Coord c = tf32_a_coord(lane, r); return op(qs[c.line * L.ldq + k0 + c.k]); },
                         [&](int lane, int r) {
                             const Coord c = tf32_b_coord(lane, r);
                             return op(kv[(8 * sw.nt + c.line) * L.ldk + k0 + c.k]);
                         },
                         [&](int lane, int r) -> float & { return s[lane][r]; }, w);
            for (int lane = 0; lane < 32; ++lane)
                for (int r = 0; r < 4; ++r) {
                    const Coord c = mma_c_coord(lane, r);
                    s_part[sw.half * kAttnQueries * kAttnLdP + c.line * kAttnLdP + 8 * sw.nt + c.k] = s[lane][r];
                    ++written[(sw.half * kAttnQueries + c.line) * kAttnKeys + 8 * sw.nt + c.k];
                }
        }
        for (int x : written)
            if (x != 1) fail("score written other than once", t0, x);
        // The softmax: query qi's 32 lanes, key j.
        for (int qi = 0; qi < kAttnQueries; ++qi) {
            float sc[kAttnKeys], mx = -INFINITY;
            for (int j = 0; j < kAttnKeys; ++j) {
                sc[j] = s_part[qi * kAttnLdP + j] + s_part[kAttnQueries * kAttnLdP + qi * kAttnLdP + j];
                const int kp = t0 + j;
                if (!(qi < n_rows && kp >= lo[qi] && kp < hi[qi])) sc[j] = -INFINITY;
                mx = std::fmax(mx, sc[j]);
            }
            const float m_new = std::fmax(m[qi], mx);
            float sum = 0.0f;
            for (int j = 0; j < kAttnKeys; ++j) {
                const float pj = m_new == -INFINITY ? 0.0f : std::exp(sc[j] - m_new);
                p[qi * kAttnLdP + j] = pj;
                sum += pj;
            }
            const float r = m_new == -INFINITY ? 1.0f : std::exp(m[qi] - m_new);
            l[qi] = l[qi] * r + sum;
            m[qi] = m_new;
            rescale[qi] = r;
        }
        for (int j = 0; j < kAttnKeys; ++j)
            for (int e = 0; e < d; ++e) kv[j * L.ldv + e] = t0 + j < t_end ? V[(t0 + j) * d + e] : 0.0f;
        for (int w = 0; w < 8; ++w) {
            const int dim0 = attention_out_dim0(w, d);
            for (int lane = 0; lane < 32; ++lane)
                for (int nt = 0; nt < tiles; ++nt)
                    for (int r = 0; r < 4; ++r) accum(w, lane, nt, r) *= rescale[mma_c_coord(lane, r).line];
            for (int k0 = 0; k0 < kAttnKeys; k0 += 8)
                for (int nt = 0; nt < tiles; ++nt)
                    warp_mma([&](int lane, int r) { const Coord c = tf32_a_coord(lane, r); return op(p[c.line * kAttnLdP + k0 + c.k]); },
                             [&](int lane, int r) {
                                 const Coord c = tf32_b_coord(lane, r);
                                 return op(kv[(k0 + c.k) * L.ldv + dim0 + 8 * nt + c.line]);
                             },
                             [&](int lane, int r) -> float & { return accum(w, lane, nt, r); }, 100 + w);
        }
    }
    for (int i = 0; i < kAttnQueries; ++i) inv_l[i] = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
    std::vector<float> out(static_cast<size_t>(kAttnQueries * d), 0.0f);
    std::vector<int> seen(static_cast<size_t>(kAttnQueries * d), 0);
    for (int w = 0; w < 8; ++w)
        for (int lane = 0; lane < 32; ++lane)
            for (int nt = 0; nt < tiles; ++nt)
                for (int r = 0; r < 4; ++r) {
                    const Coord c = mma_c_coord(lane, r);
                    const int dim = attention_out_dim0(w, d) + 8 * nt + c.k;
                    ++seen[c.line * d + dim];
                    if (c.line < n_rows) out[c.line * d + dim] = accum(w, lane, nt, r) * inv_l[c.line];
                }
    for (int x : seen)
        if (x != 1) fail("output element owned other than once", d, x);
    return out;
}

}  // namespace

int main() {
    std::mt19937_64 rng(std::random_device{}());
    std::normal_distribution<float> normal(0.0f, 1.0f);
    long compared = 0;
    // The PTX ISA's tables, spot values: lane 5 (g 1, q 1) holds A (1, 1), (9, 1), (1, 5), (9, 5) and
    // B (k 1, n 1), (k 5, n 1); lane 30 (g 7, q 2) holds A (15, 6) in a3 and B (k 6, n 7) in b1.
    {
        const Coord a[4] = {tf32_a_coord(5, 0), tf32_a_coord(5, 1), tf32_a_coord(5, 2), tf32_a_coord(5, 3)};
        const Coord b[2] = {tf32_b_coord(5, 0), tf32_b_coord(5, 1)};
        if (a[0].line != 1 || a[0].k != 1 || a[1].line != 9 || a[1].k != 1 || a[2].line != 1 || a[2].k != 5 ||
            a[3].line != 9 || a[3].k != 5 || b[0].line != 1 || b[0].k != 1 || b[1].line != 1 || b[1].k != 5 ||
            tf32_a_coord(30, 3).line != 15 || tf32_a_coord(30, 3).k != 6 || tf32_b_coord(30, 1).line != 7 ||
            tf32_b_coord(30, 1).k != 6)
            fail("tf32 fragment coordinates against the PTX tables", 0, 0);
    }
    for (int trial = 0; trial < 60; ++trial) {
        const int dims[] = {64, 128, 256, 512};
        const int d = dims[trial % 4];
        if (!attention_mma_fits(d) || attention_mma_fits(d + 32) || attention_mma_fits(kAttnMaxDim + 64))
            fail("attention_mma_fits", d, 0);
        const int n_rows = 1 + static_cast<int>(rng() % kAttnQueries), n_keys = 1 + static_cast<int>(rng() % 150);
        const float qscale = trial % 2 ? 1.0f : 0.5f;  // normalised queries and keys, or the op check's
        std::vector<float> Q(static_cast<size_t>(n_rows) * d), K(static_cast<size_t>(n_keys) * d), V(K.size());
        for (float &x : Q) x = normal(rng) * qscale;
        for (float &x : K) x = normal(rng);
        for (float &x : V) x = normal(rng);
        std::vector<int> lo(kAttnQueries), hi(kAttnQueries);
        int t_lo = n_keys, t_end = 0;
        for (int i = 0; i < kAttnQueries; ++i) {  // any spans: the tiles walk their union
            lo[i] = std::min(n_keys, static_cast<int>(rng() % (n_keys + 1)) * (trial % 3 == 0 ? 0 : 1) + i / 4);
            hi[i] = std::min(n_keys, lo[i] + static_cast<int>(rng() % (n_keys + 1)));
            if (i < n_rows && lo[i] < hi[i]) t_lo = std::min(t_lo, lo[i]), t_end = std::max(t_end, hi[i]);
        }
        if (t_lo >= t_end) t_lo = t_end = 0;
        for (bool round : {false, true}) {
            const std::vector<float> out = block(d, n_rows, Q, K, V, lo, hi, t_lo, t_end, round);
            double err = 0, ref_norm = 0;
            for (int i = 0; i < n_rows; ++i) {
                std::vector<double> s(static_cast<size_t>(n_keys));
                double mx = -INFINITY, sum = 0;
                for (int j = lo[i]; j < hi[i]; ++j) {
                    double x = 0;
                    for (int e = 0; e < d; ++e) x += static_cast<double>(Q[i * d + e]) * K[j * d + e];
                    s[j] = x;
                    mx = std::max(mx, x);
                }
                for (int j = lo[i]; j < hi[i]; ++j) sum += std::exp(s[j] - mx);
                for (int e = 0; e < d; ++e) {
                    double o = 0;
                    for (int j = lo[i]; j < hi[i]; ++j) o += std::exp(s[j] - mx) / sum * V[j * d + e];
                    err += (out[i * d + e] - o) * (out[i * d + e] - o);
                    ref_norm += o * o;
                    ++compared;
                }
            }
            const double rel = ref_norm > 0 ? std::sqrt(err / ref_norm) : std::sqrt(err);
            if (rel > (round ? 8e-3 : 1e-5)) {
                std::printf("d %d rows %d keys %d tf32 %d: relative error %.3g\n", d, n_rows, n_keys, round, rel);
                fail("attention differs from the plain one", d, n_keys);
            }
        }
    }
    std::printf("%s outputs compared %ld\n", failures ? "FAILED" : "ok", compared);
    return failures ? 1 : 0;
}
