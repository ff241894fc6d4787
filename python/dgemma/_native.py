"""cffi (ABI mode) bindings to the native core, libdgemma.

The cdef below mirrors native/include/dgemma.h; tests/test_api.py checks that every function the
header exports is declared here. Set DGEMMA_LIBRARY to load a library from another place (a
development build, a sanitizer build).
"""

import os
import sys

import cffi

from .errors import error_for_status

CDEF = """
typedef int dgemma_status;
const char *dgemma_last_error(void);
int32_t dgemma_api_version(void);
const char *dgemma_cpu_features(void);

typedef struct dgemma_model dgemma_model;
typedef struct dgemma_session dgemma_session;
typedef struct dgemma_model_params {
    int32_t n_threads; int32_t kv_type; const char *backend; int32_t host_expert_layers; int32_t expert_offload;
} dgemma_model_params;

dgemma_model_params dgemma_model_default_params(void);
typedef struct dgemma_cuda_device {
    char name[256]; uint64_t total_memory; uint64_t free_memory; int32_t major; int32_t minor;
} dgemma_cuda_device;
dgemma_status dgemma_cuda_device_count(int32_t *count);
dgemma_status dgemma_cuda_device_info(int32_t device, dgemma_cuda_device *out);
dgemma_status dgemma_model_load(const char *path, const dgemma_model_params *params, dgemma_model **out_model);
void dgemma_model_free(dgemma_model *model);
const char *dgemma_model_config_json(const dgemma_model *model);
typedef struct dgemma_memory {
    uint64_t weights_mapped; uint64_t weights_owned; uint64_t weights_on_host; uint64_t per_session; uint64_t per_batch; uint64_t total;
} dgemma_memory;
dgemma_status dgemma_model_memory(const dgemma_model *model, int64_t n_ctx_tokens, int32_t n_batch,
                                  int32_t n_sessions, dgemma_memory *out);
typedef struct dgemma_transfers {
    uint64_t bytes_to_host; uint64_t bytes_to_device; int64_t downloads; int64_t uploads;
} dgemma_transfers;
dgemma_status dgemma_model_transfers(const dgemma_model *model, dgemma_transfers *out);

dgemma_status dgemma_session_new(dgemma_model *model, dgemma_session **out_session);
void dgemma_session_free(dgemma_session *session);
int64_t dgemma_session_n_past(const dgemma_session *session);
dgemma_status dgemma_session_prefill(dgemma_session *session, const int32_t *ids, int64_t n_tokens);
dgemma_status dgemma_session_denoise(dgemma_session *session, const int32_t *canvas, int64_t n_canvas,
                                     const float *sc_logits, float *out_logits);

typedef struct dgemma_sampler_params {
    int32_t max_steps; float t_min; float t_max; float entropy_bound; int32_t stability_threshold;
    float confidence_threshold; uint64_t seed;
} dgemma_sampler_params;
dgemma_sampler_params dgemma_model_sampler_defaults(const dgemma_model *model);
typedef int32_t (*dgemma_step_fn)(void *user, int32_t step, const int32_t *draft, int64_t n_canvas);
typedef int32_t (*dgemma_canvas_fn)(void *user, const int32_t *tokens, int64_t n_tokens);
struct dgemma_generate_result;
typedef void (*dgemma_done_fn)(void *user, const struct dgemma_generate_result *result);
typedef struct dgemma_generate_options {
    const int32_t *eos_ids; int64_t n_eos; dgemma_step_fn on_step; dgemma_canvas_fn on_canvas;
    int32_t drafts; const uint64_t *draws; int64_t n_draws; const uint8_t *fixed; const int32_t *fixed_tokens;
    void *user; dgemma_done_fn on_done;
} dgemma_generate_options;
typedef struct dgemma_generate_result {
    int64_t n_tokens; int32_t n_steps; int32_t n_canvases; int32_t finish_reason;
    double decode_seconds; double sample_seconds; double commit_seconds; double prefill_seconds;
    int64_t n_prompt_cached;
} dgemma_generate_result;
dgemma_status dgemma_session_generate(dgemma_session *session, const dgemma_sampler_params *params,
                                      int64_t max_new_tokens, const dgemma_generate_options *options,
                                      int32_t *out_tokens, dgemma_generate_result *result);
dgemma_status dgemma_generate_batch(dgemma_session *const *sessions, int32_t n_sequences,
                                    const dgemma_sampler_params *params, int64_t max_new_tokens,
                                    const dgemma_generate_options *options, int32_t *const *out_tokens,
                                    dgemma_generate_result *results);
typedef struct dgemma_sampler dgemma_sampler;
dgemma_status dgemma_sampler_new(int64_t n_canvas, int64_t n_vocab, const dgemma_sampler_params *params,
                                 const uint64_t *draws, int64_t n_draws, dgemma_sampler **out_sampler);
void dgemma_sampler_free(dgemma_sampler *sampler);
dgemma_status dgemma_sampler_set_fixed(dgemma_sampler *sampler, const uint8_t *mask);
dgemma_status dgemma_sampler_init_canvas(dgemma_sampler *sampler, int32_t *canvas);
dgemma_status dgemma_sampler_step(dgemma_sampler *sampler, int32_t step, float *logits, int32_t *canvas,
                                  int32_t *argmax, uint8_t *accepted, int32_t *stop);
"""
# Further sections of the header append their declarations here.
CDEF_EXTRA = [
    # Scheduler (dgemma/scheduler.py).
    """
    typedef struct dgemma_scheduler dgemma_scheduler;
    typedef struct dgemma_scheduler_params {
        int32_t max_batch; int32_t prefill_chunk; uint64_t memory_budget; int32_t prefix_cache;
    } dgemma_scheduler_params;
    typedef struct dgemma_scheduler_stats {
        int64_t passes; int64_t decoder_passes; int64_t canvas_steps; int64_t prefill_tokens; int64_t cached_tokens;
        int64_t waiting; int64_t running; int64_t cached; uint64_t memory_used;
    } dgemma_scheduler_stats;
    dgemma_scheduler_params dgemma_scheduler_default_params(void);
    dgemma_status dgemma_scheduler_new(dgemma_model *model, const dgemma_scheduler_params *params,
                                       dgemma_scheduler **out_scheduler);
    void dgemma_scheduler_free(dgemma_scheduler *scheduler);
    dgemma_status dgemma_scheduler_submit(dgemma_scheduler *scheduler, const int32_t *prompt, int64_t n_prompt,
                                          const dgemma_sampler_params *params, int64_t max_new_tokens,
                                          const dgemma_generate_options *options, int32_t *out_tokens,
                                          dgemma_generate_result *result, int64_t *out_id);
    dgemma_status dgemma_scheduler_cancel(dgemma_scheduler *scheduler, int64_t id);
    dgemma_status dgemma_scheduler_step(dgemma_scheduler *scheduler, int32_t *out_pending);
    dgemma_status dgemma_scheduler_stats_get(dgemma_scheduler *scheduler, dgemma_scheduler_stats *out);
    """,
    # Tensor types and kernels (dgemma/kernels.py).
    """
    dgemma_status dgemma_type_info(int32_t type, int64_t *block_size, int64_t *type_size, const char **name);
    dgemma_status dgemma_quantize_row(int32_t type, const float *src, int64_t n, void *dst);
    dgemma_status dgemma_quantize_rows(int32_t type, const float *src, int64_t n_rows, int64_t n_cols, void *dst,
                                       int32_t n_threads);
    dgemma_status dgemma_dequantize_row(int32_t type, const void *src, int64_t n, float *dst);
    dgemma_status dgemma_vec_dot(int32_t type, const void *w_row, const float *x, int64_t n, float *out);
    dgemma_status dgemma_matvec(int32_t type, const void *w, int64_t n_rows, const float *x, int64_t n, float *out);
    dgemma_status dgemma_set_cpu_isa(const char *isa);
    const char *dgemma_cpu_isa(void);
    dgemma_status dgemma_gemm(int32_t type, const void *w, int64_t n_rows, const float *x, int64_t n_tokens, int64_t n,
                              float *out);
    """,
]

API_VERSION = 4

ffi = cffi.FFI()
ffi.cdef(CDEF + "\n".join(CDEF_EXTRA))


def _library_path() -> str:
    override = os.environ.get("DGEMMA_LIBRARY")
    if override:
        return override
    here = os.path.dirname(os.path.abspath(__file__))
    names = {"win32": "dgemma.dll", "darwin": "libdgemma.dylib"}
    return os.path.join(here, names.get(sys.platform, "libdgemma.so"))


lib = ffi.dlopen(_library_path())
if lib.dgemma_api_version() != API_VERSION:
    raise ImportError(f"libdgemma API version {lib.dgemma_api_version()} does not match the bindings ({API_VERSION})")


def last_error() -> str:
    return ffi.string(lib.dgemma_last_error()).decode("utf-8", "replace")


def check(status: int) -> None:
    """Raises the typed DgemmaError for a failing status, with the core's message."""
    if status != 0:
        raise error_for_status(status, last_error())
