// A sequence: its position and its KV cache, allocated by the backend. Sliding layers hold a ring of
// window - 1 slots from the start; full layers hold what reserve() asked for, so that nothing moves
// during a generation (the generation reserves every canvas it may commit before its first step).
#pragma once

#include <cstdint>
#include <vector>

#include "backend.h"
#include "model.h"

namespace dg {

struct Session {
    explicit Session(Model &model);
    Session(const Session &) = delete;
    Session &operator=(const Session &) = delete;

    // Makes room for `n_total` cached positions in full layers (keeps contents; grows by at least
    // half again so that repeated prefills stay amortised). Never called during a pass.
    void reserve(int64_t n_total);
    size_t cache_bytes() const;

    Model &model;
    int64_t n_past = 0;
    std::vector<KvLayer> cache;  // per layer; views of `buffers`
    std::vector<TensorBuffer> buffers;  // [layer][k, v]
};

// KV bytes of one sequence holding n_tokens positions (sliding layers: their ring) in type kv.
size_t session_cache_bytes(const Hparams &hp, TensorType kv, int64_t n_tokens);

}  // namespace dg
