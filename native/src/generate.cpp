#include "generate.h"

#include <algorithm>
#include <chrono>
#include <set>
#include <string>

#include "error.h"

namespace dg {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Per-sequence state across canvases; the sampler state lives on the backend.
struct Running {
    GenerateJob *job;
    TensorBuffer canvas, argmax, fixed, history, stop, sc, table;  // see SampleArgs
    std::vector<int32_t> committed;  // the finished canvas's argmax, on the host
    int64_t written = 0;
    int64_t canvas_no = 0;
    int step = 0;             // the step to run next, counting down N .. 1
    int step_no = 0;          // the step just run, counting up 1 .. N (what on_step reports)
    bool denoising = false;
    bool done = false;
    bool has_sc = false;      // `sc` holds the previous step's soft embedding
};

void validate(const GenerateJob &j, const Hparams &hp) {
    check_sampler_params(j.params);
    if (j.max_new_tokens <= 0)
        throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "max_new_tokens must be positive, got " + std::to_string(j.max_new_tokens));
    for (int32_t e : j.eos_ids)
        if (e < 0 || e >= hp.n_vocab) throw Error(DGEMMA_ERR_OUT_OF_RANGE, "EOS id " + std::to_string(e) + " is outside the vocabulary");
    const int64_t C = hp.canvas_length, n_canvases = j.max_new_tokens / C + (j.max_new_tokens % C != 0);
    if (n_canvases > (hp.n_ctx - j.s->n_past) / C)
        throw Error(DGEMMA_ERR_OUT_OF_RANGE, std::to_string(j.max_new_tokens) + " new tokens (" + std::to_string(n_canvases) +
                                                 " canvases of " + std::to_string(C) + ") after " + std::to_string(j.s->n_past) +
                                                 " cached exceed the context length " + std::to_string(hp.n_ctx));
    if (j.fixed && j.fixed_tokens)
        for (int64_t i = 0; i < C; ++i)
            if (j.fixed[i] && (j.fixed_tokens[i] < 0 || j.fixed_tokens[i] >= hp.n_vocab))
                throw Error(DGEMMA_ERR_OUT_OF_RANGE, "fixed token at canvas position " + std::to_string(i) + " is outside the vocabulary");
}

// Takes the finished canvas's argmax into the output; true when the sequence is complete.
bool finish_canvas(Running &r, int64_t C) {
    GenerateJob &j = *r.job;
    const std::vector<int32_t> &amax = r.committed;
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

void generate(std::vector<GenerateJob> &jobs, std::unique_lock<std::mutex> &lock) {
    if (jobs.empty()) return;
    Model &m = jobs[0].s->model;
    Backend &be = m.backend();
    const Hparams &hp = m.hparams();
    const int64_t C = hp.canvas_length, E = hp.n_embd;
    std::set<Session *> seen;
    for (GenerateJob &j : jobs) {
        if (&j.s->model != &m) throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "all sequences of a batch must use one model");
        if (!seen.insert(j.s).second) throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "a session appears twice in one batch");
        validate(j, hp);
    }
    // Everything a generation touches is placed before its first step: the caches of every
    // canvas it may commit, the workspace of the whole batch, each sequence's sampler state.
    const int64_t n_jobs = static_cast<int64_t>(jobs.size());
    m.workspace(C * n_jobs, C * n_jobs);
    std::vector<Running> run(jobs.size());
    for (size_t i = 0; i < jobs.size(); ++i) {
        Running &r = run[i];
        GenerateJob &j = jobs[i];
        r.job = &j;
        j.stats = GenerateStats{};
        j.s->reserve(j.s->n_past + (j.max_new_tokens + C - 1) / C * C);
        const int S = std::max(1, j.params.stability_threshold);
        r.canvas = TensorBuffer(be.alloc(TensorType::I32, C));
        r.argmax = TensorBuffer(be.alloc(TensorType::I32, C));
        r.history = TensorBuffer(be.alloc(TensorType::I32, C, S));
        r.stop = TensorBuffer(be.alloc(TensorType::I32, 1));
        r.sc = TensorBuffer(be.alloc(TensorType::F32, E, C));
        if (j.fixed) {
            r.fixed = TensorBuffer(be.alloc(TensorType::I8, C));
            be.upload(*r.fixed, j.fixed, static_cast<size_t>(C));
        }
        if (j.draws.table) {
            r.table = TensorBuffer(be.alloc(TensorType::I64, j.draws.table_size));
            be.upload(*r.table, j.draws.table, static_cast<size_t>(j.draws.table_size) * sizeof(uint64_t));
        }
        r.committed.resize(static_cast<size_t>(C));
    }
    const Tensor no_fixed{};

    for (;;) {
        // Start a canvas for every sequence still generating.
        bool any = false;
        for (Running &r : run) {
            if (r.done) continue;
            GenerateJob &j = *r.job;
            const bool fixed = r.fixed && r.canvas_no == 0;  // the fixed mask applies to the first canvas
            if (fixed) be.upload(*r.canvas, j.fixed_tokens, static_cast<size_t>(C) * sizeof(int32_t));
            be.sampler_init(*r.canvas, fixed ? *r.fixed : no_fixed, *r.history, j.draws.seed,
                            r.table ? *r.table : Tensor{}, r.canvas_no, j.params, hp.n_vocab);
            r.step = j.params.max_steps;
            r.denoising = true;
            r.has_sc = false;
            any = true;
        }
        if (!any) break;
        // Denoise: every step decodes the canvases still denoising together.
        for (;;) {
            std::vector<PassItem> items;
            std::vector<Running *> active;
            for (Running &r : run) {
                if (!r.denoising) continue;
                items.push_back({r.job->s, PassMode::Decoder, *r.canvas, C, r.has_sc ? *r.sc : Tensor{}});
                active.push_back(&r);
            }
            if (items.empty()) break;
            auto t0 = Clock::now();
            Workspace &ws = m.workspace(C * n_jobs, C * n_jobs);
            m.forward(ws, items);
            const double dt = seconds_since(t0);
            for (size_t a = 0; a < active.size(); ++a) {
                Running &r = *active[a];
                GenerateJob &j = *r.job;
                const int64_t row0 = static_cast<int64_t>(a) * C;
                j.stats.decode_seconds += dt;
                t0 = Clock::now();
                SampleArgs sa;
                sa.logits = ws.logits->rows(row0, C);
                sa.params = &j.params;
                sa.step = r.step;
                sa.canvas_no = r.canvas_no;
                sa.seed = j.draws.seed;
                sa.draw_table = r.table ? *r.table : Tensor{};
                sa.canvas = *r.canvas;
                sa.argmax = *r.argmax;
                sa.fixed = r.fixed && r.canvas_no == 0 ? *r.fixed : Tensor{};
                sa.history = *r.history;
                sa.stop = *r.stop;
                be.sample(sa);
                int32_t stop = 0;
                be.download(*r.stop, &stop, sizeof stop);
                j.stats.sample_seconds += seconds_since(t0);
                ++j.stats.n_steps;
                if (j.hooks.on_step && j.hooks.drafts)
                    be.download(*r.argmax, r.committed.data(), static_cast<size_t>(C) * sizeof(int32_t));
                r.step_no = j.params.max_steps - r.step + 1;
                if (stop || --r.step == 0) {
                    r.denoising = false;
                } else {  // this step's processed logits condition the next; taken now, before the
                          // lock is released and another pass may overwrite the workspace
                    m.soft_embedding(ws.logits->rows(row0, C), *r.sc);
                    r.has_sc = true;
                }
            }
            // The callbacks run without the model lock: they may call back into the model.
            lock.unlock();
            for (Running *r : active) {
                GenerateJob &j = *r->job;
                if (!j.hooks.on_step) continue;
                if (j.hooks.on_step(r->step_no, j.hooks.drafts ? r->committed.data() : nullptr, C)) {
                    j.stats.finish = Finish::Cancelled;  // the canvas in progress is dropped
                    r->denoising = false;
                    r->done = true;
                }
            }
            lock.lock();
        }
        // Finish the canvases; commit those of sequences that go on, in one encoder pass.
        std::vector<Running *> finishing;
        for (Running &r : run) {
            if (r.done) continue;
            be.download(*r.argmax, r.committed.data(), static_cast<size_t>(C) * sizeof(int32_t));
            ++r.canvas_no;
            finishing.push_back(&r);
        }
        lock.unlock();  // on_canvas may call back into the model
        for (Running *r : finishing) r->done = finish_canvas(*r, C);
        lock.lock();
        std::vector<PassItem> commits;
        std::vector<Running *> committing;
        for (Running *r : finishing) {
            if (r->done) continue;
            commits.push_back({r->job->s, PassMode::Encoder, *r->argmax, C, {}});  // the argmax, not the last draw
            committing.push_back(r);
        }
        if (!commits.empty()) {
            const auto t0 = Clock::now();
            m.forward(m.workspace(C * n_jobs, C * n_jobs), commits);
            const double dt = seconds_since(t0);
            for (Running *r : committing) r->job->stats.commit_seconds += dt;
        }
    }
    for (Running &r : run) r.job->stats.n_tokens = r.written;
}

}  // namespace dg
