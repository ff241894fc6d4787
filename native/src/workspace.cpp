// The model's pass scratch (one Workspace, grown between passes) and the memory accounting that
// `dgemma info`, admission control and offload planning read.
#include <algorithm>

#include "model.h"
#include "session.h"

namespace dg {

namespace {

struct Widths {
    int64_t q = 0, kv = 0, head_dim = 0;
};

Widths widths(const Hparams &hp) {
    Widths w;
    for (const LayerHparams &L : hp.layers) {
        w.q = std::max<int64_t>(w.q, hp.n_head * L.head_dim);
        w.kv = std::max<int64_t>(w.kv, static_cast<int64_t>(L.n_head_kv) * L.head_dim);
        w.head_dim = std::max<int64_t>(w.head_dim, L.head_dim);
    }
    return w;
}

// F32 values per row of every activation buffer, and I32/F32 values per row of the small ones.
int64_t floats_per_row(const Hparams &hp) {
    const Widths w = widths(hp);
    return 7 * hp.n_embd /* x xn proj dense moe_out sc sc_h */ + 2 * w.q /* q attn */ + 2 * w.kv /* k v */ +
           2 * hp.n_ff /* ff_gate ff_up */ + 2 * hp.n_expert_used /* expert ids, weights */ + 3 /* ids positions modes */;
}

}  // namespace

size_t Model::workspace_bytes(int64_t rows, int64_t logit_rows) const {
    return sizeof(float) * static_cast<size_t>(rows * floats_per_row(hp_) + logit_rows * hp_.n_vocab);
}

Workspace &Model::workspace(int64_t rows, int64_t logit_rows) {
    if (ws_.n_rows >= rows && ws_.n_logit_rows >= logit_rows) return ws_;
    rows = std::max(rows, ws_.n_rows);
    logit_rows = std::max(logit_rows, ws_.n_logit_rows);
    ws_ = Workspace{};
    Backend &be = *backend_;
    const Widths w = widths(hp_);
    auto f32 = [&](int64_t width) { return TensorBuffer(be.alloc(TensorType::F32, width, rows)); };
    auto i32 = [&](int64_t width) { return TensorBuffer(be.alloc(TensorType::I32, width, rows)); };
    ws_.x = f32(hp_.n_embd);
    ws_.xn = f32(hp_.n_embd);
    ws_.q = f32(w.q);
    ws_.k = f32(w.kv);
    ws_.v = f32(w.kv);
    ws_.attn = f32(w.q);
    ws_.proj = f32(hp_.n_embd);
    ws_.ff_gate = f32(hp_.n_ff);
    ws_.ff_up = f32(hp_.n_ff);
    ws_.dense = f32(hp_.n_embd);
    ws_.moe_out = f32(hp_.n_embd);
    ws_.sc = f32(hp_.n_embd);
    ws_.sc_h = f32(hp_.n_embd);
    ws_.expert_ids = i32(hp_.n_expert_used);
    ws_.expert_weight = f32(hp_.n_expert_used);
    ws_.ids = i32(1);
    ws_.positions = i32(1);
    ws_.row_mode = i32(1);
    if (logit_rows) ws_.logits = TensorBuffer(be.alloc(TensorType::F32, hp_.n_vocab, logit_rows));
    ws_.n_rows = rows;
    ws_.n_logit_rows = logit_rows;
    PassLimits l;
    l.rows = rows;
    l.keys = hp_.n_ctx + rows;
    l.n_embd = hp_.n_embd;
    l.max_cols = std::max({hp_.n_embd, hp_.n_ff, hp_.n_ff_exp, w.q});
    l.max_head_dim = w.head_dim;
    l.n_expert = hp_.n_expert;
    l.n_expert_used = hp_.n_expert_used;
    l.n_ff_exp = hp_.n_ff_exp;
    l.canvas = hp_.canvas_length;
    l.n_vocab = hp_.n_vocab;
    be.reserve(l);
    if (host_) {
        host_moe_ = HostMoeScratch{};
        host_moe_.x = TensorBuffer(host_->alloc(TensorType::F32, hp_.n_embd, rows));
        host_moe_.out = TensorBuffer(host_->alloc(TensorType::F32, hp_.n_embd, rows));
        host_moe_.ids = TensorBuffer(host_->alloc(TensorType::I32, hp_.n_expert_used, rows));
        host_moe_.weights = TensorBuffer(host_->alloc(TensorType::F32, hp_.n_expert_used, rows));
        host_moe_.n_rows = rows;
        host_->reserve(l);
    }
    return ws_;
}

size_t Model::sampler_state_bytes() const {
    // Per generating sequence: canvas, argmax, fixed mask, history, stop flag and the soft embedding.
    const int64_t C = hp_.canvas_length;
    return static_cast<size_t>(C) * (4 + 4 + 1 + 4 * std::max(1, hp_.sampler.stability_threshold)) + 4 +
           static_cast<size_t>(C * hp_.n_embd) * sizeof(float);
}

size_t Model::sequence_bytes(int64_t n_tokens) const {
    return session_cache_bytes(hp_, kv_type_, std::min(n_tokens, hp_.n_ctx)) + sampler_state_bytes();
}

MemoryPlan Model::memory_plan(int64_t n_ctx_tokens, int64_t n_batch, int64_t n_sessions) const {
    MemoryPlan m;
    m.weights_mapped = file_->size();
    m.weights_owned = backend_->weight_bytes_owned();
    for (const LayerWeights &w : w_.layers)
        if (w.experts_on_host || w.experts_streamed) m.weights_on_host += w.expert_bytes;
    m.per_session = session_cache_bytes(hp_, kv_type_, std::min(n_ctx_tokens, hp_.n_ctx));
    const int64_t C = hp_.canvas_length, rows = std::max(C * n_batch, std::min(n_ctx_tokens, kEncoderChunk));
    m.per_batch = workspace_bytes(rows, C * n_batch) + static_cast<size_t>(n_batch) * sampler_state_bytes();
    m.total = m.weights_mapped + m.weights_owned + static_cast<size_t>(n_sessions) * m.per_session + m.per_batch;
    return m;
}

}  // namespace dg
