// Continuous batching at step granularity. The scheduler owns the running sequences and steps them:
// each step is one pass whose decoder segments are the canvases being denoised (at most max_batch,
// in turn) and whose encoder segments are finished canvases being committed and one chunk of a
// newcomer's prompt. Sequences join and leave between steps; each gets the tokens it would get alone
// (its rows are computed as if it ran alone; its random draws are its own). Admission is by memory:
// a sequence holds its KV cache (every canvas it may commit) and its sampler state. Finished
// conversations stay cached, keyed by their token ids (bounded, least recently used evicted), so that
// a request extending one prefills only its new tokens.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <set>
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
    std::function<void()> on_done;  // after the result is final (stats written)
};

struct GenerateStats {
    int64_t n_tokens = 0;
    int n_steps = 0, n_canvases = 0;
    Finish finish = Finish::Length;
    int64_t n_prompt_cached = 0;  // prompt tokens taken from the prefix cache instead of prefilled
    double prefill_seconds = 0, decode_seconds = 0, sample_seconds = 0, commit_seconds = 0;  // shared passes count fully
};

// One sequence. Either `s` is a session the caller prefilled (borrowed), or `prompt` holds the ids
// the scheduler prefills into a session of its own (possibly resumed from the prefix cache).
struct GenerateJob {
    Session *s = nullptr;
    std::vector<int32_t> prompt;
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

struct SchedulerOptions {
    int max_batch = 16;             // canvases per decoder pass at most
    int64_t prefill_chunk = 512;    // prompt tokens per pass for a newcomer
    uint64_t memory_budget = 0;     // bytes of KV caches and sampler state, running and cached (0: no limit)
    int prefix_cache = 0;           // finished conversations kept for reuse
};

struct SchedulerStats {
    int64_t passes = 0, decoder_passes = 0, canvas_steps = 0;  // canvas_steps: decoder segments run (sum of steps)
    int64_t prefill_tokens = 0, cached_tokens = 0;             // prompt tokens encoded / reused from the cache
    int64_t waiting = 0, running = 0, cached = 0;
    uint64_t memory_used = 0;
};

class Scheduler {
public:
    Scheduler(Model &m, const SchedulerOptions &o);
    ~Scheduler();

    // Validates and queues a sequence (thread-safe); returns its id. The job must stay alive and
    // unmoved until its on_done has run (or the scheduler is destroyed).
    int64_t submit(GenerateJob *job);
    // Cancels a queued or running sequence at the next step (thread-safe); unknown ids are ignored.
    void cancel(int64_t id);
    // One pass. `lock` holds the model mutex; it is released around the callbacks. Returns whether
    // sequences remain (queued or running).
    bool step(std::unique_lock<std::mutex> &lock);
    SchedulerStats stats();

private:
    struct Seq;
    void admit();
    void start_canvas(Seq &q);
    void retire(std::unique_ptr<Seq> q);
    uint64_t seq_bytes(const GenerateJob &j) const;
    void validate(const GenerateJob &j) const;

    Model &m_;
    SchedulerOptions o_;
    std::mutex mu_;  // the queue, cancellations and stats (submit/cancel come from other threads)
    std::deque<std::unique_ptr<Seq>> waiting_;
    std::set<int64_t> cancelled_;
    std::vector<std::unique_ptr<Seq>> running_;
    size_t turn_ = 0;  // fair order: the decoder pass starts at this running sequence
    int64_t next_id_ = 0;
    struct Cached {
        std::vector<int32_t> tokens;
        std::unique_ptr<Session> s;
        uint64_t bytes = 0;
    };
    std::list<Cached> cache_;  // most recently used first
    SchedulerStats stats_;
};

}  // namespace dg
