// The forward pass, both modes, top to bottom. Shapes: n tokens, E = n_embd, H = query heads,
// Hkv = KV heads, d = head_dim of the layer, F = dense MLP width, X = experts, k = experts per token.
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

void Model::layers_forward(Session &s, int64_t n, int64_t pos0, bool encoder) {
    Backend &be = *backend_;
    const int64_t E = hp_.n_embd, H = hp_.n_head, k = hp_.n_expert_used;
    float *x = s.x.data;  // [n][E], the residual stream h

    for (int64_t il = 0; il < hp_.n_layer; ++il) {
        const LayerHparams &L = hp_.layers[il];
        const LayerWeights &w = w_.layers[il];
        LayerCache &c = s.cache[il];
        const int d = L.head_dim, Hkv = L.n_head_kv;

        // --- attention: h = h + post_attn_norm(Wo . attn(q, k, v))
        be.rmsnorm(x, w.attn_norm.data(), n, E, hp_.eps, s.xn.data);
        be.matmul(w.wq, s.xn.data, n, s.q.data);  // [n][H][d]
        be.matmul(w.wk, s.xn.data, n, s.k.data);  // [n][Hkv][d]
        // Full layers have no V projection: V is the raw K projection, before k_norm and RoPE.
        be.matmul(L.has_v ? w.wv : w.wk, s.xn.data, n, s.v.data);
        be.rmsnorm(s.q.data, w.q_norm.data(), n * H, d, hp_.eps, s.q.data);
        be.rmsnorm(s.k.data, w.k_norm.data(), n * Hkv, d, hp_.eps, s.k.data);
        be.rmsnorm(s.v.data, nullptr, n * Hkv, d, hp_.eps, s.v.data);
        be.rope(s.q.data, n, static_cast<int>(H), d, pos0, L.inv_freq.data(), L.n_rot);
        be.rope(s.k.data, n, Hkv, d, pos0, L.inv_freq.data(), L.n_rot);

        AttentionArgs a{};
        a.q = s.q.data;
        a.k = s.k.data;
        a.v = s.v.data;
        a.k_cache = c.k.data;
        a.v_cache = c.v.data;
        a.cache_capacity = c.capacity;
        // Cached positions visible to this block: sliding layers keep (and see) the last window - 1.
        const int64_t first_cached = L.sliding ? std::max<int64_t>(0, s.n_past - c.capacity) : 0;
        a.cache_pos0 = first_cached;
        a.n_cache = s.n_past - first_cached;
        a.n_q = n;
        a.q_pos0 = pos0;
        a.n_head = static_cast<int>(H);
        a.n_head_kv = Hkv;
        a.head_dim = d;
        a.causal = encoder;
        a.window = (encoder && L.sliding) ? hp_.sliding_window : 0;
        a.out = s.attn.data;
        be.attention(a);
        if (encoder) {
            const int64_t row = static_cast<int64_t>(Hkv) * d;
            if (c.capacity > 0) {
                // A ring keeps only the last `capacity` of the new positions.
                const int64_t skip = std::max<int64_t>(0, n - c.capacity);
                be.cache_store(c.k.data, c.capacity, s.k.data + skip * row, n - skip, pos0 + skip, row);
                be.cache_store(c.v.data, c.capacity, s.v.data + skip * row, n - skip, pos0 + skip, row);
            }
        }
        be.matmul(w.wo, s.attn.data, n, s.proj.data);
        be.rmsnorm(s.proj.data, w.post_attn_norm.data(), n, E, hp_.eps, s.proj.data);
        be.add(x, s.proj.data, n * E);

        // --- dense MLP and experts, in parallel on the same h
        be.rmsnorm(x, w.ffn_norm.data(), n, E, hp_.eps, s.xn.data);
        be.matmul(w.ffn_gate, s.xn.data, n, s.ff_gate.data);
        be.matmul(w.ffn_up, s.xn.data, n, s.ff_up.data);
        be.gelu_mul(s.ff_gate.data, s.ff_up.data, n * hp_.n_ff, s.ff_gate.data);
        be.matmul(w.ffn_down, s.ff_gate.data, n, s.dense.data);
        be.rmsnorm(s.dense.data, w.post_ffw_norm_1.data(), n, E, hp_.eps, s.dense.data);

        // The router reads h itself; the experts read pre_ffw_norm_2(h).
        be.route(w.router, x, n, w.router_scale.data(), w.per_expert_scale.data(), hp_.eps, static_cast<int>(k),
                 s.expert_ids.data(), s.expert_weight.data, s.router_logits.data);
        be.rmsnorm(x, w.pre_ffw_norm_2.data(), n, E, hp_.eps, s.xn.data);
        be.moe(w.experts, s.xn.data, n, s.expert_ids.data(), s.expert_weight.data, static_cast<int>(k), s.moe_out.data);
        be.rmsnorm(s.moe_out.data, w.post_ffw_norm_2.data(), n, E, hp_.eps, s.moe_out.data);

        be.add(s.dense.data, s.moe_out.data, n * E);
        be.rmsnorm(s.dense.data, w.post_ffw_norm.data(), n, E, hp_.eps, s.dense.data);
        be.add(x, s.dense.data, n * E);
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
        const int64_t m = std::min(n - done, s.n_max);
        backend_->embed(w_.token_embd, ids + done, m, embed_scale, s.x.data);
        layers_forward(s, m, s.n_past, /*encoder=*/true);
        s.n_past += m;
        done += m;
    }
}

void Model::decode(Session &s, const int32_t *canvas, int64_t n, const float *sc_logits, float *logits) {
    if (n <= 0 || n > hp_.canvas_length)
        throw Error(DGEMMA_ERR_OUT_OF_RANGE, "canvas of " + std::to_string(n) + " tokens; the model's canvas length is " +
                                                 std::to_string(hp_.canvas_length));
    if (n > hp_.n_ctx - s.n_past)
        throw Error(DGEMMA_ERR_OUT_OF_RANGE, "canvas of " + std::to_string(n) + " tokens after " + std::to_string(s.n_past) +
                                                 " cached exceeds the context length " + std::to_string(hp_.n_ctx));
    check_ids(canvas, n, "canvas");
    Backend &be = *backend_;
    const int64_t E = hp_.n_embd;
    const float embed_scale = static_cast<float>(std::sqrt(static_cast<double>(E)));

    // x = rmsnorm_noscale(e + sc_down(gelu(sc_gate(m)) * sc_up(m))), m = sc_pre_norm(soft embedding);
    // without self-conditioning the MLP term is exactly zero.
    be.embed(w_.token_embd, canvas, n, embed_scale, s.x.data);
    if (sc_logits) {
        be.soft_embed(w_.token_embd, sc_logits, n, embed_scale, s.sc.data);
        be.rmsnorm(s.sc.data, w_.sc_pre_norm.data(), n, E, hp_.eps, s.sc.data);
        be.matmul(w_.sc_gate, s.sc.data, n, s.ff_gate.data);
        be.matmul(w_.sc_up, s.sc.data, n, s.ff_up.data);
        be.gelu_mul(s.ff_gate.data, s.ff_up.data, n * hp_.n_ff, s.ff_gate.data);
        be.matmul(w_.sc_down, s.ff_gate.data, n, s.sc_h.data);
        be.add(s.x.data, s.sc_h.data, n * E);
    }
    be.rmsnorm(s.x.data, nullptr, n, E, hp_.eps, s.x.data);

    layers_forward(s, n, s.n_past, /*encoder=*/false);

    be.rmsnorm(s.x.data, w_.output_norm.data(), n, E, hp_.eps, s.xn.data);
    be.matmul(w_.token_embd, s.xn.data, n, logits);  // tied lm_head: [n][n_vocab]
    be.softcap(logits, n * hp_.n_vocab, hp_.softcap);
}

}  // namespace dg
