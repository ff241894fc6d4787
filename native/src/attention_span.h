// Which keys a query of one pass segment sees, as an interval of absolute positions: one definition
// for the CUDA attention tiles and the host test that checks it (tests/test_cuda.py, with
// tests/attention_span_check.cpp) against the CPU backend's rule.
//
// A segment's query i sits at position p = n_past + i. Keys at positions below n_past are cached
// (ring slot position % capacity), the others are the segment's own rows (row position - n_past).
// Query i sees the positions [span_lo(i), span_hi(i)):
//   - cached positions from cache_pos0 (a sliding layer's ring keeps only the last capacity);
//   - in a sliding encoder row, only positions > p - window;
//   - its own segment's rows up to itself (encoder, causal) or all of them (decoder canvas).
// Both ends grow with i, so the keys any query of [i0, i1) sees are [span_lo(i0), span_hi(i1 - 1)).
#pragma once

#include <cstdint>

#include "host_device.h"

namespace dg {

struct AttentionSpan {
    int64_t n = 0, n_past = 0;  // the segment's rows, and the positions before them
    bool causal = false;        // encoder rows (prompt, committed canvas)
    int64_t window = 0;         // > 0: a sliding layer's encoder rows
    int64_t cache_pos0 = 0;     // first cached position kept, <= n_past
};

DG_HD int64_t span_lo(const AttentionSpan &g, int64_t i) {
    int64_t lo = g.cache_pos0;
    if (g.window > 0 && g.n_past + i - g.window + 1 > lo) lo = g.n_past + i - g.window + 1;
    return lo;
}

DG_HD int64_t span_hi(const AttentionSpan &g, int64_t i) { return g.n_past + (g.causal ? i + 1 : g.n); }

}  // namespace dg
