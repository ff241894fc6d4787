// The sampler reference (sampler.h). Compiled with -ffp-contract=off (CMakeLists.txt): the
// contract's arithmetic must not change with the compiler's choice of fused operations.
#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "error.h"
#include "sampler_math.h"

namespace dg {

void check_sampler_params(const SamplerParams &p) {
    auto bad = [](const std::string &m) { throw Error(DGEMMA_ERR_INVALID_ARGUMENT, m); };
    if (p.max_steps <= 0 || p.max_steps > 100000)
        bad("max_denoising_steps must be in 1..100000, got " + std::to_string(p.max_steps));
    if (!(p.t_min > 0.0f) || !std::isfinite(p.t_min)) bad("t_min must be a positive number, got " + std::to_string(p.t_min));
    if (!(p.t_max > p.t_min) || !std::isfinite(p.t_max))
        bad("t_max must be greater than t_min (" + std::to_string(p.t_min) + "), got " + std::to_string(p.t_max));
    if (!(p.entropy_bound >= 0.0f) || !std::isfinite(p.entropy_bound))
        bad("entropy_bound must be non-negative, got " + std::to_string(p.entropy_bound));
    if (p.stability_threshold < 0 || p.stability_threshold > 1000)
        bad("stability_threshold must be in 0..1000, got " + std::to_string(p.stability_threshold));
    if (!(p.confidence_threshold >= 0.0f) || !std::isfinite(p.confidence_threshold))
        bad("confidence_threshold must be non-negative, got " + std::to_string(p.confidence_threshold));
}

float sampler_temperature(const SamplerParams &p, int n) {
    const float frac = static_cast<float>(n) / static_cast<float>(p.max_steps);
    return p.t_min + static_cast<float>(static_cast<double>(p.t_max) - static_cast<double>(p.t_min)) * frac;
}

uint64_t DrawSource::raw(uint64_t k) const {
    if (!table) return draw_value(seed, k);
    if (k >= static_cast<uint64_t>(table_size))
        throw Error(DGEMMA_ERR_OUT_OF_RANGE, "the draw table holds " + std::to_string(table_size) +
                                                 " values; draw " + std::to_string(k) + " was needed");
    return table[k];
}


int64_t sampler_scratch_per_thread(int64_t n_vocab) {
    return 2 * kSamplerChunk + (n_vocab + kSamplerChunk - 1) / kSamplerChunk;
}

void SamplerScratch::reserve(int64_t n_canvas, int64_t n_vocab, int n_threads) {
    per_thread = sampler_scratch_per_thread(n_vocab);
    chunks.resize(static_cast<size_t>(n_threads * per_thread));
    entropy.resize(static_cast<size_t>(n_canvas));
    draw.resize(static_cast<size_t>(n_canvas));
    order.resize(static_cast<size_t>(n_canvas));
    raws.resize(static_cast<size_t>(2 * n_canvas));
}

PositionResult sample_position(float *y, int64_t V, float t, float u, double *scratch) {
    PositionResult r;
    float mx = -std::numeric_limits<float>::infinity();
    int64_t am = -1;
    for (int64_t v = 0; v < V; ++v) {
        y[v] = y[v] / t;
        if (y[v] > mx) { mx = y[v]; am = v; }
    }
    if (am < 0 || !std::isfinite(mx)) {  // every value NaN or -inf, or a +inf: no distribution
        r.entropy = std::numeric_limits<double>::infinity();
        return r;
    }
    const double m = mx;
    double *__restrict e = scratch, *__restrict a = scratch + kSamplerChunk, *chunk_sum = scratch + 2 * kSamplerChunk;
    const int64_t n_chunks = (V + kSamplerChunk - 1) / kSamplerChunk;
    double S = 0.0, A = 0.0;
    for (int64_t c = 0; c < n_chunks; ++c) {
        const int64_t v0 = c * kSamplerChunk, n = std::min(V - v0, kSamplerChunk);
        const float *__restrict yc = y + v0;
        for (int64_t j = 0; j < n; ++j) e[j] = sampler_exp(static_cast<double>(yc[j]) - m);
        for (int64_t j = 0; j < n; ++j) {  // where e = 0 (d < -708, -inf, NaN) the product is 0 * 0
            const double d = static_cast<double>(yc[j]) - m;
            a[j] = e[j] * (d >= -708.0 ? d : 0.0);
        }
        std::fill(e + n, e + kSamplerChunk, 0.0);
        std::fill(a + n, a + kSamplerChunk, 0.0);
        chunk_sum[c] = chunk_tree_sum(e);
        S = S + chunk_sum[c];
        A = A + chunk_tree_sum(a);
    }
    r.argmax = static_cast<int32_t>(am);
    r.entropy = sampler_log(S) - A / S;
    // Inverse CDF: the chunk whose running sum passes the target, then the index inside it.
    const double target = static_cast<double>(u) * S;
    double cum = 0.0;
    int64_t c = 0;
    while (c < n_chunks - 1 && !(cum + chunk_sum[c] > target)) cum = cum + chunk_sum[c++];
    const int64_t v0 = c * kSamplerChunk, v1 = std::min(V, v0 + kSamplerChunk);
    int64_t pick = -1, last_nonzero = -1;
    for (int64_t v = v0; v < v1; ++v) {
        const double ev = sampler_exp(static_cast<double>(y[v]) - m);
        if (ev > 0.0) last_nonzero = v;
        cum = cum + ev;
        if (cum > target) { pick = v; break; }
    }
    r.draw = static_cast<int32_t>(pick >= 0 ? pick : (last_nonzero >= 0 ? last_nonzero : am));
    return r;
}

void sampler_init_host(const SamplerView &v) {
    const SamplerParams &p = *v.params;
    for (int64_t i = 0; i < v.n_canvas; ++i) {
        const uint64_t raw = v.draws.raw(draw_index(v.canvas_no, 0, 0, i, v.n_canvas, p.max_steps));
        if (!(v.fixed && v.fixed[i])) v.canvas[i] = draw_token(raw, v.n_vocab);
    }
    std::fill(v.history, v.history + static_cast<int64_t>(p.stability_threshold) * v.n_canvas, -1);
}

bool sample_step_host(const SamplerView &v, int n, float *logits, ThreadPool &pool, SamplerScratch &sc) {
    const SamplerParams &p = *v.params;
    if (n < 1 || n > p.max_steps)
        throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "step " + std::to_string(n) + " is outside 1.." + std::to_string(p.max_steps));
    const int64_t C = v.n_canvas, V = v.n_vocab;
    if (C <= 0) return true;
    const float t = sampler_temperature(p, n);
    const int64_t s = p.max_steps - n + 1;
    // Raw values first (a table may be short: fail before touching anything).
    uint64_t *raws = sc.raws.data();
    for (int64_t i = 0; i < C; ++i) {
        raws[2 * i] = v.draws.raw(draw_index(v.canvas_no, s, 0, i, C, p.max_steps));
        raws[2 * i + 1] = v.draws.raw(draw_index(v.canvas_no, s, 1, i, C, p.max_steps));
    }
    pool.run(C, [&](int64_t i, int thread) {
        const PositionResult r =
            sample_position(logits + i * V, V, t, draw_uniform(raws[2 * i]), sc.chunks.data() + thread * sc.per_thread);
        sc.entropy[i] = r.entropy;
        sc.draw[i] = r.draw;
        v.argmax[i] = r.argmax;
    });

    // Entropy-bound acceptance over the free positions sorted by (H, position).
    int64_t n_free = 0;
    for (int64_t i = 0; i < C; ++i) {
        if (v.fixed && v.fixed[i]) {
            v.argmax[i] = v.canvas[i];
            continue;
        }
        sc.order[n_free++] = static_cast<int32_t>(i);
    }
    std::sort(sc.order.begin(), sc.order.begin() + n_free, [&](int32_t a, int32_t b) {
        return sc.entropy[a] < sc.entropy[b] || (sc.entropy[a] == sc.entropy[b] && a < b);
    });
    if (v.accepted) std::fill_n(v.accepted, static_cast<size_t>(C), int8_t{0});
    double cum = 0.0, total = 0.0;
    for (int64_t k = 0; k < n_free; ++k) {
        const int32_t i = sc.order[k];
        const double h = sc.entropy[i];
        cum = cum + h;
        const bool accept = cum - h <= p.entropy_bound;
        if (v.accepted) v.accepted[i] = accept ? 1 : 0;
        v.canvas[i] = accept ? sc.draw[i] : draw_token(raws[2 * i + 1], V);
        total = total + h;
    }

    // Stable: the argmax canvas equals each of the last `stability` ones. Confident: mean H small.
    bool stable = true;
    const int S = p.stability_threshold;
    for (int h = 0; h < S && stable; ++h)
        stable = std::equal(v.argmax, v.argmax + C, v.history + static_cast<int64_t>(h) * C);
    if (S > 0) {
        std::move(v.history + C, v.history + static_cast<int64_t>(S) * C, v.history);
        std::copy(v.argmax, v.argmax + C, v.history + static_cast<int64_t>(S - 1) * C);
    }
    if (n_free == 0) return true;
    return stable && total / static_cast<double>(n_free) < p.confidence_threshold;
}

}  // namespace dg
