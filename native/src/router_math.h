// The router's choice for one token, shared by the CPU backend and the CUDA kernel: p = softmax of
// the X router logits, the top k by probability (ties to the lower expert id), their probabilities
// renormalised to sum 1 and scaled by per_expert_scale[e]. p is scratch: each chosen expert's
// probability is overwritten with -1 (below every probability) so that later rounds skip it.
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

}  // namespace dg
