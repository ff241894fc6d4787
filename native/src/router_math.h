// The router's choice for one token: p = softmax of the X router logits, the top k by probability
// (ties to the lower expert id), their probabilities renormalised to sum 1 and scaled by
// per_expert_scale[e]. route_top_k states it plainly (k rounds over the experts; p is scratch: each
// chosen expert's probability is overwritten with -1, below every probability, so later rounds skip
// it): the contract, and the CUDA reference kernel's. route_top_k_one_pass, which the CPU backend
// runs, keeps the running top k instead (tests/router_one_pass_check.cpp compares the two bit for
// bit); the CUDA default kernels run its arithmetic a warp per token (cuda/moe.cu).
#pragma once

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace dg {

DG_HD void route_top_k(float *p, int64_t X, int k, const float *per_expert_scale, int32_t *ids, float *wt) {
    float mx = -INFINITY;
    for (int64_t e = 0; e < X; ++e) mx = fmaxf(mx, p[e]);
    double sum = 0.0;
    for (int64_t e = 0; e < X; ++e) sum += (p[e] = expf(p[e] - mx));
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t e = 0; e < X; ++e) p[e] *= inv;
    for (int j = 0; j < k; ++j) {
        int64_t best = -1;
        for (int64_t e = 0; e < X; ++e)
            if (p[e] != -1.0f && (best < 0 || p[e] > p[best])) best = e;
        ids[j] = static_cast<int32_t>(best);
        wt[j] = p[best];
        p[best] = -1.0f;
    }
    float total = 0.0f;
    for (int j = 0; j < k; ++j) total += wt[j];
    for (int j = 0; j < k; ++j) wt[j] = wt[j] / total * per_expert_scale[ids[j]];
}

// One pass over the experts keeping the top k sorted (insertion; an equal probability goes after
// those kept, so ties go to the lower id); the same softmax and renormalisation as route_top_k, so
// for finite logits the same experts, order and weights bit for bit. (The k rounds' data-dependent
// branches took ~2% of a CPU prefill.)
DG_HD void route_top_k_one_pass(float *p, int64_t X, int k, const float *per_expert_scale, int32_t *ids, float *wt) {
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
