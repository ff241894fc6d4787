// Host check of router_math.h's route_top_k_one_pass (the CPU backend's and the CUDA default kernels'
// router) against route_top_k (the contract, and the CUDA reference kernel's): the same experts in the same order and
// the same weights, bit for bit, on random logits (the model's 64 experts / 8 used, and random
// shapes), with planted ties and equal maxima. Prints the cases checked; exits 1 on any disagreement.
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "router_math.h"

int main() {
    std::mt19937_64 rng(std::random_device{}());
    std::normal_distribution<float> normal(0.0f, 2.0f);
    long cases = 0, bad = 0;
    for (int trial = 0; trial < 20000; ++trial) {
        const bool model = trial % 2 == 0;
        const int X = model ? 64 : 2 + static_cast<int>(rng() % 130);
        const int k = model ? 8 : 1 + static_cast<int>(rng() % std::min(X, 9));
        std::vector<float> logits(X), pes(X);
        for (float &v : logits) v = normal(rng) * (trial % 3 == 0 ? 0.01f : 1.0f);
        for (float &v : pes) v = 0.5f + static_cast<float>(rng() % 100) / 100.0f;
        const int ties = trial % 4 == 0 ? X : X / 4;
        for (int t = 0; t < ties; ++t) logits[rng() % X] = logits[rng() % X];
        if (trial % 7 == 0) logits[rng() % X] = logits[rng() % X] = 10.0f;  // equal maxima
        std::vector<float> a = logits, b = logits, wa(k), wb(k);
        std::vector<int32_t> ia(k), ib(k);
        dg::route_top_k(a.data(), X, k, pes.data(), ia.data(), wa.data());
        dg::route_top_k_one_pass(b.data(), X, k, pes.data(), ib.data(), wb.data());
        ++cases;
        if (ia != ib || std::memcmp(wa.data(), wb.data(), sizeof(float) * k) != 0) {
            if (bad++ < 10) {
                std::printf("X %d k %d:", X, k);
                for (int j = 0; j < k; ++j) std::printf(" %d/%d %.9g/%.9g", ia[j], ib[j], wa[j], wb[j]);
                std::printf("\n");
            }
        }
    }
    std::printf("bad %ld cases %ld\n", bad, cases);
    return bad ? 1 : 0;
}
