// The multi-canvas generation loop: denoise a canvas with the sampler, commit its argmax through
// encoder mode, move on (contract: Generation). Several sequences run as one batch: their
// denoising steps share one decoder pass (one read of the weights), each stops on its own.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "sampler.h"
#include "session.h"

namespace dg {

enum class Finish { Length = 0, Eos = 1, Stopped = 2, Cancelled = 3 };

struct GenerateHooks {
    std::function<bool(int step, const int32_t *draft, int64_t n)> on_step;     // true: cancel
    std::function<bool(const int32_t *tokens, int64_t n)> on_canvas;            // true: stop
};

struct GenerateStats {
    int64_t n_tokens = 0;
    int n_steps = 0, n_canvases = 0;
    Finish finish = Finish::Length;
    double decode_seconds = 0, sample_seconds = 0, commit_seconds = 0;  // batched passes count fully
};

// One sequence of a generate call. All sequences of a call belong to one model.
struct GenerateJob {
    Session *s;
    SamplerParams params;
    RandomSource *random;
    int64_t max_new_tokens;
    std::vector<int32_t> eos_ids;
    GenerateHooks hooks;
    int32_t *out_tokens;  // capacity max_new_tokens
    GenerateStats stats;  // out
};

void generate(std::vector<GenerateJob> &jobs);

}  // namespace dg
