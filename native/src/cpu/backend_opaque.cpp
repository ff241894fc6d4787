// The test backend: the CPU backend behind data pointers the host cannot dereference. Every tensor
// it hands out carries a tag in bit 62 (a non-canonical x86-64/AArch64 address, so any host read or
// write through it faults at once); its ops strip the tag and run the CPU kernels. Every byte that
// crosses through upload() and download() is counted. A generation that runs to the same tokens on
// this backend as on the CPU touches backend memory only through ops and counted transfers, as a
// device backend requires.
#include <cstdint>
#include <vector>

#include "backend.h"

namespace dg {

namespace {

constexpr uintptr_t kTag = uintptr_t{1} << 62;

void *tag(void *p) { return p ? reinterpret_cast<void *>(reinterpret_cast<uintptr_t>(p) | kTag) : nullptr; }
void *untag(void *p) { return reinterpret_cast<void *>(reinterpret_cast<uintptr_t>(p) & ~kTag); }

class OpaqueBackend final : public Backend {
public:
    OpaqueBackend(int n_threads, TransferCounts *counts) : cpu_(make_cpu_backend(n_threads)), counts_(counts) {}

    std::string name() const override { return "opaque"; }

    Tensor alloc(TensorType type, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3) override {
        return out(cpu_->alloc(type, ne0, ne1, ne2, ne3));
    }
    void free(Tensor &t) override {
        Tensor h = in(t);
        cpu_->free(h);
        t = Tensor{};
    }
    Tensor load_weight(const Tensor &host) override { return out(cpu_->load_weight(host)); }
    size_t weight_bytes_owned() const override { return cpu_->weight_bytes_owned(); }
    void upload(const Tensor &dst, const void *src, size_t bytes, size_t offset) override {
        counts_->bytes_to_device += bytes;
        ++counts_->uploads;
        cpu_->upload(in(dst), src, bytes, offset);
    }
    void download(const Tensor &src, void *dst, size_t bytes, size_t offset) override {
        counts_->bytes_to_host += bytes;
        ++counts_->downloads;
        cpu_->download(in(src), dst, bytes, offset);
    }
    void copy_rows(const Tensor &src, int64_t s0, const Tensor &dst, int64_t d0, int64_t n) override {
        cpu_->copy_rows(in(src), s0, in(dst), d0, n);
    }
    void reserve(const PassLimits &l) override { cpu_->reserve(l); }
    void synchronize() override {}

    void matmul(const Tensor &w, const Tensor &x, const Tensor &y) override { cpu_->matmul(in(w), in(x), in(y)); }
    void moe(const MoeWeights &w, const Tensor &x, const Tensor &e, const Tensor &wt, const Tensor &o) override {
        cpu_->moe({in(w.gate), in(w.up), in(w.down)}, in(x), in(e), in(wt), in(o));
    }
    void rmsnorm(const Tensor &x, const Tensor *w, float eps, const Tensor &y) override {
        const Tensor wh = w ? in(*w) : Tensor{};
        cpu_->rmsnorm(in(x), w ? &wh : nullptr, eps, in(y));
    }
    void rope(const Tensor &x, int heads, int d, const Tensor &pos, const Tensor &freq, int n_rot) override {
        cpu_->rope(in(x), heads, d, in(pos), in(freq), n_rot);
    }
    void attention(const AttentionArgs &a) override {
        // The pass description holds each segment's caches by pointer: untagged copies for the CPU.
        Pass p = *a.pass;
        std::vector<std::vector<KvLayer>> caches(p.segments.size());
        for (size_t g = 0; g < p.segments.size(); ++g) {
            for (const KvLayer &c : *p.segments[g].cache) caches[g].push_back(in(c));
            p.segments[g].cache = &caches[g];
        }
        p.positions = in(p.positions);
        p.row_mode = in(p.row_mode);
        AttentionArgs h = a;
        h.q = in(a.q);
        h.k = in(a.k);
        h.v = in(a.v);
        h.out = in(a.out);
        h.pass = &p;
        cpu_->attention(h);
    }
    void cache_store(const KvLayer &c, const Tensor &k, const Tensor &v, int64_t row0, int64_t n, int64_t pos0) override {
        cpu_->cache_store(in(c), in(k), in(v), row0, n, pos0);
    }
    void gelu_mul(const Tensor &g, const Tensor &u, const Tensor &o) override { cpu_->gelu_mul(in(g), in(u), in(o)); }
    void zero(const Tensor &t) override { cpu_->zero(in(t)); }
    void add(const Tensor &y, const Tensor &x) override { cpu_->add(in(y), in(x)); }
    void scale_rows(const Tensor &x, const Tensor &mode, const float s[2]) override { cpu_->scale_rows(in(x), in(mode), s); }
    void softcap(const Tensor &x, float cap) override { cpu_->softcap(in(x), cap); }
    void embed(const Tensor &t, const Tensor &ids, float s, const Tensor &o) override { cpu_->embed(in(t), in(ids), s, in(o)); }
    void soft_embed(const Tensor &t, const Tensor &l, float s, const Tensor &o) override {
        cpu_->soft_embed(in(t), in(l), s, in(o));
    }
    void route(const Tensor &w, const Tensor &x, const Tensor &scale, const Tensor &pes, float eps, int k,
               const Tensor &e, const Tensor &wt) override {
        cpu_->route(in(w), in(x), in(scale), in(pes), eps, k, in(e), in(wt));
    }
    void sampler_init(const Tensor &canvas, const Tensor &fixed, const Tensor &history, uint64_t seed, const Tensor &table,
                      int64_t canvas_no, const SamplerParams &p, int64_t n_vocab) override {
        cpu_->sampler_init(in(canvas), in(fixed), in(history), seed, in(table), canvas_no, p, n_vocab);
    }
    void sample(const SampleArgs &a) override {
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

    std::unique_ptr<Backend> cpu_;
    TransferCounts *counts_;
};

}  // namespace

std::unique_ptr<Backend> make_opaque_test_backend(int n_threads, TransferCounts *counts) {
    return std::make_unique<OpaqueBackend>(n_threads, counts);
}

}  // namespace dg
