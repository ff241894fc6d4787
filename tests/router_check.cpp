// Host check of router_math.h's route_top_k (shared by the CPU backend and the CUDA kernels) against
// a plain restatement of the contract: softmax of the logits, the k largest probabilities with ties
// to the lower expert id, renormalised to sum 1, times per_expert_scale. Random logits, some with
// planted ties (equal logits give equal probabilities). Prints the cases checked; exits 1 on any
// disagreement, printing it.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "router_math.h"

int main() {
    std::mt19937_64 rng(11);
    std::normal_distribution<float> normal(0.0f, 2.0f);
    long cases = 0, bad = 0;
    for (int trial = 0; trial < 20000; ++trial) {
        const int X = 2 + static_cast<int>(rng() % 130), k = 1 + static_cast<int>(rng() % std::min(X, 9));
        std::vector<float> logits(X), pes(X);
        for (float &v : logits) v = normal(rng);
        for (float &v : pes) v = 0.5f + static_cast<float>(rng() % 100) / 100.0f;
        for (int t = 0; t < X / 4; ++t) logits[rng() % X] = logits[rng() % X];  // ties
        // The contract, plainly: probabilities as route_top_k computes them, then a stable order.
        std::vector<float> p = logits;
        const float mx = *std::max_element(p.begin(), p.end());
        double sum = 0.0;
        for (float &v : p) sum += (v = std::exp(v - mx));
        for (float &v : p) v *= static_cast<float>(1.0 / sum);
        std::vector<int> order(X);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
        float total = 0.0f;
        for (int j = 0; j < k; ++j) total += p[order[j]];

        std::vector<float> scratch = logits;
        std::vector<int32_t> ids(k);
        std::vector<float> wt(k);
        dg::route_top_k(scratch.data(), X, k, pes.data(), ids.data(), wt.data());
        ++cases;
        for (int j = 0; j < k; ++j) {
            const float want = p[order[j]] / total * pes[order[j]];
            if (ids[j] != order[j] || wt[j] != want) {
                if (bad++ < 10)
                    std::printf("X=%d k=%d slot %d: id %d weight %g, want id %d weight %g\n", X, k, j, ids[j], wt[j], order[j], want);
                break;
            }
        }
    }
    std::printf("%ld\n", cases);
    return bad ? 1 : 0;
}
