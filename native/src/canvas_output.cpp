#include "canvas_output.h"

#include <algorithm>

namespace dg {

CanvasOutput canvas_output(const int32_t *amax, const int8_t *fixed, int64_t room, const std::vector<int32_t> &eos_ids,
                           int32_t *out) {
    auto is_eos = [&](int32_t t) { return std::find(eos_ids.begin(), eos_ids.end(), t) != eos_ids.end(); };
    CanvasOutput r;
    bool hole_ended = false;  // an EOS was seen in the current hole
    for (int64_t k = 0; k < room; ++k) {
        if (fixed && fixed[k]) {
            out[r.n_tokens++] = amax[k];
            hole_ended = false;
            r.eos = false;  // text follows the EOS: it ended only its hole
            continue;
        }
        if (hole_ended) continue;
        if (is_eos(amax[k])) {
            hole_ended = r.eos = true;
            if (!fixed) break;  // nothing can follow it
            continue;
        }
        out[r.n_tokens++] = amax[k];
    }
    return r;
}

}  // namespace dg
