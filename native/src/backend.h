// The compute seam: every op the model and the generation loop run, over typed tensors in backend
// memory. The model is written against this interface only; a backend (cpu/, a device backend,
// the host-opaque test backend) implements it. Design: docs/backends.md.
//
// Rules every backend keeps:
//   - Ops are enqueued on the backend's stream in call order and may run asynchronously; only
//     download() and synchronize() wait. The CPU backend runs each op before returning.
//   - Ops never allocate: scratch is sized once by reserve() (a pass of up to max_rows rows
//     attending to up to max_keys keys) before the first pass that needs it.
//   - Host memory crosses only through upload() and download() (and weights at load); the
//     description of a pass (Pass, AttentionArgs) is small host data every op may read.
//   - A tensor's contents change only through these ops, so a backend may keep what it derived
//     from an op's inputs until its next op (the CPU backend's quantized activations, shared by
//     back-to-back products over one input).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sampler.h"
#include "tensor.h"

namespace dg {

enum class PassMode : int32_t { Decoder = 0, Encoder = 1 };

// One layer's KV cache of one sequence: a ring of `capacity` slots (slot = position % capacity),
// k and v of ne = {n_head_kv * head_dim, capacity}, in the cache type (F32, F16 or BF16).
struct KvLayer {
    Tensor k, v;
    int64_t capacity = 0;
};

// One sequence's rows in a pass: rows row0 .. row0 + n - 1 at positions n_past .. n_past + n - 1.
// Encoder rows attend causally and append to the cache; decoder rows attend to the cached prefix
// and to every row of their segment, and leave the cache untouched.
struct PassSegment {
    int64_t row0 = 0, n = 0, n_past = 0;
    PassMode mode = PassMode::Decoder;
    const std::vector<KvLayer> *cache = nullptr;  // per layer
};

// The batch description every op of a pass reads. positions and row_mode are backend tensors
// (I32 [n_rows]) so that RoPE and the layer scalar run once over all rows of any mix of segments.
struct Pass {
    int64_t n_rows = 0;
    std::vector<PassSegment> segments;
    Tensor positions;  // I32 [n_rows]
    Tensor row_mode;   // I32 [n_rows], PassMode per row
};

struct AttentionArgs {
    Tensor q;    // F32 [n_rows][n_head][head_dim]
    Tensor k;    // F32 [n_rows][n_head_kv][head_dim], current keys (after RoPE)
    Tensor v;    // F32 [n_rows][n_head_kv][head_dim]
    Tensor out;  // F32 [n_rows][n_head][head_dim]
    int n_head = 0, n_head_kv = 0, head_dim = 0;
    int64_t window = 0;  // > 0: sliding layer; an encoder query at p sees keys at positions > p - window
    int layer = 0;       // index into each segment's cache
    const Pass *pass = nullptr;
};

// One step of the entropy-bound sampler on one canvas, as an op on logits where they lie
// (contract in sampler.h: the draw mapping, the blocked reductions, fixed positions).
struct SampleArgs {
    Tensor logits;        // F32 [C][V]: raw in, processed (divided by the temperature) out
    const SamplerParams *params = nullptr;
    int step = 0;         // n, counting down N .. 1
    int64_t canvas_no = 0;
    uint64_t seed = 0;
    Tensor draw_table;    // I64 [n] raw draws replacing the generator (tests); empty: the generator
    Tensor canvas;        // I32 [C]: current in, next out
    Tensor argmax;        // I32 [C] out
    Tensor fixed;         // I8 [C]: 1 = fixed position (kept, outside the budget and stop test); may be empty
    Tensor history;       // I32 [stability][C]: the last argmax canvases, -1 before filled
    Tensor stop;          // I32 [1] out: 1 when the stable-and-confident stop fires
    Tensor accepted;      // I8 [C] out, may be empty
};

// The largest pass a backend's scratch must serve.
struct PassLimits {
    int64_t rows = 0;        // token rows in one pass
    int64_t keys = 0;        // keys one query may see (cached + current)
    int64_t n_embd = 0;
    int64_t max_cols = 0;    // the widest weight row (elements)
    int64_t max_head_dim = 0;
    int64_t n_expert = 0, n_expert_used = 0, n_ff_exp = 0;
    int64_t canvas = 0, n_vocab = 0;  // the sampler's canvas
};

// Bytes a model, a sequence and a batch need, per backend (see Model::memory_plan).
struct MemoryPlan {
    size_t weights_mapped = 0;   // file bytes the backend uses in place (CPU: mapped, paged on demand)
    size_t weights_owned = 0;    // bytes the backend holds (uploaded, repacked)
    size_t weights_on_host = 0;  // of the mapped bytes, the offloaded experts (a host backend's or streamed)
    size_t per_session = 0;      // KV cache of one sequence at the requested context
    size_t per_batch = 0;        // workspace and sampler state of the requested batch
    size_t total = 0;            // weights + n sessions + the batch
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual std::string name() const = 0;

    // --- memory ----------------------------------------------------------------------------------
    virtual Tensor alloc(TensorType type, int64_t ne0, int64_t ne1 = 1, int64_t ne2 = 1, int64_t ne3 = 1) = 0;
    virtual void free(Tensor &t) = 0;
    // A weight placed once at load from `host`, a view of the mapped file. The backend may use it
    // in place, copy it or repack its blocks; the result is only ever passed back to its own ops.
    // `host` must outlive the weight; a weight loaded over bytes an earlier one used supersedes it.
    virtual Tensor load_weight(const Tensor &host) = 0;
    // A weight that stays in host memory and is brought into the backend's memory for each op that
    // reads it (expert offload by streaming: weight_stream.h). The weights of one `group` (a layer's
    // experts) are added together and read together by one op; groups are used in the order they
    // were loaded, cyclically, so a backend may copy the next group while the current one computes.
    // A backend whose memory is host memory has nothing to stream: the default places the weight.
    // Streamed weights go to moe() only; the bytes of their staging count in weight_bytes_owned().
    virtual Tensor load_weight_streamed(const Tensor &host, int group) { return load_weight(host); }
    // Bytes held by the weights loaded so far, beyond the mapped file (uploads, repacked copies).
    virtual size_t weight_bytes_owned() const = 0;
    virtual void upload(const Tensor &dst, const void *src, size_t bytes, size_t offset = 0) = 0;
    virtual void download(const Tensor &src, void *dst, size_t bytes, size_t offset = 0) = 0;
    // dst[rows of dst_row0..] = src[rows of src_row0..], n rows of equal byte width; tensors of this backend.
    virtual void copy_rows(const Tensor &src, int64_t src_row0, const Tensor &dst, int64_t dst_row0, int64_t n) = 0;
    // Sizes the scratch of every op for passes within `limits`. Called before the first pass of a
    // size (Model::workspace), never from inside an op.
    virtual void reserve(const PassLimits &limits) = 0;
    // Waits for every op enqueued so far (no-op on the CPU).
    virtual void synchronize() = 0;

    // --- recorded passes ---------------------------------------------------------------------------
    // A device backend may record a pass's ops once and replay the recording (one launch instead
    // of hundreds). The model brackets the ops of a pass that cross no host memory:
    //   if (!be.replay_pass(key)) {
    //       bool ran = false;
    //       if (be.record_pass_begin(key)) { ...ops...; ran = be.record_pass_end(ops_enqueued); }
    //       if (!ran) ...ops...;   // as called
    //   }
    // `key` names everything the ops depend on but tensor contents (rows, segments, positions,
    // the tensors' addresses); an empty key is never recorded. While recording, ops are enqueued
    // without running; record_pass_end(true) launches them and returns true. It returns false
    // when there is nothing to launch (an op threw while recording, or the recording failed): the
    // recording is dropped, the backend may stop recording, and the caller runs the ops as called.
    // Backends that do not record keep these defaults.
    virtual bool replay_pass(const std::vector<int64_t> &key) { return false; }
    virtual bool record_pass_begin(const std::vector<int64_t> &key) { return false; }
    virtual bool record_pass_end(bool ops_enqueued) { return false; }

    // --- ops -------------------------------------------------------------------------------------
    // y[n][w.rows] = x[n][w.cols] . W^T; x and y F32.
    virtual void matmul(const Tensor &w, const Tensor &x, const Tensor &y) = 0;
    // out[t] = sum_j weight[t][j] * down_e(gelu_tanh(gate_e x_t) * up_e x_t), e = expert[t][j], j < k,
    // summed in increasing expert id. expert I32 [n][k], weight F32 [n][k].
    virtual void moe(const MoeWeights &w, const Tensor &x, const Tensor &expert, const Tensor &weight, const Tensor &out) = 0;
    // y = x * (mean(x^2) + eps)^-1/2 (* w when w is given), per row of x.ne[0]; y may alias x.
    virtual void rmsnorm(const Tensor &x, const Tensor *w, float eps, const Tensor &y) = 0;
    // Rotate-half RoPE in place on x [n][n_heads][head_dim] at positions pos[n]; dimension pairs
    // (i, i + n_rot/2), i < n_rot/2, rotate by angle pos * inv_freq[i].
    virtual void rope(const Tensor &x, int n_heads, int head_dim, const Tensor &pos, const Tensor &inv_freq, int n_rot) = 0;

    // --- composite ops: each is its default, the ops it names in order; a backend may override one
    // with a single pass of the same arithmetic (fewer launches and passes over memory). The
    // defaults are the reference the overrides are checked against.
    // With d_norm, d = rmsnorm(d) * d_norm first (d's contents after the op: unspecified); h += d;
    // then, with scalars, row r of h *= scalars[row_mode[r]]; then out = rmsnorm(h) (* w). out may be
    // h (the sum is then not kept). A sublayer's output norm, the residual add, the layer scalar and
    // the norm of the next reader of h, in one op.
    virtual void add_rmsnorm(const Tensor &h, const Tensor &d, const Tensor *d_norm, const Tensor *row_mode, const float *scalars,
                             const Tensor *w, float eps, const Tensor &out) {
        if (d_norm) rmsnorm(d, d_norm, eps, d);
        add(h, d);
        if (scalars) scale_rows(h, *row_mode, scalars);
        rmsnorm(h, w, eps, out);
    }
    // y = cap * tanh((x . W^T) / cap): the logits' product and soft cap in one op.
    virtual void matmul_softcap(const Tensor &w, const Tensor &x, const Tensor &y, float cap) {
        matmul(w, x, y);
        softcap(y, cap);
    }
    // x [n][n_heads][head_dim] in place: each head's row normed (rmsnorm over head_dim, * w when
    // given), then rotated as rope() does. The queries' and keys' norm and RoPE in one op.
    virtual void rmsnorm_rope(const Tensor &x, const Tensor *w, float eps, int n_heads, int head_dim, const Tensor &pos,
                              const Tensor &inv_freq, int n_rot) {
        const Tensor heads = make_tensor(x.data, x.type_id, head_dim, pos.count() * n_heads, 1, 1, x.backend);
        rmsnorm(heads, w, eps, heads);
        rope(x, n_heads, head_dim, pos, inv_freq, n_rot);
    }
    // Every segment of the pass at once (see PassSegment for who sees what).
    virtual void attention(const AttentionArgs &a) = 0;
    // Appends rows [row0, row0 + n) of k and v at positions pos0.. to a ring cache; only the last
    // `capacity` rows are kept when n exceeds it. Converts to the cache type.
    virtual void cache_store(const KvLayer &c, const Tensor &k, const Tensor &v, int64_t row0, int64_t n, int64_t pos0) = 0;
    // out = gelu_tanh(gate) * up, elementwise; out may alias gate.
    virtual void gelu_mul(const Tensor &gate, const Tensor &up, const Tensor &out) = 0;
    // t = 0
    virtual void zero(const Tensor &t) = 0;
    // y += x
    virtual void add(const Tensor &y, const Tensor &x) = 0;
    // Row r of x [n][w] *= scalars[row_mode[r]] (the layer scalar of each row's mode).
    virtual void scale_rows(const Tensor &x, const Tensor &row_mode, const float scalars[2]) = 0;
    // x = cap * tanh(x / cap)
    virtual void softcap(const Tensor &x, float cap) = 0;
    // out[i] = table[ids[i]] * s; ids I32 [n].
    virtual void embed(const Tensor &table, const Tensor &ids, float s, const Tensor &out) = 0;
    // out[t] = s * sum_v softmax(logits[t])[v] * table[v]: the soft (expected) embedding, summed
    // over fixed vocabulary ranges so the result does not depend on scheduling.
    virtual void soft_embed(const Tensor &table, const Tensor &logits, float s, const Tensor &out) = 0;
    // Router: z = rmsnorm_noscale(x) * scale * n_embd^-1/2; p = softmax(W z); top-k of p (ties to the
    // lower id) renormalised to sum 1, times per_expert_scale[e]. Writes expert I32 [n][k], weight F32 [n][k].
    virtual void route(const Tensor &w, const Tensor &x, const Tensor &scale, const Tensor &per_expert_scale, float eps,
                       int k, const Tensor &expert, const Tensor &weight) = 0;
    // canvas[i] = fixed[i] ? (unchanged) : draw_token(draw(canvas_no, 0, 0, i)); resets history to -1.
    virtual void sampler_init(const Tensor &canvas, const Tensor &fixed, const Tensor &history, uint64_t seed,
                              const Tensor &draw_table, int64_t canvas_no, const SamplerParams &params,
                              int64_t n_vocab) = 0;
    virtual void sample(const SampleArgs &a) = 0;
};

// CPU backend over `n_threads` threads (<= 0: one per core).
std::unique_ptr<Backend> make_cpu_backend(int n_threads);
// Bytes of the packed copy the CPU backend makes of each matrix of weight `host` at load (0: used as
// stored), on this machine's instruction set.
size_t cpu_packed_matrix_bytes(const Tensor &host);
// The accounting backend (cpu/backend_plan.cpp): a model opened on it reads its memory plan, the
// CPU backend's to the byte, without packing or reading its weights; it runs nothing (every op is
// DGEMMA_ERR_UNSUPPORTED). What `dgemma info` and the offload planner open.
std::unique_ptr<Backend> make_plan_backend();
// Test backend: the CPU backend behind tensors whose data pointers are tagged handles the host
// cannot dereference, counting every byte that crosses to the host. See cpu/backend_opaque.cpp.
struct TransferCounts {
    size_t bytes_to_host = 0, bytes_to_device = 0;
    int64_t downloads = 0, uploads = 0;
};
std::unique_ptr<Backend> make_opaque_test_backend(int n_threads, TransferCounts *counts);

// CUDA (cuda_loader.cpp): the backend library is loaded on first use; each throws
// DGEMMA_ERR_UNSUPPORTED naming what is missing (the library, the driver, a device).
struct CudaDeviceInfo;
int cuda_device_count();
CudaDeviceInfo cuda_device_info(int device);
std::unique_ptr<Backend> make_cuda_backend(int device);

}  // namespace dg
