// DiffusionGemma: hyperparameters, weights bound to the mapped GGUF file, and the two forward modes.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend.h"
#include "cpu/threadpool.h"
#include "gguf.h"
#include "tensor.h"

namespace dg {

struct LayerHparams {
    bool sliding = true;  // sliding-window layer (else full attention)
    int head_dim = 0;
    int n_head_kv = 0;
    bool has_v = true;    // full layers have no V projection: V comes from the raw K projection
    int n_rot = 0;        // rotated dimensions
    std::vector<float> inv_freq;  // [n_rot / 2]; 0 where a dimension pair is not rotated
};

struct SamplerDefaults {
    int max_steps = 48;
    float t_min = 0.4f, t_max = 0.8f, entropy_bound = 0.1f;
    int stability_threshold = 1;
    float confidence_threshold = 0.005f;
};

struct Hparams {
    int64_t n_vocab = 0, n_embd = 0, n_layer = 0, n_head = 0, n_ff = 0;
    int64_t n_expert = 0, n_expert_used = 0, n_ff_exp = 0;
    int64_t n_ctx = 0, sliding_window = 0, canvas_length = 0;
    float eps = 1e-6f, softcap = 30.0f;
    std::vector<LayerHparams> layers;
    SamplerDefaults sampler;
};

struct LayerWeights {
    std::vector<float> attn_norm, q_norm, k_norm, post_attn_norm;
    Matrix wq, wk, wv, wo;  // wv empty in full layers
    std::vector<float> ffn_norm, post_ffw_norm_1;
    Matrix ffn_gate, ffn_up, ffn_down;
    Matrix router;  // [n_expert][n_embd]
    std::vector<float> router_scale, per_expert_scale, pre_ffw_norm_2, post_ffw_norm_2, post_ffw_norm;
    MoeWeights experts;
    float decoder_scalar = 1.0f, encoder_scalar = 1.0f;
};

struct Weights {
    Matrix token_embd;  // [n_vocab][n_embd]; also the tied lm_head
    std::vector<float> output_norm, sc_pre_norm;
    Matrix sc_gate, sc_up, sc_down;
    std::vector<LayerWeights> layers;
};

struct Session;
struct Workspace;

// One sequence's rows in a forward pass: rows row0 .. row0 + n - 1 of the workspace, at positions
// s->n_past .. s->n_past + n - 1, attending to s's cache.
struct Segment {
    Session *s;
    int64_t row0, n;
};

// One canvas of a batched denoising step.
struct DenoiseItem {
    Session *s;
    const int32_t *canvas;
    int64_t n;
    const float *sc_logits;  // nullptr: no self-conditioning
    float *logits;           // out: [n][n_vocab]
};

class Model {
public:
    Model(const std::string &path, int n_threads);
    ~Model();

    const Hparams &hparams() const { return hp_; }
    const std::string &config_json() const { return config_json_; }
    Backend &backend() { return *backend_; }
    std::mutex &mutex() { return mu_; }
    // Threads for host-side work outside the backend (the sampler).
    ThreadPool &host_pool() { return host_pool_; }

    // Encoder mode: ids[n] at positions s.n_past.. ; appends to the session's cache.
    void encode(Session &s, const int32_t *ids, int64_t n);
    // Decoder mode: canvas[n] at positions s.n_past.. ; writes logits[n][n_vocab].
    void decode(Session &s, const int32_t *canvas, int64_t n, const float *sc_logits, float *logits);
    // Decoder mode for several sequences in one pass (the weights are read once for all of them).
    // Each item's logits equal what decode() gives it alone. ws holds at least the total rows.
    void decode_batch(Workspace &ws, const std::vector<DenoiseItem> &items);

private:
    void load_hparams();
    void load_weights();
    void build_config_json();
    void check_ids(const int32_t *ids, int64_t n, const char *what) const;
    void check_canvas(const Session &s, const int32_t *canvas, int64_t n) const;
    // Runs every layer over ws.x (the segments' rows). Encoder mode appends to the caches.
    void layers_forward(Workspace &ws, const std::vector<Segment> &segments, bool encoder);

    std::unique_ptr<GgufFile> file_;
    Hparams hp_;
    Weights w_;
    std::string config_json_;
    std::unique_ptr<Backend> backend_;
    ThreadPool host_pool_;
    std::mutex mu_;
};

}  // namespace dg
