// Loading: hyperparameters from the `diffusion-gemma.*` keys, weights bound by name and checked
// against them. Every problem is a dg::Error naming the key or tensor.
#include "model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "error.h"

namespace dg {

namespace {

const char *kArch = "diffusion-gemma";

std::string key(const std::string &suffix) { return std::string(kArch) + "." + suffix; }

std::string shape_str(const GgufTensor &t) {
    std::string s = "[";
    for (uint32_t d = 0; d < t.n_dims; ++d) s += (d ? ", " : "") + std::to_string(t.ne[d]);
    return s + "]";
}

std::string shape_str(std::initializer_list<int64_t> ne) {
    std::string s = "[";
    bool first = true;
    for (int64_t v : ne) { s += (first ? "" : ", ") + std::to_string(v); first = false; }
    return s + "]";
}

// Binds tensors of one file, checking presence, shape and readability.
class Binder {
public:
    explicit Binder(const GgufFile &f) : f_(f) {}

    const GgufTensor *find(const std::string &name) const { return f_.tensor(name); }

    const GgufTensor &require(const std::string &name, std::initializer_list<int64_t> ne) const {
        const GgufTensor *t = f_.tensor(name);
        if (!t) throw Error(DGEMMA_ERR_MODEL, f_.path() + ": missing tensor '" + name + "'");
        bool ok = true;
        size_t d = 0;
        for (int64_t v : ne) ok = ok && t->ne[d++] == v;
        for (; d < 4; ++d) ok = ok && t->ne[d] == 1;
        if (!ok) throw Error(DGEMMA_ERR_MODEL, f_.path() + ": tensor '" + name + "' has shape " + shape_str(*t) +
                                                   ", expected " + shape_str(ne));
        if (!t->type->to_float)
            throw Error(DGEMMA_ERR_UNSUPPORTED, f_.path() + ": tensor '" + name + "' has type " + t->type->name +
                                                    ", which this build cannot read");
        return *t;
    }

    // A view of the mapped tensor [n_expert][n_rows][n_cols] (n_expert = 1: a matrix).
    Tensor host_view(const std::string &name, int64_t n_cols, int64_t n_rows, int64_t n_expert = 1) const {
        const GgufTensor &t = n_expert == 1 ? require(name, {n_cols, n_rows}) : require(name, {n_cols, n_rows, n_expert});
        return make_tensor(const_cast<uint8_t *>(t.data), static_cast<TensorType>(t.type_id), n_cols, n_rows, n_expert);
    }

    std::vector<float> vector(const std::string &name, int64_t n) const {
        const GgufTensor &t = require(name, {n});
        std::vector<float> out(static_cast<size_t>(n));
        t.type->to_float(t.data, out.data(), n);
        for (float v : out)
            if (!std::isfinite(v)) throw Error(DGEMMA_ERR_MODEL, f_.path() + ": tensor '" + name + "' holds a non-finite value");
        return out;
    }

    float scalar(const std::string &name) const { return vector(name, 1)[0]; }

private:
    const GgufFile &f_;
};

}  // namespace

namespace {

// "cuda" -> 0, "cuda:N" -> N, anything else -> -1.
int cuda_device_index(const std::string &name) {
    if (name == "cuda") return 0;
    if (name.rfind("cuda:", 0) != 0 || name.size() == 5 || name.size() > 9) return -1;
    for (size_t i = 5; i < name.size(); ++i)
        if (name[i] < '0' || name[i] > '9') return -1;
    return std::stoi(name.substr(5));
}
}  // namespace

Model::Model(const std::string &path, const ModelOptions &options) : kv_type_(options.kv_type) {
    if (kv_type_ != TensorType::F32 && kv_type_ != TensorType::F16 && kv_type_ != TensorType::BF16)
        throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "the KV cache type must be F32, F16 or BF16");
    if (options.backend == "cpu") backend_ = make_cpu_backend(resolve_thread_count(options.n_threads));
    else if (options.backend == "opaque") backend_ = make_opaque_test_backend(resolve_thread_count(options.n_threads), &transfers_);
    else if (options.backend == "plan") backend_ = make_plan_backend();
    else if (const int device = cuda_device_index(options.backend); device >= 0) backend_ = make_cuda_backend(device);
    else throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "unknown backend '" + options.backend + "' (expected cpu, cuda or cuda:N)");
    if (options.host_expert_layers < 0)
        throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "the number of layers with experts on the host must not be negative");
    if (options.expert_offload != ExpertOffload::Cpu && options.expert_offload != ExpertOffload::Stream)
        throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "the expert offload mode must be 0 (computed by the CPU) or 1 (streamed), got " +
                                                     std::to_string(static_cast<int32_t>(options.expert_offload)));
    host_expert_layers_ = options.host_expert_layers;
    if (host_expert_layers_ > 0 && options.expert_offload == ExpertOffload::Cpu)
        host_ = options.backend == "plan" ? make_plan_backend() : make_cpu_backend(resolve_thread_count(options.n_threads));
    streams_experts_ = host_expert_layers_ > 0 && options.expert_offload == ExpertOffload::Stream;
    file_ = std::make_unique<GgufFile>(path);
    const GgufValue *arch = file_->find("general.architecture");
    if (!arch || arch->type != GgufValueType::STRING)
        throw Error(DGEMMA_ERR_MODEL, path + ": missing key 'general.architecture'");
    if (arch->str != kArch)
        throw Error(DGEMMA_ERR_UNSUPPORTED, path + ": architecture '" + std::string(arch->str) +
                                                "' is not supported (expected '" + kArch + "')");
    load_hparams();
    load_weights();
    build_config_json();
}

Model::~Model() = default;

// Every count of positions (context, window, canvas) fits in int32, and every per-position width
// (embedding, heads x head_dim, feed-forward, experts, vocabulary) in kMaxWidth, so that any buffer
// the core sizes as positions x width x sizeof(float) stays below 2^63 bytes: the sessions, the
// sampler and the C API multiply these without overflow checks of their own.
constexpr int64_t kMaxPositions = std::numeric_limits<int32_t>::max();
constexpr int64_t kMaxWidth = int64_t(1) << 30;
static_assert(kMaxPositions * kMaxWidth * int64_t(sizeof(float)) > 0, "positions x width x 4 overflows");

void Model::load_hparams() {
    const GgufFile &f = *file_;
    const std::string &p = f.path();
    auto in_range = [&](const std::string &k, int64_t v, int64_t lo, int64_t hi) {
        if (v < lo || v > hi)
            throw Error(DGEMMA_ERR_MODEL, p + ": key '" + k + "' is " + std::to_string(v) + ", outside [" + std::to_string(lo) +
                                              ", " + std::to_string(hi) + "]");
        return v;
    };
    auto width = [&](const std::string &k, int64_t v) { return in_range(k, v, 1, kMaxWidth); };
    auto finite = [&](const std::string &k, double v) {
        if (!std::isfinite(v)) throw Error(DGEMMA_ERR_MODEL, p + ": key '" + k + "' is not a finite number");
        return static_cast<float>(v);
    };
    hp_.n_layer = in_range(key("block_count"), f.get_int(key("block_count")), 1, 4096);
    hp_.n_embd = width(key("embedding_length"), f.get_int(key("embedding_length")));
    hp_.n_ctx = in_range(key("context_length"), f.get_int(key("context_length")), 1, kMaxPositions);
    hp_.n_head = width(key("attention.head_count"), f.get_int_array(key("attention.head_count"), hp_.n_layer)[0]);
    const auto ff = f.get_int_array(key("feed_forward_length"), hp_.n_layer);
    hp_.n_ff = width(key("feed_forward_length"), ff[0]);
    for (int64_t v : ff)
        if (v != hp_.n_ff) throw Error(DGEMMA_ERR_UNSUPPORTED, p + ": per-layer feed_forward_length is not supported");
    hp_.n_expert = width(key("expert_count"), f.get_int(key("expert_count")));
    hp_.n_expert_used = width(key("expert_used_count"), f.get_int(key("expert_used_count")));
    if (hp_.n_expert_used > hp_.n_expert)
        throw Error(DGEMMA_ERR_MODEL, p + ": expert_used_count exceeds expert_count");
    hp_.n_ff_exp = width(key("expert_feed_forward_length"), f.get_int(key("expert_feed_forward_length")));
    hp_.eps = finite(key("attention.layer_norm_rms_epsilon"), f.get_float(key("attention.layer_norm_rms_epsilon"), 1e-6));
    hp_.softcap = finite(key("final_logit_softcapping"), f.get_float(key("final_logit_softcapping"), 30.0));
    if (!(hp_.eps > 0) || !(hp_.softcap > 0)) throw Error(DGEMMA_ERR_MODEL, p + ": epsilon and soft-capping must be positive");
    hp_.sliding_window = in_range(key("attention.sliding_window"), f.get_int(key("attention.sliding_window"), 0), 0, kMaxPositions);
    hp_.canvas_length = in_range("diffusion.canvas_length", f.get_int("diffusion.canvas_length", 256), 1, kMaxPositions);

    SamplerParams &s = hp_.sampler;
    const int64_t int32_max = std::numeric_limits<int32_t>::max();
    s.max_steps = static_cast<int>(in_range("diffusion.eb_max_steps", f.get_int("diffusion.eb_max_steps", s.max_steps), 1, int32_max));
    s.t_min = finite("diffusion.eb_t_min", f.get_float("diffusion.eb_t_min", s.t_min));
    s.t_max = finite("diffusion.eb_t_max", f.get_float("diffusion.eb_t_max", s.t_max));
    s.entropy_bound = finite("diffusion.eb_entropy_bound", f.get_float("diffusion.eb_entropy_bound", s.entropy_bound));
    s.stability_threshold = static_cast<int>(
        in_range("diffusion.eb_stability_threshold", f.get_int("diffusion.eb_stability_threshold", s.stability_threshold), 0, int32_max));
    s.confidence_threshold = finite("diffusion.eb_confidence_threshold", f.get_float("diffusion.eb_confidence_threshold", s.confidence_threshold));

    const auto head_kv = f.get_int_array(key("attention.head_count_kv"), hp_.n_layer);
    std::vector<bool> sliding(hp_.n_layer, false);
    if (f.has(key("attention.sliding_window_pattern"))) {
        sliding = f.get_bool_array(key("attention.sliding_window_pattern"));
        if (static_cast<int64_t>(sliding.size()) != hp_.n_layer)
            throw Error(DGEMMA_ERR_MODEL, p + ": attention.sliding_window_pattern has " + std::to_string(sliding.size()) +
                                              " entries for " + std::to_string(hp_.n_layer) + " layers");
    }
    const int64_t hd_full = width(key("attention.key_length"), f.get_int(key("attention.key_length")));
    const int64_t hd_swa = width(key("attention.key_length_swa"), f.get_int(key("attention.key_length_swa"), hd_full));
    if (f.get_int(key("attention.value_length"), hd_full) != hd_full || f.get_int(key("attention.value_length_swa"), hd_swa) != hd_swa)
        throw Error(DGEMMA_ERR_UNSUPPORTED, p + ": value_length different from key_length is not supported");
    const int64_t rot_full = width(key("rope.dimension_count"), f.get_int(key("rope.dimension_count"), hd_full));
    const int64_t rot_swa = width(key("rope.dimension_count_swa"), f.get_int(key("rope.dimension_count_swa"), hd_swa));
    const double base_full = f.get_float(key("rope.freq_base"), 1e6);
    const double base_swa = f.get_float(key("rope.freq_base_swa"), 1e4);
    if (!(base_full > 0) || !(base_swa > 0) || !std::isfinite(base_full) || !std::isfinite(base_swa))
        throw Error(DGEMMA_ERR_MODEL, p + ": rope.freq_base must be a positive finite number");

    std::vector<float> freq_factors;
    if (file_->tensor("rope_freqs.weight")) freq_factors = Binder(f).vector("rope_freqs.weight", rot_full / 2);
    for (float factor : freq_factors)
        if (!(factor > 0)) throw Error(DGEMMA_ERR_MODEL, p + ": tensor 'rope_freqs.weight' holds a factor that is not positive");

    bool any_sliding = false;
    for (int64_t i = 0; i < hp_.n_layer; ++i) {
        LayerHparams L;
        L.sliding = sliding[i];
        any_sliding = any_sliding || L.sliding;
        const std::string li = "layer " + std::to_string(i);
        // All three are at most kMaxWidth (checked above), so the narrowing casts are exact.
        L.head_dim = static_cast<int>(L.sliding ? hd_swa : hd_full);
        L.n_head_kv = static_cast<int>(width(key("attention.head_count_kv") + "[" + std::to_string(i) + "]", head_kv[i]));
        L.n_rot = static_cast<int>(L.sliding ? rot_swa : rot_full);
        if (L.head_dim % 2 || hp_.n_head % L.n_head_kv != 0 || hp_.n_head * L.head_dim > kMaxWidth ||
            int64_t(L.n_head_kv) * L.head_dim > kMaxWidth)
            throw Error(DGEMMA_ERR_MODEL, p + ": " + li + ": head_dim " + std::to_string(L.head_dim) + " and " +
                                              std::to_string(L.n_head_kv) + " KV heads do not fit " + std::to_string(hp_.n_head) + " query heads");
        if (L.n_rot % 2 || L.n_rot > L.head_dim)
            throw Error(DGEMMA_ERR_MODEL, p + ": " + li + ": rope dimension count " + std::to_string(L.n_rot) + " does not fit head_dim " + std::to_string(L.head_dim));
        // The frequency table is sized by head_dim: first make the file prove that size (the layer's
        // q_norm holds head_dim values), so that a few bytes cannot ask for gigabytes.
        Binder(f).require("blk." + std::to_string(i) + ".attn_q_norm.weight", {L.head_dim});
        const double base = L.sliding ? base_swa : base_full;
        L.inv_freq.resize(L.n_rot / 2);
        for (int j = 0; j < L.n_rot / 2; ++j) {
            // float32 exponent and power, as the reference computes them.
            const float expo = static_cast<float>(2 * j) / static_cast<float>(L.n_rot);
            float inv = 1.0f / static_cast<float>(std::pow(base, static_cast<double>(expo)));
            // llama.cpp's proportional RoPE: a factor divides the frequency; 1e30 turns it off.
            if (!L.sliding && !freq_factors.empty()) inv = freq_factors[j] >= 1e20f ? 0.0f : inv / freq_factors[j];
            L.inv_freq[j] = inv;
        }
        hp_.layers.push_back(std::move(L));
    }
    if (any_sliding && hp_.sliding_window <= 0)
        throw Error(DGEMMA_ERR_MODEL, p + ": sliding layers need a positive attention.sliding_window");
}

TensorBuffer Model::upload_vector(const std::vector<float> &v) {
    TensorBuffer t(backend_->alloc(TensorType::F32, static_cast<int64_t>(v.size())));
    backend_->upload(*t, v.data(), v.size() * sizeof(float));
    return t;
}

void Model::load_weights() {
    const Binder b(*file_);
    // A backend may refuse a weight (a type without a kernel): the message names the tensor.
    // stream_group >= 0: a streamed weight of that group (Backend::load_weight_streamed).
    auto place = [&](Backend &be, const std::string &name, const Tensor &host, int stream_group = -1) {
        try {
            return stream_group < 0 ? be.load_weight(host) : be.load_weight_streamed(host, stream_group);
        } catch (const Error &e) {
            throw Error(e.status(), file_->path() + ": tensor '" + name + "': " + e.what() + " (backend " + be.name() + ")");
        }
    };
    auto matrix = [&](const std::string &name, int64_t n_cols, int64_t n_rows) {
        return place(*backend_, name, b.host_view(name, n_cols, n_rows));
    };
    auto vec = [&](const std::string &name, int64_t n) { return upload_vector(b.vector(name, n)); };
    const int64_t E = hp_.n_embd;
    const std::string &p = file_->path();
    const GgufTensor *te = b.find("token_embd.weight");
    if (!te) throw Error(DGEMMA_ERR_MODEL, p + ": missing tensor 'token_embd.weight'");
    hp_.n_vocab = te->ne[1];
    if (hp_.n_vocab > kMaxWidth)
        throw Error(DGEMMA_ERR_MODEL, p + ": token_embd.weight has " + std::to_string(hp_.n_vocab) + " rows, more than the " +
                                          std::to_string(kMaxWidth) + " tokens a vocabulary may have");
    w_.token_embd = matrix("token_embd.weight", E, hp_.n_vocab);
    if (b.find("output.weight"))
        throw Error(DGEMMA_ERR_UNSUPPORTED, p + ": a separate output.weight is not supported (the lm_head is tied)");
    w_.output_norm = vec("output_norm.weight", E);
    w_.sc_pre_norm = vec("self_cond_pre_norm.weight", E);
    w_.sc_gate = matrix("self_cond_gate.weight", E, hp_.n_ff);
    w_.sc_up = matrix("self_cond_up.weight", E, hp_.n_ff);
    w_.sc_down = matrix("self_cond_down.weight", hp_.n_ff, E);

    for (int64_t i = 0; i < hp_.n_layer; ++i) {
        LayerHparams &L = hp_.layers[i];
        const std::string pre = "blk." + std::to_string(i) + ".";
        LayerWeights lw;
        const int64_t hd = L.head_dim, nq = hp_.n_head * hd, nkv = L.n_head_kv * hd;
        lw.attn_norm = vec(pre + "attn_norm.weight", E);
        lw.wq = matrix(pre + "attn_q.weight", E, nq);
        lw.wk = matrix(pre + "attn_k.weight", E, nkv);
        L.has_v = b.find(pre + "attn_v.weight") != nullptr;
        if (L.has_v) lw.wv = matrix(pre + "attn_v.weight", E, nkv);
        lw.wo = matrix(pre + "attn_output.weight", nq, E);
        lw.q_norm = vec(pre + "attn_q_norm.weight", hd);
        lw.k_norm = vec(pre + "attn_k_norm.weight", hd);
        lw.post_attn_norm = vec(pre + "post_attention_norm.weight", E);
        lw.ffn_norm = vec(pre + "ffn_norm.weight", E);
        lw.ffn_gate = matrix(pre + "ffn_gate.weight", E, hp_.n_ff);
        lw.ffn_up = matrix(pre + "ffn_up.weight", E, hp_.n_ff);
        lw.ffn_down = matrix(pre + "ffn_down.weight", hp_.n_ff, E);
        lw.post_ffw_norm_1 = vec(pre + "post_ffw_norm_1.weight", E);
        lw.router = matrix(pre + "ffn_gate_inp.weight", E, hp_.n_expert);
        lw.router_scale = vec(pre + "ffn_gate_inp.scale", E);
        lw.pre_ffw_norm_2 = vec(pre + "pre_ffw_norm_2.weight", E);
        const int64_t F = hp_.n_ff_exp, X = hp_.n_expert;
        // The last host_expert_layers layers keep their experts in host memory: on the host backend,
        // or streamed to the main one (a group per layer).
        const bool offloaded = i >= hp_.n_layer - host_expert_layers_;
        lw.experts_on_host = host_ && offloaded;
        lw.experts_streamed = streams_experts_ && offloaded;
        Backend &xb = lw.experts_on_host ? *host_ : *backend_;
        auto place_expert = [&](const std::string &name, int64_t n_cols, int64_t n_rows) {
            return place(xb, name, b.host_view(name, n_cols, n_rows, X), lw.experts_streamed ? static_cast<int>(i) : -1);
        };
        if (b.find(pre + "ffn_gate_up_exps.weight")) {
            // Fused: each expert's 2F rows are gate then up; two views over one placed tensor.
            const Tensor gu = place_expert(pre + "ffn_gate_up_exps.weight", E, 2 * F);
            lw.experts.gate = gu;
            lw.experts.gate.ne[1] = F;
            lw.experts.up = lw.experts.gate;
            lw.experts.up.data = gu.bytes_at(static_cast<size_t>(F) * gu.nb[1]);
        } else {
            lw.experts.gate = place_expert(pre + "ffn_gate_exps.weight", E, F);
            lw.experts.up = place_expert(pre + "ffn_up_exps.weight", E, F);
        }
        lw.experts.down = place_expert(pre + "ffn_down_exps.weight", F, E);
        for (const char *name : {"ffn_gate_up_exps.weight", "ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight"})
            if (const GgufTensor *t = b.find(pre + name)) lw.expert_bytes += t->nbytes;
        lw.per_expert_scale = vec(pre + "ffn_down_exps.scale", X);
        lw.post_ffw_norm_2 = vec(pre + "post_ffw_norm_2.weight", E);
        lw.post_ffw_norm = vec(pre + "post_ffw_norm.weight", E);
        lw.scalars[static_cast<int>(PassMode::Decoder)] = b.scalar(pre + "layer_output_scale.weight");
        lw.scalars[static_cast<int>(PassMode::Encoder)] = b.scalar(pre + "enc_layer_output_scale.weight");
        lw.inv_freq = upload_vector(L.inv_freq);
        w_.layers.push_back(std::move(lw));
    }
}

void Model::build_config_json() {
    std::ostringstream o;
    o.precision(9);
    const SamplerParams &s = hp_.sampler;
    o << "{\"architecture\":\"" << kArch << "\",\"n_vocab\":" << hp_.n_vocab << ",\"n_embd\":" << hp_.n_embd
      << ",\"n_layer\":" << hp_.n_layer << ",\"n_head\":" << hp_.n_head << ",\"n_ff\":" << hp_.n_ff
      << ",\"n_expert\":" << hp_.n_expert << ",\"n_expert_used\":" << hp_.n_expert_used
      << ",\"n_ff_exp\":" << hp_.n_ff_exp << ",\"n_ctx\":" << hp_.n_ctx << ",\"sliding_window\":" << hp_.sliding_window
      << ",\"canvas_length\":" << hp_.canvas_length << ",\"rms_norm_eps\":" << hp_.eps
      << ",\"final_logit_softcapping\":" << hp_.softcap << ",\"token_embd_type\":\"" << w_.token_embd.type->name << "\""
      << ",\"sampler\":{\"max_steps\":" << s.max_steps << ",\"t_min\":" << s.t_min << ",\"t_max\":" << s.t_max
      << ",\"entropy_bound\":" << s.entropy_bound << ",\"stability_threshold\":" << s.stability_threshold
      << ",\"confidence_threshold\":" << s.confidence_threshold << "},\"layers\":[";
    for (size_t i = 0; i < hp_.layers.size(); ++i) {
        const LayerHparams &L = hp_.layers[i];
        o << (i ? "," : "") << "{\"sliding\":" << (L.sliding ? "true" : "false") << ",\"head_dim\":" << L.head_dim
          << ",\"n_head_kv\":" << L.n_head_kv << ",\"has_v\":" << (L.has_v ? "true" : "false") << ",\"n_rot\":" << L.n_rot << "}";
    }
    o << "]}";
    config_json_ = o.str();
}

}  // namespace dg
