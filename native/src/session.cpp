#include "session.h"

#include <algorithm>

#include "error.h"

namespace dg {

namespace {

int64_t ring_capacity(const Hparams &hp, const LayerHparams &L, int64_t n_tokens) {
    // A sliding layer only ever reads the last window - 1 cached positions.
    return L.sliding ? hp.sliding_window - 1 : n_tokens;
}

}  // namespace

size_t session_cache_bytes(const Hparams &hp, TensorType kv, int64_t n_tokens) {
    size_t total = 0;
    for (const LayerHparams &L : hp.layers)
        total += 2 * row_bytes(*type_traits(kv), static_cast<int64_t>(L.n_head_kv) * L.head_dim) *
                 static_cast<size_t>(ring_capacity(hp, L, n_tokens));
    return total;
}

Session::Session(Model &m) : model(m), cache(m.hparams().layers.size()), buffers(2 * m.hparams().layers.size()) {
    reserve(0);  // the sliding layers' rings
}

void Session::reserve(int64_t n_total) {
    const Hparams &hp = model.hparams();
    Backend &be = model.backend();
    for (size_t i = 0; i < hp.layers.size(); ++i) {
        const LayerHparams &L = hp.layers[i];
        KvLayer &c = cache[i];
        const int64_t want = ring_capacity(hp, L, n_total);
        if (c.k && c.capacity >= want) continue;
        const int64_t cap = L.sliding ? want : std::min(hp.n_ctx, std::max(want, c.capacity + c.capacity / 2));
        if (cap <= 0) continue;
        const int64_t row = static_cast<int64_t>(L.n_head_kv) * L.head_dim;
        TensorBuffer nk(be.alloc(model.kv_type(), row, cap)), nv(be.alloc(model.kv_type(), row, cap));
        if (c.capacity) {  // full layers hold positions 0 .. n_past - 1 in slots of the same index
            be.copy_rows(c.k, 0, *nk, 0, n_past);
            be.copy_rows(c.v, 0, *nv, 0, n_past);
        }
        c.k = *nk;
        c.v = *nv;
        c.capacity = cap;
        buffers[2 * i] = std::move(nk);
        buffers[2 * i + 1] = std::move(nv);
    }
}

size_t Session::cache_bytes() const {
    size_t total = 0;
    for (const KvLayer &c : cache)
        if (c.k) total += c.k.bytes() + c.v.bytes();
    return total;
}

}  // namespace dg
