// The entropy-bound block-diffusion sampler (contract: Generation), the reference every backend's
// `sample` op reproduces bit for bit.
//
// Per step n = N..1 over raw soft-capped logits z[C][V]:
//   y = z / t with t = t_min + (t_max - t_min) * n / N       (processed logits, written back into z)
//   draw_i ~ softmax(y_i), amax_i = argmax y_i, H_i = entropy of softmax(y_i)
//   accept the lowest-entropy positions while (cumulative H) - H_i <= entropy_bound
//   canvas_i = accepted ? draw_i : fresh uniform id              (everything else is re-noised)
//   stop when amax equals each of the last `stability` amax canvases and mean(H) < confidence
//
// Fixed reduction order (sampler_math.h): per row, m = max y (NaN counts as -inf), argmax = the
// lowest index holding m; e_v = exp(y_v - m) and a_v = e_v (y_v - m) in double; S and A are tree
// sums over chunks of kSamplerChunk values, the chunk sums added in order; H = log S - A / S. The
// draw with uniform u: target = u S; walk the chunk sums in order until one passes the target, then
// that chunk's e_v in order; the first index whose running sum exceeds the target is drawn (if
// rounding leaves none, the chunk's last index with e_v > 0). A row with no finite maximum has
// argmax = draw = 0 and H = +inf. Positions sort by (H, position).
//
// Randomness: value k of the sequence's splitmix64 stream (draw_value), k = draw_index(canvas,
// step, kind, position), or entry k of a table of raw values (tests): the same values whatever
// the order or backend that consumes them.
//
// Fixed positions (infill): kept as they are, never re-noised, their argmax is their token, they
// take no part in the entropy budget or the confidence mean; a canvas with no free position stops
// at once. Their draws are still consumed, so the stream does not depend on the mask.
#pragma once

#include <cstdint>
#include <vector>

#include "core_export.h"
#include "cpu/threadpool.h"

namespace dg {

struct SamplerParams {
    int max_steps = 48;
    float t_min = 0.4f, t_max = 0.8f, entropy_bound = 0.1f;
    int stability_threshold = 1;
    float confidence_threshold = 0.005f;
};

// Validates parameters; throws DGEMMA_ERR_INVALID_ARGUMENT naming the first bad one.
void check_sampler_params(const SamplerParams &p);

// t_min + (t_max - t_min) * (n / N) in the reference's float32 order.
DG_CORE_EXPORT float sampler_temperature(const SamplerParams &p, int n);

// Where the raw draws come from: the generator seeded by `seed`, or `table[k]` when a table is given.
struct DrawSource {
    uint64_t seed = 0;
    const uint64_t *table = nullptr;
    int64_t table_size = 0;
    uint64_t raw(uint64_t k) const;  // throws OUT_OF_RANGE past the end of a table
};

// One position: processes y[V] in place (y /= t) and returns its argmax, draw and entropy.
struct PositionResult {
    int32_t argmax = 0, draw = 0;
    double entropy = 0.0;
};
// scratch: sampler_scratch_per_thread(n_vocab) doubles.
PositionResult sample_position(float *y, int64_t n_vocab, float t, float u, double *scratch);
int64_t sampler_scratch_per_thread(int64_t n_vocab);

// Host views of one canvas's sampler state (the CPU backend's tensors, or the standalone sampler's).
struct SamplerView {
    int64_t n_canvas = 0, n_vocab = 0;
    const SamplerParams *params = nullptr;
    DrawSource draws;
    int64_t canvas_no = 0;
    int32_t *canvas = nullptr;      // [C]
    int32_t *argmax = nullptr;      // [C]
    const int8_t *fixed = nullptr;  // [C] or null
    int32_t *history = nullptr;     // [stability][C]
    int8_t *accepted = nullptr;     // [C] or null
};

// canvas[i] = fresh id for every free position; history = -1.
void sampler_init_host(const SamplerView &v);
// Per-step work arrays, sized once for a canvas of C positions on a pool of n_threads.
struct SamplerScratch {
    int64_t per_thread = 0;
    std::vector<double> chunks;   // [n_threads][sampler_scratch_per_thread(V)]
    std::vector<double> entropy;  // [C]
    std::vector<int32_t> draw, order;
    std::vector<uint64_t> raws;   // [C][2]: the step's uniform and re-noise draws
    void reserve(int64_t n_canvas, int64_t n_vocab, int n_threads);
};

// One step over logits[C][V] (raw in, processed out); returns the stop flag. Positions run in
// parallel on `pool`; `scratch` must have been reserved for C and the pool.
bool sample_step_host(const SamplerView &v, int step, float *logits, ThreadPool &pool, SamplerScratch &scratch);

}  // namespace dg
