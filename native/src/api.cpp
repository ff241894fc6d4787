// The C API (dgemma.h): argument checks, then the model. Exceptions stop here (error.h: guarded).
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "api_types.h"
#include "cuda_plugin.h"
#include "dgemma.h"
#include "error.h"
#include "model.h"
#include "session.h"


namespace {

void require(bool ok, const char *message) {
    if (!ok) throw dg::Error(DGEMMA_ERR_INVALID_ARGUMENT, message);
}

}  // namespace

extern "C" {

DGEMMA_API int32_t dgemma_api_version(void) { return DGEMMA_API_VERSION; }

DGEMMA_API dgemma_model_params dgemma_model_default_params(void) {
    dgemma_model_params p;
    p.n_threads = 0;
    p.kv_type = static_cast<int32_t>(dg::TensorType::F32);
    p.backend = nullptr;
    p.host_expert_layers = 0;
    p.expert_offload = DGEMMA_EXPERT_OFFLOAD_STREAM;  // H200, run 10: 168 ms a step against 289 (12 GB cap)
    return p;
}

DGEMMA_API dgemma_status dgemma_cuda_device_count(int32_t *count) {
    return dg::guarded([&] {
        require(count != nullptr, "dgemma_cuda_device_count: count must not be NULL");
        *count = 0;
        *count = dg::cuda_device_count();
    });
}

DGEMMA_API dgemma_status dgemma_cuda_device_info(int32_t device, dgemma_cuda_device *out) {
    return dg::guarded([&] {
        require(out != nullptr, "dgemma_cuda_device_info: out must not be NULL");
        const dg::CudaDeviceInfo d = dg::cuda_device_info(device);
        static_assert(sizeof out->name == sizeof d.name, "device name buffers differ");
        std::memcpy(out->name, d.name, sizeof d.name);
        out->total_memory = d.total_memory;
        out->free_memory = d.free_memory;
        out->major = d.major;
        out->minor = d.minor;
    });
}

DGEMMA_API dgemma_status dgemma_model_load(const char *path, const dgemma_model_params *params,
                                           dgemma_model **out_model) {
    return dg::guarded([&] {
        require(path != nullptr && out_model != nullptr, "dgemma_model_load: path and out_model must not be NULL");
        *out_model = nullptr;
        dg::ModelOptions o;
        if (params) {
            o.n_threads = params->n_threads;
            require(params->kv_type >= 0, "dgemma_model_load: kv_type must be a ggml type id (0 F32, 1 F16, 30 BF16)");
            o.kv_type = static_cast<dg::TensorType>(params->kv_type);
            if (params->backend) o.backend = params->backend;
            o.host_expert_layers = params->host_expert_layers;
            o.expert_offload = static_cast<dg::ExpertOffload>(params->expert_offload);
        }
        auto m = std::make_unique<dgemma_model>();
        m->model = std::make_unique<dg::Model>(path, o);
        *out_model = m.release();
    });
}

DGEMMA_API void dgemma_model_free(dgemma_model *model) {
    if (!model) return;
    {
        std::unique_lock<std::mutex> lock(model->calls_mu);
        model->calls_done.wait(lock, [&] { return model->calls == 0; });
    }
    delete model;
}

DGEMMA_API const char *dgemma_model_config_json(const dgemma_model *model) {
    return model ? model->model->config_json().c_str() : "";
}

DGEMMA_API dgemma_status dgemma_model_memory(const dgemma_model *model, int64_t n_ctx_tokens, int32_t n_batch,
                                             int32_t n_sessions, dgemma_memory *out) {
    return dg::guarded([&] {
        require(model && out, "dgemma_model_memory: model and out must not be NULL");
        dg::ModelCall call(const_cast<dgemma_model *>(model));
        require(n_ctx_tokens >= 0 && n_batch >= 0 && n_sessions >= 0, "dgemma_model_memory: counts must not be negative");
        const dg::MemoryPlan p = model->model->memory_plan(n_ctx_tokens, n_batch, n_sessions);
        *out = {p.weights_mapped, p.weights_owned, p.weights_on_host, p.per_session, p.per_batch, p.total};
    });
}

DGEMMA_API dgemma_status dgemma_model_transfers(const dgemma_model *model, dgemma_transfers *out) {
    return dg::guarded([&] {
        require(model && out, "dgemma_model_transfers: model and out must not be NULL");
        auto *m = const_cast<dgemma_model *>(model);
        dg::ModelCall call(m);
        std::lock_guard<std::mutex> lock(m->model->mutex());
        const dg::TransferCounts &t = m->model->transfers();
        *out = {t.bytes_to_host, t.bytes_to_device, t.downloads, t.uploads};
    });
}

DGEMMA_API dgemma_status dgemma_session_new(dgemma_model *model, dgemma_session **out_session) {
    return dg::guarded([&] {
        require(model != nullptr && out_session != nullptr, "dgemma_session_new: model and out_session must not be NULL");
        *out_session = nullptr;
        dg::ModelCall call(model);
        std::lock_guard<std::mutex> lock(model->model->mutex());
        auto s = std::make_unique<dgemma_session>();
        s->owner = model;
        s->session = std::make_unique<dg::Session>(*model->model);
        *out_session = s.release();
    });
}

DGEMMA_API void dgemma_session_free(dgemma_session *session) {
    if (!session) return;
    {
        std::unique_lock<std::mutex> lock(session->owner->calls_mu);
        if (session->busy && session->busy_thread == std::this_thread::get_id()) {
            session->free_pending = true;  // from a callback of the call using it: freed when that call returns
            return;
        }
        session->owner->calls_done.wait(lock, [&] { return session->busy == 0; });
    }
    std::lock_guard<std::mutex> lock(session->session->model.mutex());
    delete session;
}

DGEMMA_API int64_t dgemma_session_n_past(const dgemma_session *session) {
    if (!session) return 0;
    std::lock_guard<std::mutex> lock(session->session->model.mutex());
    return session->session->n_past;
}

DGEMMA_API dgemma_status dgemma_session_prefill(dgemma_session *session, const int32_t *ids, int64_t n_tokens) {
    return dg::guarded([&] {
        require(session != nullptr, "dgemma_session_prefill: session must not be NULL");
        require(n_tokens >= 0, "dgemma_session_prefill: n_tokens must not be negative");
        require(ids != nullptr || n_tokens == 0, "dgemma_session_prefill: ids must not be NULL");
        if (n_tokens == 0) return;
        dg::SessionCall call(session);
        dg::Session &s = *session->session;
        std::lock_guard<std::mutex> lock(s.model.mutex());
        s.model.encode(s, ids, n_tokens);
    });
}

DGEMMA_API dgemma_status dgemma_session_denoise(dgemma_session *session, const int32_t *canvas, int64_t n_canvas,
                                                const float *sc_logits, float *out_logits) {
    return dg::guarded([&] {
        require(session != nullptr && canvas != nullptr && out_logits != nullptr,
                "dgemma_session_denoise: session, canvas and out_logits must not be NULL");
        dg::Session &s = *session->session;
        const int64_t C = s.model.hparams().canvas_length;
        if (n_canvas <= 0 || n_canvas > C)
            throw dg::Error(DGEMMA_ERR_OUT_OF_RANGE, "canvas of " + std::to_string(n_canvas) +
                                                         " tokens; the model's canvas length is " + std::to_string(C));
        const size_t bytes = static_cast<size_t>(n_canvas) * static_cast<size_t>(s.model.hparams().n_vocab) * sizeof(float);
        if (sc_logits) {
            const char *a = reinterpret_cast<const char *>(sc_logits), *b = reinterpret_cast<const char *>(out_logits);
            require(a + bytes <= b || b + bytes <= a, "dgemma_session_denoise: out_logits must not overlap sc_logits");
        }
        dg::SessionCall call(session);
        std::lock_guard<std::mutex> lock(s.model.mutex());
        s.model.decode(s, canvas, n_canvas, sc_logits, out_logits);
    });
}

}  // extern "C"
