// The multi-canvas generation loop: denoise a canvas with the sampler op, commit its argmax through
// encoder mode, move on (contract: Generation). Several sequences run as one batch: their
// denoising steps share one decoder pass, their commits one encoder pass, each stops on its own.
// Per step only each sequence's stop flag reaches the host (and its draft when asked); per canvas
// only the committed ids.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "sampler.h"
#include "session.h"

namespace dg {

enum class Finish { Length = 0, Eos = 1, Stopped = 2, Cancelled = 3 };

struct GenerateHooks {
    // After every step; draft is the step's argmax canvas when `drafts` is set, else null. true: cancel.
    std::function<bool(int step, const int32_t *draft, int64_t n)> on_step;
    bool drafts = false;
    std::function<bool(const int32_t *tokens, int64_t n)> on_canvas;  // true: stop
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
    DrawSource draws;                  // seed, or a table of raw draws (tests)
    const int8_t *fixed = nullptr;     // [C] fixed positions of the first canvas (infill), or null
    const int32_t *fixed_tokens = nullptr;  // [C] their tokens
    int64_t max_new_tokens = 0;
    std::vector<int32_t> eos_ids;
    GenerateHooks hooks;
    int32_t *out_tokens = nullptr;     // capacity max_new_tokens
    GenerateStats stats;               // out
};

// Runs the jobs to completion. `lock` holds the model's mutex; it is released around the callbacks
// (hooks), which may therefore call back into the model, and held for every pass.
void generate(std::vector<GenerateJob> &jobs, std::unique_lock<std::mutex> &lock);

}  // namespace dg
