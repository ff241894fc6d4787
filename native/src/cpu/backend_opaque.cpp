// The test backend: the CPU backend behind data pointers the host cannot dereference. Every tensor
// it hands out carries a tag in bit 62 (a non-canonical x86-64/AArch64 address, so any host read or
// write through it faults at once); its ops strip the tag and run the CPU kernels. Every byte that
// crosses through upload() and download() is counted. A generation that runs to the same tokens on
// this backend as on the CPU touches backend memory only through ops and counted transfers, as a
// device backend requires.
// It also records passes as a device backend does (Backend::record_pass_begin): the ops of a
// recorded pass are kept, with copies of their arguments, and run again for a pass with the same
// key, so a key that misses something the ops depend on gives other logits than the CPU's. An
// upload or download while recording is refused. DGEMMA_PASS_STATS=1 prints the counts at teardown.
// Streamed weights (Backend::load_weight_streamed) are streamed for real, as a device backend does:
// they stay in host memory, the shared plan (weight_stream.h) says which staging slot a MoE reads
// and what to copy into it, each copy is counted as an upload, and the MoE computes from the slot.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "error.h"

#include "backend.h"
#include "weight_stream.h"

namespace dg {

namespace {

constexpr uintptr_t kTag = uintptr_t{1} << 62;

void *tag(void *p) { return p ? reinterpret_cast<void *>(reinterpret_cast<uintptr_t>(p) | kTag) : nullptr; }
void *untag(void *p) { return reinterpret_cast<void *>(reinterpret_cast<uintptr_t>(p) & ~kTag); }

class OpaqueBackend final : public Backend {
public:
    OpaqueBackend(int n_threads, TransferCounts *counts) : cpu_(make_cpu_backend(n_threads)), counts_(counts) {}
    ~OpaqueBackend() override {
        for (Tensor &s : slots_) cpu_->free(s);
        const char *e = std::getenv("DGEMMA_PASS_STATS");
        if (e && *e && std::string(e) != "0")
            std::fprintf(stderr, "dgemma opaque backend: %ld passes recorded, %ld replayed\n", recorded_count_, replayed_count_);
    }

    std::string name() const override { return "opaque"; }

    Tensor alloc(TensorType type, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3) override {
        return out(cpu_->alloc(type, ne0, ne1, ne2, ne3));
    }
    void free(Tensor &t) override {
        recorded_.clear();  // a recording may name it
        Tensor h = in(t);
        cpu_->free(h);
        t = Tensor{};
    }
    Tensor load_weight(const Tensor &host) override { return out(cpu_->load_weight(host)); }
    // The host bytes are the weight; the slots grow to the plan's size as groups arrive.
    Tensor load_weight_streamed(const Tensor &host, int group) override {
        stream_.add(group, host.data, host.bytes());
        for (Tensor &s : slots_) cpu_->free(s);
        slots_.clear();
        for (int i = 0; i < stream_.n_slots(); ++i)
            slots_.push_back(cpu_->alloc(TensorType::I8, static_cast<int64_t>(stream_.slot_bytes())));
        return out(host);
    }
    size_t weight_bytes_owned() const override { return cpu_->weight_bytes_owned() + stream_.staging_bytes(); }
    void upload(const Tensor &dst, const void *src, size_t bytes, size_t offset) override {
        no_host_crossing("upload");
        counts_->bytes_to_device += bytes;
        ++counts_->uploads;
        cpu_->upload(in(dst), src, bytes, offset);
    }
    void download(const Tensor &src, void *dst, size_t bytes, size_t offset) override {
        no_host_crossing("download");
        counts_->bytes_to_host += bytes;
        ++counts_->downloads;
        cpu_->download(in(src), dst, bytes, offset);
    }
    void copy_rows(const Tensor &src, int64_t s0, const Tensor &dst, int64_t d0, int64_t n) override {
        enqueue([=, this] { cpu_->copy_rows(in(src), s0, in(dst), d0, n); });
    }
    void reserve(const PassLimits &l) override {
        recorded_.clear();
        cpu_->reserve(l);
    }
    void synchronize() override {}

    bool replay_pass(const std::vector<int64_t> &key) override {
        const auto it = key.empty() ? recorded_.end() : recorded_.find(key);
        if (it == recorded_.end()) return false;
        for (const auto &op : it->second) op();
        ++replayed_count_;
        return true;
    }
    bool record_pass_begin(const std::vector<int64_t> &key) override {
        if (key.empty()) return false;
        recording_ = std::make_unique<Recording>(Recording{key, {}});
        return true;
    }
    bool record_pass_end(bool ops_enqueued) override {
        std::unique_ptr<Recording> r = std::move(recording_);
        if (!r || !ops_enqueued) return false;
        for (const auto &op : r->ops) op();
        recorded_[r->key] = std::move(r->ops);
        ++recorded_count_;
        return true;
    }

    void matmul(const Tensor &w, const Tensor &x, const Tensor &y) override {
        enqueue([=, this] { cpu_->matmul(in(w), in(x), in(y)); });
    }
    void moe(const MoeWeights &w, const Tensor &x, const Tensor &e, const Tensor &wt, const Tensor &o) override {
        MoeWeights h{in(w.gate), in(w.up), in(w.down)};
        const WeightStream::Where gate = stream_.locate(h.gate.data);
        if (gate.group >= 0) {  // streamed: copy as the plan says, compute from the slot
            no_host_crossing("a streamed weight");
            const WeightStream::Plan plan = stream_.use(gate.group);
            if (plan.copy) stage(gate.group, plan.slot);
            for (Tensor *t : {&h.gate, &h.up, &h.down}) {
                const WeightStream::Where at = stream_.locate(t->data);
                if (at.group != gate.group) throw Error(DGEMMA_ERR_INTERNAL, "the experts of one MoE in different stream groups");
                t->data = slots_[static_cast<size_t>(plan.slot)].bytes_at(at.offset);
            }
            cpu_->moe(h, in(x), in(e), in(wt), in(o));
            if (plan.prefetch_group >= 0) stage(plan.prefetch_group, plan.prefetch_slot);
            return;
        }
        enqueue([=, this] { cpu_->moe(h, in(x), in(e), in(wt), in(o)); });
    }
    void rmsnorm(const Tensor &x, const Tensor *w, float eps, const Tensor &y) override {
        const Tensor wh = w ? *w : Tensor{};
        const bool has_w = w != nullptr;
        enqueue([=, this] {
            const Tensor wi = has_w ? in(wh) : Tensor{};
            cpu_->rmsnorm(in(x), has_w ? &wi : nullptr, eps, in(y));
        });
    }
    void rope(const Tensor &x, int heads, int d, const Tensor &pos, const Tensor &freq, int n_rot) override {
        enqueue([=, this] { cpu_->rope(in(x), heads, d, in(pos), in(freq), n_rot); });
    }
    void attention(const AttentionArgs &a) override {
        // The pass description holds each segment's caches by pointer: untagged copies for the CPU,
        // kept with the op (a recorded op runs after the model's pass description is gone).
        auto p = std::make_shared<Pass>(*a.pass);
        auto caches = std::make_shared<std::vector<std::vector<KvLayer>>>(p->segments.size());
        for (size_t g = 0; g < p->segments.size(); ++g) {
            for (const KvLayer &c : *p->segments[g].cache) (*caches)[g].push_back(in(c));
            p->segments[g].cache = &(*caches)[g];
        }
        p->positions = in(p->positions);
        p->row_mode = in(p->row_mode);
        AttentionArgs h = a;
        h.q = in(a.q);
        h.k = in(a.k);
        h.v = in(a.v);
        h.out = in(a.out);
        enqueue([=, this] {
            AttentionArgs args = h;
            args.pass = p.get();
            (void)caches;  // owned by the op
            cpu_->attention(args);
        });
    }
    void cache_store(const KvLayer &c, const Tensor &k, const Tensor &v, int64_t row0, int64_t n, int64_t pos0) override {
        enqueue([=, this] { cpu_->cache_store(in(c), in(k), in(v), row0, n, pos0); });
    }
    void gelu_mul(const Tensor &g, const Tensor &u, const Tensor &o) override {
        enqueue([=, this] { cpu_->gelu_mul(in(g), in(u), in(o)); });
    }
    void zero(const Tensor &t) override {
        enqueue([=, this] { cpu_->zero(in(t)); });
    }
    void add(const Tensor &y, const Tensor &x) override {
        enqueue([=, this] { cpu_->add(in(y), in(x)); });
    }
    void scale_rows(const Tensor &x, const Tensor &mode, const float s[2]) override {
        const float scalars[2] = {s[0], s[1]};
        enqueue([=, this] { cpu_->scale_rows(in(x), in(mode), scalars); });
    }
    void softcap(const Tensor &x, float cap) override {
        enqueue([=, this] { cpu_->softcap(in(x), cap); });
    }
    void embed(const Tensor &t, const Tensor &ids, float s, const Tensor &o) override {
        enqueue([=, this] { cpu_->embed(in(t), in(ids), s, in(o)); });
    }
    void soft_embed(const Tensor &t, const Tensor &l, float s, const Tensor &o) override {
        enqueue([=, this] { cpu_->soft_embed(in(t), in(l), s, in(o)); });
    }
    void route(const Tensor &w, const Tensor &x, const Tensor &scale, const Tensor &pes, float eps, int k,
               const Tensor &e, const Tensor &wt) override {
        enqueue([=, this] { cpu_->route(in(w), in(x), in(scale), in(pes), eps, k, in(e), in(wt)); });
    }
    void sampler_init(const Tensor &canvas, const Tensor &fixed, const Tensor &history, uint64_t seed, const Tensor &table,
                      int64_t canvas_no, const SamplerParams &p, int64_t n_vocab) override {
        no_host_crossing("sampler_init");
        cpu_->sampler_init(in(canvas), in(fixed), in(history), seed, in(table), canvas_no, p, n_vocab);
    }
    void sample(const SampleArgs &a) override {
        no_host_crossing("sample");
        SampleArgs h = a;
        for (Tensor *t : {&h.logits, &h.draw_table, &h.canvas, &h.argmax, &h.fixed, &h.history, &h.stop, &h.accepted})
            *t = in(*t);
        cpu_->sample(h);
    }

private:
    Tensor in(const Tensor &t) const {
        Tensor h = t;
        h.data = untag(t.data);
        h.backend = cpu_.get();
        return h;
    }
    KvLayer in(const KvLayer &c) const { return {in(c.k), in(c.v), c.capacity}; }
    Tensor out(const Tensor &t) {
        Tensor d = t;
        d.data = tag(t.data);
        d.backend = this;
        return d;
    }

    // An op runs now, or joins the pass being recorded.
    template <typename F>
    void enqueue(F &&op) {
        if (recording_) recording_->ops.emplace_back(std::forward<F>(op));
        else op();
    }
    // Copies streamed group g into staging slot s, counted as uploads.
    void stage(int g, int s) {
        for (const WeightStream::Piece &p : stream_.group(g).pieces) {
            std::memcpy(slots_[static_cast<size_t>(s)].bytes_at(p.offset), p.host, p.bytes);
            counts_->bytes_to_device += p.bytes;
            ++counts_->uploads;
        }
    }
    void no_host_crossing(const char *what) const {
        if (recording_) throw Error(DGEMMA_ERR_INTERNAL, std::string(what) + " inside a recorded pass");
    }

    struct Recording {
        std::vector<int64_t> key;
        std::vector<std::function<void()>> ops;
    };
    std::unique_ptr<Backend> cpu_;
    TransferCounts *counts_;
    std::unique_ptr<Recording> recording_;
    std::map<std::vector<int64_t>, std::vector<std::function<void()>>> recorded_;
    long recorded_count_ = 0, replayed_count_ = 0;
    WeightStream stream_;
    std::vector<Tensor> slots_;  // staging of streamed weights (I8 [slot_bytes], CPU memory)
};

}  // namespace

std::unique_ptr<Backend> make_opaque_test_backend(int n_threads, TransferCounts *counts) {
    return std::make_unique<OpaqueBackend>(n_threads, counts);
}

}  // namespace dg
