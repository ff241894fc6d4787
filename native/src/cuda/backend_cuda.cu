// The CUDA backend: every op of backend.h on one device and one stream. Tensors are cudaMalloc'd;
// weights are uploaded once at load (types without a kernel are refused there, naming the type:
// no silent host fallback); upload() and download() are the only host crossings, and download()
// and synchronize() the only waits. Kernels: cuda/*.cu; entry points for the core: plugin.cu.
// Environment: DGEMMA_CUDA_KERNELS chooses the matrix ops' kernels (kernel_set below: the bf16
// tensor-core tiles by default from compute capability 8.0, 'float' for the float32 tiles);
// DGEMMA_CUDA_PROFILE=1 prints the device time per op to stderr when the backend goes
// (cuda/op_profile.h); DGEMMA_CUDA_GRAPH=1 records each pass the model brackets as a CUDA graph
// and replays it for the same key (Backend::replay_pass; opt-in: run 10 measured it slower);
// DGEMMA_CUDA_QMMA=1 runs the tensor set's Q4_K and Q5_0 products on quantized fragments
// (cuda/qmma.cuh; opt-in: run 11 found them exact but slower than the bf16 tiles, see
// bench/results/cuda-notes.md); DGEMMA_CUDA_INT8=1 runs its Q4_K, Q6_K, Q5_0 and Q8_0 products (dense and
// experts) on int8 tensor cores, the CPU's integer dot products bit for bit (cuda/int8_mma.h;
// opt-in until a device run has measured it; it takes precedence over DGEMMA_CUDA_QMMA);
// DGEMMA_CUDA_FLASH=1 runs the tensor set's decoder attention as flash attention on bf16 tensor cores
// (cuda/flash_attention.h; opt-in until a device run has measured it); DGEMMA_CUDA_WGMMA=1 runs the
// vocabulary-sized products (the logits and the soft embedding) on Hopper's warpgroup instructions
// (cuda/wgmma.h; compute capability 9.0 with the library's sm_90a code; opt-in until a device run has
// measured it; it takes precedence over DGEMMA_CUDA_INT8 for those products).
// Streamed weights (expert offload by streaming, Backend::load_weight_streamed) live in pinned host
// memory; a second stream copies each layer's experts into one of two device staging slots, as
// weight_stream.h plans, while the op stream computes from the other; events order the two.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "backend.h"
#include "cuda/backend_cuda.h"
#include "cuda/dequant.h"
#include "cuda/flash_attention.h"
#include "cuda/expert_group.h"
#include "cuda/int8_mma.h"
#include "cuda/kernels.h"
#include "cuda/mma_layout.h"
#include "cuda/op_profile.h"
#include "cuda/quant_mma.h"
#include "sampler_math.h"
#include "weight_stream.h"

namespace dg {

namespace {

using cuda::check;

template <typename T>
T *dev(const Tensor &t) { return static_cast<T *>(t.data); }

cuda::WeightView view(const Tensor &w) {
    cuda::WeightView v;
    v.data = static_cast<const uint8_t *>(w.data);
    v.type = w.type_id;
    v.cols = w.ne[0];
    v.rows = w.ne[1];
    v.row_stride = w.nb[1];
    v.expert_stride = w.nb[2];
    return v;
}

// Device scratch of one op, grown by reserve() only.
template <typename T>
struct Scratch {
    T *ptr = nullptr;
    size_t n = 0;
    void grow(size_t want) {
        if (want <= n) return;
        if (ptr) check(cudaFree(ptr), "cudaFree");
        ptr = nullptr;
        n = 0;
        check(cudaMalloc(&ptr, want * sizeof(T)), "cudaMalloc (op scratch)");
        n = want;
    }
    T *get(size_t want) const {
        if (want > n) throw Error(DGEMMA_ERR_INTERNAL, "CUDA backend scratch used before reserve()");
        return ptr;
    }
    ~Scratch() {
        if (ptr) cudaFree(ptr);
    }
};

class CudaBackend final : public Backend {
public:
    explicit CudaBackend(int device) : device_(device) {
        check(cudaSetDevice(device), "cudaSetDevice");
        check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
        cudaDeviceProp prop;
        check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
        sm_count_ = prop.multiProcessorCount;
        kernels_ = kernel_set(std::getenv("DGEMMA_CUDA_KERNELS"), prop.major, prop.minor);
        qmma_ = kernels_ == cuda::KernelSet::tensor && env_on("DGEMMA_CUDA_QMMA");
        int8_ = kernels_ == cuda::KernelSet::tensor && env_on("DGEMMA_CUDA_INT8");
        flash_ = kernels_ == cuda::KernelSet::tensor && env_on("DGEMMA_CUDA_FLASH");
        // Asked for elsewhere (another card, or a library without sm_90a code): the other kernels run.
        wgmma_ = kernels_ == cuda::KernelSet::tensor && env_on("DGEMMA_CUDA_WGMMA") && prop.major == 9 && prop.minor == 0 &&
                 cuda::wg_prepare();
        // The op check's wgmma-active row reads whether the warpgroup products run.
        name_ = "cuda:" + std::to_string(device) + " (" + prop.name + (wgmma_ ? ", warpgroup products" : "") + ")";
        if (int8_) cuda::i8_prepare();
        graphs_asked_ = env_on("DGEMMA_CUDA_GRAPH");
        graphs_on_ = graphs_asked_ && !profile_.on();  // the profile times ops one by one
    }
    ~CudaBackend() override {
        cudaStreamSynchronize(stream_);
        drop_graphs();
        if (graphs_asked_)
            std::fprintf(stderr, "dgemma CUDA graphs (DGEMMA_CUDA_GRAPH): %ld passes recorded (%ld of them updating another's), %ld replayed%s\n",
                         graphs_recorded_, graphs_updated_, graphs_replayed_,
                         graphs_on_         ? ""
                         : profile_.on()    ? "; off under DGEMMA_CUDA_PROFILE"
                                            : "; recording stopped: a pass could not be captured");
        for (void *w : weights_) cudaFree(w);
        if (copy_stream_) {
            cudaStreamSynchronize(copy_stream_);
            for (int i = 0; i < 2; ++i) {
                if (slots_[i]) cudaFree(slots_[i]);
                cudaEventDestroy(slot_ready_[i]);
                cudaEventDestroy(slot_free_[i]);
            }
            cudaStreamDestroy(copy_stream_);
        }
        for (void *p : pinned_) cudaFreeHost(p);
        cudaStreamDestroy(stream_);
    }

    std::string name() const override { return name_; }

    // --- memory ----------------------------------------------------------------------------------
    Tensor alloc(TensorType type, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3) override {
        Tensor t = make_tensor(nullptr, type, ne0, ne1, ne2, ne3, this);
        if (t.bytes()) t.data = device_malloc(t.bytes(), "a tensor");
        return t;
    }
    void free(Tensor &t) override {
        if (t.data) {
            cudaStreamSynchronize(stream_);  // ops still queued may read it
            drop_graphs();                   // a recording may name it
            cudaFree(t.data);
        }
        t = Tensor{};
    }
    Tensor load_weight(const Tensor &host) override {
        check_weight_type(host);
        Tensor t = host;
        t.backend = this;
        t.data = device_malloc(host.bytes(), "weights");
        weights_.push_back(t.data);
        // On the op stream: it does not wait on the legacy default stream's copies.
        check(cudaMemcpyAsync(t.data, host.data, host.bytes(), cudaMemcpyHostToDevice, stream_), "upload (weights)");
        owned_ += host.bytes();
        return t;
    }
    // A pinned host copy (what cudaMemcpyAsync reads without staging through the driver), and device
    // slots grown to the plan's size. The tensor's data is the pinned copy: only moe() reads it.
    Tensor load_weight_streamed(const Tensor &host, int group) override {
        check_weight_type(host);
        if (!copy_stream_) {
            check(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking), "cudaStreamCreate (weight copies)");
            for (int i = 0; i < 2; ++i) {
                check(cudaEventCreateWithFlags(&slot_ready_[i], cudaEventDisableTiming), "cudaEventCreate");
                check(cudaEventCreateWithFlags(&slot_free_[i], cudaEventDisableTiming), "cudaEventCreate");
            }
        }
        void *pinned = nullptr;
        if (cudaHostAlloc(&pinned, host.bytes(), cudaHostAllocDefault) != cudaSuccess) {
            cudaGetLastError();
            throw Error(DGEMMA_ERR_OUT_OF_MEMORY, "no pinned host memory for " + std::to_string(host.bytes()) +
                                                      " bytes of streamed experts");
        }
        pinned_.push_back(pinned);
        std::memcpy(pinned, host.data, host.bytes());
        stream_plan_.add(group, pinned, host.bytes());
        if (stream_plan_.slot_bytes() > slot_bytes_ || (stream_plan_.n_slots() == 2 && !slots_[1])) {
            check(cudaStreamSynchronize(stream_), "a weight upload");
            for (void *&s : slots_) {
                if (s) cudaFree(s);
                s = nullptr;
            }
            slot_bytes_ = stream_plan_.slot_bytes();
            for (int i = 0; i < stream_plan_.n_slots(); ++i) slots_[i] = device_malloc(slot_bytes_, "streamed experts' staging");
        }
        Tensor t = host;
        t.backend = this;
        t.data = pinned;
        return t;
    }
    size_t weight_bytes_owned() const override { return owned_ + stream_plan_.staging_bytes(); }
    void upload(const Tensor &dst, const void *src, size_t bytes, size_t offset) override {
        cuda::OpScope scope(profile_, stream_, "upload");
        if (bytes) check(cudaMemcpyAsync(dst.bytes_at(offset), src, bytes, cudaMemcpyHostToDevice, stream_), "upload");
    }
    void download(const Tensor &src, void *dst, size_t bytes, size_t offset) override {
        cuda::OpScope scope(profile_, stream_, "download");
        if (!bytes) return;
        check(cudaMemcpyAsync(dst, src.bytes_at(offset), bytes, cudaMemcpyDeviceToHost, stream_), "download");
        check(cudaStreamSynchronize(stream_), "a kernel (at download)");
        profile_.collect();
    }
    void copy_rows(const Tensor &src, int64_t s0, const Tensor &dst, int64_t d0, int64_t n) override {
        cuda::OpScope scope(profile_, stream_, "copy_rows");
        if (n <= 0) return;
        check(cudaMemcpy2DAsync(dst.bytes_at(static_cast<size_t>(d0) * dst.nb[1]), dst.nb[1],
                                src.bytes_at(static_cast<size_t>(s0) * src.nb[1]), src.nb[1], src.nb[1],
                                static_cast<size_t>(n), cudaMemcpyDeviceToDevice, stream_),
              "copy_rows");
    }
    void synchronize() override {
        check(cudaStreamSynchronize(stream_), "a kernel (at synchronize)");
        profile_.collect();
    }

    // --- recorded passes (CUDA graphs) ---------------------------------------------------------------
    // A key's graph holds the addresses of every tensor and scratch buffer its kernels touch, so
    // every graph goes when any device memory is freed (free(), reserve()). A pass that cannot be
    // captured turns recording off for this backend (the model then runs it op by op). Capture is
    // relaxed: an op may set a kernel attribute (the attention tiles' shared memory) while it runs.
    // A newly captured pass of the same shape as a kept one (a canvas's step at another n_past, or over
    // other buffers: the same kernels and copies, other arguments) updates that one's executable in place
    // (cudaGraphExecUpdate), which costs far less than instantiating anew (run 10: every canvas
    // instantiated its three passes, and the graphs ran slower than op by op); the kept pass's key goes
    // with it. The candidate is the most recently used executable of the same node count; an update
    // that does not fit fails without touching it, and the pass is instantiated as before.
    bool replay_pass(const std::vector<int64_t> &key) override {
        if (!graphs_on_ || key.empty()) return false;
        const auto it = graphs_.find(key);
        if (it == graphs_.end()) return false;
        held_ = cuda::ActScratch{};  // the graph's kernels rewrite the scratch
        check(cudaGraphLaunch(it->second.exec, stream_), "cudaGraphLaunch");
        it->second.last_use = ++graph_clock_;
        ++graphs_replayed_;
        return true;
    }
    bool record_pass_begin(const std::vector<int64_t> &key) override {
        if (!graphs_on_ || key.empty()) return false;
        held_ = cuda::ActScratch{};  // a recording converts what it reads: it replays after other work
        if (graphs_.size() >= kMaxGraphs) drop_graphs();  // keys of finished canvases and old batches
        if (cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed) != cudaSuccess) {
            cudaGetLastError();
            graphs_on_ = false;
            return false;
        }
        recording_ = key;
        return true;
    }
    bool record_pass_end(bool ops_enqueued) override {
        if (recording_.empty()) return false;
        held_ = cuda::ActScratch{};  // a failed recording ran none of what it decided
        std::vector<int64_t> key;
        key.swap(recording_);
        cudaGraph_t graph = nullptr;
        cudaGraphExec_t exec = nullptr;
        size_t nodes = 0;
        bool ok = cudaStreamEndCapture(stream_, &graph) == cudaSuccess && ops_enqueued &&
                  cudaGraphGetNodes(graph, nullptr, &nodes) == cudaSuccess;
        if (ok) {
            auto same = graphs_.end();
            for (auto it = graphs_.begin(); it != graphs_.end(); ++it)
                if (it->second.nodes == nodes && (same == graphs_.end() || it->second.last_use > same->second.last_use)) same = it;
            cudaGraphExecUpdateResultInfo info;
            if (same != graphs_.end() && cudaGraphExecUpdate(same->second.exec, graph, &info) == cudaSuccess) {
                exec = same->second.exec;
                graphs_.erase(same);
                ++graphs_updated_;
            } else {
                cudaGetLastError();  // a failed update leaves its executable as it was
                ok = cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
            }
        }
        if (graph) cudaGraphDestroy(graph);
        if (!ok) {  // nothing ran; the ops run one by one from now on
            cudaGetLastError();
            graphs_on_ = false;
            return false;
        }
        graphs_.emplace(std::move(key), Recorded{exec, nodes, ++graph_clock_});
        check(cudaGraphLaunch(exec, stream_), "cudaGraphLaunch");
        ++graphs_recorded_;
        return true;
    }

    void reserve(const PassLimits &l) override {
        synchronize();  // scratch that grows is freed: nothing queued may still use it
        drop_graphs();
        held_ = cuda::ActScratch{};
        const size_t slots = static_cast<size_t>(l.rows * l.n_expert_used);
        moe_offsets_.grow(static_cast<size_t>(l.n_expert + 1));
        moe_order_.grow(slots);
        moe_slot_of_.grow(slots);
        moe_tiles_.grow(1 + 2 * static_cast<size_t>(cuda::group_tiles_bound(static_cast<int>(slots), static_cast<int>(l.n_expert),
                                                                            cuda::kGroupMinTile)));
        moe_act_.grow(slots * static_cast<size_t>(l.n_ff_exp));
        moe_y_.grow(slots * static_cast<size_t>(l.n_embd));
        row_max_.grow(static_cast<size_t>(l.rows));
        row_inv_sum_.grow(static_cast<size_t>(l.rows));
        soft_partial_.grow(static_cast<size_t>(cuda::kSoftEmbedParts * l.rows * l.n_embd));
        router_z_.grow(static_cast<size_t>(l.rows * l.n_embd));
        router_logits_.grow(static_cast<size_t>(l.rows * l.n_expert));
        if (kernels_ == cuda::KernelSet::tensor) {  // bf16 copies of the products' activations
            x_bf16_.grow(static_cast<size_t>(l.rows * cuda::mma_padded_cols(l.max_cols)));
            soft_probs_.grow(static_cast<size_t>(cuda::soft_probs_rows(l.rows) * cuda::mma_padded_cols(l.n_vocab)));
            split_partial_.grow(static_cast<size_t>(cuda::mma_split_partial_floats(sm_count_)));
            act_bf16_.grow(slots * static_cast<size_t>(cuda::mma_padded_cols(l.n_ff_exp)));
        }
        if (qmma_) {  // the 32-element sums of those copies
            x_sums_.grow(static_cast<size_t>(l.rows * (cuda::mma_padded_cols(l.max_cols) / cuda::kQmmaSub)));
            act_sums_.grow(slots * static_cast<size_t>(cuda::mma_padded_cols(l.n_ff_exp) / cuda::kQmmaSub));
        }
        if (flash_) {  // the slices' partial sums of segments up to kFaSplitRows rows (max_cols bounds n_head x head_dim)
            const size_t rows = static_cast<size_t>(std::min<int64_t>(l.rows, cuda::kFaSplitRows));
            flash_o_.grow(cuda::kFaMaxSlices * rows * static_cast<size_t>(l.max_cols));
            flash_ml_.grow(cuda::kFaMaxSlices * rows * static_cast<size_t>(l.max_cols / 64 + 1) * 2);
        }
        if (int8_) {  // the int8 codes of the products' activations and their scales (a 32nd: either format)
            x_q8_.grow(static_cast<size_t>(l.rows * cuda::i8_padded_cols(l.max_cols)));
            x_q8_d_.grow(static_cast<size_t>(l.rows * cuda::i8_padded_cols(l.max_cols) / 32));
            act_q8_.grow(slots * static_cast<size_t>(cuda::i8_padded_cols(l.n_ff_exp)));
            act_q8_d_.grow(slots * static_cast<size_t>(cuda::i8_padded_cols(l.n_ff_exp) / 32));
        }
        if (l.canvas > 0) {
            entropy_.grow(static_cast<size_t>(l.canvas));
            draw_.grow(static_cast<size_t>(l.canvas));
            order_.grow(static_cast<size_t>(l.canvas));
        }
    }

    // --- ops -------------------------------------------------------------------------------------
    void matmul(const Tensor &w, const Tensor &x, const Tensor &y) override { run_matmul(w, x, y, cuda::Epilogue{}, "matmul"); }
    void matmul_softcap(const Tensor &w, const Tensor &x, const Tensor &y, float cap) override {
        run_matmul(w, x, y, cuda::Epilogue{true, cap}, "matmul_softcap");
    }
    void moe(const MoeWeights &weights, const Tensor &x, const Tensor &expert, const Tensor &weight, const Tensor &out) override {
        MoeWeights w = weights;
        const WeightStream::Where streamed = stream_plan_.locate(w.gate.data);
        WeightStream::Plan plan;
        if (streamed.group >= 0) {  // compute from the group's slot once its copy is in
            cuda::OpScope wait(profile_, stream_, "stream_wait");
            plan = stream_plan_.use(streamed.group);
            if (plan.copy) stage(streamed.group, plan.slot);
            check(cudaStreamWaitEvent(stream_, slot_ready_[plan.slot], 0), "cudaStreamWaitEvent (streamed experts)");
            for (Tensor *t : {&w.gate, &w.up, &w.down}) {
                const WeightStream::Where at = stream_plan_.locate(t->data);
                if (at.group != streamed.group) throw Error(DGEMMA_ERR_INTERNAL, "the experts of one MoE in different stream groups");
                t->data = static_cast<uint8_t *>(slots_[plan.slot]) + at.offset;
            }
        }
        run_moe(w, x, expert, weight, out);
        if (streamed.group >= 0) {  // the slot is free after this MoE; the next group goes to the other
            check(cudaEventRecord(slot_free_[plan.slot], stream_), "cudaEventRecord (streamed experts)");
            if (plan.prefetch_group >= 0) stage(plan.prefetch_group, plan.prefetch_slot);
        }
    }
    void rmsnorm(const Tensor &x, const Tensor *w, float eps, const Tensor &y) override {
        cuda::OpScope scope(profile_, stream_, "rmsnorm");
        cuda::rmsnorm(stream_, dev<float>(x), w ? dev<float>(*w) : nullptr, eps, x.count() / x.ne[0], x.ne[0], dev<float>(y));
    }
    void rope(const Tensor &x, int n_heads, int head_dim, const Tensor &pos, const Tensor &inv_freq, int n_rot) override {
        cuda::OpScope scope(profile_, stream_, "rope");
        cuda::rope(stream_, dev<float>(x), pos.count(), n_heads, head_dim, dev<int32_t>(pos), dev<float>(inv_freq), n_rot);
    }
    void add_rmsnorm(const Tensor &h, const Tensor &d, const Tensor *d_norm, const Tensor *row_mode, const float *scalars,
                     const Tensor *w, float eps, const Tensor &out) override {
        cuda::OpScope scope(profile_, stream_, "add_rmsnorm");
        cuda::add_rmsnorm(stream_, dev<float>(h), dev<float>(d), d_norm ? dev<float>(*d_norm) : nullptr,
                          scalars ? dev<int32_t>(*row_mode) : nullptr, scalars, w ? dev<float>(*w) : nullptr, eps,
                          h.count() / h.ne[0], h.ne[0], dev<float>(out));
    }
    void rmsnorm_rope(const Tensor &x, const Tensor *w, float eps, int n_heads, int head_dim, const Tensor &pos,
                      const Tensor &inv_freq, int n_rot) override {
        cuda::OpScope scope(profile_, stream_, "rmsnorm_rope");
        cuda::rmsnorm_rope(stream_, dev<float>(x), pos.count(), w ? dev<float>(*w) : nullptr, eps, n_heads, head_dim,
                           dev<int32_t>(pos), dev<float>(inv_freq), n_rot);
    }
    void attention(const AttentionArgs &a) override {
        cuda::OpScope scope(profile_, stream_, "attention");
        for (const PassSegment &g : a.pass->segments) {
            const KvLayer &c = (*g.cache)[static_cast<size_t>(a.layer)];
            cuda::AttentionSegment s;
            s.row0 = g.row0;
            s.n = g.n;
            s.n_past = g.n_past;
            s.causal = g.mode == PassMode::Encoder;
            s.window = s.causal ? a.window : 0;
            // Sliding layers keep (and see) the last capacity = window - 1 cached positions.
            s.cache_pos0 = a.window > 0 ? std::max<int64_t>(0, g.n_past - c.capacity) : 0;
            s.k_cache = static_cast<const uint8_t *>(c.k.data);
            s.v_cache = static_cast<const uint8_t *>(c.v.data);
            s.cache_type = c.k.type_id;
            s.cache_row_bytes = c.k.nb[1];
            s.capacity = c.capacity;
            cuda::FlashScratch fs;
            if (flash_) {
                fs.part_o = flash_o_.ptr;
                fs.o_floats = flash_o_.n;
                fs.part_ml = flash_ml_.ptr;
                fs.ml_floats = flash_ml_.n;
                fs.sm_count = sm_count_;
            }
            cuda::attention(stream_, dev<float>(a.q), dev<float>(a.k), dev<float>(a.v), dev<float>(a.out), a.n_head,
                            a.n_head_kv, a.head_dim, s, kernels_, flash_ ? &fs : nullptr);
        }
    }
    void cache_store(const KvLayer &c, const Tensor &k, const Tensor &v, int64_t row0, int64_t n, int64_t pos0) override {
        cuda::OpScope scope(profile_, stream_, "cache_store");
        if (c.capacity <= 0) return;
        const int64_t skip = std::max<int64_t>(0, n - c.capacity);  // a ring keeps the last `capacity`
        for (const auto &[src, dst] : {std::pair<const Tensor *, const Tensor *>{&k, &c.k}, {&v, &c.v}})
            cuda::cache_store(stream_, dev<float>(*src), dst->ne[0], row0, skip, n, pos0, dev<uint8_t>(*dst), dst->type_id,
                              dst->nb[1], c.capacity);
    }
    void gelu_mul(const Tensor &gate, const Tensor &up, const Tensor &out) override {
        cuda::OpScope scope(profile_, stream_, "gelu_mul");
        cuda::gelu_mul(stream_, dev<float>(gate), dev<float>(up), out.count(), dev<float>(out));
    }
    void zero(const Tensor &t) override {
        cuda::OpScope scope(profile_, stream_, "zero");
        if (t.bytes()) check(cudaMemsetAsync(t.data, 0, t.bytes(), stream_), "zero");
    }
    void add(const Tensor &y, const Tensor &x) override {
        cuda::OpScope scope(profile_, stream_, "add");
        cuda::add(stream_, dev<float>(y), dev<float>(x), y.count());
    }
    void scale_rows(const Tensor &x, const Tensor &row_mode, const float scalars[2]) override {
        cuda::OpScope scope(profile_, stream_, "scale_rows");
        cuda::scale_rows(stream_, dev<float>(x), x.count() / x.ne[0], x.ne[0], dev<int32_t>(row_mode), scalars[0], scalars[1]);
    }
    void softcap(const Tensor &x, float cap) override {
        cuda::OpScope scope(profile_, stream_, "softcap");
        cuda::softcap(stream_, dev<float>(x), x.count(), cap);
    }
    void embed(const Tensor &table, const Tensor &ids, float s, const Tensor &out) override {
        cuda::OpScope scope(profile_, stream_, "embed");
        cuda::embed(stream_, view(table), dev<int32_t>(ids), ids.count(), s, dev<float>(out));
    }
    void soft_embed(const Tensor &table, const Tensor &logits, float s, const Tensor &out) override {
        cuda::OpScope scope(profile_, stream_, "soft_embed");
        const int64_t n = logits.n_rows();
        cuda::soft_embed(stream_, view(table), dev<float>(logits), n, s, dev<float>(out), row_max_.get(static_cast<size_t>(n)),
                         row_inv_sum_.get(static_cast<size_t>(n)),
                         soft_partial_.get(static_cast<size_t>(cuda::kSoftEmbedParts * n * table.n_cols())),
                         kernels_ == cuda::KernelSet::tensor
                             ? soft_probs_.get(static_cast<size_t>(cuda::soft_probs_rows(n) * cuda::mma_padded_cols(table.n_rows())))
                             : nullptr,
                         kernels_, wgmma_, sm_count_);
    }
    void route(const Tensor &w, const Tensor &x, const Tensor &scale, const Tensor &per_expert_scale, float eps, int k,
               const Tensor &expert, const Tensor &weight) override {
        cuda::OpScope scope(profile_, stream_, "route");
        const size_t n = static_cast<size_t>(x.n_rows());
        const cuda::RouteScratch r{router_z_.get(n * static_cast<size_t>(w.n_cols())), router_logits_.get(n * static_cast<size_t>(w.n_rows()))};
        cuda::route(stream_, view(w), dev<float>(x), x.n_rows(), dev<float>(scale), dev<float>(per_expert_scale), eps, k,
                    dev<int32_t>(expert), dev<float>(weight), r, kernels_);
    }

    // --- the sampler -------------------------------------------------------------------------------
    void sampler_init(const Tensor &canvas, const Tensor &fixed, const Tensor &history, uint64_t seed,
                      const Tensor &table, int64_t canvas_no, const SamplerParams &p, int64_t n_vocab) override {
        cuda::OpScope scope(profile_, stream_, "sampler_init");
        const int64_t C = canvas.ne[0];
        for (int64_t i = 0; i < C; ++i) check_table(table, draw_index(canvas_no, 0, 0, i, C, p.max_steps));
        cuda::sampler_init(stream_, dev<int32_t>(canvas), fixed ? dev<int8_t>(fixed) : nullptr, dev<int32_t>(history),
                           static_cast<int64_t>(p.stability_threshold) * C, C, draws(seed, table), canvas_no, p.max_steps,
                           n_vocab);
    }
    void sample(const SampleArgs &a) override {
        cuda::OpScope scope(profile_, stream_, "sample");
        const SamplerParams &p = *a.params;
        if (a.step < 1 || a.step > p.max_steps)
            throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "step " + std::to_string(a.step) + " is outside 1.." + std::to_string(p.max_steps));
        const int64_t C = a.canvas.ne[0], V = a.logits.ne[0], s = p.max_steps - a.step + 1;
        // The CPU reads every draw of the step before any work: a short table fails first, alike.
        for (int64_t i = 0; i < C; ++i) {
            check_table(a.draw_table, draw_index(a.canvas_no, s, 0, i, C, p.max_steps));
            check_table(a.draw_table, draw_index(a.canvas_no, s, 1, i, C, p.max_steps));
        }
        cuda::SampleScratch sc;
        sc.entropy = entropy_.get(static_cast<size_t>(C));
        sc.draw = draw_.get(static_cast<size_t>(C));
        sc.order = order_.get(static_cast<size_t>(C));
        cuda::sample(stream_, dev<float>(a.logits), C, V, sampler_temperature(p, a.step), p, a.step, a.canvas_no,
                     draws(a.seed, a.draw_table), dev<int32_t>(a.canvas), dev<int32_t>(a.argmax),
                     a.fixed ? dev<int8_t>(a.fixed) : nullptr, dev<int32_t>(a.history), dev<int32_t>(a.stop),
                     a.accepted ? dev<int8_t>(a.accepted) : nullptr, sc);
    }

private:
    // The MoE over weights in device memory (placed, or a staging slot).
    void run_matmul(const Tensor &w, const Tensor &x, const Tensor &y, cuda::Epilogue epilogue, const char *name) {
        cuda::OpScope scope(profile_, stream_, name);
        const size_t n = static_cast<size_t>(x.n_rows());
        cuda::MatmulScratch m;
        m.sm_count = sm_count_;
        // The previous op a matmul too: its converted activations may serve this one (wk, wv, wq over
        // one input; gate and up); any op between may have changed the input or the scratch.
        if (held_op_ + 1 != profile_.ops()) held_ = cuda::ActScratch{};
        m.held = &held_;
        m.epilogue = epilogue;
        m.wgmma = wgmma_;
        m.x_bf16 = x_bf16(x.n_rows(), w.n_cols());
        if (kernels_ == cuda::KernelSet::tensor)
            m.split_partial = split_partial_.get(static_cast<size_t>(cuda::mma_split_partial_floats(sm_count_)));
        if (qmma_) m.x_sums = x_sums_.get(n * static_cast<size_t>(cuda::mma_padded_cols(w.n_cols()) / cuda::kQmmaSub));
        if (int8_) {
            m.x_q8 = x_q8_.get(n * static_cast<size_t>(cuda::i8_padded_cols(w.n_cols())));
            m.x_q8_d = x_q8_d_.get(n * static_cast<size_t>(cuda::i8_padded_cols(w.n_cols()) / 32));
        }
        cuda::matmul(stream_, view(w), dev<float>(x), x.n_rows(), dev<float>(y), kernels_, m);
        held_op_ = profile_.ops();
    }
    void run_moe(const MoeWeights &w, const Tensor &x, const Tensor &expert, const Tensor &weight, const Tensor &out) {
        cuda::OpScope scope(profile_, stream_, "moe");
        const int64_t n = x.n_rows(), k = expert.ne[0], X = w.gate.ne[2];
        const size_t slots = static_cast<size_t>(n * k);
        cuda::MoeScratch m;
        m.offsets = moe_offsets_.get(static_cast<size_t>(X + 1));
        m.order = moe_order_.get(slots);
        m.slot_of = moe_slot_of_.get(slots);
        m.tiles = moe_tiles_.get(1 + 2 * static_cast<size_t>(cuda::group_tiles_bound(static_cast<int>(slots), static_cast<int>(X),
                                                                                    cuda::kGroupMinTile)));
        m.act = moe_act_.get(slots * static_cast<size_t>(w.gate.n_rows()));
        m.y = moe_y_.get(slots * static_cast<size_t>(w.down.n_rows()));
        m.x_bf16 = x_bf16(n, w.gate.n_cols());
        if (kernels_ == cuda::KernelSet::tensor) {
            const int64_t Kp = cuda::mma_padded_cols(w.gate.n_cols()), Fp = cuda::mma_padded_cols(w.gate.n_rows());
            m.act_bf16 = act_bf16_.get(slots * static_cast<size_t>(Fp));
            if (qmma_) {
                m.x_sums = x_sums_.get(static_cast<size_t>(n * (Kp / cuda::kQmmaSub)));
                m.act_sums = act_sums_.get(slots * static_cast<size_t>(Fp / cuda::kQmmaSub));
            }
            if (int8_) {
                const int64_t Kq = cuda::i8_padded_cols(w.gate.n_cols()), Fq = cuda::i8_padded_cols(w.gate.n_rows());
                m.x_q8 = x_q8_.get(static_cast<size_t>(n * Kq));
                m.x_q8_d = x_q8_d_.get(static_cast<size_t>(n * Kq / 32));
                m.act_q8 = act_q8_.get(slots * static_cast<size_t>(Fq));
                m.act_q8_d = act_q8_d_.get(slots * static_cast<size_t>(Fq / 32));
            }
        }
        cuda::moe(stream_, view(w.gate), view(w.up), view(w.down), X, dev<float>(x), n, dev<int32_t>(expert),
                  dev<float>(weight), static_cast<int>(k), dev<float>(out), m, kernels_);
    }
    void check_weight_type(const Tensor &host) const {
        if (cuda_weight_type_supported(host.type_id)) return;
        std::string runs;
        for (TensorType t : kCudaWeightTypes) runs += (runs.empty() ? "" : ", ") + std::string(type_traits(t)->name);
        throw Error(DGEMMA_ERR_UNSUPPORTED, std::string("type ") + host.type->name + " has no CUDA kernel (CUDA runs " + runs + ")");
    }
    // Copies streamed group g into staging slot s on the copy stream, after the slot's last reader.
    void stage(int g, int s) {
        check(cudaStreamWaitEvent(copy_stream_, slot_free_[s], 0), "cudaStreamWaitEvent (streamed experts)");
        for (const WeightStream::Piece &p : stream_plan_.group(g).pieces)
            check(cudaMemcpyAsync(static_cast<uint8_t *>(slots_[s]) + p.offset, p.host, p.bytes, cudaMemcpyHostToDevice,
                                  copy_stream_),
                  "streaming experts to the device");
        check(cudaEventRecord(slot_ready_[s], copy_stream_), "cudaEventRecord (streamed experts)");
    }
    void drop_graphs() {
        for (auto &[key, rec] : graphs_) cudaGraphExecDestroy(rec.exec);
        graphs_.clear();
    }

    static bool env_on(const char *name) {
        const char *v = std::getenv(name);
        return v && *v && std::string(v) != "0";
    }
    // The tensor set's bf16 copy of n activation rows of `cols` (null under the other sets).
    __nv_bfloat16 *x_bf16(int64_t n, int64_t cols) const {
        if (kernels_ != cuda::KernelSet::tensor) return nullptr;
        return x_bf16_.get(static_cast<size_t>(n * cuda::mma_padded_cols(cols)));
    }
    void *device_malloc(size_t bytes, const char *what) {
        void *p = nullptr;
        const cudaError_t e = cudaMalloc(&p, bytes);
        if (e == cudaSuccess) return p;
        cudaGetLastError();  // clear the sticky-free error state of a failed allocation
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        if (e == cudaErrorMemoryAllocation)
            throw Error(DGEMMA_ERR_OUT_OF_MEMORY, std::string("CUDA device ") + std::to_string(device_) + " is out of memory: " +
                                                      std::to_string(bytes) + " bytes needed for " + what + ", " +
                                                      std::to_string(free_b) + " of " + std::to_string(total_b) + " free");
        check(e, "cudaMalloc");
        return nullptr;
    }
    static cuda::DrawSpec draws(uint64_t seed, const Tensor &table) {
        cuda::DrawSpec d;
        d.seed = seed;
        d.table = table ? dev<const uint64_t>(table) : nullptr;
        return d;
    }
    // The CPU's DrawSource::raw message for a draw past the end of a table.
    static void check_table(const Tensor &table, uint64_t k) {
        if (table && k >= static_cast<uint64_t>(table.ne[0]))
            throw Error(DGEMMA_ERR_OUT_OF_RANGE, "the draw table holds " + std::to_string(table.ne[0]) + " values; draw " +
                                                     std::to_string(k) + " was needed");
    }

    // DGEMMA_CUDA_KERNELS: 'auto' (or unset) is the tensor cores from compute capability 8.0 (bf16
    // operands, as vLLM and transformers run the model) and the float32 tiles before; 'float' the
    // float32 tiles (the CPU's products to float rounding: the exact mode); 'reference' the per-row
    // kernels; 'tensor' the tensor cores, refused below 8.0.
    cuda::KernelSet kernel_set(const char *env, int major, int minor) const {
        const std::string v = env && *env ? env : "auto";
        if (v == "auto") return major >= 8 ? cuda::KernelSet::tensor : cuda::KernelSet::float_tiles;
        if (v == "float") return cuda::KernelSet::float_tiles;
        if (v == "reference") return cuda::KernelSet::reference;
        if (v != "tensor")
            throw Error(DGEMMA_ERR_INVALID_ARGUMENT,
                        "DGEMMA_CUDA_KERNELS must be 'auto', 'float', 'reference' or 'tensor', got '" + v + "'");
        if (major < 8)
            throw Error(DGEMMA_ERR_UNSUPPORTED, "DGEMMA_CUDA_KERNELS=tensor needs compute capability 8.0 or newer; " + name_ +
                                                    " has " + std::to_string(major) + "." + std::to_string(minor));
        return cuda::KernelSet::tensor;
    }

    int device_, sm_count_ = 0;
    cuda::KernelSet kernels_ = cuda::KernelSet::float_tiles;
    cudaStream_t stream_ = nullptr;
    cuda::OpProfile profile_;  // prints when destroyed, after ~CudaBackend has drained the stream
    std::string name_;
    size_t owned_ = 0;
    std::vector<void *> weights_;
    Scratch<int32_t> moe_offsets_, moe_order_, moe_slot_of_, moe_tiles_, draw_, order_;
    Scratch<float> moe_act_, moe_y_, row_max_, row_inv_sum_, soft_partial_, router_z_, router_logits_, split_partial_,
        x_sums_, act_sums_, x_q8_d_, act_q8_d_, flash_o_, flash_ml_;
    Scratch<double> entropy_;
    Scratch<__nv_bfloat16> x_bf16_, act_bf16_, soft_probs_;
    Scratch<int8_t> x_q8_, act_q8_;  // the int8 tiles' codes (DGEMMA_CUDA_INT8)  // soft_probs_: the soft embedding's (kernels.h)
    static constexpr size_t kMaxGraphs = 16;  // passes kept recorded (a step's key lives for a canvas)
    bool graphs_asked_ = false, graphs_on_ = false, qmma_ = false, int8_ = false, flash_ = false, wgmma_ = false;
    // What the products' activation scratch holds, and the op that left it (cuda::ActScratch).
    cuda::ActScratch held_;
    uint64_t held_op_ = 0;
    long graphs_recorded_ = 0, graphs_replayed_ = 0, graphs_updated_ = 0;
    struct Recorded {
        cudaGraphExec_t exec;
        size_t nodes;     // the captured graph's (an update's candidates have as many)
        long last_use;    // graph_clock_ at its last launch
    };
    long graph_clock_ = 0;
    std::map<std::vector<int64_t>, Recorded> graphs_;
    std::vector<int64_t> recording_;  // the key being captured; empty when none
    // Streamed weights: the plan, their pinned host copies, two device slots and the copy stream.
    WeightStream stream_plan_;
    std::vector<void *> pinned_;
    void *slots_[2] = {nullptr, nullptr};
    size_t slot_bytes_ = 0;
    cudaStream_t copy_stream_ = nullptr;
    cudaEvent_t slot_ready_[2] = {nullptr, nullptr}, slot_free_[2] = {nullptr, nullptr};
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend_direct(int device) { return std::make_unique<CudaBackend>(device); }

}  // namespace dg
