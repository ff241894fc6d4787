// The CPU backend: every op of backend.h over host memory, parallelised with one ThreadPool.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "backend.h"
#include "cpu/gemm.h"
#include "cpu/kernels.h"
#include "cpu/threadpool.h"
#include "error.h"

namespace dg {

namespace {

constexpr int64_t kRowTile = 16;          // weight rows per matmul task
constexpr int64_t kElementwiseChunk = 1 << 16;

inline float gelu_tanh(float x) {
    const float c = 0.7978845608028654f;  // sqrt(2 / pi)
    return 0.5f * x * (1.0f + std::tanh(c * (x + 0.044715f * x * x * x)));
}

// Per-thread scratch that grows to the largest request and is then reused.
struct Scratch {
    std::vector<float> tile;    // dequantized weight rows
    std::vector<float> scores;  // attention scores
    float *get(std::vector<float> &v, size_t n) {
        if (v.size() < n) v.resize(n);
        return v.data();
    }
};

class CpuBackend final : public Backend {
public:
    explicit CpuBackend(int n_threads) : pool_(n_threads), scratch_(static_cast<size_t>(pool_.size())) {}

    const char *name() const override { return "cpu"; }

    Buffer alloc(size_t n) override {
        Buffer b;
        b.n = n;
        if (n == 0) return b;
        const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
        b.data = static_cast<float *>(std::aligned_alloc(64, bytes));
        if (!b.data) throw std::bad_alloc();
        return b;
    }

    void free(Buffer &b) override {
        std::free(b.data);
        b = Buffer{};
    }

    // --- matrix products ------------------------------------------------------------------------

    // Activations in the form the weight type's kernel consumes (gemm_pack_activations) when it
    // has an integer dot product, else nullptr (the float path reads x directly).
    const uint8_t *quantize_activations(const Matrix &w, const float *x, int64_t n, std::vector<uint8_t> &buf,
                                        size_t *row_size) {
        const TensorType type = type_id(*w.type);
        const size_t rs = gemm_activation_bytes(type, w.n_cols);
        if (rs == 0) return nullptr;
        *row_size = rs;
        if (buf.size() < rs * static_cast<size_t>(n)) buf.resize(rs * static_cast<size_t>(n));
        uint8_t *out = buf.data();
        pool_.run(n, [&](int64_t t, int) { gemm_pack_activations(type, x + t * w.n_cols, out + t * rs, w.n_cols); });
        return out;
    }

    // y[t][r] for rows [r0, r1) of w and n contiguous activation rows (float x, or quantized xq).
    void rows(const Matrix &w, const float *x, const uint8_t *xq, size_t xq_row, int64_t n, float *y, int64_t ldy,
              int64_t r0, int64_t r1, int thread) {
        const int64_t K = w.n_cols;
        const uint8_t *act = xq ? xq : reinterpret_cast<const uint8_t *>(x);
        const size_t act_row = xq ? xq_row : static_cast<size_t>(K) * sizeof(float);
        gemm(type_id(*w.type), GemmArgs{w.row(r0), w.row_stride, r1 - r0, act, act_row, n, K, y + r0, ldy});
    }

    void matmul(const Matrix &w, const float *x, int64_t n, float *y) override {
        if (n <= 0) return;
        size_t xq_row = 0;
        const uint8_t *xq = quantize_activations(w, x, n, qx_, &xq_row);
        const int64_t n_tiles = (w.n_rows + kRowTile - 1) / kRowTile;
        pool_.run(n_tiles, [&](int64_t tile, int thread) {
            const int64_t r0 = tile * kRowTile, r1 = std::min(w.n_rows, r0 + kRowTile);
            rows(w, x, xq, xq_row, n, y, w.n_rows, r0, r1, thread);
        });
    }

    void moe(const MoeWeights &w, const float *x, int64_t n, const int32_t *expert, const float *weight, int k,
             float *out) override {
        const int64_t E = w.down.first.n_rows, F = w.gate.first.n_rows, X = w.gate.n_experts;
        const int64_t total = n * k;
        // Group the (token, slot) assignments by expert: slots offsets[e] .. offsets[e+1].
        offsets_.assign(static_cast<size_t>(X + 1), 0);
        for (int64_t i = 0; i < total; ++i) ++offsets_[static_cast<size_t>(expert[i]) + 1];
        for (int64_t e = 0; e < X; ++e) offsets_[e + 1] += offsets_[e];
        order_.resize(static_cast<size_t>(total));
        slot_of_.resize(static_cast<size_t>(total));
        {
            fill_.assign(offsets_.begin(), offsets_.end() - 1);
            for (int64_t i = 0; i < total; ++i) {
                const int64_t s = fill_[expert[i]]++;
                order_[s] = i;  // assignment i = t * k + j
                slot_of_[i] = s;
            }
        }
        auto grow = [](std::vector<float> &v, int64_t count) {
            if (v.size() < static_cast<size_t>(count)) v.resize(static_cast<size_t>(count));
            return v.data();
        };
        float *xg = grow(moe_x_, total * w.gate.first.n_cols);  // gathered inputs [slot][n_embd]
        float *gate = grow(moe_gate_, total * F);               // [slot][F], then the activation
        float *up = grow(moe_up_, total * F);
        float *yd = grow(moe_y_, total * E);                    // [slot][n_embd]
        const int64_t K = w.gate.first.n_cols;
        pool_.run(total, [&](int64_t s, int) { std::memcpy(xg + s * K, x + (order_[s] / k) * K, K * sizeof(float)); });

        // Tasks: (expert, row tile) over the experts that received tokens.
        auto make_tasks = [&](int64_t n_rows) {
            tasks_.clear();
            for (int64_t e = 0; e < X; ++e)
                if (offsets_[e + 1] > offsets_[e])
                    for (int64_t r0 = 0; r0 < n_rows; r0 += kRowTile)
                        tasks_.push_back({e, r0, std::min(n_rows, r0 + kRowTile)});
        };
        size_t q_row = 0;
        const uint8_t *xq = quantize_activations(w.gate.first, xg, total, qx_, &q_row);
        const uint8_t *xq_up = xq;
        size_t q_row_up = q_row;
        if (w.up.first.type != w.gate.first.type) xq_up = quantize_activations(w.up.first, xg, total, qx_up_, &q_row_up);
        make_tasks(F);
        pool_.run(static_cast<int64_t>(tasks_.size()), [&](int64_t ti, int thread) {
            const TaskRec &t = tasks_[ti];
            const int64_t s0 = offsets_[t.e], m = offsets_[t.e + 1] - s0;
            rows(w.gate.expert(t.e), xg + s0 * K, xq ? xq + s0 * q_row : nullptr, q_row, m, gate + s0 * F, F, t.r0, t.r1, thread);
            rows(w.up.expert(t.e), xg + s0 * K, xq_up ? xq_up + s0 * q_row_up : nullptr, q_row_up, m, up + s0 * F, F, t.r0, t.r1, thread);
            for (int64_t s = s0; s < s0 + m; ++s) gelu_tanh_mul(gate + s * F + t.r0, up + s * F + t.r0, gate + s * F + t.r0, t.r1 - t.r0);
        });
        xq = quantize_activations(w.down.first, gate, total, qx_, &q_row);
        make_tasks(E);
        pool_.run(static_cast<int64_t>(tasks_.size()), [&](int64_t ti, int thread) {
            const TaskRec &t = tasks_[ti];
            const int64_t s0 = offsets_[t.e], m = offsets_[t.e + 1] - s0;
            rows(w.down.expert(t.e), gate + s0 * F, xq ? xq + s0 * q_row : nullptr, q_row, m, yd + s0 * E, E, t.r0, t.r1, thread);
        });
        // out[t] = sum_j weight[t][j] * yd[slot(t, j)].
        pool_.run(n, [&](int64_t t, int) {
            float *o = out + t * E;
            std::fill(o, o + E, 0.0f);
            // The reference visits experts in increasing id; slots of one token are few, so select in order.
            int32_t last = -1;
            for (int jj = 0; jj < k; ++jj) {
                int j = -1;
                for (int c = 0; c < k; ++c)
                    if (expert[t * k + c] > last && (j < 0 || expert[t * k + c] < expert[t * k + j])) j = c;
                last = expert[t * k + j];
                const float *src = yd + slot_of_[t * k + j] * E;
                const float a = weight[t * k + j];
                for (int64_t i = 0; i < E; ++i) o[i] += src[i] * a;
            }
        });
    }

    // --- normalisation and elementwise ----------------------------------------------------------

    void rmsnorm(const float *x, const float *w, int64_t rows, int64_t dim, float eps, float *y) override {
        const int64_t per_task = std::max<int64_t>(1, kElementwiseChunk / dim);
        pool_.run((rows + per_task - 1) / per_task, [&](int64_t task, int) {
            const int64_t r1 = std::min(rows, (task + 1) * per_task);
            for (int64_t r = task * per_task; r < r1; ++r) {
                const float *xr = x + r * dim;
                float *yr = y + r * dim;
                double ss = 0.0;
                for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
                const float scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
                if (w)
                    for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * scale * w[i];
                else
                    for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * scale;
            }
        });
    }

    void rope(float *x, int64_t n, int n_heads, int head_dim, int64_t pos0, const float *inv_freq, int n_rot) override {
        const int half = n_rot / 2;
        pool_.run(n, [&](int64_t t, int thread) {
            float *cs = scratch_[thread].get(scratch_[thread].scores, static_cast<size_t>(2 * half));
            const float pos = static_cast<float>(pos0 + t);
            for (int j = 0; j < half; ++j) {
                const float angle = pos * inv_freq[j];
                cs[j] = std::cos(angle);
                cs[half + j] = std::sin(angle);
            }
            for (int h = 0; h < n_heads; ++h) {
                float *v = x + (t * n_heads + h) * head_dim;
                for (int j = 0; j < half; ++j) {
                    const float a = v[j], b = v[j + half];
                    v[j] = a * cs[j] - b * cs[half + j];
                    v[j + half] = b * cs[j] + a * cs[half + j];
                }
            }
        });
    }

    // Per task: one head and a block of queries. Scores for the block against every key any of its
    // queries may see come from the vectorised dot_tile (cached keys in at most two contiguous ring
    // runs, then the current keys); keys a query may not see are masked before the softmax.
    void attention(const AttentionArgs &a) override {
        const int group = a.n_head / a.n_head_kv;
        const int d = a.head_dim;
        const int64_t kv_row = static_cast<int64_t>(a.n_head_kv) * d, q_stride = static_cast<int64_t>(a.n_head) * d;
        constexpr int64_t kQueriesPerTask = 8;
        const int64_t q_blocks = (a.n_q + kQueriesPerTask - 1) / kQueriesPerTask;
        pool_.run(q_blocks * a.n_head, [&](int64_t task, int thread) {
            const int h = static_cast<int>(task % a.n_head);
            const int kvh = h / group;
            const int64_t i0 = (task / a.n_head) * kQueriesPerTask, i1 = std::min(a.n_q, i0 + kQueriesPerTask);
            const int64_t nb = i1 - i0;
            // Keys visible to some query of the block: cached [c_lo, cache_end), current [0, cur_hi).
            const int64_t cache_end = a.cache_pos0 + a.n_cache;
            int64_t c_lo = a.cache_pos0;
            if (a.window > 0) c_lo = std::max(c_lo, a.q_pos0 + i0 - a.window + 1);
            c_lo = std::min(c_lo, cache_end);
            const int64_t n_c = cache_end - c_lo;
            const int64_t cur_hi = a.causal ? i1 : a.n_q;
            const int64_t n_keys = n_c + cur_hi;
            float *scores = scratch_[thread].get(scratch_[thread].scores, static_cast<size_t>(nb * n_keys));
            const float *q = a.q + i0 * q_stride + h * d;
            for (int64_t j = c_lo; j < cache_end;) {  // ring runs of contiguous slots
                const int64_t slot = j % a.cache_capacity;
                const int64_t run = std::min(cache_end - j, a.cache_capacity - slot);
                dot_tile(q, q_stride, nb, a.k_cache + slot * kv_row + kvh * d, kv_row, run, d, scores + (j - c_lo), n_keys);
                j += run;
            }
            if (cur_hi > 0) dot_tile(q, q_stride, nb, a.k + kvh * d, kv_row, cur_hi, d, scores + n_c, n_keys);
            for (int64_t i = i0; i < i1; ++i) {
                float *sr = scores + (i - i0) * n_keys;
                const int64_t p = a.q_pos0 + i;
                // Visible: cached j >= c0 (window), current j <= i (causal) and j > p - window.
                const int64_t c0 = a.window > 0 ? std::max(c_lo, p - a.window + 1) : c_lo;
                const int64_t cur0 = a.window > 0 ? std::max<int64_t>(0, p - a.window + 1 - a.q_pos0) : 0;
                const int64_t cur_end = a.causal ? i + 1 : a.n_q;
                float mx = -INFINITY;
                for (int64_t m = 0; m < n_keys; ++m) {
                    const bool visible = m < n_c ? (c_lo + m >= c0) : (m - n_c >= cur0 && m - n_c < cur_end);
                    if (!visible) sr[m] = -INFINITY;
                    mx = std::max(mx, sr[m]);
                }
                double sum = 0.0;
                for (int64_t m = 0; m < n_keys; ++m) {
                    sr[m] = std::exp(sr[m] - mx);
                    sum += sr[m];
                }
                const float inv = static_cast<float>(1.0 / sum);
                for (int64_t m = 0; m < n_keys; ++m) sr[m] *= inv;
                float *o = a.out + i * q_stride + h * d;
                std::fill(o, o + d, 0.0f);
            }
            // out = P . V for the whole block, value rows in the same runs as the keys.
            float *o = a.out + i0 * q_stride + h * d;
            for (int64_t j = c_lo; j < cache_end;) {
                const int64_t slot = j % a.cache_capacity;
                const int64_t run = std::min(cache_end - j, a.cache_capacity - slot);
                accumulate_rows(scores + (j - c_lo), n_keys, nb, a.v_cache + slot * kv_row + kvh * d, kv_row, run, d, o,
                                q_stride);
                j += run;
            }
            if (cur_hi > 0) accumulate_rows(scores + n_c, n_keys, nb, a.v + kvh * d, kv_row, cur_hi, d, o, q_stride);
        });
    }

    void gelu_mul(const float *gate, const float *up, int64_t count, float *out) override {
        elementwise(count, [&](int64_t i0, int64_t i1) {
            for (int64_t i = i0; i < i1; ++i) out[i] = gelu_tanh(gate[i]) * up[i];
        });
    }

    void add(float *y, const float *x, int64_t count) override {
        elementwise(count, [&](int64_t i0, int64_t i1) {
            for (int64_t i = i0; i < i1; ++i) y[i] += x[i];
        });
    }

    void scale(float *y, float s, int64_t count) override {
        elementwise(count, [&](int64_t i0, int64_t i1) {
            for (int64_t i = i0; i < i1; ++i) y[i] *= s;
        });
    }

    void softcap(float *x, int64_t count, float cap) override {
        elementwise(count, [&](int64_t i0, int64_t i1) {
            for (int64_t i = i0; i < i1; ++i) x[i] = std::tanh(x[i] / cap) * cap;
        });
    }

    void embed(const Matrix &e, const int32_t *ids, int64_t n, float s, float *out) override {
        pool_.run(n, [&](int64_t t, int) {
            float *o = out + t * e.n_cols;
            e.type->to_float(e.row(ids[t]), o, e.n_cols);
            for (int64_t i = 0; i < e.n_cols; ++i) o[i] *= s;
        });
    }

    void soft_embed(const Matrix &e, const float *logits, int64_t n, float s, float *out) override {
        const int64_t V = e.n_rows, E = e.n_cols;
        row_max_.resize(static_cast<size_t>(n));
        row_inv_sum_.resize(static_cast<size_t>(n));
        pool_.run(n, [&](int64_t t, int) {
            const float *z = logits + t * V;
            float mx = -INFINITY;
            for (int64_t v = 0; v < V; ++v) mx = std::max(mx, z[v]);
            double sum = 0.0;
            for (int64_t v = 0; v < V; ++v) sum += std::exp(z[v] - mx);
            row_max_[t] = mx;
            row_inv_sum_[t] = static_cast<float>(1.0 / sum);
        });
        // The vocabulary is split into a fixed number of ranges, each summed into its own partial
        // [n][E] and reduced in range order, so results do not depend on scheduling or thread count.
        constexpr int64_t kParts = 16;
        if (soft_partial_.size() < static_cast<size_t>(kParts * n * E)) soft_partial_.resize(static_cast<size_t>(kParts * n * E));
        std::fill_n(soft_partial_.data(), kParts * n * E, 0.0f);
        const int64_t per_part = (V + kParts - 1) / kParts;
        // Within a range, vocabulary rows are taken 64 at a time (dequantized once) with the
        // probabilities of every token for them, and the register-blocked accumulate_rows adds
        // probabilities x rows into the partial sums.
        constexpr int64_t kChunk = 64;
        pool_.run(kParts, [&](int64_t part, int thread) {
            float *partial = soft_partial_.data() + part * n * E;
            float *rows = scratch_[thread].get(scratch_[thread].tile, static_cast<size_t>(kChunk * E));
            float *probs = scratch_[thread].get(scratch_[thread].scores, static_cast<size_t>(n * kChunk));
            const int64_t v_end = std::min(V, (part + 1) * per_part);
            for (int64_t c0 = part * per_part; c0 < v_end; c0 += kChunk) {
                const int64_t c1 = std::min(v_end, c0 + kChunk);
                for (int64_t v = c0; v < c1; ++v) e.type->to_float(e.row(v), rows + (v - c0) * E, E);
                for (int64_t t = 0; t < n; ++t) {
                    const float *z = logits + t * V;
                    for (int64_t v = c0; v < c1; ++v) probs[t * kChunk + v - c0] = std::exp(z[v] - row_max_[t]) * row_inv_sum_[t];
                }
                accumulate_rows(probs, kChunk, n, rows, E, c1 - c0, E, partial, E);
            }
        });
        elementwise(n * E, [&](int64_t i0, int64_t i1) {
            for (int64_t i = i0; i < i1; ++i) {
                float acc = 0.0f;
                for (int64_t part = 0; part < kParts; ++part) acc += soft_partial_[part * n * E + i];
                out[i] = acc * s;
            }
        });
    }

    void route(const Matrix &w, const float *x, int64_t n, const float *scale, const float *per_expert_scale, float eps,
               int k, int32_t *expert, float *weight, float *logits) override {
        const int64_t E = w.n_cols, X = w.n_rows;
        if (router_in_.size() < static_cast<size_t>(n * E)) router_in_.resize(static_cast<size_t>(n * E));
        float *z = router_in_.data();
        rmsnorm(x, nullptr, n, E, eps, z);
        const float root = static_cast<float>(1.0 / std::sqrt(static_cast<double>(E)));
        elementwise(n * E, [&](int64_t i0, int64_t i1) {
            for (int64_t i = i0; i < i1; ++i) z[i] = z[i] * scale[i % E] * root;
        });
        matmul(w, z, n, logits);
        pool_.run(n, [&](int64_t t, int) {
            float *p = logits + t * X;
            float mx = -INFINITY;
            for (int64_t e = 0; e < X; ++e) mx = std::max(mx, p[e]);
            double sum = 0.0;
            for (int64_t e = 0; e < X; ++e) sum += (p[e] = std::exp(p[e] - mx));
            const float inv = static_cast<float>(1.0 / sum);
            for (int64_t e = 0; e < X; ++e) p[e] *= inv;
            // Top-k by probability, ties to the lower expert id.
            int32_t *ids = expert + t * k;
            float *wt = weight + t * k;
            for (int j = 0; j < k; ++j) {
                int64_t best = -1;
                for (int64_t e = 0; e < X; ++e) {
                    bool taken = false;
                    for (int q = 0; q < j; ++q) taken = taken || ids[q] == e;
                    if (!taken && (best < 0 || p[e] > p[best])) best = e;
                }
                ids[j] = static_cast<int32_t>(best);
                wt[j] = p[best];
            }
            float total = 0.0f;
            for (int j = 0; j < k; ++j) total += wt[j];
            for (int j = 0; j < k; ++j) wt[j] = wt[j] / total * per_expert_scale[ids[j]];
        });
    }

    void cache_store(float *cache, int64_t capacity, const float *src, int64_t n, int64_t pos0, int64_t row) override {
        for (int64_t i = 0; i < n; ++i)
            std::memcpy(cache + ((pos0 + i) % capacity) * row, src + i * row, static_cast<size_t>(row) * sizeof(float));
    }

private:
    template <typename F>
    void elementwise(int64_t count, F &&f) {
        const int64_t chunks = (count + kElementwiseChunk - 1) / kElementwiseChunk;
        pool_.run(chunks, [&](int64_t c, int) { f(c * kElementwiseChunk, std::min(count, (c + 1) * kElementwiseChunk)); });
    }

    ThreadPool pool_;
    std::vector<Scratch> scratch_;
    std::vector<uint8_t> qx_, qx_up_;
    std::vector<int64_t> offsets_, order_, slot_of_, fill_;
    struct TaskRec { int64_t e, r0, r1; };
    std::vector<TaskRec> tasks_;
    std::vector<float> moe_x_, moe_gate_, moe_up_, moe_y_, router_in_, row_max_, row_inv_sum_, soft_partial_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int n_threads) {
    if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    return std::make_unique<CpuBackend>(n_threads);
}

}  // namespace dg
