// C API: generation and the standalone sampler (dgemma.h, section Generation).
#include <memory>
#include <mutex>
#include <vector>

#include "api_jobs.h"
#include "api_types.h"
#include "dgemma.h"
#include "error.h"
#include "model.h"
#include "sampler.h"
#include "scheduler.h"
#include "session.h"

struct dgemma_sampler {
    int64_t n_canvas = 0, n_vocab = 0, canvas_no = -1;
    dg::SamplerParams params;
    uint64_t seed = 0;
    std::vector<uint64_t> table;
    bool has_table = false;
    std::vector<int8_t> fixed;  // empty: none
    std::vector<int32_t> argmax, history;
    std::vector<int8_t> accepted;
    dg::ThreadPool pool{1};
    dg::SamplerScratch scratch;

    dg::SamplerView view() {
        dg::SamplerView v;
        v.n_canvas = n_canvas;
        v.n_vocab = n_vocab;
        v.params = &params;
        v.draws = {seed, has_table ? table.data() : nullptr, static_cast<int64_t>(table.size())};
        v.canvas_no = canvas_no;
        v.argmax = argmax.data();
        v.fixed = fixed.empty() ? nullptr : fixed.data();
        v.history = history.data();
        v.accepted = accepted.data();
        return v;
    }
};

namespace dg {

void require(bool ok, const char *message) {
    if (!ok) throw Error(DGEMMA_ERR_INVALID_ARGUMENT, message);
}

SamplerParams to_internal(const dgemma_sampler_params &p) {
    SamplerParams s;
    s.max_steps = p.max_steps;
    s.t_min = p.t_min;
    s.t_max = p.t_max;
    s.entropy_bound = p.entropy_bound;
    s.stability_threshold = p.stability_threshold;
    s.confidence_threshold = p.confidence_threshold;
    return s;
}

GenerateJob make_job(const dgemma_model &model, const dgemma_sampler_params &params, int64_t max_new_tokens,
                     const dgemma_generate_options *options, int32_t *out_tokens, std::vector<int8_t> &fixed_store) {
    require(out_tokens != nullptr, "dgemma generate: out_tokens must not be NULL");
    dgemma_generate_options opt{};
    if (options) opt = *options;
    require(opt.n_eos >= 0 && (opt.eos_ids || opt.n_eos == 0), "dgemma generate: bad EOS list");
    require(opt.n_draws >= 0 && (opt.draws || opt.n_draws == 0), "dgemma generate: bad draw table");
    require(!opt.fixed || opt.fixed_tokens, "dgemma generate: fixed positions need fixed_tokens");
    GenerateJob job;
    job.params = to_internal(params);
    job.draws = {params.seed, opt.draws, opt.n_draws};
    if (opt.fixed) {
        const int64_t C = model.model->hparams().canvas_length;
        fixed_store.assign(opt.fixed, opt.fixed + C);
        for (int8_t &f : fixed_store) f = f ? 1 : 0;
        job.fixed = fixed_store.data();
        job.fixed_tokens = opt.fixed_tokens;
    }
    job.max_new_tokens = max_new_tokens;
    job.eos_ids.assign(opt.eos_ids, opt.eos_ids + opt.n_eos);
    job.out_tokens = out_tokens;
    job.hooks.drafts = opt.drafts != 0;
    if (opt.on_step)
        job.hooks.on_step = [opt](int step, const int32_t *d, int64_t n) { return opt.on_step(opt.user, step, d, n) != 0; };
    if (opt.on_canvas)
        job.hooks.on_canvas = [opt](const int32_t *t, int64_t n) { return opt.on_canvas(opt.user, t, n) != 0; };
    return job;
}

void store_result(const GenerateStats &st, dgemma_generate_result *result) {
    *result = {st.n_tokens,        st.n_steps,        st.n_canvases,     static_cast<int32_t>(st.finish),
               st.decode_seconds,  st.sample_seconds, st.commit_seconds, st.prefill_seconds,
               st.n_prompt_cached};
}

}  // namespace dg

using dg::require;
using dg::to_internal;

extern "C" {

DGEMMA_API dgemma_sampler_params dgemma_model_sampler_defaults(const dgemma_model *model) {
    const dg::SamplerParams d = model ? model->model->hparams().sampler : dg::SamplerParams{};
    return {d.max_steps, d.t_min, d.t_max, d.entropy_bound, d.stability_threshold, d.confidence_threshold, 0};
}

DGEMMA_API dgemma_status dgemma_session_generate(dgemma_session *session, const dgemma_sampler_params *params,
                                                 int64_t max_new_tokens, const dgemma_generate_options *options,
                                                 int32_t *out_tokens, dgemma_generate_result *result) {
    dgemma_session *sessions[1] = {session};
    int32_t *outs[1] = {out_tokens};
    return dgemma_generate_batch(sessions, 1, params, max_new_tokens, options, outs, result);
}

DGEMMA_API dgemma_status dgemma_generate_batch(dgemma_session *const *sessions, int32_t n_sequences,
                                               const dgemma_sampler_params *params, int64_t max_new_tokens,
                                               const dgemma_generate_options *options, int32_t *const *out_tokens,
                                               dgemma_generate_result *results) {
    return dg::guarded([&] {
        require(sessions && params && out_tokens && results && n_sequences > 0,
                "dgemma generate: sessions, params, out_tokens and results must not be NULL; n_sequences > 0");
        for (int32_t i = 0; i < n_sequences; ++i) {
            require(sessions[i] != nullptr, "dgemma generate: session must not be NULL");
            if (sessions[i]->owner != sessions[0]->owner)
                throw dg::Error(DGEMMA_ERR_INVALID_ARGUMENT, "all sequences of a batch must use one model");
            for (int32_t k = 0; k < i; ++k)
                if (sessions[k] == sessions[i]) throw dg::Error(DGEMMA_ERR_INVALID_ARGUMENT, "a session appears twice in one batch");
        }
        dgemma_model &model = *sessions[0]->owner;
        std::vector<std::vector<int8_t>> fixed(static_cast<size_t>(n_sequences));
        std::vector<dg::GenerateJob> jobs;
        for (int32_t i = 0; i < n_sequences; ++i) {
            jobs.push_back(dg::make_job(model, params[i], max_new_tokens, options ? &options[i] : nullptr, out_tokens[i],
                                        fixed[i]));
            jobs.back().s = sessions[i]->session.get();
        }
        std::vector<std::unique_ptr<dg::SessionCall>> calls;  // each session busy until the batch returns
        for (int32_t i = 0; i < n_sequences; ++i) calls.push_back(std::make_unique<dg::SessionCall>(sessions[i]));
        std::unique_lock<std::mutex> lock(model.model->mutex());
        dg::SchedulerOptions so;
        so.max_batch = n_sequences;
        dg::Scheduler sched(*model.model, so);
        for (dg::GenerateJob &j : jobs) sched.submit(&j);
        while (sched.step(lock)) {
        }
        for (int32_t i = 0; i < n_sequences; ++i) dg::store_result(jobs[i].stats, &results[i]);
    });
}

DGEMMA_API dgemma_status dgemma_sampler_new(int64_t n_canvas, int64_t n_vocab, const dgemma_sampler_params *params,
                                            const uint64_t *draws, int64_t n_draws, dgemma_sampler **out_sampler) {
    return dg::guarded([&] {
        require(params && out_sampler, "dgemma_sampler_new: params and out_sampler must not be NULL");
        require(n_canvas > 0 && n_canvas <= (1 << 20) && n_vocab > 0 && n_vocab <= INT32_MAX,
                "dgemma_sampler_new: n_canvas must be in 1..2^20 and n_vocab in 1..2^31-1");
        require(n_draws >= 0 && (draws || n_draws == 0), "dgemma_sampler_new: bad draw table");
        *out_sampler = nullptr;
        auto s = std::make_unique<dgemma_sampler>();
        s->n_canvas = n_canvas;
        s->n_vocab = n_vocab;
        s->params = to_internal(*params);
        dg::check_sampler_params(s->params);
        s->seed = params->seed;
        s->has_table = draws != nullptr;
        if (draws) s->table.assign(draws, draws + n_draws);
        s->argmax.assign(static_cast<size_t>(n_canvas), 0);
        s->accepted.assign(static_cast<size_t>(n_canvas), 0);
        s->history.assign(static_cast<size_t>(std::max(1, s->params.stability_threshold) * n_canvas), -1);
        s->scratch.reserve(n_canvas, n_vocab, s->pool.size());
        *out_sampler = s.release();
    });
}

DGEMMA_API void dgemma_sampler_free(dgemma_sampler *sampler) { delete sampler; }

DGEMMA_API dgemma_status dgemma_sampler_set_fixed(dgemma_sampler *sampler, const uint8_t *mask) {
    return dg::guarded([&] {
        require(sampler, "dgemma_sampler_set_fixed: sampler must not be NULL");
        sampler->fixed.clear();
        if (mask)
            for (int64_t i = 0; i < sampler->n_canvas; ++i) sampler->fixed.push_back(mask[i] ? 1 : 0);
    });
}

DGEMMA_API dgemma_status dgemma_sampler_init_canvas(dgemma_sampler *sampler, int32_t *canvas) {
    return dg::guarded([&] {
        require(sampler && canvas, "dgemma_sampler_init_canvas: arguments must not be NULL");
        ++sampler->canvas_no;
        dg::SamplerView v = sampler->view();
        v.canvas = canvas;
        dg::sampler_init_host(v);
    });
}

DGEMMA_API dgemma_status dgemma_sampler_step(dgemma_sampler *sampler, int32_t step, float *logits, int32_t *canvas,
                                             int32_t *argmax, uint8_t *accepted, int32_t *stop) {
    return dg::guarded([&] {
        require(sampler && logits && canvas, "dgemma_sampler_step: sampler, logits and canvas must not be NULL");
        require(sampler->canvas_no >= 0, "dgemma_sampler_step: call dgemma_sampler_init_canvas first");
        dg::SamplerView v = sampler->view();
        v.canvas = canvas;
        const bool r = dg::sample_step_host(v, step, logits, sampler->pool, sampler->scratch);
        if (argmax) std::copy(sampler->argmax.begin(), sampler->argmax.end(), argmax);
        if (accepted)
            for (int64_t i = 0; i < sampler->n_canvas; ++i) accepted[i] = sampler->accepted[i] ? 1 : 0;
        if (stop) *stop = r ? 1 : 0;
    });
}

}  // extern "C"
