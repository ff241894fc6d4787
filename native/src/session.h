// A sequence (its KV cache) and the scratch of forward passes (a Workspace), all allocated up
// front: the cache of full-attention layers grows in encode, never in a denoising step.
#pragma once

#include <cstdint>
#include <vector>

#include "backend.h"
#include "model.h"

namespace dg {

// Scratch for one forward pass over up to n_max token rows (one sequence, or a batch of canvases).
struct Workspace {
    Workspace(Model &model, int64_t n_max);
    ~Workspace();
    Workspace(const Workspace &) = delete;
    Workspace &operator=(const Workspace &) = delete;

    Backend &be;
    int64_t n_max;
    Buffer x, xn, q, k, v, attn, proj, ff_gate, ff_up, dense, moe_out, router_logits, sc, sc_h, expert_weight;
    std::vector<int32_t> expert_ids;
};

struct LayerCache {
    Buffer k, v;           // [capacity][n_head_kv][head_dim]
    int64_t capacity = 0;  // sliding layers: window - 1 slots used as a ring; full layers: grows
};

struct Session {
    explicit Session(Model &model);
    ~Session();
    Session(const Session &) = delete;
    Session &operator=(const Session &) = delete;

    // Full layers: makes room for `n_total` cached tokens (keeps contents).
    void reserve_cache(int64_t n_total);

    Model &model;
    Backend &be;
    int64_t n_past = 0;
    std::vector<LayerCache> cache;
    Workspace ws;  // max(canvas length, encoder chunk) rows
    // Generation: this step's logits and the previous step's processed logits [canvas][n_vocab],
    // allocated by the first generate call and reused.
    std::vector<float> logits, sc_logits;
};

}  // namespace dg
