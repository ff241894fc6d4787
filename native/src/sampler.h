// The entropy-bound block-diffusion sampler (contract: Generation), on one canvas.
//
// Per step n = N..1 over raw soft-capped logits z[C][V]:
//   y = z / t with t = t_min + (t_max - t_min) * n / N       (processed logits, written back into z)
//   draw_i ~ softmax(y_i), amax_i = argmax y_i, H_i = entropy of softmax(y_i)
//   accept the lowest-entropy positions while (cumulative H) - H_i <= entropy_bound
//   canvas_i = accepted ? draw_i : fresh uniform id              (everything else is re-noised)
//   stop when amax equals each of the last `stability` amax canvases and mean(H) < confidence
// Randomness is consumed in the reference's order: C ids to initialise a canvas; per step C
// uniforms (one draw per position) then C ids (the re-noise candidates, drawn for every position).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

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

// Source of randomness: a seeded generator, or a caller-supplied function (test hook).
class RandomSource {
public:
    using Fill = std::function<void(int kind, int64_t n, void *out)>;  // kind 0: int32 ids, 1: float uniforms
    RandomSource(uint64_t seed, int64_t n_vocab) : state_(seed), n_vocab_(n_vocab) {}
    void set_override(Fill fill) { override_ = std::move(fill); }
    void tokens(int32_t *out, int64_t n);   // uniform ids in [0, n_vocab)
    void uniforms(float *out, int64_t n);   // uniform in [0, 1)

private:
    uint64_t next();
    uint64_t state_;
    int64_t n_vocab_;
    Fill override_;
};

struct StepResult {
    bool stop = false;
    int n_accepted = 0;
    double mean_entropy = 0.0;
};

class Sampler {
public:
    Sampler(int64_t n_canvas, int64_t n_vocab, const SamplerParams &params, RandomSource &random, ThreadPool &pool);

    // A fresh canvas of uniform random ids; resets the stopping history.
    void init_canvas(int32_t *canvas);
    // One step `n` (N..1): logits[C][V] raw in, processed out; canvas current in, next out.
    StepResult step(int n, float *logits, int32_t *canvas);

    const std::vector<int32_t> &argmax() const { return argmax_; }
    const std::vector<uint8_t> &accepted() const { return accepted_; }
    const std::vector<double> &entropy() const { return entropy_; }
    float temperature(int n) const;

private:
    int64_t C_, V_;
    SamplerParams p_;
    RandomSource &random_;
    ThreadPool &pool_;
    std::vector<int32_t> argmax_, draw_, renoise_, order_;
    std::vector<float> uniform_;
    std::vector<double> entropy_;
    std::vector<uint8_t> accepted_;
    std::vector<int32_t> history_;  // [stability][C], -1 before filled
};

}  // namespace dg
