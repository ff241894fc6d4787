#include "session.h"

#include <algorithm>

namespace dg {

namespace {
constexpr int64_t kEncoderChunk = 512;  // tokens per encoder pass; longer prompts run in chunks
}

Workspace::Workspace(Model &m, int64_t rows) : be(m.backend()), n_max(rows) {
    const Hparams &hp = m.hparams();
    int64_t max_q = 0, max_kv = 0;
    for (const LayerHparams &L : hp.layers) {
        max_q = std::max<int64_t>(max_q, hp.n_head * L.head_dim);
        max_kv = std::max<int64_t>(max_kv, static_cast<int64_t>(L.n_head_kv) * L.head_dim);
    }
    auto alloc = [&](Buffer &b, int64_t per_token) { b = be.alloc(static_cast<size_t>(n_max * per_token)); };
    alloc(x, hp.n_embd);
    alloc(xn, hp.n_embd);
    alloc(q, max_q);
    alloc(k, max_kv);
    alloc(v, max_kv);
    alloc(attn, max_q);
    alloc(proj, hp.n_embd);
    alloc(ff_gate, hp.n_ff);
    alloc(ff_up, hp.n_ff);
    alloc(dense, hp.n_embd);
    alloc(moe_out, hp.n_embd);
    alloc(router_logits, hp.n_expert);
    alloc(sc, hp.n_embd);
    alloc(sc_h, hp.n_embd);
    alloc(expert_weight, hp.n_expert_used);
    expert_ids.resize(static_cast<size_t>(n_max * hp.n_expert_used));
}

Workspace::~Workspace() {
    for (Buffer *b : {&x, &xn, &q, &k, &v, &attn, &proj, &ff_gate, &ff_up, &dense, &moe_out, &router_logits, &sc,
                      &sc_h, &expert_weight})
        be.free(*b);
}

Session::Session(Model &m)
    : model(m), be(m.backend()), ws(m, std::max(m.hparams().canvas_length, kEncoderChunk)) {
    const Hparams &hp = m.hparams();
    cache.resize(hp.layers.size());
    for (size_t i = 0; i < hp.layers.size(); ++i) {
        const LayerHparams &L = hp.layers[i];
        LayerCache &c = cache[i];
        if (L.sliding) {
            // A sliding layer only ever reads the last window - 1 cached positions.
            c.capacity = hp.sliding_window - 1;
            const size_t n = static_cast<size_t>(c.capacity * L.n_head_kv * L.head_dim);
            if (n) {
                c.k = be.alloc(n);
                c.v = be.alloc(n);
            }
        }
    }
}

Session::~Session() {
    for (LayerCache &c : cache) {
        be.free(c.k);
        be.free(c.v);
    }
}

void Session::reserve_cache(int64_t n_total) {
    const Hparams &hp = model.hparams();
    for (size_t i = 0; i < hp.layers.size(); ++i) {
        const LayerHparams &L = hp.layers[i];
        LayerCache &c = cache[i];
        if (L.sliding || c.capacity >= n_total) continue;
        // Grow geometrically so that committing canvas after canvas stays amortised O(1).
        const int64_t cap = std::min(hp.n_ctx, std::max(n_total, c.capacity * 2));
        const int64_t row = static_cast<int64_t>(L.n_head_kv) * L.head_dim;
        Buffer nk = be.alloc(static_cast<size_t>(cap * row)), nv = be.alloc(static_cast<size_t>(cap * row));
        if (c.capacity) {
            be.cache_store(nk.data, cap, c.k.data, n_past, 0, row);
            be.cache_store(nv.data, cap, c.v.data, n_past, 0, row);
        }
        be.free(c.k);
        be.free(c.v);
        c.k = nk;
        c.v = nv;
        c.capacity = cap;
    }
}

}  // namespace dg
