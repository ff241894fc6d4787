#include "generate.h"

#include <algorithm>
#include <chrono>
#include <string>

#include "error.h"

namespace dg {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

GenerateStats generate(Session &s, const SamplerParams &params, RandomSource &random, int64_t max_new_tokens,
                       const std::vector<int32_t> &eos_ids, const GenerateHooks &hooks, int32_t *out_tokens) {
    Model &m = s.model;
    const Hparams &hp = m.hparams();
    const int64_t C = hp.canvas_length, V = hp.n_vocab;
    check_sampler_params(params);
    if (max_new_tokens <= 0) throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "max_new_tokens must be positive, got " + std::to_string(max_new_tokens));
    for (int32_t e : eos_ids)
        if (e < 0 || e >= V) throw Error(DGEMMA_ERR_OUT_OF_RANGE, "EOS id " + std::to_string(e) + " is outside the vocabulary");
    const int64_t n_canvases = (max_new_tokens + C - 1) / C;
    if (n_canvases > (hp.n_ctx - s.n_past) / C)
        throw Error(DGEMMA_ERR_OUT_OF_RANGE, std::to_string(max_new_tokens) + " new tokens (" + std::to_string(n_canvases) +
                                                 " canvases of " + std::to_string(C) + ") after " + std::to_string(s.n_past) +
                                                 " cached exceed the context length " + std::to_string(hp.n_ctx));
    // Two logit buffers: the step's output, and the previous step's processed logits for self-conditioning.
    s.logits.resize(static_cast<size_t>(C * V));
    s.sc_logits.resize(static_cast<size_t>(C * V));
    std::vector<int32_t> canvas(static_cast<size_t>(C));
    Sampler sampler(C, V, params, random, m.host_pool());
    GenerateStats st;
    int64_t written = 0;
    for (int64_t c = 0; c < n_canvases; ++c) {
        sampler.init_canvas(canvas.data());
        const float *sc = nullptr;
        for (int n = params.max_steps; n >= 1; --n) {
            auto t0 = std::chrono::steady_clock::now();
            m.decode(s, canvas.data(), C, sc, s.logits.data());
            st.decode_seconds += seconds_since(t0);
            t0 = std::chrono::steady_clock::now();
            const StepResult r = sampler.step(n, s.logits.data(), canvas.data());
            st.sample_seconds += seconds_since(t0);
            ++st.n_steps;
            std::swap(s.logits, s.sc_logits);  // this step's processed logits condition the next
            sc = s.sc_logits.data();
            if (hooks.on_step && hooks.on_step(params.max_steps - n + 1, sampler.argmax().data(), C)) {
                st.finish = Finish::Cancelled;
                st.n_tokens = written;
                return st;
            }
            if (r.stop) break;
        }
        ++st.n_canvases;
        const std::vector<int32_t> &amax = sampler.argmax();
        const int64_t room = std::min(C, max_new_tokens - written);
        int64_t k = 0;
        bool eos = false;
        for (; k < room; ++k) {
            if (std::find(eos_ids.begin(), eos_ids.end(), amax[k]) != eos_ids.end()) { eos = true; break; }
            out_tokens[written + k] = amax[k];
        }
        // An EOS in the part of the canvas past max_new_tokens still ends the text there.
        for (int64_t j = k; !eos && j < C; ++j) eos = std::find(eos_ids.begin(), eos_ids.end(), amax[j]) != eos_ids.end();
        const int32_t *fresh = out_tokens + written;
        written += k;
        const bool stop_requested = hooks.on_canvas && hooks.on_canvas(fresh, k);
        if (eos) { st.finish = Finish::Eos; break; }
        if (written >= max_new_tokens) { st.finish = Finish::Length; break; }
        if (stop_requested) { st.finish = Finish::Stopped; break; }
        const auto t0 = std::chrono::steady_clock::now();
        m.encode(s, amax.data(), C);  // commit the canvas: the argmax, not the last draw
        st.commit_seconds += seconds_since(t0);
    }
    st.n_tokens = written;
    return st;
}

}  // namespace dg
