// The CPU backend: every op of backend.h over host memory, parallelised with one ThreadPool.
// Tensors' data pointers are host addresses; weights are used in place in the mapped file.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <vector>

#include "backend.h"
#include "cpu/gemm.h"
#include "cpu/kernels.h"
#include "cpu/threadpool.h"
#include "error.h"
#include "router_math.h"
#include "sampler.h"

namespace dg {

namespace {

constexpr int64_t kRowTile = 32;          // weight rows per matmul task (two 16-row panels)
constexpr int64_t kMoeRowTile = 192;      // weight rows per expert task (six panel pairs)
constexpr int64_t kMatmulTasksPerThread = 32;  // a matmul's tasks a thread, at least, when its tokens allow
constexpr int64_t kMatmulMinRun = 64;          // tokens per matmul task, at least
constexpr int64_t kElementwiseChunk = 1 << 16;
// Attention queries per task: a causal block computes scores for keys its later queries see and
// its earlier ones do not (its diagonal, the window's edge), so encoder blocks are short; every
// decoder query sees the same keys, and a longer block packs those keys for more queries.
constexpr int64_t kEncoderQueriesPerTask = 32, kDecoderQueriesPerTask = 64;
constexpr int64_t kQueriesPerTask = std::max(kEncoderQueriesPerTask, kDecoderQueriesPerTask);
inline int64_t queries_per_task(PassMode mode) { return mode == PassMode::Encoder ? kEncoderQueriesPerTask : kDecoderQueriesPerTask; }
constexpr int64_t kSoftParts = 16;        // soft_embed: fixed vocabulary ranges, reduced in order
constexpr int64_t kSoftChunk = 64;        // soft_embed: vocabulary rows dequantized at a time
constexpr int64_t kKvChunk = 256;         // attention: cached rows converted to F32 at a time

// Scratch sized by reserve(); an op that finds it too small has a bug in its caller's reserve.
template <typename T>
T *reserved(std::vector<T> &v, size_t n) {
    if (v.size() < n) throw Error(DGEMMA_ERR_INTERNAL, "backend scratch used before reserve()");
    return v.data();
}

template <typename T>
T *host(const Tensor &t) { return static_cast<T *>(t.data); }

// Per-thread scratch.
struct Scratch {
    std::vector<float> tile;    // soft_embed's dequantized vocabulary rows
    std::vector<float> scores;  // attention scores [queries per task][keys]; RoPE's cos/sin
    std::vector<float> kv;      // a run of cached keys or values converted to F32
    std::vector<uint8_t> kpack; // attention: the keys of one KV head in the float kernel's panels
    std::vector<float *> moe_rows;  // the experts' down: the token row each of one expert's slots adds to
    std::vector<float> moe_scale;   // ... and the slot's weight
    std::vector<uint8_t> moe_x; // the experts' gate/up: one expert's slots' activation rows, gathered
};

class CpuBackend final : public Backend {
public:
    explicit CpuBackend(int n_threads) : pool_(n_threads), scratch_(static_cast<size_t>(pool_.size())) {}
    int threads() const { return pool_.size(); }

    std::string name() const override { return "cpu"; }

    Tensor alloc(TensorType type, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3) override {
        touch();
        Tensor t = make_tensor(nullptr, type, ne0, ne1, ne2, ne3, this);
        const size_t bytes = (t.bytes() + 63) / 64 * 64;
        if (bytes) {
            t.data = std::aligned_alloc(64, bytes);
            if (!t.data) throw std::bad_alloc();
        }
        return t;
    }

    void free(Tensor &t) override {
        touch();
        std::free(t.data);
        t = Tensor{};
    }

    // Weights stay in the mapped file; matrices whose kernel reads a packed layout (gemm.h) also
    // get that layout here, once, so no product decodes them again (kept beside the rows, which
    // the embedding lookups read).
    Tensor load_weight(const Tensor &h) override {
        touch();
        Tensor t = h;
        t.backend = this;
        const int64_t k = h.n_cols(), rows = h.n_rows(), matrices = h.ne[2] * h.ne[3];
        const size_t bytes = cpu_packed_matrix_bytes(h);
        if (bytes == 0) return t;
        Packed p;
        p.isa = active_isa();
        p.type = h.type_id;
        p.row_stride = h.row_stride();
        p.matrix_stride = h.nb[2];
        p.matrix_bytes = bytes;
        p.matrices = static_cast<size_t>(matrices);
        p.end = h.bytes_at(0) + static_cast<size_t>(matrices) * h.nb[2];
        p.data.reset(static_cast<uint8_t *>(std::aligned_alloc(64, (bytes * static_cast<size_t>(matrices) + 63) / 64 * 64)));
        if (!p.data) throw std::bad_alloc();
        const int64_t panels = (rows + kPanelRows - 1) / kPanelRows;
        const size_t panel = gemm_packed_offset(h.type_id, kPanelRows, k);
        pool_.run(matrices * panels, [&](int64_t i, int) {
            const int64_t m = i / panels, r0 = i % panels * kPanelRows;
            gemm_pack_weights(h.type_id, h.bytes_at(static_cast<size_t>(m) * h.nb[2] + static_cast<size_t>(r0) * h.row_stride()),
                              h.row_stride(), std::min(kPanelRows, rows - r0), k,
                              p.data.get() + static_cast<size_t>(m) * bytes + static_cast<size_t>(r0 / kPanelRows) * panel);
        });
        // Host memory of an earlier weight that overlaps this one was released and reused (the
        // earlier weight is gone): its pack would be found for these bytes, so it goes.
        forget_packs(h.bytes_at(0), p.end);
        packed_bytes_ += bytes * static_cast<size_t>(matrices);
        packed_.emplace(h.bytes_at(0), std::move(p));
        return t;
    }
    size_t weight_bytes_owned() const override { return packed_bytes_; }

    // Drops the packs of weights whose rows overlap [begin, end).
    void forget_packs(const uint8_t *begin, const uint8_t *end) {
        auto it = packed_.lower_bound(begin);
        if (it != packed_.begin() && std::prev(it)->second.end > begin) --it;
        while (it != packed_.end() && it->first < end) {
            packed_bytes_ -= it->second.matrix_bytes * it->second.matrices;
            it = packed_.erase(it);
        }
    }

    void upload(const Tensor &dst, const void *src, size_t bytes, size_t offset) override {
        touch();
        copy_bytes(dst.bytes_at(offset), src, bytes);
    }
    void download(const Tensor &src, void *dst, size_t bytes, size_t offset) override { copy_bytes(dst, src.bytes_at(offset), bytes); }
    void copy_rows(const Tensor &src, int64_t s0, const Tensor &dst, int64_t d0, int64_t n) override {
        touch();
        for (int64_t r = 0; r < n; ++r)
            std::memcpy(dst.bytes_at(static_cast<size_t>(d0 + r) * dst.nb[1]), src.bytes_at(static_cast<size_t>(s0 + r) * src.nb[1]),
                        src.nb[1]);
    }
    void synchronize() override {}

    void reserve(const PassLimits &l) override {
        touch();
        auto grow = [](auto &v, int64_t n) {
            if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
        };
        for (Scratch &sc : scratch_) {
            grow(sc.tile, kSoftChunk * l.n_embd);
            grow(sc.scores, std::max({kQueriesPerTask * l.keys, l.max_head_dim, l.rows * kSoftChunk}));
            grow(sc.kv, kKvChunk * l.max_head_dim);
            grow(sc.kpack, (l.keys + 3 * kPanelRows) * l.max_head_dim * static_cast<int64_t>(sizeof(float)) + 4 * 64);  // <= 3 key runs
            grow(sc.moe_rows, l.rows);  // an expert takes each token at most once
            grow(sc.moe_scale, l.rows);
            grow(sc.moe_x, 4 * l.rows * l.max_cols);  // an expert takes each token at most once
        }
        const int64_t slots = l.rows * l.n_expert_used;
        // Activations packed for the GEMM kernels (gemm_activation_bytes) take at most 4 bytes per value.
        grow(qx_, 4 * std::max(slots, l.rows) * l.max_cols);
        grow(qx_mm_, 4 * l.rows * l.max_cols);
        grow(qx_tok_, 4 * l.rows * l.max_cols);
        grow(qx_tok_up_, 4 * l.rows * l.max_cols);
        for (RopeTable &r : rope_tables_) {  // no allocation when a pass makes a table
            grow(r.cs, l.rows * l.max_head_dim);
            r.pos.reserve(static_cast<size_t>(l.rows));
            r.inv_freq.reserve(static_cast<size_t>(l.max_head_dim / 2));
        }
        grow(offsets_, l.n_expert + 1);
        grow(fill_, l.n_expert + 1);
        grow(order_, slots);
        grow(tasks_, l.n_expert * ((l.max_cols + kRowTile - 1) / kRowTile));
        grow(moe_gate_, slots * l.n_ff_exp);
        grow(moe_up_, slots * l.n_ff_exp);
        grow(router_in_, l.rows * l.n_embd);
        grow(router_p_, l.rows * l.n_expert);
        grow(row_max_, l.rows);
        grow(row_inv_sum_, l.rows);
        grow(soft_partial_, kSoftParts * l.rows * l.n_embd);
        if (l.canvas > 0 && l.n_vocab > 0) sampler_scratch_.reserve(l.canvas, l.n_vocab, pool_.size());
    }

    // --- matrix products ------------------------------------------------------------------------

    // Activations in the form the weight type's kernel consumes (gemm_pack_activations) when it
    // has an integer dot product, else nullptr (the float path reads x directly).
    const uint8_t *quantize_activations(const Tensor &w, const float *x, int64_t n, std::vector<uint8_t> &buf,
                                        size_t *row_size) {
        const TensorType type = w.type_id;
        const int64_t K = w.n_cols();
        const size_t rs = gemm_activation_bytes(type, K);
        if (rs == 0) return nullptr;
        *row_size = rs;
        uint8_t *out = reserved(buf, rs * static_cast<size_t>(n));
        for_rows(n, 8, [&](int64_t t, int) { gemm_pack_activations(type, x + t * K, out + t * rs, K); });
        return out;
    }

    // y[t][r] for rows [r0, r1) of w and n contiguous activation rows (float x, or quantized xq).
    // With y_rows set, token t's result for weight row r is added (times y_scale[t]) to
    // y_rows[t][r - r0] instead (GemmArgs::y_rows).
    void rows(const Tensor &w, const float *x, const uint8_t *xq, size_t xq_row, int64_t n, float *y, int64_t ldy,
              int64_t r0, int64_t r1, const uint8_t *prefetch = nullptr, size_t prefetch_bytes = 0, float *const *y_rows = nullptr,
              const float *y_scale = nullptr) {
        const int64_t K = w.n_cols();
        const uint8_t *act = xq ? xq : reinterpret_cast<const uint8_t *>(x);
        const size_t act_row = xq ? xq_row : static_cast<size_t>(K) * sizeof(float);
        gemm(w.type_id, GemmArgs{w.bytes_at(static_cast<size_t>(r0) * w.row_stride()), w.row_stride(), r1 - r0, act, act_row, n,
                                 K, y ? y + r0 : nullptr, ldy, packed_rows(w, r0), prefetch, prefetch_bytes, y_rows, y_scale});
    }

    // Rows r0.. of matrix w in the packed layout, or null (not packed, packed for another
    // instruction set, or not starting at a panel). w is a weight, one expert's slice of it, or a
    // view of rows within one (the fused experts' gate and up halves).
    const uint8_t *packed_rows(const Tensor &w, int64_t r0) const {
        if (packed_.empty()) return nullptr;
        const uint8_t *at = w.bytes_at(0);
        auto it = packed_.upper_bound(at);
        if (it == packed_.begin()) return nullptr;
        --it;
        const Packed &p = it->second;
        if (at >= p.end || p.isa != active_isa() || w.type_id != p.type || w.row_stride() != p.row_stride) return nullptr;
        const size_t offset = static_cast<size_t>(at - it->first), within = offset % p.matrix_stride;
        if (within % p.row_stride) return nullptr;
        const int64_t row = static_cast<int64_t>(within / p.row_stride) + r0;
        if (row % kPanelRows) return nullptr;
        return p.data.get() + offset / p.matrix_stride * p.matrix_bytes + gemm_packed_offset(w.type_id, row, w.n_cols());
    }

    void matmul(const Tensor &w, const Tensor &xt, const Tensor &yt) override {
        const int64_t n = xt.n_rows();
        if (n <= 0) return;
        const float *x = host<float>(xt);
        float *y = host<float>(yt);
        const int64_t K = w.n_cols();
        // Products over the same activations one after another (q, k and v of one normed input;
        // the dense gate and up) quantize them once: the rows are kept until any other op of this
        // backend runs (touch()) or a product writes over them. Rows are quantized one by one, so
        // kept rows serve a product over their first n too (the last layer's q of the decoder rows).
        QuantCache &c = qcache_;
        if (!(c.valid && c.x == x && c.n >= n && c.k == K && c.type == w.type_id)) {
            c.xq = quantize_activations(w, x, n, qx_mm_, &c.row);
            c = {c.xq != nullptr, x, n, K, w.type_id, c.xq, c.row};
        }
        const uint8_t *xq = c.xq;
        const size_t xq_row = c.row;
        // Tasks: row tiles, each over runs of tokens when that gives a thread several more tasks
        // (the last task's wait is the pool's loss; a run re-reads only its tile's panels), run
        // after run: the pool's ranges then give each thread the tokens whose rows it wrote.
        const int64_t n_tiles = (w.n_rows() + kRowTile - 1) / kRowTile;
        const int64_t n_runs = std::clamp<int64_t>(kMatmulTasksPerThread * pool_.size() / n_tiles, 1, std::max<int64_t>(1, n / kMatmulMinRun));
        const int64_t run = (n + n_runs - 1) / n_runs;
        pool_.run(n_tiles * n_runs, [&](int64_t task, int) {
            const int64_t r0 = task % n_tiles * kRowTile, r1 = std::min(w.n_rows(), r0 + kRowTile);
            const int64_t t0 = task / n_tiles * run, t1 = std::min(n, t0 + run);
            if (t0 >= t1) return;
            // The thread's next task is most likely the next row tile over the same tokens.
            const uint8_t *next = r1 < w.n_rows() ? packed_rows(w, r1) : nullptr;
            const size_t next_bytes = next ? gemm_packed_offset(w.type_id, std::min(kRowTile, (w.n_rows() - r1 + kPanelRows - 1) / kPanelRows * kPanelRows), K) : 0;
            rows(w, x + t0 * K, xq ? xq + t0 * xq_row : nullptr, xq_row, t1 - t0, y + t0 * w.n_rows(), w.n_rows(), r0, r1, next, next_bytes);
        });
        const float *y_end = y + (n - 1) * w.n_rows() + w.n_rows();
        if (y < x + n * K && x < y_end) touch();
    }

    void moe(const MoeWeights &w, const Tensor &xt, const Tensor &expert_t, const Tensor &weight_t, const Tensor &out_t) override {
        touch();
        const float *x = host<float>(xt);
        const int32_t *expert = host<int32_t>(expert_t);
        const float *weight = host<float>(weight_t);
        float *out = host<float>(out_t);
        const int64_t n = xt.n_rows(), k = expert_t.ne[0];
        const int64_t E = w.down.n_rows(), F = w.gate.n_rows(), X = w.gate.ne[2], K = w.gate.n_cols();
        const int64_t total = n * k;
        // Group the (token, slot) assignments by expert: slots offsets[e] .. offsets[e+1].
        int64_t *offsets = reserved(offsets_, static_cast<size_t>(X + 1)), *fill = reserved(fill_, static_cast<size_t>(X + 1));
        int64_t *order = reserved(order_, static_cast<size_t>(total));
        std::fill(offsets, offsets + X + 1, 0);
        for (int64_t i = 0; i < total; ++i) ++offsets[expert[i] + 1];
        for (int64_t e = 0; e < X; ++e) offsets[e + 1] += offsets[e];
        std::copy(offsets, offsets + X, fill);
        for (int64_t i = 0; i < total; ++i) {
            const int64_t s = fill[expert[i]]++;
            order[s] = i;  // assignment i = t * k + j
        }
        float *gate = reserved(moe_gate_, static_cast<size_t>(total * F));  // [slot][F], then the activation
        float *up = reserved(moe_up_, static_cast<size_t>(total * F));

        // Tasks: (expert, row tile) over the experts that received tokens.
        int64_t n_tasks = 0;
        auto make_tasks = [&](int64_t n_rows) {
            TaskRec *tasks = reserved(tasks_, static_cast<size_t>(X * ((n_rows + kMoeRowTile - 1) / kMoeRowTile)));
            n_tasks = 0;
            for (int64_t e = 0; e < X; ++e)
                if (offsets[e + 1] > offsets[e])
                    for (int64_t r0 = 0; r0 < n_rows; r0 += kMoeRowTile) tasks[n_tasks++] = {e, r0, std::min(n_rows, r0 + kMoeRowTile)};
            // The experts' loads are uneven (a few take hundreds of tokens, many a handful): the
            // largest tasks go first, so the pool does not end on one long task with the other
            // threads idle. Tasks write disjoint outputs, so their order changes no result.
            std::stable_sort(tasks, tasks + n_tasks, [&](const TaskRec &p, const TaskRec &q) {
                return (offsets[p.e + 1] - offsets[p.e]) * (p.r1 - p.r0) > (offsets[q.e + 1] - offsets[q.e]) * (q.r1 - q.r0);
            });
        };
        // Each token's activations in the kernels' form, quantized once (null for float weights,
        // which read x's rows); a task gathers its expert's rows from them into its own scratch,
        // where they stay in cache for the product (the tokens' rows, 1/k of the slots', stay in L2).
        size_t q_row = 0, q_row_up = 0;
        const uint8_t *tq = quantize_activations(w.gate, x, n, qx_tok_, &q_row);
        const uint8_t *tq_up = tq;
        q_row_up = q_row;
        if (w.up.type_id != w.gate.type_id) tq_up = quantize_activations(w.up, x, n, qx_tok_up_, &q_row_up);
        make_tasks(F);
        pool_.run(n_tasks, [&](int64_t ti, int thread) {
            const TaskRec &t = tasks_[ti];
            const int64_t s0 = offsets[t.e], m = offsets[t.e + 1] - s0;
            uint8_t *rows_at = reserved(scratch_[thread].moe_x, static_cast<size_t>(m) * std::max(std::max(q_row, q_row_up), K * sizeof(float)));
            // rows [s0, s0 + m) of slot order: from the tokens' quantized rows, or x's floats
            auto gather = [&](const uint8_t *tokens, size_t row_bytes) {
                const uint8_t *src = tokens ? tokens : reinterpret_cast<const uint8_t *>(x);
                const size_t rs = tokens ? row_bytes : static_cast<size_t>(K) * sizeof(float);
                for (int64_t s = 0; s < m; ++s) std::memcpy(rows_at + s * rs, src + (order[s0 + s] / k) * rs, rs);
            };
            const float *xf = reinterpret_cast<const float *>(rows_at);
            // While one product's last panels are swept, the next's first come in: the up's, then
            // the gate's of the thread's likely next task.
            auto first_panels = [&](const Tensor &wt, int64_t r0, int64_t r1, const uint8_t **at) {
                *at = packed_rows(wt, r0);
                return *at ? gemm_packed_offset(wt.type_id, std::min<int64_t>((r1 - r0 + kPanelRows - 1) / kPanelRows * kPanelRows, 2 * kPanelRows), K) : 0;
            };
            const Tensor up_e = w.up.slice(t.e);
            const uint8_t *pf_up = nullptr, *pf_next = nullptr;
            const size_t pf_up_bytes = first_panels(up_e, t.r0, t.r1, &pf_up);
            size_t pf_next_bytes = 0;
            if (ti + 1 < n_tasks) pf_next_bytes = first_panels(w.gate.slice(tasks_[ti + 1].e), tasks_[ti + 1].r0, tasks_[ti + 1].r1, &pf_next);
            gather(tq, q_row);
            rows(w.gate.slice(t.e), xf, tq ? rows_at : nullptr, q_row, m, gate + s0 * F, F, t.r0, t.r1, pf_up, pf_up_bytes);
            if (tq_up != tq || q_row_up != q_row) gather(tq_up, q_row_up);
            rows(up_e, xf, tq_up ? rows_at : nullptr, q_row_up, m, up + s0 * F, F, t.r0, t.r1, pf_next, pf_next_bytes);
            for (int64_t s = s0; s < s0 + m; ++s) gelu_tanh_mul(gate + s * F + t.r0, up + s * F + t.r0, gate + s * F + t.r0, t.r1 - t.r0);
        });
        size_t q_row_down = 0;
        // The down products with the weighted sum fused: a task is a tile of output rows [r0, r1)
        // for every token, and visits the experts in increasing id, its product adding each slot's
        // results times the slot's weight to its token's rows (GemmArgs::y_rows): every token's sum
        // runs over its experts in the reference's order, whichever thread runs the tile, and no
        // [slot][n_embd] buffer is written and read back. Tiles are whole 16-row panels, two a thread.
        const uint8_t *xq = quantize_activations(w.down, gate, total, qx_, &q_row_down);
        const int64_t tile = moe_down_tile(E);
        pool_.run((E + tile - 1) / tile, [&](int64_t ti, int thread) {
            const int64_t r0 = ti * tile, r1 = std::min(E, r0 + tile), width = r1 - r0;
            float **dst = reserved(scratch_[thread].moe_rows, static_cast<size_t>(n));  // an expert's slots' token rows
            float *scale = reserved(scratch_[thread].moe_scale, static_cast<size_t>(n));
            for (int64_t t = 0; t < n; ++t) std::fill(out + t * E + r0, out + t * E + r1, 0.0f);
            for (int64_t e = 0, next = 0; e < X; e = next) {
                const int64_t s0 = offsets[e], m = offsets[e + 1] - s0;
                for (next = e + 1; next < X && offsets[next + 1] == offsets[next];) ++next;  // the next expert with slots
                if (m == 0) continue;
                const uint8_t *pf = next < X ? packed_rows(w.down.slice(next), r0) : nullptr;
                const size_t pf_bytes = pf ? gemm_packed_offset(w.down.type_id, std::min<int64_t>((width + kPanelRows - 1) / kPanelRows * kPanelRows, 2 * kPanelRows), F) : 0;
                for (int64_t s = 0; s < m; ++s) {
                    const int64_t i = order[s0 + s];  // assignment t * k + j
                    dst[s] = out + (i / k) * E + r0;
                    scale[s] = weight[i];
                }
                rows(w.down.slice(e), gate + s0 * F, xq ? xq + s0 * q_row_down : nullptr, q_row_down, m, nullptr, 0, r0, r1, pf, pf_bytes,
                     dst, scale);
            }
        });
    }

    // --- normalisation and elementwise ----------------------------------------------------------

    void rmsnorm(const Tensor &xt, const Tensor *wt, float eps, const Tensor &yt) override {
        touch();
        const int64_t dim = xt.ne[0], rows = xt.count() / dim;
        const float *x = host<float>(xt), *w = wt ? host<float>(*wt) : nullptr;
        float *y = host<float>(yt);
        const int64_t per_task = std::max<int64_t>(1, kElementwiseChunk / dim);
        pool_.run((rows + per_task - 1) / per_task, [&](int64_t task, int) {
            const int64_t r0 = task * per_task, r1 = std::min(rows, r0 + per_task);
            rmsnorm_rows(x + r0 * dim, w, eps, y + r0 * dim, r1 - r0, dim);
        });
    }

    void rope(const Tensor &xt, int n_heads, int head_dim, const Tensor &pos_t, const Tensor &freq_t, int n_rot) override {
        touch();
        float *x = host<float>(xt);
        const int32_t *pos = host<int32_t>(pos_t);
        const float *inv_freq = host<float>(freq_t);
        const int half = n_rot / 2;
        const int64_t n = pos_t.count();
        // (cos, sin) per position for this inv_freq: every layer of a kind and both q and k rotate
        // by the same angles, so a table made for a pass's positions serves them all: one whose first
        // n positions and whose frequencies are these (compared by value, a few KB a call).
        RopeTable *tab = nullptr;
        for (RopeTable &r : rope_tables_)
            if (r.valid && r.pos.size() >= static_cast<size_t>(n) && r.inv_freq.size() == static_cast<size_t>(half) &&
                std::equal(pos, pos + n, r.pos.begin()) && std::equal(inv_freq, inv_freq + half, r.inv_freq.begin()))
                tab = &r;
        if (!tab) {
            tab = &rope_tables_[rope_next_++ % rope_tables_.size()];
            float *cs0 = reserved(tab->cs, static_cast<size_t>(n * 2 * half));
            for_rows(n, 16, [&](int64_t t, int) {
                float *cs = cs0 + t * 2 * half;
                const float p = static_cast<float>(pos[t]);
                for (int j = 0; j < half; ++j) {
                    const float angle = p * inv_freq[j];
                    cs[j] = std::cos(angle);
                    cs[half + j] = std::sin(angle);
                }
            });
            tab->valid = true;
            tab->pos.assign(pos, pos + n);
            tab->inv_freq.assign(inv_freq, inv_freq + half);
        }
        const float *cs0 = tab->cs.data();
        for_rows(n, 8, [&](int64_t t, int) {
            for (int h = 0; h < n_heads; ++h) rope_rotate(x + (t * n_heads + h) * head_dim, cs0 + t * 2 * half, half);
        });
    }

    // Per task: one segment, one KV head with its query heads and a block of queries. Scores for the
    // block against every key any of its queries may see come from the float panel products (cached
    // keys in at most two contiguous ring runs as stored, then the current keys, packed into panels
    // once for the heads of the group); keys a query may not see get probability 0.
    void attention(const AttentionArgs &a) override {
        touch();
        const Pass &pass = *a.pass;
        const int group = a.n_head / a.n_head_kv;
        const int d = a.head_dim;
        const int64_t kv_row = static_cast<int64_t>(a.n_head_kv) * d, q_stride = static_cast<int64_t>(a.n_head) * d;
        // Tasks of all segments in one loop: segment g owns tasks [first[g], first[g + 1]). A task
        // is one block of queries and one KV head with `per_task` of the query heads that share it
        // (all of them, unless that leaves fewer than 4 tasks a thread); blocks go last to first (a
        // causal block sees more keys the later it is: the longest first).
        int64_t n_blocks_all = 0;
        for (const PassSegment &g : pass.segments) n_blocks_all += (g.n + queries_per_task(g.mode) - 1) / queries_per_task(g.mode);
        int per_task = group;
        while (per_task % 2 == 0 && n_blocks_all * a.n_head / per_task < 4 * pool_.size()) per_task /= 2;
        const int64_t slices = a.n_head / per_task;  // (KV head, run of its query heads) per block
        int64_t n_tasks = n_blocks_all * slices;
        pool_.run(n_tasks, [&](int64_t task, int thread) {
            size_t gi = 0;
            for (;; ++gi) {
                const int64_t qpt = queries_per_task(pass.segments[gi].mode);
                const int64_t nt = (pass.segments[gi].n + qpt - 1) / qpt * slices;
                if (task < nt) break;
                task -= nt;
            }
            const PassSegment &g = pass.segments[gi];
            const KvLayer &c = (*g.cache)[static_cast<size_t>(a.layer)];
            const bool causal = g.mode == PassMode::Encoder;
            const int64_t window = causal ? a.window : 0;
            const int h0 = static_cast<int>(task % slices) * per_task, kvh = h0 / group;
            const int64_t qpt = queries_per_task(g.mode);
            const int64_t n_blocks = (g.n + qpt - 1) / qpt;
            const int64_t i0 = (n_blocks - 1 - task / slices) * qpt, i1 = std::min(g.n, i0 + qpt);
            const int64_t nb = i1 - i0;
            const float *qs = host<float>(a.q) + g.row0 * q_stride, *ks = host<float>(a.k) + g.row0 * kv_row,
                        *vs = host<float>(a.v) + g.row0 * kv_row;
            // Cached positions visible: sliding layers keep (and see) the last capacity = window - 1.
            const int64_t cache_pos0 = a.window > 0 ? std::max<int64_t>(0, g.n_past - c.capacity) : 0;
            const int64_t cache_end = g.n_past;
            // Keys visible to some query of the block: cached [c_lo, cache_end), current [0, cur_hi).
            int64_t c_lo = cache_pos0;
            if (window > 0) c_lo = std::max(c_lo, g.n_past + i0 - window + 1);
            c_lo = std::min(c_lo, cache_end);
            const int64_t n_c = cache_end - c_lo;
            // Current keys [cur_lo, cur_hi): a sliding window hides those before i0 - window + 1.
            const int64_t cur_hi = causal ? i1 : g.n;
            const int64_t cur_lo = window > 0 ? std::min(cur_hi, std::max<int64_t>(0, i0 - window + 1)) : 0;
            const int64_t n_cur = cur_hi - cur_lo;
            const int64_t n_keys = n_c + n_cur;
            float *scores = reserved(scratch_[thread].scores, static_cast<size_t>(nb * n_keys));
            float inv_sum[kQueriesPerTask];  // 1 / the softmax's sum, per query of the block
            // The task's keys as runs of stored rows: the cached slots (two runs where the ring wraps),
            // then the current pass's rows; each packed into the float kernel's panels once for the
            // task's heads (unpacked where the set's kernel reads rows as stored): the same products
            // as over the rows.
            struct KeyRun {
                TensorType type;
                const uint8_t *rows;
                size_t stride;
                int64_t n, col;  // rows; their first score column
                const uint8_t *pack;
            };
            KeyRun runs[3];
            int n_runs = 0;
            const size_t k_row = static_cast<size_t>(kv_row) * sizeof(float);
            for (int64_t j = c_lo; j < cache_end;) {
                const int64_t slot = j % c.capacity;
                const int64_t run = std::min(cache_end - j, c.capacity - slot);
                runs[n_runs++] = {c.k.type_id, c.k.bytes_at(static_cast<size_t>(slot) * c.k.nb[1] + static_cast<size_t>(kvh * d) * c.k.nb[0]),
                                  c.k.nb[1], run, j - c_lo, nullptr};
                j += run;
            }
            if (n_cur > 0)
                runs[n_runs++] = {TensorType::F32, reinterpret_cast<const uint8_t *>(ks + cur_lo * kv_row + kvh * d), k_row, n_cur, n_c, nullptr};
            uint8_t *pack_at = reinterpret_cast<uint8_t *>((reinterpret_cast<uintptr_t>(scratch_[thread].kpack.data()) + 63) & ~uintptr_t{63});
            for (int r = 0; r < n_runs; ++r) {
                KeyRun &kr = runs[r];
                const size_t bytes = (gemm_packed_bytes(kr.type, kr.n, d) + 63) / 64 * 64;
                if (bytes == 0) continue;
                if (pack_at + bytes > scratch_[thread].kpack.data() + scratch_[thread].kpack.size())
                    throw Error(DGEMMA_ERR_INTERNAL, "backend scratch used before reserve()");
                gemm_pack_weights(kr.type, kr.rows, kr.stride, kr.n, d, pack_at);
                kr.pack = pack_at;
                pack_at += bytes;
            }
            for (int h = h0; h < h0 + per_task; ++h) {
                const float *q = qs + i0 * q_stride + h * d;
                // A ring run of cached rows of one KV head as F32 rows with stride ld.
                auto cached = [&](const Tensor &cache, int64_t slot, int64_t run, int64_t *ld) -> const float * {
                    if (cache.type_id == TensorType::F32) {
                        *ld = kv_row;
                        return host<float>(cache) + slot * kv_row + kvh * d;
                    }
                    float *buf = reserved(scratch_[thread].kv, static_cast<size_t>(run * d));
                    for (int64_t r = 0; r < run; ++r)
                        cache.type->to_float(cache.bytes_at(static_cast<size_t>(slot + r) * cache.nb[1] + static_cast<size_t>(kvh * d) * cache.nb[0]),
                                             buf + r * d, d);
                    *ld = d;
                    return buf;
                };
                // Scores = the block's queries against key rows, by the matrix product over the keys as
                // they are stored (F32, F16 or BF16 cache rows; the current pass's F32 rows).
                const uint8_t *qb = reinterpret_cast<const uint8_t *>(q);
                const size_t q_row = static_cast<size_t>(q_stride) * sizeof(float);
                for (int r = 0; r < n_runs; ++r) {
                    const KeyRun &kr = runs[r];
                    gemm(kr.type, GemmArgs{kr.rows, kr.stride, kr.n, qb, q_row, nb, d, scores + kr.col, n_keys, kr.pack});
                }
                for (int64_t i = i0; i < i1; ++i) {
                    float *sr = scores + (i - i0) * n_keys;
                    const int64_t p = g.n_past + i;
                    // Visible: cached j >= c0 (window), current j <= i (causal) and j > p - window;
                    // in score columns, [vis_c0, n_c) and [n_c + cur0 - cur_lo, n_c + cur_end - cur_lo).
                    // A query that sees a cached key sees every current key up to itself (they are
                    // nearer), so the two runs are one: the softmax runs over it, the rest is 0.
                    const int64_t c0 = window > 0 ? std::max(c_lo, p - window + 1) : c_lo;
                    const int64_t cur0 = window > 0 ? std::max<int64_t>(cur_lo, p - window + 1 - g.n_past) : 0;
                    const int64_t cur_end = causal ? i + 1 : g.n;
                    const int64_t vis_c0 = std::min(n_c, c0 - c_lo);
                    const int64_t lo = vis_c0 < n_c ? vis_c0 : n_c + cur0 - cur_lo, hi = n_c + cur_end - cur_lo;
                    std::fill(sr, sr + lo, 0.0f);
                    std::fill(sr + hi, sr + n_keys, 0.0f);
                    // The softmax's exponentials here, its normalisation on the output row after
                    // P . V (d values instead of the visible keys).
                    const float mx = max_value(sr + lo, hi - lo);
                    inv_sum[i - i0] = static_cast<float>(1.0 / exp_sum(sr + lo, hi - lo, mx, 1.0f, sr + lo));
                    float *o = host<float>(a.out) + (g.row0 + i) * q_stride + h * d;
                    std::fill(o, o + d, 0.0f);
                }
                // out = P . V for the whole block, value rows in the same runs as the keys.
                float *o = host<float>(a.out) + (g.row0 + i0) * q_stride + h * d;
                for (int64_t j = c_lo; j < cache_end;) {
                    const int64_t slot = j % c.capacity;
                    const int64_t run = std::min({cache_end - j, c.capacity - slot, kKvChunk});
                    int64_t ld;
                    const float *vc = cached(c.v, slot, run, &ld);
                    accumulate_rows(scores + (j - c_lo), n_keys, nb, vc, ld, run, d, o, q_stride);
                    j += run;
                }
                if (n_cur > 0) accumulate_rows(scores + n_c, n_keys, nb, vs + cur_lo * kv_row + kvh * d, kv_row, n_cur, d, o, q_stride);
                for (int64_t r = 0; r < nb; ++r)
                    for (float *orow = o + r * q_stride, *end = orow + d; orow < end; ++orow) *orow *= inv_sum[r];
            }
        });
    }

    void cache_store(const KvLayer &c, const Tensor &k, const Tensor &v, int64_t row0, int64_t n, int64_t pos0) override {
        touch();
        if (c.capacity <= 0) return;
        const int64_t skip = std::max<int64_t>(0, n - c.capacity);  // a ring keeps the last `capacity`
        const int64_t row = c.k.ne[0];
        // Rows are small: tasks of many rows, so a short store runs inline instead of waking the pool.
        const int64_t per_task = std::max<int64_t>(1, kElementwiseChunk / row);
        for (const auto &[src, dst] : {std::pair<const Tensor *, const Tensor *>{&k, &c.k}, {&v, &c.v}})
            pool_.run((n - skip + per_task - 1) / per_task, [&](int64_t task, int) {
                for (int64_t i = task * per_task; i < std::min(n - skip, (task + 1) * per_task); ++i) {
                    const int64_t p = pos0 + skip + i;
                    const float *s = host<float>(*src) + (row0 + skip + i) * row;
                    void *o = dst->bytes_at(static_cast<size_t>(p % c.capacity) * dst->nb[1]);
                    if (dst->type_id == TensorType::F32) std::memcpy(o, s, static_cast<size_t>(row) * sizeof(float));
                    else dst->type->from_float(s, o, row);
                }
            });
    }

    void gelu_mul(const Tensor &gate, const Tensor &up, const Tensor &out) override {
        touch();
        const float *g = host<float>(gate), *u = host<float>(up);
        float *o = host<float>(out);
        // The experts' vectorised form (cpu/kernels.h) for the dense MLP too: one GELU per ISA.
        elementwise(out.count(), [&](int64_t i0, int64_t i1) { gelu_tanh_mul(g + i0, u + i0, o + i0, i1 - i0); });
    }

    void zero(const Tensor &t) override {
        touch();
        std::memset(t.data, 0, t.bytes());
    }

    void add(const Tensor &yt, const Tensor &xt) override {
        touch();
        float *y = host<float>(yt);
        const float *x = host<float>(xt);
        elementwise(yt.count(), [&](int64_t i0, int64_t i1) { axpy(y + i0, x + i0, 1.0f, i1 - i0); });
    }

    void scale_rows(const Tensor &xt, const Tensor &mode_t, const float scalars[2]) override {
        touch();
        float *x = host<float>(xt);
        const int32_t *mode = host<int32_t>(mode_t);
        const int64_t w = xt.ne[0];
        elementwise(xt.count(), [&](int64_t i0, int64_t i1) {
            for (int64_t i = i0; i < i1;) {  // row by row within the chunk: one scalar per run
                const int64_t r = i / w, end = std::min(i1, (r + 1) * w);
                const float s = scalars[mode[r]];
                for (; i < end; ++i) x[i] *= s;
            }
        });
    }

    void softcap(const Tensor &xt, float cap) override {
        touch();
        float *x = host<float>(xt);
        elementwise(xt.count(), [&](int64_t i0, int64_t i1) {
            dg::softcap(x + i0, i1 - i0, cap);
        });
    }

    void embed(const Tensor &e, const Tensor &ids_t, float s, const Tensor &out_t) override {
        touch();
        const int32_t *ids = host<int32_t>(ids_t);
        float *out = host<float>(out_t);
        const int64_t E = e.n_cols();
        for_rows(ids_t.count(), 8, [&](int64_t t, int) {
            float *o = out + t * E;
            e.type->to_float(e.bytes_at(static_cast<size_t>(ids[t]) * e.row_stride()), o, E);
            for (int64_t i = 0; i < E; ++i) o[i] *= s;
        });
    }

    void soft_embed(const Tensor &e, const Tensor &logits_t, float s, const Tensor &out_t) override {
        touch();
        const float *logits = host<float>(logits_t);
        float *out = host<float>(out_t);
        const int64_t V = e.n_rows(), E = e.n_cols(), n = logits_t.n_rows();
        float *row_max = reserved(row_max_, static_cast<size_t>(n)), *row_inv_sum = reserved(row_inv_sum_, static_cast<size_t>(n));
        pool_.run(n, [&](int64_t t, int) {
            const float *z = logits + t * V;
            const float mx = max_value(z, V);
            const double sum = exp_sum(z, V, mx, 0.0f, nullptr);
            row_max[t] = mx;
            row_inv_sum[t] = static_cast<float>(1.0 / sum);
        });
        // The vocabulary is split into a fixed number of ranges, each summed into its own partial
        // [n][E] and reduced in range order, so results do not depend on scheduling or thread count.
        float *partials = reserved(soft_partial_, static_cast<size_t>(kSoftParts * n * E));
        const int64_t per_part = (V + kSoftParts - 1) / kSoftParts;
        // Within a range, vocabulary rows are taken kSoftChunk at a time (dequantized once) with the
        // probabilities of every token for them, and the register-blocked accumulate_rows adds
        // probabilities x rows into the partial sums.
        pool_.run(kSoftParts, [&](int64_t part, int thread) {
            float *partial = partials + part * n * E;
            std::fill_n(partial, n * E, 0.0f);  // by the task that sums into it: in its cache, on every thread
            float *rows = reserved(scratch_[thread].tile, static_cast<size_t>(kSoftChunk * E));
            float *probs = reserved(scratch_[thread].scores, static_cast<size_t>(n * kSoftChunk));
            const int64_t v_end = std::min(V, (part + 1) * per_part);
            for (int64_t c0 = part * per_part; c0 < v_end; c0 += kSoftChunk) {
                const int64_t c1 = std::min(v_end, c0 + kSoftChunk);
                for (int64_t v = c0; v < c1; ++v) e.type->to_float(e.bytes_at(static_cast<size_t>(v) * e.row_stride()), rows + (v - c0) * E, E);
                for (int64_t t = 0; t < n; ++t) {
                    const float *z = logits + t * V;
                    exp_sum(z + c0, c1 - c0, row_max[t], row_inv_sum[t], probs + t * kSoftChunk);
                }
                accumulate_rows(probs, kSoftChunk, n, rows, E, c1 - c0, E, partial, E);
            }
        });
        // out = (((0 + part 0) + part 1) + ...) * s, element by element; the parts added a piece of
        // out at a time, each piece one vectorisable pass per part.
        elementwise(n * E, [&](int64_t i0, int64_t i1) {
            constexpr int64_t kPiece = 512;
            float acc[kPiece];
            for (int64_t p0 = i0; p0 < i1; p0 += kPiece) {
                const int64_t len = std::min(kPiece, i1 - p0);
                std::fill_n(acc, len, 0.0f);
                for (int64_t part = 0; part < kSoftParts; ++part) {
                    const float *src = partials + part * n * E + p0;
                    for (int64_t j = 0; j < len; ++j) acc[j] += src[j];
                }
                for (int64_t j = 0; j < len; ++j) out[p0 + j] = acc[j] * s;
            }
        });
    }

    void route(const Tensor &w, const Tensor &xt, const Tensor &scale_t, const Tensor &pes_t, float eps, int k,
               const Tensor &expert_t, const Tensor &weight_t) override {
        touch();
        const int64_t E = w.n_cols(), X = w.n_rows(), n = xt.n_rows();
        const float *scale = host<float>(scale_t), *per_expert_scale = host<float>(pes_t);
        int32_t *expert = host<int32_t>(expert_t);
        float *weight = host<float>(weight_t);
        float *z = reserved(router_in_, static_cast<size_t>(n * E));
        const Tensor zt = make_tensor(z, TensorType::F32, E, n, 1, 1, this);
        rmsnorm(xt, nullptr, eps, zt);
        const float root = static_cast<float>(1.0 / std::sqrt(static_cast<double>(E)));
        for_rows(n, 16, [&](int64_t t, int) {
            float *zr = z + t * E;
            for (int64_t i = 0; i < E; ++i) zr[i] = zr[i] * scale[i] * root;
        });
        float *logits = reserved(router_p_, static_cast<size_t>(n * X));
        matmul(w, zt, make_tensor(logits, TensorType::F32, X, n, 1, 1, this));
        // The router's choice (router_math.h's route_top_k in one pass).
        for_rows(n, 16, [&](int64_t t, int) { route_top_k_one_pass(logits + t * X, X, k, per_expert_scale, expert + t * k, weight + t * k); });
    }

    // --- the sampler (the reference in sampler.cpp, on this backend's host tensors) ----------------

    static SamplerView view(const Tensor &canvas, const Tensor &fixed, const Tensor &history, const SamplerParams &p,
                            uint64_t seed, const Tensor &table, int64_t canvas_no, int64_t V) {
        SamplerView v;
        v.n_canvas = canvas.ne[0];
        v.n_vocab = V;
        v.params = &p;
        v.draws = {seed, table ? host<uint64_t>(table) : nullptr, table ? table.ne[0] : 0};
        v.canvas_no = canvas_no;
        v.canvas = host<int32_t>(canvas);
        v.fixed = fixed ? host<int8_t>(fixed) : nullptr;
        v.history = history ? host<int32_t>(history) : nullptr;
        return v;
    }

    void sampler_init(const Tensor &canvas, const Tensor &fixed, const Tensor &history, uint64_t seed,
                      const Tensor &table, int64_t canvas_no, const SamplerParams &p, int64_t n_vocab) override {
        touch();
        sampler_init_host(view(canvas, fixed, history, p, seed, table, canvas_no, n_vocab));
    }

    void sample(const SampleArgs &a) override {
        touch();
        SamplerView v = view(a.canvas, a.fixed, a.history, *a.params, a.seed, a.draw_table, a.canvas_no, a.logits.ne[0]);
        v.argmax = host<int32_t>(a.argmax);
        v.accepted = a.accepted ? host<int8_t>(a.accepted) : nullptr;
        if (sampler_scratch_.entropy.size() < static_cast<size_t>(v.n_canvas) ||
            sampler_scratch_.per_thread < sampler_scratch_per_thread(v.n_vocab))
            throw Error(DGEMMA_ERR_INTERNAL, "sampler scratch used before reserve()");
        host<int32_t>(a.stop)[0] = sample_step_host(v, a.step, host<float>(a.logits), pool_, sampler_scratch_) ? 1 : 0;
    }

private:
    // Output rows per task of the experts' down products: whole 16-row panels, two tasks a thread.
    int64_t moe_down_tile(int64_t n_embd) const {
        const int64_t n_panels = (n_embd + kPanelRows - 1) / kPanelRows, n_tasks = std::min<int64_t>(n_panels, 2 * pool_.size());
        return (n_panels + n_tasks - 1) / n_tasks * kPanelRows;
    }

    // memcpy over the pool in 256 KiB pieces: a step's logits cross twice (8 MiB each at the medium
    // config, 268 MiB at the 26B's), and one core's copy is slower than two.
    void copy_bytes(void *dst, const void *src, size_t bytes) {
        constexpr size_t kPiece = size_t{1} << 18;
        pool_.run(static_cast<int64_t>((bytes + kPiece - 1) / kPiece), [&](int64_t p, int) {
            const size_t at = static_cast<size_t>(p) * kPiece;
            std::memcpy(static_cast<uint8_t *>(dst) + at, static_cast<const uint8_t *>(src) + at, std::min(kPiece, bytes - at));
        });
    }

    // f(row, thread) for rows [0, n), `per_task` rows a task: per-row work of a microsecond or so
    // would otherwise spend a good part of it on the pool's shared task counter.
    template <typename F>
    void for_rows(int64_t n, int64_t per_task, F &&f) {
        pool_.run((n + per_task - 1) / per_task, [&](int64_t task, int thread) {
            for (int64_t r = task * per_task; r < std::min(n, (task + 1) * per_task); ++r) f(r, thread);
        });
    }

    template <typename F>
    void elementwise(int64_t count, F &&f) {
        const int64_t chunks = (count + kElementwiseChunk - 1) / kElementwiseChunk;
        pool_.run(chunks, [&](int64_t c, int) { f(c * kElementwiseChunk, std::min(count, (c + 1) * kElementwiseChunk)); });
    }

    struct FreeDeleter {
        void operator()(uint8_t *p) const { std::free(p); }
    };
    struct Packed {                // one weight tensor's matrices in their kernel's layout
        Isa isa;                   // the set the layout is for
        TensorType type;
        size_t row_stride;         // bytes between rows in the file
        size_t matrix_stride;      // bytes between the tensor's matrices (experts) in the file
        size_t matrix_bytes;       // bytes of one packed matrix
        size_t matrices;           // matrices (experts) in the tensor
        const uint8_t *end;        // the end of the tensor's rows in the file
        std::unique_ptr<uint8_t, FreeDeleter> data;
    };

    // The activations the last matmul quantized (qx_mm_), while no other op has run since.
    struct QuantCache {
        bool valid = false;
        const float *x = nullptr;
        int64_t n = 0, k = 0;
        TensorType type = TensorType::F32;
        const uint8_t *xq = nullptr;
        size_t row = 0;
    };
    void touch() { qcache_.valid = false; }
    // RoPE's (cos, sin) of one pass's positions for one inv_freq: [n][cos half | sin half], with the
    // positions and frequencies it was made for (by value: a table is found by what it computes, so
    // no op that writes positions needs to drop it).
    struct RopeTable {
        bool valid = false;
        std::vector<int32_t> pos;
        std::vector<float> inv_freq;
        std::vector<float> cs;
    };
    std::array<RopeTable, 2> rope_tables_;  // the sliding layers' and the full layers' frequencies
    size_t rope_next_ = 0;

    QuantCache qcache_;
    ThreadPool pool_;
    std::map<const uint8_t *, Packed> packed_;  // by the tensor's first byte; read-only after load
    size_t packed_bytes_ = 0;
    std::vector<Scratch> scratch_;
    std::vector<uint8_t> qx_, qx_tok_, qx_tok_up_, qx_mm_;
    std::vector<int64_t> offsets_, order_, fill_;
    struct TaskRec { int64_t e, r0, r1; };
    std::vector<TaskRec> tasks_;
    std::vector<float> moe_gate_, moe_up_, router_in_, router_p_, row_max_, row_inv_sum_, soft_partial_;
    SamplerScratch sampler_scratch_;
};

}  // namespace

size_t cpu_packed_matrix_bytes(const Tensor &h) {
    return h.data && h.n_rows() > 1 ? gemm_packed_bytes(h.type_id, h.n_rows(), h.n_cols()) : 0;
}

std::unique_ptr<Backend> make_cpu_backend(int n_threads) {
    return std::make_unique<CpuBackend>(resolve_thread_count(n_threads));
}

}  // namespace dg
