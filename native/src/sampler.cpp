#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "error.h"

namespace dg {

void check_sampler_params(const SamplerParams &p) {
    auto bad = [](const std::string &m) { throw Error(DGEMMA_ERR_INVALID_ARGUMENT, m); };
    if (p.max_steps <= 0) bad("max_denoising_steps must be positive, got " + std::to_string(p.max_steps));
    if (!(p.t_min > 0.0f) || !std::isfinite(p.t_min)) bad("t_min must be a positive number, got " + std::to_string(p.t_min));
    if (!(p.t_max > p.t_min) || !std::isfinite(p.t_max))
        bad("t_max must be greater than t_min (" + std::to_string(p.t_min) + "), got " + std::to_string(p.t_max));
    if (!(p.entropy_bound >= 0.0f) || !std::isfinite(p.entropy_bound))
        bad("entropy_bound must be non-negative, got " + std::to_string(p.entropy_bound));
    if (p.stability_threshold < 0) bad("stability_threshold must be non-negative, got " + std::to_string(p.stability_threshold));
    if (!(p.confidence_threshold >= 0.0f) || !std::isfinite(p.confidence_threshold))
        bad("confidence_threshold must be non-negative, got " + std::to_string(p.confidence_threshold));
}

uint64_t RandomSource::next() {  // splitmix64
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void RandomSource::tokens(int32_t *out, int64_t n) {
    if (override_) {
        override_(0, n, out);
        for (int64_t i = 0; i < n; ++i)
            if (out[i] < 0 || out[i] >= n_vocab_) throw Error(DGEMMA_ERR_OUT_OF_RANGE, "random source returned token id " + std::to_string(out[i]));
        return;
    }
    for (int64_t i = 0; i < n; ++i)
        out[i] = static_cast<int32_t>((static_cast<unsigned __int128>(next()) * static_cast<uint64_t>(n_vocab_)) >> 64);
}

void RandomSource::uniforms(float *out, int64_t n) {
    if (override_) {
        override_(1, n, out);
        for (int64_t i = 0; i < n; ++i)
            if (!(out[i] >= 0.0f && out[i] < 1.0f)) throw Error(DGEMMA_ERR_OUT_OF_RANGE, "random source returned a uniform outside [0, 1)");
        return;
    }
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(next() >> 40) * (1.0f / 16777216.0f);
}

Sampler::Sampler(int64_t n_canvas, int64_t n_vocab, const SamplerParams &params, RandomSource &random, ThreadPool &pool)
    : C_(n_canvas), V_(n_vocab), p_(params), random_(random), pool_(pool),
      argmax_(n_canvas), draw_(n_canvas), renoise_(n_canvas), order_(n_canvas), uniform_(n_canvas),
      entropy_(n_canvas), accepted_(n_canvas) {
    check_sampler_params(p_);
    history_.assign(static_cast<size_t>(p_.stability_threshold * n_canvas), -1);
}

float Sampler::temperature(int n) const {
    // float32 arithmetic in the reference's order: t_min + (t_max - t_min) * (n / N)
    const float frac = static_cast<float>(n) / static_cast<float>(p_.max_steps);
    return p_.t_min + static_cast<float>(static_cast<double>(p_.t_max) - static_cast<double>(p_.t_min)) * frac;
}

void Sampler::init_canvas(int32_t *canvas) {
    random_.tokens(canvas, C_);
    std::fill(history_.begin(), history_.end(), -1);
}

StepResult Sampler::step(int n, float *logits, int32_t *canvas) {
    if (n < 1 || n > p_.max_steps)
        throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "step " + std::to_string(n) + " is outside 1.." + std::to_string(p_.max_steps));
    const float t = temperature(n);
    random_.uniforms(uniform_.data(), C_);
    random_.tokens(renoise_.data(), C_);
    // Per position: scale, argmax and max; then one pass for the normaliser S = sum e^(y-m) and
    // A = sum e^(y-m) (y-m), giving H = log S - A / S; then the draw by inverse CDF, stopping early.
    pool_.run(C_, [&](int64_t i, int) {
        float *y = logits + i * V_;
        float mx = -INFINITY;
        int64_t am = 0;
        for (int64_t v = 0; v < V_; ++v) {
            y[v] = y[v] / t;
            if (y[v] > mx) { mx = y[v]; am = v; }
        }
        double s = 0.0, a = 0.0;
        for (int64_t v = 0; v < V_; ++v) {
            const double d = static_cast<double>(y[v]) - mx;
            const double e = std::exp(d);
            s += e;
            a += e * d;
        }
        entropy_[i] = std::log(s) - a / s;
        argmax_[i] = static_cast<int32_t>(am);
        const double target = static_cast<double>(uniform_[i]) * s;
        double cum = 0.0;
        int64_t pick = V_ - 1;
        for (int64_t v = 0; v < V_; ++v) {
            cum += std::exp(static_cast<double>(y[v]) - mx);
            if (cum > target) { pick = v; break; }
        }
        draw_[i] = static_cast<int32_t>(pick);
    });

    // Entropy-bound acceptance over positions sorted by entropy (ties by position).
    std::iota(order_.begin(), order_.end(), 0);
    std::stable_sort(order_.begin(), order_.end(), [&](int32_t a, int32_t b) { return entropy_[a] < entropy_[b]; });
    std::fill(accepted_.begin(), accepted_.end(), 0);
    double cum = 0.0, total = 0.0;
    StepResult r;
    for (int64_t k = 0; k < C_; ++k) {
        const int32_t i = order_[k];
        cum += entropy_[i];
        if (cum - entropy_[i] <= p_.entropy_bound) { accepted_[i] = 1; ++r.n_accepted; }
        total += entropy_[i];
    }
    for (int64_t i = 0; i < C_; ++i) canvas[i] = accepted_[i] ? draw_[i] : renoise_[i];

    // Stable: the argmax canvas equals each of the last `stability` ones. Confident: mean H small.
    bool stable = true;
    const int S = p_.stability_threshold;
    for (int h = 0; h < S && stable; ++h)
        stable = std::equal(argmax_.begin(), argmax_.end(), history_.begin() + static_cast<int64_t>(h) * C_);
    if (S > 0) {
        std::move(history_.begin() + C_, history_.end(), history_.begin());
        std::copy(argmax_.begin(), argmax_.end(), history_.end() - C_);
    }
    r.mean_entropy = total / static_cast<double>(C_);
    r.stop = stable && r.mean_entropy < p_.confidence_threshold;
    return r;
}

}  // namespace dg
