#include "generate.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <set>
#include <string>

#include "error.h"

namespace dg {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Per-sequence state across canvases.
struct Running {
    GenerateJob *job;
    std::unique_ptr<Sampler> sampler;
    std::vector<int32_t> canvas;
    int64_t written = 0;
    int step = 0;            // steps remaining in the canvas being denoised (N .. 1)
    bool denoising = false;
    bool done = false;
    const float *sc = nullptr;
};

void validate(const GenerateJob &j, const Hparams &hp) {
    check_sampler_params(j.params);
    if (j.max_new_tokens <= 0)
        throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "max_new_tokens must be positive, got " + std::to_string(j.max_new_tokens));
    for (int32_t e : j.eos_ids)
        if (e < 0 || e >= hp.n_vocab) throw Error(DGEMMA_ERR_OUT_OF_RANGE, "EOS id " + std::to_string(e) + " is outside the vocabulary");
    const int64_t C = hp.canvas_length, n_canvases = (j.max_new_tokens + C - 1) / C;
    if (n_canvases > (hp.n_ctx - j.s->n_past) / C)
        throw Error(DGEMMA_ERR_OUT_OF_RANGE, std::to_string(j.max_new_tokens) + " new tokens (" + std::to_string(n_canvases) +
                                                 " canvases of " + std::to_string(C) + ") after " + std::to_string(j.s->n_past) +
                                                 " cached exceed the context length " + std::to_string(hp.n_ctx));
}

// Takes the finished canvas's argmax into the output; true when the sequence is complete.
bool finish_canvas(Running &r, int64_t C) {
    GenerateJob &j = *r.job;
    const std::vector<int32_t> &amax = r.sampler->argmax();
    auto is_eos = [&](int32_t t) { return std::find(j.eos_ids.begin(), j.eos_ids.end(), t) != j.eos_ids.end(); };
    const int64_t room = std::min(C, j.max_new_tokens - r.written);
    int64_t k = 0;
    bool eos = false;
    // Only the kept tokens (the first `room`) decide: an EOS past max_new_tokens was cut off with
    // the rest, so such a canvas finishes by length.
    for (; k < room && !(eos = is_eos(amax[k])); ++k) j.out_tokens[r.written + k] = amax[k];
    const int32_t *fresh = j.out_tokens + r.written;
    r.written += k;
    ++j.stats.n_canvases;
    const bool stop_requested = j.hooks.on_canvas && j.hooks.on_canvas(fresh, k);
    if (eos) j.stats.finish = Finish::Eos;
    else if (r.written >= j.max_new_tokens) j.stats.finish = Finish::Length;
    else if (stop_requested) j.stats.finish = Finish::Stopped;
    else return false;
    return true;
}

}  // namespace

void generate(std::vector<GenerateJob> &jobs) {
    if (jobs.empty()) return;
    Model &m = jobs[0].s->model;
    const Hparams &hp = m.hparams();
    const int64_t C = hp.canvas_length, V = hp.n_vocab;
    std::set<Session *> seen;
    for (GenerateJob &j : jobs) {
        if (&j.s->model != &m) throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "all sequences of a batch must use one model");
        if (!seen.insert(j.s).second) throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "a session appears twice in one batch");
        validate(j, hp);
    }
    std::vector<Running> run(jobs.size());
    for (size_t i = 0; i < jobs.size(); ++i) {
        Running &r = run[i];
        r.job = &jobs[i];
        r.job->stats = GenerateStats{};
        r.sampler = std::make_unique<Sampler>(C, V, r.job->params, *r.job->random, m.host_pool());
        r.canvas.resize(static_cast<size_t>(C));
        // This step's logits, and the previous step's processed logits for self-conditioning.
        r.job->s->logits.resize(static_cast<size_t>(C * V));
        r.job->s->sc_logits.resize(static_cast<size_t>(C * V));
    }
    // One sequence decodes in its session's workspace; a batch needs rows for every canvas.
    std::unique_ptr<Workspace> batch_ws;
    if (jobs.size() > 1) batch_ws = std::make_unique<Workspace>(m, C * static_cast<int64_t>(jobs.size()));
    Workspace &ws = batch_ws ? *batch_ws : jobs[0].s->ws;

    for (;;) {
        // Start a canvas for every sequence still generating.
        bool any = false;
        for (Running &r : run) {
            if (r.done) continue;
            r.sampler->init_canvas(r.canvas.data());
            r.step = r.job->params.max_steps;
            r.denoising = true;
            r.sc = nullptr;
            any = true;
        }
        if (!any) break;
        // Denoise: every step decodes the canvases still denoising together.
        for (;;) {
            std::vector<DenoiseItem> items;
            std::vector<Running *> active;
            for (Running &r : run)
                if (r.denoising) {
                    items.push_back({r.job->s, r.canvas.data(), C, r.sc, r.job->s->logits.data()});
                    active.push_back(&r);
                }
            if (items.empty()) break;
            auto t0 = Clock::now();
            m.decode_batch(ws, items);
            const double dt = seconds_since(t0);
            for (Running *r : active) {
                GenerateJob &j = *r->job;
                j.stats.decode_seconds += dt;
                t0 = Clock::now();
                const StepResult sr = r->sampler->step(r->step, j.s->logits.data(), r->canvas.data());
                j.stats.sample_seconds += seconds_since(t0);
                ++j.stats.n_steps;
                std::swap(j.s->logits, j.s->sc_logits);  // this step's processed logits condition the next
                r->sc = j.s->sc_logits.data();
                const int step_no = j.params.max_steps - r->step + 1;
                if (j.hooks.on_step && j.hooks.on_step(step_no, r->sampler->argmax().data(), C)) {
                    j.stats.finish = Finish::Cancelled;  // the canvas in progress is dropped
                    r->denoising = false;
                    r->done = true;
                    continue;
                }
                if (sr.stop || --r->step == 0) r->denoising = false;
            }
        }
        // Finish the canvases; commit those of sequences that go on (encoder mode, per sequence).
        for (Running &r : run) {
            if (r.done) continue;
            r.done = finish_canvas(r, C);
            if (r.done) continue;
            const auto t0 = Clock::now();
            m.encode(*r.job->s, r.sampler->argmax().data(), C);  // the argmax, not the last draw
            r.job->stats.commit_seconds += seconds_since(t0);
        }
    }
    for (Running &r : run) r.job->stats.n_tokens = r.written;
}

}  // namespace dg
