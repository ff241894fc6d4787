#include "scheduler.h"

#include <algorithm>
#include <chrono>
#include <string>

#include "canvas_output.h"
#include "error.h"

namespace dg {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

int64_t n_canvases(const GenerateJob &j, int64_t C) { return (j.max_new_tokens + C - 1) / C; }

}  // namespace

enum class Phase { Prefill, Denoise, Commit, FinalCommit, Done };

// A sequence while it runs; its sampler state lives on the backend (see SampleArgs).
struct Scheduler::Seq {
    int64_t id = 0;
    GenerateJob *job = nullptr;
    std::unique_ptr<Session> owned;  // null when the caller lent the session
    Session *s = nullptr;
    TensorBuffer canvas, argmax, fixed, history, stop, sc, table, ids;
    std::vector<int32_t> committed;  // the finished canvas's argmax (or a draft), on the host
    std::vector<int32_t> tokens;     // what the session's cache holds (owned sessions: the prefix cache key)
    std::vector<int32_t> final_ids;  // the last canvas's kept tokens, committed so that the cache holds them
    Phase phase = Phase::Prefill;
    int64_t prompt_pos = 0, chunk = 0, written = 0, canvas_no = 0;
    int step = 0, step_no = 0;       // next step counting down N .. 1; the step just run counting up
    bool has_sc = false;             // `sc` holds the previous step's soft embedding
    bool canvas_done = false;        // the canvas finished in the last pass (argmax in `committed`)
    bool stepped = false;            // decoded in the last pass (on_step is due)
    uint64_t bytes = 0;
};

Scheduler::Scheduler(Model &m, const SchedulerOptions &o) : m_(m), o_(o) {
    if (o_.max_batch <= 0 || o_.prefill_chunk <= 0 || o_.prefix_cache < 0)
        throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "scheduler: max_batch and prefill_chunk must be positive, prefix_cache >= 0");
    o_.prefill_chunk = std::min(o_.prefill_chunk, Model::kEncoderChunk);
}

Scheduler::~Scheduler() = default;

uint64_t Scheduler::seq_bytes(const GenerateJob &j) const {
    const int64_t C = m_.hparams().canvas_length;
    const int64_t base = j.s ? j.s->n_past : static_cast<int64_t>(j.prompt.size());
    return m_.sequence_bytes(base + n_canvases(j, C) * C);
}

void Scheduler::validate(const GenerateJob &j) const {
    const Hparams &hp = m_.hparams();
    check_sampler_params(j.params);
    if (j.max_new_tokens <= 0)
        throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "max_new_tokens must be positive, got " + std::to_string(j.max_new_tokens));
    for (int32_t e : j.eos_ids)
        if (e < 0 || e >= hp.n_vocab) throw Error(DGEMMA_ERR_OUT_OF_RANGE, "EOS id " + std::to_string(e) + " is outside the vocabulary");
    if (!j.s) {
        if (j.prompt.empty()) throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "the prompt is empty");
        m_.check_ids(j.prompt.data(), static_cast<int64_t>(j.prompt.size()), "prompt");
    }
    const int64_t C = hp.canvas_length, n = n_canvases(j, C);
    const int64_t past = j.s ? j.s->n_past : static_cast<int64_t>(j.prompt.size());
    if (past > hp.n_ctx || n > (hp.n_ctx - past) / C)
        throw Error(DGEMMA_ERR_OUT_OF_RANGE, std::to_string(j.max_new_tokens) + " new tokens (" + std::to_string(n) +
                                                 " canvases of " + std::to_string(C) + ") after " + std::to_string(past) +
                                                 " prompt tokens exceed the context length " + std::to_string(hp.n_ctx));
    if (j.fixed && j.fixed_tokens)
        for (int64_t i = 0; i < C; ++i)
            if (j.fixed[i] && (j.fixed_tokens[i] < 0 || j.fixed_tokens[i] >= hp.n_vocab))
                throw Error(DGEMMA_ERR_OUT_OF_RANGE, "fixed token at canvas position " + std::to_string(i) + " is outside the vocabulary");
}

int64_t Scheduler::submit(GenerateJob *job) {
    validate(*job);
    auto q = std::make_unique<Seq>();
    q->job = job;
    q->bytes = seq_bytes(*job);
    job->stats = GenerateStats{};
    std::lock_guard<std::mutex> lock(mu_);
    q->id = next_id_++;
    const int64_t id = q->id;
    waiting_.push_back(std::move(q));
    return id;
}

void Scheduler::cancel(int64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_.insert(id);
}

SchedulerStats Scheduler::stats() {
    std::lock_guard<std::mutex> lock(mu_);
    SchedulerStats s = stats_;
    s.waiting = static_cast<int64_t>(waiting_.size());
    return s;
}

// Moves queued sequences into the running set while their memory fits (evicting cached
// conversations first); one always runs. A prompt extending a cached conversation resumes its session.
void Scheduler::admit() {
    const Hparams &hp = m_.hparams();
    const int64_t C = hp.canvas_length;
    Backend &be = m_.backend();
    for (;;) {
        std::unique_ptr<Seq> q;
        {
            std::lock_guard<std::mutex> lock(mu_);
            // Up to 4 x max_batch admitted: those prefilling or committing use no decoder rows, and
            // beyond max_batch the canvases take turns; the rest wait without holding memory.
            if (waiting_.empty() || static_cast<int64_t>(running_.size()) >= 4 * static_cast<int64_t>(o_.max_batch)) break;
            uint64_t used = 0;
            for (const auto &r : running_) used += r->bytes;
            for (const Cached &c : cache_) used += c.bytes;
            const uint64_t need = waiting_.front()->bytes;
            while (o_.memory_budget && used + need > o_.memory_budget && !cache_.empty()) {
                used -= cache_.back().bytes;
                cache_.pop_back();
            }
            if (o_.memory_budget && used + need > o_.memory_budget && !running_.empty()) break;
            q = std::move(waiting_.front());
            waiting_.pop_front();
        }
        GenerateJob &j = *q->job;
        if (j.s) {
            q->s = j.s;
        } else {
            auto best = cache_.end();
            for (auto it = cache_.begin(); it != cache_.end(); ++it)
                if (it->tokens.size() <= j.prompt.size() && std::equal(it->tokens.begin(), it->tokens.end(), j.prompt.begin()) &&
                    (best == cache_.end() || it->tokens.size() > best->tokens.size()))
                    best = it;
            if (best != cache_.end()) {
                q->owned = std::move(best->s);
                q->tokens = std::move(best->tokens);
                cache_.erase(best);
            } else {
                q->owned = std::make_unique<Session>(m_);
            }
            q->s = q->owned.get();
            q->prompt_pos = static_cast<int64_t>(q->tokens.size());
            j.stats.n_prompt_cached = q->prompt_pos;
            std::lock_guard<std::mutex> lock(mu_);
            stats_.cached_tokens += q->prompt_pos;
        }
        const int64_t rest = j.s ? 0 : static_cast<int64_t>(j.prompt.size()) - q->prompt_pos;
        q->s->reserve(q->s->n_past + rest + n_canvases(j, C) * C);
        const int S = std::max(1, j.params.stability_threshold);
        q->canvas = TensorBuffer(be.alloc(TensorType::I32, C));
        q->argmax = TensorBuffer(be.alloc(TensorType::I32, C));
        q->history = TensorBuffer(be.alloc(TensorType::I32, C, S));
        q->stop = TensorBuffer(be.alloc(TensorType::I32, 1));
        q->sc = TensorBuffer(be.alloc(TensorType::F32, hp.n_embd, C));
        if (!j.s) q->ids = TensorBuffer(be.alloc(TensorType::I32, 1, std::max(o_.prefill_chunk, C)));  // rows of one id
        if (j.fixed) {
            q->fixed = TensorBuffer(be.alloc(TensorType::I8, C));
            be.upload(*q->fixed, j.fixed, static_cast<size_t>(C));
        }
        if (j.draws.table) {
            q->table = TensorBuffer(be.alloc(TensorType::I64, j.draws.table_size));
            be.upload(*q->table, j.draws.table, static_cast<size_t>(j.draws.table_size) * sizeof(uint64_t));
        }
        q->committed.resize(static_cast<size_t>(C));
        if (rest > 0) q->phase = Phase::Prefill;
        else start_canvas(*q);
        std::lock_guard<std::mutex> lock(mu_);
        running_.push_back(std::move(q));
    }
}

void Scheduler::start_canvas(Seq &q) {
    GenerateJob &j = *q.job;
    Backend &be = m_.backend();
    const int64_t C = m_.hparams().canvas_length;
    const bool fixed = q.fixed && q.canvas_no == 0;  // the fixed mask applies to the first canvas
    if (fixed) be.upload(*q.canvas, j.fixed_tokens, static_cast<size_t>(C) * sizeof(int32_t));
    be.sampler_init(*q.canvas, fixed ? *q.fixed : Tensor{}, *q.history, j.draws.seed, q.table ? *q.table : Tensor{},
                    q.canvas_no, j.params, m_.hparams().n_vocab);
    q.step = j.params.max_steps;
    q.has_sc = false;
    q.phase = Phase::Denoise;
}

namespace {

// Takes the finished canvas's argmax into the output; true when the sequence is complete. The
// canvases consume max_new_tokens by position: a hole's positions after its EOS are dropped from
// the output but still count (canvas_output.h). `kept` receives what the cache should hold of this
// canvas when it is the last (its tokens, then the EOS).
bool finish_canvas(GenerateJob &j, const std::vector<int32_t> &amax, int64_t canvas_no, int64_t &written, int64_t C,
                   std::vector<int32_t> &kept) {
    const int64_t start = canvas_no * C;  // positions consumed by the canvases before this one
    // Only the kept positions (the first `room`) decide: an EOS past max_new_tokens was cut off
    // with the rest, so such a canvas finishes by length.
    const int64_t room = std::min(C, j.max_new_tokens - start);
    const int8_t *fixed = canvas_no == 0 ? j.fixed : nullptr;  // the mask applies to the first canvas
    const CanvasOutput o = canvas_output(amax.data(), fixed, room, j.eos_ids, j.out_tokens + written);
    const int32_t *fresh = j.out_tokens + written;
    written += o.n_tokens;
    ++j.stats.n_canvases;
    const bool stop_requested = j.hooks.on_canvas && j.hooks.on_canvas(fresh, o.n_tokens);
    if (o.eos) j.stats.finish = Finish::Eos;
    else if (start + room >= j.max_new_tokens) j.stats.finish = Finish::Length;
    else if (stop_requested) j.stats.finish = Finish::Stopped;
    else return false;
    if (fixed) kept.assign(fresh, fresh + o.n_tokens);  // holes may have dropped positions
    else kept.assign(amax.begin(), amax.begin() + o.n_tokens + (o.eos ? 1 : 0));
    return true;
}

}  // namespace

bool Scheduler::step(std::unique_lock<std::mutex> &lock) {
    const Hparams &hp = m_.hparams();
    const int64_t C = hp.canvas_length;
    Backend &be = m_.backend();
    admit();
    {
        std::lock_guard<std::mutex> g(mu_);
        for (auto it = waiting_.begin(); it != waiting_.end();) {  // cancelled before admission: never ran
            if (cancelled_.count((*it)->id)) {
                (*it)->job->stats.finish = Finish::Cancelled;
                (*it)->phase = Phase::Done;
                running_.push_back(std::move(*it));
                it = waiting_.erase(it);
            } else {
                ++it;
            }
        }
        for (auto &q : running_)
            if (cancelled_.count(q->id) && q->phase != Phase::Done) {
                q->job->stats.finish = Finish::Cancelled;  // the canvas in progress is dropped
                q->phase = Phase::Done;
            }
        cancelled_.clear();
    }

    // The pass: canvases being denoised (at most max_batch, taking turns), then encoder segments:
    // finished canvases to commit, last canvases for the cache, one chunk of one newcomer's prompt.
    std::vector<PassItem> items;
    std::vector<Seq *> dec, enc;
    const size_t n = running_.size();
    for (size_t k = 0; k < n && static_cast<int>(dec.size()) < o_.max_batch; ++k) {
        Seq &q = *running_[(turn_ + k) % n];
        if (q.phase != Phase::Denoise) continue;
        items.push_back({q.s, PassMode::Decoder, *q.canvas, C, q.has_sc ? *q.sc : Tensor{}});
        dec.push_back(&q);
    }
    turn_ = n ? (turn_ + 1) % n : 0;
    bool prefilling = false;
    for (auto &qp : running_) {
        Seq &q = *qp;
        if (q.phase == Phase::Commit) {
            items.push_back({q.s, PassMode::Encoder, *q.argmax, C, {}});  // the argmax, not the last draw
        } else if (q.phase == Phase::FinalCommit) {
            q.chunk = static_cast<int64_t>(q.final_ids.size());
            be.upload(q.ids->rows(0, q.chunk), q.final_ids.data(), static_cast<size_t>(q.chunk) * sizeof(int32_t));
            items.push_back({q.s, PassMode::Encoder, q.ids->rows(0, q.chunk), q.chunk, {}});
        } else if (q.phase == Phase::Prefill && !prefilling) {
            prefilling = true;
            const std::vector<int32_t> &p = q.job->prompt;
            q.chunk = std::min<int64_t>(o_.prefill_chunk, static_cast<int64_t>(p.size()) - q.prompt_pos);
            be.upload(q.ids->rows(0, q.chunk), p.data() + q.prompt_pos, static_cast<size_t>(q.chunk) * sizeof(int32_t));
            items.push_back({q.s, PassMode::Encoder, q.ids->rows(0, q.chunk), q.chunk, {}});
            std::lock_guard<std::mutex> g(mu_);
            stats_.prefill_tokens += q.chunk;
        } else {
            continue;
        }
        enc.push_back(&q);
    }

    if (!items.empty()) {
        int64_t rows = 0;
        for (const PassItem &it : items) rows += it.n;
        const int64_t logit_rows = static_cast<int64_t>(dec.size()) * C;
        auto t0 = Clock::now();
        Workspace &ws = m_.workspace(rows, logit_rows);
        m_.forward(ws, items);
        const double dt = seconds_since(t0);
        {
            std::lock_guard<std::mutex> g(mu_);
            ++stats_.passes;
            stats_.decoder_passes += dec.empty() ? 0 : 1;
            stats_.canvas_steps += static_cast<int64_t>(dec.size());
        }
        for (size_t a = 0; a < dec.size(); ++a) {
            Seq &q = *dec[a];
            GenerateJob &j = *q.job;
            const int64_t row0 = static_cast<int64_t>(a) * C;
            j.stats.decode_seconds += dt;
            t0 = Clock::now();
            SampleArgs sa;
            sa.logits = ws.logits->rows(row0, C);
            sa.params = &j.params;
            sa.step = q.step;
            sa.canvas_no = q.canvas_no;
            sa.seed = j.draws.seed;
            sa.draw_table = q.table ? *q.table : Tensor{};
            sa.canvas = *q.canvas;
            sa.argmax = *q.argmax;
            sa.fixed = q.fixed && q.canvas_no == 0 ? *q.fixed : Tensor{};
            sa.history = *q.history;
            sa.stop = *q.stop;
            be.sample(sa);
            int32_t stop = 0;
            be.download(*q.stop, &stop, sizeof stop);
            j.stats.sample_seconds += seconds_since(t0);
            ++j.stats.n_steps;
            q.stepped = true;
            q.step_no = j.params.max_steps - q.step + 1;
            q.canvas_done = stop || --q.step == 0;
            if (q.canvas_done || (j.hooks.on_step && j.hooks.drafts))
                be.download(*q.argmax, q.committed.data(), static_cast<size_t>(C) * sizeof(int32_t));
            if (!q.canvas_done) {  // this step's processed logits condition the next; taken now, before
                                   // the lock is released and another pass may overwrite the workspace
                m_.soft_embedding(ws.logits->rows(row0, C), *q.sc);
                q.has_sc = true;
            }
        }
        for (Seq *qp : enc) {
            Seq &q = *qp;
            GenerateJob &j = *q.job;
            if (q.phase == Phase::Prefill) {
                j.stats.prefill_seconds += dt;
                q.tokens.insert(q.tokens.end(), j.prompt.begin() + q.prompt_pos, j.prompt.begin() + q.prompt_pos + q.chunk);
                q.prompt_pos += q.chunk;
                if (q.prompt_pos == static_cast<int64_t>(j.prompt.size())) start_canvas(q);
            } else if (q.phase == Phase::Commit) {
                j.stats.commit_seconds += dt;
                if (q.owned) q.tokens.insert(q.tokens.end(), q.committed.begin(), q.committed.end());
                start_canvas(q);
            } else {  // FinalCommit
                j.stats.commit_seconds += dt;
                q.tokens.insert(q.tokens.end(), q.final_ids.begin(), q.final_ids.end());
                q.phase = Phase::Done;
            }
        }
    }

    // Callbacks run without the model lock: they may call back into the model.
    lock.unlock();
    for (Seq *qp : dec) {
        Seq &q = *qp;
        GenerateJob &j = *q.job;
        q.stepped = false;
        if (q.phase == Phase::Done) continue;
        if (j.hooks.on_step && j.hooks.on_step(q.step_no, j.hooks.drafts ? q.committed.data() : nullptr, C)) {
            j.stats.finish = Finish::Cancelled;  // the canvas in progress is dropped
            q.phase = Phase::Done;
            continue;
        }
        if (!q.canvas_done) continue;
        q.canvas_done = false;
        if (!finish_canvas(j, q.committed, q.canvas_no++, q.written, C, q.final_ids)) q.phase = Phase::Commit;
        else if (q.owned && o_.prefix_cache > 0 && !q.final_ids.empty() && j.stats.finish != Finish::Stopped) q.phase = Phase::FinalCommit;
        else q.phase = Phase::Done;
    }
    lock.lock();
    std::vector<std::unique_ptr<Seq>> done;
    {
        std::lock_guard<std::mutex> g(mu_);
        for (auto &qp : running_)
            if (qp->phase == Phase::Done) done.push_back(std::move(qp));
        running_.erase(std::remove(running_.begin(), running_.end(), nullptr), running_.end());
    }
    std::vector<GenerateJob *> finished;
    for (auto &q : done) {
        finished.push_back(q->job);
        retire(std::move(q));
    }
    if (!finished.empty()) {
        lock.unlock();
        for (GenerateJob *j : finished)
            if (j->hooks.on_done) {
                const std::function<void()> done_fn = j->hooks.on_done;  // it may free the job
                done_fn();
            }
        lock.lock();
    }
    std::lock_guard<std::mutex> g(mu_);
    stats_.running = static_cast<int64_t>(running_.size());
    stats_.cached = static_cast<int64_t>(cache_.size());
    stats_.memory_used = 0;
    for (const auto &r : running_) stats_.memory_used += r->bytes;
    for (const Cached &c : cache_) stats_.memory_used += c.bytes;
    return !waiting_.empty() || !running_.empty();
}

// A finished sequence: its result, then its session into the prefix cache (or freed).
void Scheduler::retire(std::unique_ptr<Seq> q) {
    q->job->stats.n_tokens = q->written;
    if (!q->owned || o_.prefix_cache == 0 || q->job->stats.finish == Finish::Cancelled || q->tokens.empty()) return;
    Cached c;
    c.bytes = q->owned->cache_bytes();
    c.tokens = std::move(q->tokens);
    c.s = std::move(q->owned);
    std::lock_guard<std::mutex> g(mu_);
    cache_.push_front(std::move(c));
    while (static_cast<int>(cache_.size()) > o_.prefix_cache) cache_.pop_back();
}

}  // namespace dg
