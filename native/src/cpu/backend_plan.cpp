// The accounting backend: what `dgemma info` and the offload planner (python/dgemma/offload.py) open
// a model on to read its memory plan. It places weights as views of the mapped file without packing
// or reading them, and counts the bytes the CPU backend would pack (cpu_packed_matrix_bytes), so the
// plan is the CPU backend's to the byte while opening a 16 GB file touches only its header and norm
// vectors (the CPU backend packs several GB at load). Memory ops (the model's vectors, sessions'
// caches) run on host memory; every compute op refuses, naming the backend.
#include <string>

#include "error.h"

#include "backend.h"

namespace dg {

namespace {

class PlanBackend final : public Backend {
public:
    PlanBackend() : host_(make_cpu_backend(1)) {}
    std::string name() const override { return "plan"; }

    Tensor alloc(TensorType type, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3) override {
        return own(host_->alloc(type, ne0, ne1, ne2, ne3));
    }
    void free(Tensor &t) override {
        Tensor h = t;
        h.backend = host_.get();
        host_->free(h);
        t = Tensor{};
    }
    Tensor load_weight(const Tensor &host) override {
        owned_ += cpu_packed_matrix_bytes(host) * static_cast<size_t>(host.ne[2] * host.ne[3]);
        return own(host);
    }
    size_t weight_bytes_owned() const override { return owned_; }
    void upload(const Tensor &dst, const void *src, size_t bytes, size_t offset) override {
        host_->upload(in(dst), src, bytes, offset);
    }
    void download(const Tensor &src, void *dst, size_t bytes, size_t offset) override {
        host_->download(in(src), dst, bytes, offset);
    }
    void copy_rows(const Tensor &, int64_t, const Tensor &, int64_t, int64_t) override { refuse("copy_rows"); }
    void reserve(const PassLimits &) override {}
    void synchronize() override {}

    void matmul(const Tensor &, const Tensor &, const Tensor &) override { refuse("matmul"); }
    void moe(const MoeWeights &, const Tensor &, const Tensor &, const Tensor &, const Tensor &) override { refuse("moe"); }
    void rmsnorm(const Tensor &, const Tensor *, float, const Tensor &) override { refuse("rmsnorm"); }
    void rope(const Tensor &, int, int, const Tensor &, const Tensor &, int) override { refuse("rope"); }
    void attention(const AttentionArgs &) override { refuse("attention"); }
    void cache_store(const KvLayer &, const Tensor &, const Tensor &, int64_t, int64_t, int64_t) override { refuse("cache_store"); }
    void gelu_mul(const Tensor &, const Tensor &, const Tensor &) override { refuse("gelu_mul"); }
    void zero(const Tensor &) override { refuse("zero"); }
    void add(const Tensor &, const Tensor &) override { refuse("add"); }
    void scale_rows(const Tensor &, const Tensor &, const float[2]) override { refuse("scale_rows"); }
    void softcap(const Tensor &, float) override { refuse("softcap"); }
    void embed(const Tensor &, const Tensor &, float, const Tensor &) override { refuse("embed"); }
    void soft_embed(const Tensor &, const Tensor &, float, const Tensor &) override { refuse("soft_embed"); }
    void route(const Tensor &, const Tensor &, const Tensor &, const Tensor &, float, int, const Tensor &,
               const Tensor &) override {
        refuse("route");
    }
    void sampler_init(const Tensor &, const Tensor &, const Tensor &, uint64_t, const Tensor &, int64_t, const SamplerParams &,
                      int64_t) override {
        refuse("sampler_init");
    }
    void sample(const SampleArgs &) override { refuse("sample"); }

private:
    Tensor own(Tensor t) {
        t.backend = this;
        return t;
    }
    Tensor in(Tensor t) const {
        t.backend = host_.get();
        return t;
    }
    [[noreturn]] static void refuse(const char *op) {
        throw Error(DGEMMA_ERR_UNSUPPORTED, std::string("this model was opened for its memory plan only (backend 'plan'): it "
                                                        "runs nothing (") + op + ")");
    }

    std::unique_ptr<Backend> host_;  // host memory for the model's vectors and sessions' caches
    size_t owned_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_plan_backend() { return std::make_unique<PlanBackend>(); }

}  // namespace dg
