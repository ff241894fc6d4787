// Host check of chunk_lane_sums (sampler_math.h): the sampler's halving tree over a chunk as the
// CUDA sampler's warps compute it (lane l holds elements l + 32 q; the lane's levels by
// chunk_lane_sums, then five shuffle-down levels, restated here lane by lane) against the contract's
// chunk_tree_sum, bit for bit, for e and a on random chunks of mixed magnitudes, zeros, partial
// chunks and subnormals. Prints the chunks checked; exits 1 on any difference.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "sampler_math.h"

int main() {
    std::mt19937_64 rng(std::random_device{}());
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    const int L = dg::kChunkLanes;
    const int64_t N = dg::kSamplerChunk;
    long checked = 0, failures = 0;
    for (int trial = 0; trial < 3000; ++trial) {
        std::vector<double> e(N, 0.0), a(N, 0.0);
        const int64_t n = trial % 3 == 0 ? 1 + static_cast<int64_t>(rng() % N) : N;  // a partial last chunk
        for (int64_t j = 0; j < n; ++j) {
            const double d = -std::ldexp(unit(rng), static_cast<int>(rng() % 12));  // d <= 0, up to -2048
            e[j] = rng() % 17 == 0 ? 0.0 : (rng() % 13 == 0 ? 4.9e-324 * static_cast<double>(rng() % 5) : dg::sampler_exp(d));
            a[j] = e[j] * (d >= -708.0 ? d : 0.0);
        }
        std::vector<double> te = e, ta = a;
        const double ref_e = dg::chunk_tree_sum(te.data()), ref_a = dg::chunk_tree_sum(ta.data());
        double lane_e[32], lane_a[32];
        for (int l = 0; l < L; ++l)
            dg::chunk_lane_sums(
                [&](int q, double &ev, double &av) {
                    ev = e[l + L * q];
                    av = a[l + L * q];
                },
                lane_e[l], lane_a[l]);
        for (int o = L / 2; o >= 1; o /= 2) {  // __shfl_down_sync: lane l reads lane l + o (its own past 31)
            double se[32], sa[32];
            for (int l = 0; l < L; ++l) {
                se[l] = lane_e[l + o < L ? l + o : l];
                sa[l] = lane_a[l + o < L ? l + o : l];
            }
            for (int l = 0; l < L; ++l) {
                lane_e[l] = lane_e[l] + se[l];
                lane_a[l] = lane_a[l] + sa[l];
            }
        }
        if (std::memcmp(&lane_e[0], &ref_e, 8) != 0 || std::memcmp(&lane_a[0], &ref_a, 8) != 0) {
            if (failures++ < 10)
                std::printf("FAIL trial %d (n %lld): e %.17g vs %.17g, a %.17g vs %.17g\n", trial, static_cast<long long>(n),
                            lane_e[0], ref_e, lane_a[0], ref_a);
        }
        ++checked;
    }
    if (failures) return 1;
    std::printf("ok %ld\n", checked);
    return 0;
}
