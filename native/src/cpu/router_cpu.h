// The CPU backend's router choice: route_top_k (router_math.h, the contract the CUDA kernels share)
// with its k passes over the experts replaced by one pass that keeps the running top k, sorted
// (insertion, ties to the lower expert id: an equal probability goes after those already kept).
// For finite logits the result is route_top_k's bit for bit (the same softmax: expf, a double sum,
// one float inverse; the same picks in the same order; the same renormalisation); the k passes'
// mispredicted branches took ~2% of a prefill. tests/router_cpu_check.cpp compares the two.
#pragma once

#include <cmath>
#include <cstdint>

namespace dg {

inline void route_top_k_cpu(float *p, int64_t X, int k, const float *per_expert_scale, int32_t *ids, float *wt) {
    float mx = -INFINITY;
    for (int64_t e = 0; e < X; ++e) mx = p[e] > mx ? p[e] : mx;
    double sum = 0.0;
    for (int64_t e = 0; e < X; ++e) sum += (p[e] = expf(p[e] - mx));
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t e = 0; e < X; ++e) p[e] *= inv;
    int n = 0;  // kept so far, wt[0] >= wt[1] >= ... (equal ones by increasing id)
    for (int64_t e = 0; e < X; ++e) {
        const float v = p[e];
        if (n == k && !(v > wt[k - 1])) continue;
        int j = n < k ? n++ : k - 1;
        for (; j > 0 && v > wt[j - 1]; --j) {
            wt[j] = wt[j - 1];
            ids[j] = ids[j - 1];
        }
        wt[j] = v;
        ids[j] = static_cast<int32_t>(e);
    }
    float total = 0.0f;
    for (int j = 0; j < k; ++j) total += wt[j];
    for (int j = 0; j < k; ++j) wt[j] = wt[j] / total * per_expert_scale[ids[j]];
}

}  // namespace dg
