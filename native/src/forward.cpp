// The forward pass, both modes, top to bottom. Shapes: n token rows, E = n_embd, H = query heads,
// Hkv = KV heads, d = head_dim of the layer, F = dense MLP width, X = experts, k = experts per token.
// A pass may hold several sequences (segments): everything but attention is row-wise, so rows from
// different sequences share the weight reads and get the same results as alone.
#include <algorithm>
#include <cmath>
#include <string>

#include "error.h"
#include "model.h"
#include "session.h"

namespace dg {

void Model::check_ids(const int32_t *ids, int64_t n, const char *what) const {
    for (int64_t i = 0; i < n; ++i)
        if (ids[i] < 0 || ids[i] >= hp_.n_vocab)
            throw Error(DGEMMA_ERR_OUT_OF_RANGE, std::string(what) + " token " + std::to_string(i) + " has id " +
                                                     std::to_string(ids[i]) + ", outside the vocabulary [0, " +
                                                     std::to_string(hp_.n_vocab) + ")");
}

void Model::layers_forward(Workspace &ws, const std::vector<Segment> &segments, bool encoder) {
    Backend &be = *backend_;
    const int64_t E = hp_.n_embd, H = hp_.n_head, k = hp_.n_expert_used;
    int64_t n = 0;
    for (const Segment &g : segments) n = std::max(n, g.row0 + g.n);
    float *x = ws.x.data;  // [n][E], the residual stream h

    for (int64_t il = 0; il < hp_.n_layer; ++il) {
        const LayerHparams &L = hp_.layers[il];
        const LayerWeights &w = w_.layers[il];
        const int d = L.head_dim, Hkv = L.n_head_kv;
        const int64_t q_row = H * d, kv_row = static_cast<int64_t>(Hkv) * d;

        // --- attention: h = h + post_attn_norm(Wo . attn(q, k, v))
        be.rmsnorm(x, w.attn_norm.data(), n, E, hp_.eps, ws.xn.data);
        be.matmul(w.wq, ws.xn.data, n, ws.q.data);  // [n][H][d]
        be.matmul(w.wk, ws.xn.data, n, ws.k.data);  // [n][Hkv][d]
        // Full layers have no V projection: V is the raw K projection, before k_norm and RoPE.
        be.matmul(L.has_v ? w.wv : w.wk, ws.xn.data, n, ws.v.data);
        be.rmsnorm(ws.q.data, w.q_norm.data(), n * H, d, hp_.eps, ws.q.data);
        be.rmsnorm(ws.k.data, w.k_norm.data(), n * Hkv, d, hp_.eps, ws.k.data);
        be.rmsnorm(ws.v.data, nullptr, n * Hkv, d, hp_.eps, ws.v.data);
        for (const Segment &g : segments) {
            Session &s = *g.s;
            LayerCache &c = s.cache[il];
            be.rope(ws.q.data + g.row0 * q_row, g.n, static_cast<int>(H), d, s.n_past, L.inv_freq.data(), L.n_rot);
            be.rope(ws.k.data + g.row0 * kv_row, g.n, Hkv, d, s.n_past, L.inv_freq.data(), L.n_rot);
            AttentionArgs a{};
            a.q = ws.q.data + g.row0 * q_row;
            a.k = ws.k.data + g.row0 * kv_row;
            a.v = ws.v.data + g.row0 * kv_row;
            a.k_cache = c.k.data;
            a.v_cache = c.v.data;
            a.cache_capacity = c.capacity;
            // Cached positions visible: sliding layers keep (and see) the last window - 1.
            const int64_t first_cached = L.sliding ? std::max<int64_t>(0, s.n_past - c.capacity) : 0;
            a.cache_pos0 = first_cached;
            a.n_cache = s.n_past - first_cached;
            a.n_q = g.n;
            a.q_pos0 = s.n_past;
            a.n_head = static_cast<int>(H);
            a.n_head_kv = Hkv;
            a.head_dim = d;
            a.causal = encoder;
            a.window = (encoder && L.sliding) ? hp_.sliding_window : 0;
            a.out = ws.attn.data + g.row0 * q_row;
            be.attention(a);
            if (encoder && c.capacity > 0) {
                // A ring keeps only the last `capacity` of the new positions.
                const int64_t skip = std::max<int64_t>(0, g.n - c.capacity);
                be.cache_store(c.k.data, c.capacity, a.k + skip * kv_row, g.n - skip, s.n_past + skip, kv_row);
                be.cache_store(c.v.data, c.capacity, a.v + skip * kv_row, g.n - skip, s.n_past + skip, kv_row);
            }
        }
        be.matmul(w.wo, ws.attn.data, n, ws.proj.data);
        be.rmsnorm(ws.proj.data, w.post_attn_norm.data(), n, E, hp_.eps, ws.proj.data);
        be.add(x, ws.proj.data, n * E);

        // --- dense MLP and experts, in parallel on the same h
        be.rmsnorm(x, w.ffn_norm.data(), n, E, hp_.eps, ws.xn.data);
        be.matmul(w.ffn_gate, ws.xn.data, n, ws.ff_gate.data);
        be.matmul(w.ffn_up, ws.xn.data, n, ws.ff_up.data);
        be.gelu_mul(ws.ff_gate.data, ws.ff_up.data, n * hp_.n_ff, ws.ff_gate.data);
        be.matmul(w.ffn_down, ws.ff_gate.data, n, ws.dense.data);
        be.rmsnorm(ws.dense.data, w.post_ffw_norm_1.data(), n, E, hp_.eps, ws.dense.data);

        // The router reads h itself; the experts read pre_ffw_norm_2(h).
        be.route(w.router, x, n, w.router_scale.data(), w.per_expert_scale.data(), hp_.eps, static_cast<int>(k),
                 ws.expert_ids.data(), ws.expert_weight.data, ws.router_logits.data);
        be.rmsnorm(x, w.pre_ffw_norm_2.data(), n, E, hp_.eps, ws.xn.data);
        be.moe(w.experts, ws.xn.data, n, ws.expert_ids.data(), ws.expert_weight.data, static_cast<int>(k), ws.moe_out.data);
        be.rmsnorm(ws.moe_out.data, w.post_ffw_norm_2.data(), n, E, hp_.eps, ws.moe_out.data);

        be.add(ws.dense.data, ws.moe_out.data, n * E);
        be.rmsnorm(ws.dense.data, w.post_ffw_norm.data(), n, E, hp_.eps, ws.dense.data);
        be.add(x, ws.dense.data, n * E);
        be.scale(x, encoder ? w.encoder_scalar : w.decoder_scalar, n * E);
    }
}

void Model::encode(Session &s, const int32_t *ids, int64_t n) {
    check_ids(ids, n, "prompt");
    if (n > hp_.n_ctx - s.n_past)
        throw Error(DGEMMA_ERR_OUT_OF_RANGE, "prefill of " + std::to_string(n) + " tokens after " + std::to_string(s.n_past) +
                                                 " cached exceeds the context length " + std::to_string(hp_.n_ctx));
    s.reserve_cache(s.n_past + n);
    const float embed_scale = static_cast<float>(std::sqrt(static_cast<double>(hp_.n_embd)));
    for (int64_t done = 0; done < n;) {
        const int64_t m = std::min(n - done, s.ws.n_max);
        backend_->embed(w_.token_embd, ids + done, m, embed_scale, s.ws.x.data);
        layers_forward(s.ws, {{&s, 0, m}}, /*encoder=*/true);
        s.n_past += m;
        done += m;
    }
}

void Model::check_canvas(const Session &s, const int32_t *canvas, int64_t n) const {
    if (n <= 0 || n > hp_.canvas_length)
        throw Error(DGEMMA_ERR_OUT_OF_RANGE, "canvas of " + std::to_string(n) + " tokens; the model's canvas length is " +
                                                 std::to_string(hp_.canvas_length));
    if (n > hp_.n_ctx - s.n_past)
        throw Error(DGEMMA_ERR_OUT_OF_RANGE, "canvas of " + std::to_string(n) + " tokens after " + std::to_string(s.n_past) +
                                                 " cached exceeds the context length " + std::to_string(hp_.n_ctx));
    check_ids(canvas, n, "canvas");
}

void Model::decode(Session &s, const int32_t *canvas, int64_t n, const float *sc_logits, float *logits) {
    decode_batch(s.ws, {{&s, canvas, n, sc_logits, logits}});
}

void Model::decode_batch(Workspace &ws, const std::vector<DenoiseItem> &items) {
    Backend &be = *backend_;
    const int64_t E = hp_.n_embd;
    const float embed_scale = static_cast<float>(std::sqrt(static_cast<double>(E)));
    std::vector<Segment> segments;
    int64_t rows = 0;
    for (const DenoiseItem &it : items) {
        check_canvas(*it.s, it.canvas, it.n);
        segments.push_back({it.s, rows, it.n});
        rows += it.n;
    }
    if (rows > ws.n_max) throw Error(DGEMMA_ERR_INTERNAL, "batch larger than its workspace");

    // x = rmsnorm_noscale(e + sc_down(gelu(sc_gate(m)) * sc_up(m))), m = sc_pre_norm(soft embedding);
    // without self-conditioning the MLP term is exactly zero.
    for (size_t i = 0; i < items.size(); ++i) {
        const DenoiseItem &it = items[i];
        float *x = ws.x.data + segments[i].row0 * E;
        be.embed(w_.token_embd, it.canvas, it.n, embed_scale, x);
        if (!it.sc_logits) continue;
        be.soft_embed(w_.token_embd, it.sc_logits, it.n, embed_scale, ws.sc.data);
        be.rmsnorm(ws.sc.data, w_.sc_pre_norm.data(), it.n, E, hp_.eps, ws.sc.data);
        be.matmul(w_.sc_gate, ws.sc.data, it.n, ws.ff_gate.data);
        be.matmul(w_.sc_up, ws.sc.data, it.n, ws.ff_up.data);
        be.gelu_mul(ws.ff_gate.data, ws.ff_up.data, it.n * hp_.n_ff, ws.ff_gate.data);
        be.matmul(w_.sc_down, ws.ff_gate.data, it.n, ws.sc_h.data);
        be.add(x, ws.sc_h.data, it.n * E);
    }
    be.rmsnorm(ws.x.data, nullptr, rows, E, hp_.eps, ws.x.data);

    layers_forward(ws, segments, /*encoder=*/false);

    be.rmsnorm(ws.x.data, w_.output_norm.data(), rows, E, hp_.eps, ws.xn.data);
    for (size_t i = 0; i < items.size(); ++i) {
        // Tied lm_head: [n][n_vocab], written straight into each item's buffer.
        be.matmul(w_.token_embd, ws.xn.data + segments[i].row0 * E, items[i].n, items[i].logits);
        be.softcap(items[i].logits, items[i].n * hp_.n_vocab, hp_.softcap);
    }
}

}  // namespace dg
