// Host check of cpu/kernels.cpp's row kernels that the CPU backend's norms and sums go through
// (rmsnorm_rows, axpy, rope_rotate, max_value, exp_sum, gelu_tanh_mul): each instruction set's vectorised form against the generic one
// (the reference path) on fresh random rows of lengths around every vector width, dim 1 .. 300 and
// the model's 128, 256, 704. kernels.cpp is linked alone: active_isa() is this file's switch.
// Prints the cases checked; exits 1 on any disagreement, printing it.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cpu/dispatch.h"
#include "cpu/kernels.h"

namespace dg {
static Isa g_isa = Isa::Generic;
Isa active_isa() { return g_isa; }
}  // namespace dg

namespace {

long cases = 0, bad = 0;

void expect(bool ok, const char *what, dg::Isa isa, long n, double got, double want) {
    ++cases;
    if (!ok && bad++ < 20) std::printf("%s isa %d n %ld: got %.9g want %.9g\n", what, static_cast<int>(isa), n, got, want);
}

bool isa_runs(dg::Isa isa) {
    switch (isa) {
        case dg::Isa::Avx512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
        case dg::Isa::Avx2:
        case dg::Isa::AvxVnni: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        default: return true;
    }
}

}  // namespace

int main() {
    std::mt19937_64 rng(std::random_device{}());
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> scale(0.01f, 30.0f);
    std::vector<long> dims;
    for (long n = 1; n <= 300; ++n) dims.push_back(n);
    for (long n : {704L, 1024L, 2816L}) dims.push_back(n);
    int isas_run = 0;
    for (dg::Isa isa : {dg::Isa::Avx2, dg::Isa::AvxVnni, dg::Isa::Avx512}) {
        if (!isa_runs(isa)) continue;
        ++isas_run;
        for (long n : dims) {
            const long rows = 1 + static_cast<long>(rng() % 3);
            std::vector<float> x(rows * n), w(n), y_ref(rows * n), y(rows * n);
            const float s = scale(rng);
            for (float &v : x) v = normal(rng) * s;
            for (float &v : w) v = normal(rng);
            // rmsnorm_rows, with and without weights, in place and not: the same scaling rounding on
            // every set; the sum of squares (in double) may differ in its last bits.
            for (int with_w = 0; with_w < 2; ++with_w) {
                dg::g_isa = dg::Isa::Generic;
                dg::rmsnorm_rows(x.data(), with_w ? w.data() : nullptr, 1e-6f, y_ref.data(), rows, n);
                dg::g_isa = isa;
                std::vector<float> inplace = x;
                dg::rmsnorm_rows(x.data(), with_w ? w.data() : nullptr, 1e-6f, y.data(), rows, n);
                dg::rmsnorm_rows(inplace.data(), with_w ? w.data() : nullptr, 1e-6f, inplace.data(), rows, n);
                for (long i = 0; i < rows * n; ++i) {
                    const double tol = 4e-7 * std::fabs(y_ref[i]) + 1e-30;
                    expect(std::fabs(y[i] - y_ref[i]) <= tol, "rmsnorm", isa, n, y[i], y_ref[i]);
                    expect(inplace[i] == y[i], "rmsnorm in place", isa, n, inplace[i], y[i]);
                }
            }
            // axpy: one rounding of the fused form against two of the generic one.
            const float a = normal(rng);
            std::vector<float> base(n);
            for (float &v : base) v = normal(rng) * s;
            for (float coef : {a, 1.0f}) {
                std::vector<float> r = base, g = base;
                dg::g_isa = dg::Isa::Generic;
                dg::axpy(r.data(), x.data(), coef, n);
                dg::g_isa = isa;
                dg::axpy(g.data(), x.data(), coef, n);
                for (long i = 0; i < n; ++i) {
                    const double mag = std::fabs(base[i]) + std::fabs(x[i] * coef);
                    expect(coef == 1.0f ? g[i] == r[i] : std::fabs(g[i] - r[i]) <= 1.2e-7 * mag + 1e-30, "axpy", isa, n, g[i], r[i]);
                }
            }
            // max_value over a row and over each of its prefixes' last few lengths (every tail
            // of the vector widths): the same value on every set.
            for (long m = std::max(0L, n - 17); m <= n; ++m) {
                dg::g_isa = dg::Isa::Generic;
                const float want = dg::max_value(x.data(), m);
                dg::g_isa = isa;
                const float got = dg::max_value(x.data(), m);
                expect(got == want, "max_value", isa, m, got, want);
            }
            // exp_sum (softmax's exponentials and their sum) shifted by the row's max, with masked
            // entries (-inf: exactly 0), on every length up to n: the polynomial exp is within a few
            // float ulps of std::exp (and 0 below exp(-87), 1e-38), the double sum within the same
            // relative error.
            {
                std::vector<float> z = x;
                for (long i = 0; i < n; i += 7) z[i] = -INFINITY;
                z[n - 1] = normal(rng) * s;
                dg::g_isa = dg::Isa::Generic;
                const float mx = dg::max_value(z.data(), n);
                const float sc = scale(rng);
                for (long m = std::max(1L, n - 17); m <= n; ++m) {
                    std::vector<float> e_ref(m), e(m);
                    dg::g_isa = dg::Isa::Generic;
                    const double want = dg::exp_sum(z.data(), m, mx, sc, e_ref.data());
                    dg::g_isa = isa;
                    const double got = dg::exp_sum(z.data(), m, mx, sc, e.data());
                    expect(std::fabs(got - want) <= 1e-6 * want + 1e-37 * m, "exp_sum", isa, m, got, want);  // a prefix may hold only underflows
                    expect(dg::exp_sum(z.data(), m, mx, sc, nullptr) == got, "exp_sum without out", isa, m, got, want);
                    for (long i = 0; i < m; ++i)
                        expect(std::fabs(e[i] - e_ref[i]) <= 1e-6 * std::fabs(e_ref[i]) + 1e-35 && (e_ref[i] != 0.0f || e[i] == 0.0f),
                               "exp_sum out", isa, m, e[i], e_ref[i]);
                }
            }
            // gelu_tanh_mul: the vectorised x / (1 + exp(-2u)) against the reference 0.5 x (1 + tanh u),
            // within a few float ulps of x * up (the reference's 1 + tanh u cancels where u << 0).
            {
                std::vector<float> up(n), g_ref(n), g(n);
                for (float &e : up) e = normal(rng);
                dg::g_isa = dg::Isa::Generic;
                dg::gelu_tanh_mul(x.data(), up.data(), g_ref.data(), n);
                dg::g_isa = isa;
                dg::gelu_tanh_mul(x.data(), up.data(), g.data(), n);
                for (long i = 0; i < n; ++i)
                    expect(std::fabs(g[i] - g_ref[i]) <= 1e-6 * std::fabs(x[i] * up[i]) + 1e-30, "gelu_tanh_mul", isa, n, g[i], g_ref[i]);
            }
            // rope_rotate on vectors of 2 half values with random angles.
            const long half = n;
            std::vector<float> v(2 * half), cs(2 * half);
            for (float &e : v) e = normal(rng) * s;
            for (long j = 0; j < half; ++j) {
                const float angle = normal(rng) * 100.0f;
                cs[j] = std::cos(angle);
                cs[half + j] = std::sin(angle);
            }
            std::vector<float> r = v, g = v;
            dg::g_isa = dg::Isa::Generic;
            dg::rope_rotate(r.data(), cs.data(), half);
            dg::g_isa = isa;
            dg::rope_rotate(g.data(), cs.data(), half);
            for (long j = 0; j < 2 * half; ++j) {
                const long o = j < half ? j + half : j - half;
                const double mag = std::fabs(v[j]) + std::fabs(v[o]);
                expect(std::fabs(g[j] - r[j]) <= 2.5e-7 * mag + 1e-30, "rope", isa, n, g[j], r[j]);
            }
        }
    }
    std::printf("isas %d bad %ld cases %ld\n", isas_run, bad, cases);
    return bad ? 1 : 0;
}
