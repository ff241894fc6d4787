// The compute interface the model is written against. Every buffer argument is backend memory
// obtained from alloc(); weights are views into the mapped file (a device backend uploads them once
// in prepare()). The CPU backend (cpu/) is always present; the model never calls a backend's
// kernels directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "tensor.h"

namespace dg {

struct Buffer {
    float *data = nullptr;
    size_t n = 0;  // floats
};

// Which keys a block of queries may see. Queries are at positions q_pos0 .. q_pos0 + n_q - 1; the
// current keys (computed with them) at the same positions; cached keys at positions
// cache_pos0 .. cache_pos0 + n_cache - 1, stored in a ring of `cache_capacity` slots (slot = pos % capacity).
struct AttentionArgs {
    const float *q;  // [n_q][n_head][head_dim]
    const float *k;  // [n_q][n_head_kv][head_dim] current keys
    const float *v;  // [n_q][n_head_kv][head_dim] current values
    const float *k_cache;  // [cache_capacity][n_head_kv][head_dim]
    const float *v_cache;
    int64_t cache_capacity;
    int64_t cache_pos0;
    int64_t n_cache;
    int64_t n_q;
    int64_t q_pos0;
    int n_head;
    int n_head_kv;
    int head_dim;
    bool causal;         // encoder: a query sees current keys at positions <= its own
    int64_t window;      // > 0: a query at p sees only keys at positions > p - window (encoder sliding)
    float *out;          // [n_q][n_head][head_dim]
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual const char *name() const = 0;

    virtual Buffer alloc(size_t n_floats) = 0;
    virtual void free(Buffer &b) = 0;

    // y[n][w.n_rows] = x[n][w.n_cols] . W^T
    virtual void matmul(const Matrix &w, const float *x, int64_t n, float *y) = 0;
    // out[t] = sum_j weight[t][j] * down_e(gelu_tanh(gate_e x_t) * up_e x_t), e = expert[t][j], j < k
    virtual void moe(const MoeWeights &w, const float *x, int64_t n, const int32_t *expert, const float *weight,
                     int k, float *out) = 0;
    // y = x * (mean(x^2) + eps)^-1/2 (* w when w is given), per row of `dim`; y may alias x
    virtual void rmsnorm(const float *x, const float *w, int64_t rows, int64_t dim, float eps, float *y) = 0;
    // Rotate-half RoPE in place on x[n][n_heads][head_dim] for positions pos0 + i; dims [0, n_rot)
    // rotate in pairs (i, i + n_rot/2) with angle pos * inv_freq[i].
    virtual void rope(float *x, int64_t n, int n_heads, int head_dim, int64_t pos0, const float *inv_freq,
                      int n_rot) = 0;
    virtual void attention(const AttentionArgs &a) = 0;
    // out = gelu_tanh(gate) * up, elementwise over count values
    virtual void gelu_mul(const float *gate, const float *up, int64_t count, float *out) = 0;
    // y += x, elementwise
    virtual void add(float *y, const float *x, int64_t count) = 0;
    // y *= s
    virtual void scale(float *y, float s, int64_t count) = 0;
    // out[i] = embed[ids[i]] * s
    virtual void embed(const Matrix &embed, const int32_t *ids, int64_t n, float s, float *out) = 0;
    // out[t] = s * sum_v softmax(logits[t])[v] * embed[v]: the soft (expected) embedding
    virtual void soft_embed(const Matrix &embed, const float *logits, int64_t n, float s, float *out) = 0;
    // Router: z = rmsnorm_noscale(x) * scale * n_embd^-1/2; p = softmax(W z); top-k of p renormalised
    // to sum 1, times per_expert_scale[e]. Writes expert[n][k] and weight[n][k].
    virtual void route(const Matrix &w, const float *x, int64_t n, const float *scale, const float *per_expert_scale,
                       float eps, int k, int32_t *expert, float *weight, float *scratch_logits) = 0;
    // x = cap * tanh(x / cap)
    virtual void softcap(float *x, int64_t count, float cap) = 0;
    // Copies keys/values of n new tokens at positions pos0.. into a ring cache of `capacity` slots.
    virtual void cache_store(float *cache, int64_t capacity, const float *src, int64_t n, int64_t pos0,
                             int64_t row) = 0;
};

std::unique_ptr<Backend> make_cpu_backend(int n_threads);

}  // namespace dg
