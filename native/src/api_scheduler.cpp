// C API: the scheduler (dgemma.h, section Scheduler). Each request's job, copies of what its options
// point to, and its result pointer live here until its on_done.
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "api_jobs.h"
#include "api_types.h"
#include "dgemma.h"
#include "error.h"
#include "scheduler.h"

namespace {

struct Request {
    dg::GenerateJob job;
    std::vector<int8_t> fixed;
    std::vector<int32_t> fixed_tokens;
    std::vector<uint64_t> draws;
    dgemma_generate_result *result = nullptr;
    int64_t id = -1;
};

}  // namespace

struct dgemma_scheduler {
    dgemma_model *owner = nullptr;
    std::unique_ptr<dg::Scheduler> sched;
    std::mutex step_mu;  // one stepping thread at a time
    std::mutex requests_mu;
    std::map<int64_t, std::unique_ptr<Request>> requests;
};

using dg::require;

extern "C" {

DGEMMA_API dgemma_scheduler_params dgemma_scheduler_default_params(void) { return {8, 256, 0, 0}; }

DGEMMA_API dgemma_status dgemma_scheduler_new(dgemma_model *model, const dgemma_scheduler_params *params,
                                              dgemma_scheduler **out_scheduler) {
    return dg::guarded([&] {
        require(model && out_scheduler, "dgemma_scheduler_new: model and out_scheduler must not be NULL");
        *out_scheduler = nullptr;
        const dgemma_scheduler_params p = params ? *params : dgemma_scheduler_default_params();
        require(p.max_batch > 0, "dgemma_scheduler_new: max_batch must be positive");
        require(p.prefill_chunk > 0 && p.prefill_chunk <= dg::Model::kEncoderChunk,
                "dgemma_scheduler_new: prefill_chunk must be in 1..512");
        require(p.prefix_cache >= 0, "dgemma_scheduler_new: prefix_cache must not be negative");
        dg::SchedulerOptions o;
        o.max_batch = p.max_batch;
        o.prefill_chunk = p.prefill_chunk;
        o.memory_budget = p.memory_budget;
        o.prefix_cache = p.prefix_cache;
        auto s = std::make_unique<dgemma_scheduler>();
        s->owner = model;
        s->sched = std::make_unique<dg::Scheduler>(*model->model, o);
        *out_scheduler = s.release();
    });
}

DGEMMA_API void dgemma_scheduler_free(dgemma_scheduler *scheduler) {
    if (!scheduler) return;
    std::lock_guard<std::mutex> step(scheduler->step_mu);
    std::lock_guard<std::mutex> lock(scheduler->owner->model->mutex());  // its sessions free backend memory
    scheduler->sched.reset();
    delete scheduler;
}

DGEMMA_API dgemma_status dgemma_scheduler_submit(dgemma_scheduler *scheduler, const int32_t *prompt, int64_t n_prompt,
                                                 const dgemma_sampler_params *params, int64_t max_new_tokens,
                                                 const dgemma_generate_options *options, int32_t *out_tokens,
                                                 dgemma_generate_result *result, int64_t *out_id) {
    return dg::guarded([&] {
        require(scheduler && params && result && out_id, "dgemma_scheduler_submit: scheduler, params, result and out_id must not be NULL");
        require(n_prompt > 0 && prompt, "dgemma_scheduler_submit: the prompt is empty");
        dg::ModelCall call(scheduler->owner);
        auto r = std::make_unique<Request>();
        r->job = dg::make_job(*scheduler->owner, *params, max_new_tokens, options, out_tokens, r->fixed);
        r->job.prompt.assign(prompt, prompt + n_prompt);
        const int64_t C = scheduler->owner->model->hparams().canvas_length;
        if (r->job.fixed_tokens) {
            r->fixed_tokens.assign(r->job.fixed_tokens, r->job.fixed_tokens + C);
            r->job.fixed_tokens = r->fixed_tokens.data();
        }
        if (r->job.draws.table) {
            r->draws.assign(r->job.draws.table, r->job.draws.table + r->job.draws.table_size);
            r->job.draws.table = r->draws.data();
        }
        r->result = result;
        const dgemma_done_fn on_done = options ? options->on_done : nullptr;
        void *user = options ? options->user : nullptr;
        Request *req = r.get();
        std::lock_guard<std::mutex> lock(scheduler->requests_mu);  // on_done cannot run before the entry exists
        req->job.hooks.on_done = [scheduler, req, on_done, user] {
            dg::store_result(req->job.stats, req->result);
            if (on_done) on_done(user, req->result);
            std::lock_guard<std::mutex> g(scheduler->requests_mu);
            scheduler->requests.erase(req->id);  // frees req and this function: nothing after it
        };
        req->id = scheduler->sched->submit(&req->job);
        *out_id = req->id;
        scheduler->requests[req->id] = std::move(r);
    });
}

DGEMMA_API dgemma_status dgemma_scheduler_cancel(dgemma_scheduler *scheduler, int64_t id) {
    return dg::guarded([&] {
        require(scheduler != nullptr, "dgemma_scheduler_cancel: scheduler must not be NULL");
        scheduler->sched->cancel(id);
    });
}

DGEMMA_API dgemma_status dgemma_scheduler_step(dgemma_scheduler *scheduler, int32_t *out_pending) {
    return dg::guarded([&] {
        require(scheduler != nullptr, "dgemma_scheduler_step: scheduler must not be NULL");
        dg::ModelCall call(scheduler->owner);
        std::lock_guard<std::mutex> step(scheduler->step_mu);
        std::unique_lock<std::mutex> lock(scheduler->owner->model->mutex());
        const bool pending = scheduler->sched->step(lock);
        if (out_pending) *out_pending = pending ? 1 : 0;
    });
}

DGEMMA_API dgemma_status dgemma_scheduler_stats_get(dgemma_scheduler *scheduler, dgemma_scheduler_stats *out) {
    return dg::guarded([&] {
        require(scheduler && out, "dgemma_scheduler_stats_get: scheduler and out must not be NULL");
        const dg::SchedulerStats s = scheduler->sched->stats();
        *out = {s.passes, s.decoder_passes, s.canvas_steps, s.prefill_tokens, s.cached_tokens,
                s.waiting,  s.running,        s.cached,       s.memory_used};
    });
}

}  // extern "C"
