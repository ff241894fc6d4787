// The C API (dgemma.h): argument checks, then the model. Exceptions stop here (error.h: guarded).
#include <memory>
#include <mutex>
#include <string>

#include "api_types.h"
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
    return p;
}

DGEMMA_API dgemma_status dgemma_model_load(const char *path, const dgemma_model_params *params,
                                           dgemma_model **out_model) {
    return dg::guarded([&] {
        require(path != nullptr && out_model != nullptr, "dgemma_model_load: path and out_model must not be NULL");
        *out_model = nullptr;
        const int n_threads = params ? params->n_threads : 0;
        auto m = std::make_unique<dgemma_model>();
        m->model = std::make_unique<dg::Model>(path, n_threads);
        *out_model = m.release();
    });
}

DGEMMA_API void dgemma_model_free(dgemma_model *model) { delete model; }

DGEMMA_API const char *dgemma_model_config_json(const dgemma_model *model) {
    return model ? model->model->config_json().c_str() : "";
}

DGEMMA_API dgemma_status dgemma_session_new(dgemma_model *model, dgemma_session **out_session) {
    return dg::guarded([&] {
        require(model != nullptr && out_session != nullptr, "dgemma_session_new: model and out_session must not be NULL");
        *out_session = nullptr;
        std::lock_guard<std::mutex> lock(model->model->mutex());
        auto s = std::make_unique<dgemma_session>();
        s->session = std::make_unique<dg::Session>(*model->model);
        *out_session = s.release();
    });
}

DGEMMA_API void dgemma_session_free(dgemma_session *session) {
    if (!session) return;
    std::lock_guard<std::mutex> lock(session->session->model.mutex());
    session->session.reset();
    delete session;
}

DGEMMA_API int64_t dgemma_session_n_past(const dgemma_session *session) {
    return session ? session->session->n_past : 0;
}

DGEMMA_API dgemma_status dgemma_session_prefill(dgemma_session *session, const int32_t *ids, int64_t n_tokens) {
    return dg::guarded([&] {
        require(session != nullptr, "dgemma_session_prefill: session must not be NULL");
        require(n_tokens >= 0, "dgemma_session_prefill: n_tokens must not be negative");
        require(ids != nullptr || n_tokens == 0, "dgemma_session_prefill: ids must not be NULL");
        if (n_tokens == 0) return;
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
        const size_t bytes = static_cast<size_t>(n_canvas > 0 ? n_canvas : 0) * s.model.hparams().n_vocab * sizeof(float);
        if (sc_logits) {
            const char *a = reinterpret_cast<const char *>(sc_logits), *b = reinterpret_cast<const char *>(out_logits);
            require(a + bytes <= b || b + bytes <= a, "dgemma_session_denoise: out_logits must not overlap sc_logits");
        }
        std::lock_guard<std::mutex> lock(s.model.mutex());
        s.model.decode(s, canvas, n_canvas, sc_logits, out_logits);
    });
}

}  // extern "C"
