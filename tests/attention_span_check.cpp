// Host check of attention_span.h (the CUDA attention tiles' key intervals) against the CPU backend's
// rule (cpu/backend_cpu.cpp, attention): for random segments, every query's visible keys, and the
// union over a tile of 16 queries, read only ring slots that still hold their position.
// Prints the number of (query, key) pairs checked, then one line per disagreement; exits 1 on any.
#include <algorithm>
#include <cstdio>
#include <random>

#include "attention_span.h"

int main() {
    std::mt19937_64 rng(20261127);
    long checked = 0, bad = 0;
    for (int trial = 0; trial < 4000; ++trial) {
        const bool causal = rng() % 2;
        const int64_t window = rng() % 3 == 0 ? 0 : 1 + static_cast<int64_t>(rng() % 40);
        const int64_t n = 1 + static_cast<int64_t>(rng() % 50), n_past = static_cast<int64_t>(rng() % 120);
        // Sliding layers keep capacity = window - 1 positions (a ring); global ones all of them.
        const int64_t capacity = window > 0 ? std::max<int64_t>(1, window - 1) : n_past + 1;
        const int64_t cache_pos0 = window > 0 ? std::max<int64_t>(0, n_past - capacity) : 0;
        const int64_t w = causal ? window : 0;  // the window applies to encoder rows
        const dg::AttentionSpan g{n, n_past, causal, w, cache_pos0};
        for (int64_t i = 0; i < n; ++i) {
            // The CPU backend's rule: cached positions [c0, n_past), current rows [cur0, cur_end).
            const int64_t p = n_past + i;
            const int64_t c0 = std::min(w > 0 ? std::max(cache_pos0, p - w + 1) : cache_pos0, n_past);
            const int64_t cur0 = w > 0 ? std::max<int64_t>(0, p - w + 1 - n_past) : 0;
            const int64_t cur_end = causal ? i + 1 : n;
            for (int64_t kp = 0; kp < n_past + n; ++kp) {
                const bool cpu = kp < n_past ? kp >= c0 : kp - n_past >= cur0 && kp - n_past < cur_end;
                const bool span = kp >= dg::span_lo(g, i) && kp < dg::span_hi(g, i);
                ++checked;
                if (cpu != span && bad++ < 20)
                    std::printf("n=%lld n_past=%lld causal=%d window=%lld query %lld key %lld: cpu %d span %d\n", (long long)n,
                                (long long)n_past, causal, (long long)w, (long long)i, (long long)kp, cpu, span);
            }
        }
        for (int64_t i0 = 0; i0 < n; i0 += 16) {  // a tile's union reads only positions the ring holds
            const int64_t last = std::min(n, i0 + 16) - 1;
            if (dg::span_lo(g, i0) < cache_pos0 || dg::span_lo(g, i0) > dg::span_lo(g, last) ||
                dg::span_hi(g, i0) > dg::span_hi(g, last) || dg::span_hi(g, last) > n_past + n) {
                if (bad++ < 20) std::printf("tile at %lld of n=%lld n_past=%lld: span not monotone or out of range\n",
                                            (long long)i0, (long long)n, (long long)n_past);
            }
        }
    }
    std::printf("%ld\n", checked);
    return bad ? 1 : 0;
}
