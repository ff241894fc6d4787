// A sequence: its KV cache and the scratch buffers of one forward pass, all allocated up front
// (the cache of full-attention layers grows in encode, never in a denoising step).
#pragma once

#include <cstdint>
#include <vector>

#include "backend.h"
#include "model.h"

namespace dg {

struct LayerCache {
    Buffer k, v;           // [capacity][n_head_kv][head_dim]
    int64_t capacity = 0;  // sliding layers: window - 1 slots used as a ring; full layers: grows
};

struct Session {
    Session(Model &model);
    ~Session();
    Session(const Session &) = delete;
    Session &operator=(const Session &) = delete;

    // Full layers: makes room for `n_total` cached tokens (keeps contents).
    void reserve_cache(int64_t n_total);

    Model &model;
    Backend &be;
    int64_t n_past = 0;
    int64_t n_max = 0;  // tokens per forward chunk (max of canvas length and encoder micro-batch)
    std::vector<LayerCache> cache;

    // Scratch, sized for n_max tokens.
    Buffer x, xn, q, k, v, attn, proj, ff_gate, ff_up, dense, moe_out, router_logits, sc, sc_h;
    Buffer expert_weight;
    std::vector<int32_t> expert_ids;
    // Generation: this step's logits and the previous step's processed logits [canvas][n_vocab],
    // allocated by the first generate call and reused.
    std::vector<float> logits, sc_logits;
};

}  // namespace dg
