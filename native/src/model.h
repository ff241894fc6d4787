// DiffusionGemma: hyperparameters, weights placed on a backend, and the forward pass over a batch
// of segments (encoder and decoder rows of several sequences in one pass).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend.h"
#include "gguf.h"
#include "sampler.h"
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

struct Hparams {
    int64_t n_vocab = 0, n_embd = 0, n_layer = 0, n_head = 0, n_ff = 0;
    int64_t n_expert = 0, n_expert_used = 0, n_ff_exp = 0;
    int64_t n_ctx = 0, sliding_window = 0, canvas_length = 0;
    float eps = 1e-6f, softcap = 30.0f;
    std::vector<LayerHparams> layers;
    SamplerParams sampler;  // the file's diffusion.* defaults
};

struct LayerWeights {
    TensorBuffer attn_norm, q_norm, k_norm, post_attn_norm;  // F32 vectors on the backend
    Tensor wq, wk, wv, wo;  // wv empty in full layers
    TensorBuffer ffn_norm, post_ffw_norm_1;
    Tensor ffn_gate, ffn_up, ffn_down;
    Tensor router;  // [n_expert][n_embd]
    TensorBuffer router_scale, per_expert_scale, pre_ffw_norm_2, post_ffw_norm_2, post_ffw_norm;
    TensorBuffer inv_freq;  // F32 [n_rot / 2]
    MoeWeights experts;
    bool experts_on_host = false;     // placed on the model's host backend (expert offload, computed by the CPU)
    bool experts_streamed = false;    // streamed to the main backend for each pass (expert offload, streamed)
    size_t expert_bytes = 0;          // file bytes of the expert tensors
    float scalars[2] = {1.0f, 1.0f};  // layer scalar per PassMode: decoder, encoder
};

struct Weights {
    Tensor token_embd;  // [n_vocab][n_embd]; also the tied lm_head
    TensorBuffer output_norm, sc_pre_norm;
    Tensor sc_gate, sc_up, sc_down;
    std::vector<LayerWeights> layers;
};

struct Session;

// Scratch of forward passes over up to n_rows rows, of which up to n_logit_rows decoder rows
// (one per model, grown between passes, never during one). Activations are F32 [rows][width].
struct Workspace {
    int64_t n_rows = 0, n_logit_rows = 0;
    TensorBuffer x, xn, q, k, v, attn, proj, ff_gate, ff_up, dense, moe_out, sc, sc_h;
    TensorBuffer expert_ids, expert_weight;  // I32 / F32 [rows][k]
    TensorBuffer ids, positions, row_mode;   // I32 [rows]
    TensorBuffer logits;                     // F32 [logit rows][n_vocab]
};

// One sequence's part of a pass: `ids` (backend I32 [n]) at the session's next positions.
// Decoder segments may carry a soft embedding for self-conditioning (F32 [n][n_embd]).
struct PassItem {
    Session *s = nullptr;
    PassMode mode = PassMode::Decoder;
    Tensor ids;
    int64_t n = 0;
    Tensor sc_embed;  // decoder only; empty: no self-conditioning
};

enum class ExpertOffload : int32_t { Cpu = 0, Stream = 1 };  // dgemma_model_params.expert_offload

struct ModelOptions {
    int n_threads = 0;                   // <= 0: one per core
    TensorType kv_type = TensorType::F32;
    std::string backend = "cpu";         // "cpu", "cuda", "cuda:N", "plan" (accounting only) or "opaque" (the test backend)
    // Expert offload: the experts of the last `host_expert_layers` layers stay in host memory (for
    // cards that cannot hold them). 0: every weight on the main backend.
    int64_t host_expert_layers = 0;
    // How offloaded experts run: on a CPU backend beside the main one, their MoE's input and output
    // rows copied explicitly (Cpu), or copied to the main backend for each pass and computed there
    // (Stream: Backend::load_weight_streamed).
    ExpertOffload expert_offload = ExpertOffload::Cpu;
};

// The MoE of offloaded layers: rows copied to the host backend and back (F32 [rows][E], the
// router's I32/F32 [rows][k]).
struct HostMoeScratch {
    TensorBuffer x, ids, weights, out;
    int64_t n_rows = 0;
};

class Model {
public:
    Model(const std::string &path, const ModelOptions &options);
    ~Model();

    const Hparams &hparams() const { return hp_; }
    const std::string &config_json() const { return config_json_; }
    Backend &backend() { return *backend_; }
    // The CPU backend holding offloaded experts, or null.
    Backend *host_backend() { return host_.get(); }
    TensorType kv_type() const { return kv_type_; }
    std::mutex &mutex() { return mu_; }
    const TransferCounts &transfers() const { return transfers_; }

    // Scratch for a pass of `rows` rows with up to `logit_rows` decoder rows.
    Workspace &workspace(int64_t rows, int64_t logit_rows);

    // One pass over several segments (decoder items first, then encoder items, in the order
    // given). Encoder rows append to their sessions' caches and advance n_past; decoder rows
    // leave them untouched and write soft-capped logits to the workspace's logits rows, decoder
    // item i at the rows after items 0 .. i-1. The workspace must hold every row.
    void forward(Workspace &ws, const std::vector<PassItem> &items);

    // Encoder mode over host ids (the prompt, a committed canvas): chunks of at most kEncoderChunk.
    void encode(Session &s, const int32_t *ids, int64_t n);
    // Decoder mode over a host canvas, optional host self-conditioning logits; logits to the host.
    void decode(Session &s, const int32_t *canvas, int64_t n, const float *sc_logits, float *logits);

    // The soft embedding of processed logits [n][V] for self-conditioning: F32 [n][n_embd].
    void soft_embedding(const Tensor &logits, const Tensor &out);

    // Bytes the weights, one session at n_ctx_tokens of context and a batch of n_batch canvases need.
    MemoryPlan memory_plan(int64_t n_ctx_tokens, int64_t n_batch, int64_t n_sessions) const;
    // Bytes one generating sequence holds: its KV cache at n_tokens positions and its sampler state
    // (what the scheduler admits by).
    size_t sequence_bytes(int64_t n_tokens) const;
    size_t sampler_state_bytes() const;

    void check_ids(const int32_t *ids, int64_t n, const char *what) const;
    void check_room(const Session &s, int64_t n, const char *what) const;

    static constexpr int64_t kEncoderChunk = 512;  // rows per encoder pass

private:
    void load_hparams();
    void load_weights();
    void build_config_json();
    TensorBuffer upload_vector(const std::vector<float> &v);
    size_t workspace_bytes(int64_t rows, int64_t logit_rows) const;
    // The ops of a pass after its description is uploaded: embedding, layers, logits. They read
    // only backend tensors, so a backend may record them (Backend::record_pass_begin).
    void run_pass(Workspace &ws, const std::vector<PassItem> &items, const Pass &pass, int64_t D, bool any_sc);
    // What run_pass depends on besides tensor contents; empty when it crosses to the host or
    // streams weights (offloaded experts), so that it is never recorded.
    std::vector<int64_t> pass_key(const Workspace &ws, const std::vector<PassItem> &items, const Pass &pass, int64_t D,
                                  bool any_sc) const;
    // out = the MoE of layer w on rows of xn, on the backend that holds its experts.
    void moe(const LayerWeights &w, const Tensor &xn, const Tensor &ids, const Tensor &wts, const Tensor &out);

    std::unique_ptr<GgufFile> file_;
    Hparams hp_;
    TransferCounts transfers_;
    std::unique_ptr<Backend> backend_;
    std::unique_ptr<Backend> host_;  // expert offload
    Weights w_;
    TensorType kv_type_ = TensorType::F32;
    int64_t host_expert_layers_ = 0;
    bool streams_experts_ = false;  // some layer's experts are streamed (ExpertOffload::Stream)
    std::string config_json_;
    Workspace ws_;
    HostMoeScratch host_moe_;
    std::mutex mu_;
};

}  // namespace dg
