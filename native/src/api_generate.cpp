// C API: generation and the standalone sampler (dgemma.h, section Generation).
#include <memory>
#include <mutex>
#include <vector>

#include "api_types.h"
#include "dgemma.h"
#include "error.h"
#include "generate.h"
#include "model.h"
#include "sampler.h"
#include "session.h"


struct dgemma_sampler {
    dg::ThreadPool pool{1};
    std::unique_ptr<dg::RandomSource> random;
    std::unique_ptr<dg::Sampler> sampler;
};

namespace {

dg::SamplerParams to_internal(const dgemma_sampler_params &p) {
    dg::SamplerParams s;
    s.max_steps = p.max_steps;
    s.t_min = p.t_min;
    s.t_max = p.t_max;
    s.entropy_bound = p.entropy_bound;
    s.stability_threshold = p.stability_threshold;
    s.confidence_threshold = p.confidence_threshold;
    return s;
}

void install_override(dg::RandomSource &r, dgemma_random_fn fn, void *user) {
    if (fn) r.set_override([fn, user](int kind, int64_t n, void *out) { fn(user, kind, n, out); });
}

void require(bool ok, const char *message) {
    if (!ok) throw dg::Error(DGEMMA_ERR_INVALID_ARGUMENT, message);
}

}  // namespace

extern "C" {

DGEMMA_API dgemma_sampler_params dgemma_model_sampler_defaults(const dgemma_model *model) {
    dgemma_sampler_params p{48, 0.4f, 0.8f, 0.1f, 1, 0.005f, 0};
    if (model) {
        const dg::SamplerDefaults &d = model->model->hparams().sampler;
        p = {d.max_steps, d.t_min, d.t_max, d.entropy_bound, d.stability_threshold, d.confidence_threshold, 0};
    }
    return p;
}

namespace {

// Everything one sequence of a generate call needs beyond the core's job: its random source.
struct JobOwner {
    std::unique_ptr<dg::RandomSource> random;
};

dg::GenerateJob make_job(dgemma_session *session, const dgemma_sampler_params &params, int64_t max_new_tokens,
                         const dgemma_generate_options *options, int32_t *out_tokens, JobOwner &owner) {
    require(session && out_tokens, "dgemma generate: session and out_tokens must not be NULL");
    dgemma_generate_options opt{};
    if (options) opt = *options;
    require(opt.n_eos >= 0 && (opt.eos_ids || opt.n_eos == 0), "dgemma generate: bad EOS list");
    dg::Session &s = *session->session;
    owner.random = std::make_unique<dg::RandomSource>(params.seed, s.model.hparams().n_vocab);
    install_override(*owner.random, opt.random, opt.user);
    dg::GenerateJob job{&s, to_internal(params), owner.random.get(), max_new_tokens,
                        std::vector<int32_t>(opt.eos_ids, opt.eos_ids + opt.n_eos), {}, out_tokens, {}};
    if (opt.on_step)
        job.hooks.on_step = [opt](int step, const int32_t *d, int64_t n) { return opt.on_step(opt.user, step, d, n) != 0; };
    if (opt.on_canvas)
        job.hooks.on_canvas = [opt](const int32_t *t, int64_t n) { return opt.on_canvas(opt.user, t, n) != 0; };
    return job;
}

void store(const dg::GenerateStats &st, dgemma_generate_result *result) {
    *result = {st.n_tokens, st.n_steps, st.n_canvases, static_cast<int32_t>(st.finish),
               st.decode_seconds, st.sample_seconds, st.commit_seconds};
}

}  // namespace

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
        std::vector<JobOwner> owners(static_cast<size_t>(n_sequences));
        std::vector<dg::GenerateJob> jobs;
        for (int32_t i = 0; i < n_sequences; ++i)
            jobs.push_back(make_job(sessions[i], params[i], max_new_tokens, options ? &options[i] : nullptr,
                                    out_tokens[i], owners[i]));
        std::lock_guard<std::mutex> lock(jobs[0].s->model.mutex());
        dg::generate(jobs);
        for (int32_t i = 0; i < n_sequences; ++i) store(jobs[i].stats, &results[i]);
    });
}

DGEMMA_API dgemma_status dgemma_sampler_new(int64_t n_canvas, int64_t n_vocab, const dgemma_sampler_params *params,
                                            dgemma_random_fn random, void *user, dgemma_sampler **out_sampler) {
    return dg::guarded([&] {
        require(params && out_sampler, "dgemma_sampler_new: params and out_sampler must not be NULL");
        require(n_canvas > 0 && n_vocab > 0 && n_vocab <= INT32_MAX, "dgemma_sampler_new: sizes must be positive");
        *out_sampler = nullptr;
        auto s = std::make_unique<dgemma_sampler>();
        s->random = std::make_unique<dg::RandomSource>(params->seed, n_vocab);
        install_override(*s->random, random, user);
        s->sampler = std::make_unique<dg::Sampler>(n_canvas, n_vocab, to_internal(*params), *s->random, s->pool);
        *out_sampler = s.release();
    });
}

DGEMMA_API void dgemma_sampler_free(dgemma_sampler *sampler) { delete sampler; }

DGEMMA_API dgemma_status dgemma_sampler_init_canvas(dgemma_sampler *sampler, int32_t *canvas) {
    return dg::guarded([&] {
        require(sampler && canvas, "dgemma_sampler_init_canvas: arguments must not be NULL");
        sampler->sampler->init_canvas(canvas);
    });
}

DGEMMA_API dgemma_status dgemma_sampler_step(dgemma_sampler *sampler, int32_t step, float *logits, int32_t *canvas,
                                             int32_t *argmax, uint8_t *accepted, int32_t *stop) {
    return dg::guarded([&] {
        require(sampler && logits && canvas, "dgemma_sampler_step: sampler, logits and canvas must not be NULL");
        const dg::StepResult r = sampler->sampler->step(step, logits, canvas);
        if (argmax) std::copy(sampler->sampler->argmax().begin(), sampler->sampler->argmax().end(), argmax);
        if (accepted) std::copy(sampler->sampler->accepted().begin(), sampler->sampler->accepted().end(), accepted);
        if (stop) *stop = r.stop ? 1 : 0;
    });
}

}  // extern "C"
