/*
 * dgemma.h — the public C API of the dgemma core.
 *
 * DiffusionGemma runs one set of transformer weights in two modes:
 *   - encoder mode (`dgemma_session_prefill`): reads tokens causally and appends their keys and
 *     values to the session's KV cache (the prompt, then each committed canvas);
 *   - decoder mode (`dgemma_session_denoise`): one denoising step over a canvas that attends
 *     bidirectionally to the cached prefix and to itself; the cache is read, never written.
 *
 * Conventions
 *   - Every function that can fail returns a dgemma_status. On failure, dgemma_last_error()
 *     returns a message for the calling thread that names what was wrong (the key, the tensor,
 *     the value). No C++ exception crosses this API.
 *   - Objects are not thread-safe: use one model or session from one thread at a time. Several
 *     sessions of one model may exist; calls on them are serialised by the model.
 *   - Token ids are int32; logits are float32, row-major [n_tokens, n_vocab].
 */
#ifndef DGEMMA_H
#define DGEMMA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define DGEMMA_API __declspec(dllexport)
#else
#define DGEMMA_API __attribute__((visibility("default")))
#endif

#define DGEMMA_API_VERSION 1

typedef enum dgemma_status {
    DGEMMA_OK = 0,
    DGEMMA_ERR_INVALID_ARGUMENT = 1, /* a parameter is out of its domain (null pointer, bad count) */
    DGEMMA_ERR_IO = 2,               /* the file cannot be opened, read or mapped */
    DGEMMA_ERR_FORMAT = 3,           /* the file is not a well-formed GGUF file */
    DGEMMA_ERR_UNSUPPORTED = 4,      /* well-formed, but an architecture or tensor type we cannot run */
    DGEMMA_ERR_MODEL = 5,            /* a tensor or hyperparameter is missing or inconsistent */
    DGEMMA_ERR_OUT_OF_RANGE = 6,     /* a token id, the context length or the canvas length exceeded */
    DGEMMA_ERR_OUT_OF_MEMORY = 7,
    DGEMMA_ERR_INTERNAL = 8
} dgemma_status;

/* Message of the last failure on the calling thread ("" if none). Valid until the next call. */
DGEMMA_API const char *dgemma_last_error(void);

/* Version of this header the library was built from (DGEMMA_API_VERSION). */
DGEMMA_API int32_t dgemma_api_version(void);

/* CPU features the library dispatches on at run time, e.g. "avx512f avx2 fma". */
DGEMMA_API const char *dgemma_cpu_features(void);

typedef struct dgemma_model dgemma_model;
typedef struct dgemma_session dgemma_session;

typedef struct dgemma_model_params {
    int32_t n_threads; /* worker threads for the CPU backend; <= 0 means one per core */
} dgemma_model_params;

DGEMMA_API dgemma_model_params dgemma_model_default_params(void);

/* Memory-maps and validates a GGUF file of architecture "diffusion-gemma". */
DGEMMA_API dgemma_status dgemma_model_load(const char *path, const dgemma_model_params *params,
                                           dgemma_model **out_model);

/* Frees the model. Sessions of the model must be freed first. NULL is ignored. */
DGEMMA_API void dgemma_model_free(dgemma_model *model);

/*
 * Hyperparameters, sampler defaults and weight types as one JSON object, owned by the model:
 * {"n_vocab":..,"n_embd":..,"n_layer":..,"n_head":..,"n_ctx":..,"canvas_length":..,
 *  "layers":[{"sliding":true,"head_dim":..,"n_head_kv":..,"has_v":..},..],
 *  "sampler":{"max_steps":..,"t_min":..,...}, "file_type": .., ...}
 */
DGEMMA_API const char *dgemma_model_config_json(const dgemma_model *model);

/* A sequence with its own KV cache. */
DGEMMA_API dgemma_status dgemma_session_new(dgemma_model *model, dgemma_session **out_session);
DGEMMA_API void dgemma_session_free(dgemma_session *session);

/* Number of tokens in the session's KV cache. */
DGEMMA_API int64_t dgemma_session_n_past(const dgemma_session *session);

/*
 * Encoder mode over `n_tokens` new tokens at positions n_past .. n_past + n_tokens - 1: appends
 * their keys and values to the cache. Used for the prompt and to commit a finished canvas.
 * Fails without touching the cache if an id is outside [0, n_vocab) or the context would overflow.
 */
DGEMMA_API dgemma_status dgemma_session_prefill(dgemma_session *session, const int32_t *ids, int64_t n_tokens);

/*
 * Decoder mode: one denoising step over `n_canvas` (1 .. canvas_length) canvas tokens at positions
 * n_past .. n_past + n_canvas - 1. `sc_logits` is NULL (no self-conditioning) or the previous step's
 * processed logits [n_canvas, n_vocab]. Writes soft-capped float32 logits [n_canvas, n_vocab] to
 * `out_logits`, which may not alias `sc_logits`. The KV cache is not modified.
 */
DGEMMA_API dgemma_status dgemma_session_denoise(dgemma_session *session, const int32_t *canvas, int64_t n_canvas,
                                                const float *sc_logits, float *out_logits);

/* ---- Generation ---------------------------------------------------------------------------------
 * The entropy-bound sampler and the multi-canvas loop (contract: Generation). Defaults come from the
 * GGUF `diffusion.*` keys; every field can be overridden per call.
 */
typedef struct dgemma_sampler_params {
    int32_t max_steps;            /* N, denoising steps per canvas at most (> 0) */
    float t_min;                  /* temperature at the last step (> 0) */
    float t_max;                  /* temperature at the first step (> t_min) */
    float entropy_bound;          /* accept while cumulative entropy minus the largest <= bound (>= 0) */
    int32_t stability_threshold;  /* early stop: argmax unchanged over this many steps (>= 0) ... */
    float confidence_threshold;   /* ... and mean entropy below this (>= 0) */
    uint64_t seed;                /* seed of the built-in random generator */
} dgemma_sampler_params;

DGEMMA_API dgemma_sampler_params dgemma_model_sampler_defaults(const dgemma_model *model);

/* Test hook: fills `n` random values, kind 0 = token ids (int32, in [0, n_vocab)), kind 1 = uniforms
 * (float, in [0, 1)). Consumed in the reference's order: n_canvas ids to start a canvas, then per
 * step n_canvas uniforms (the draws) and n_canvas ids (re-noise candidates). */
typedef void (*dgemma_random_fn)(void *user, int32_t kind, int64_t n, void *out);
/* After every denoising step: the current argmax canvas; return nonzero to cancel. */
typedef int32_t (*dgemma_step_fn)(void *user, int32_t step, const int32_t *draft, int64_t n_canvas);
/* After every finished canvas: its new output tokens; return nonzero to stop after it. */
typedef int32_t (*dgemma_canvas_fn)(void *user, const int32_t *tokens, int64_t n_tokens);

typedef struct dgemma_generate_options {
    const int32_t *eos_ids;  /* generation ends at the first of these ids (not output) */
    int64_t n_eos;
    dgemma_step_fn on_step;     /* may be NULL */
    dgemma_canvas_fn on_canvas; /* may be NULL */
    dgemma_random_fn random;    /* NULL: the built-in generator seeded by params.seed */
    void *user;                 /* passed to the callbacks */
} dgemma_generate_options;

typedef enum dgemma_finish_reason {
    DGEMMA_FINISH_LENGTH = 0,    /* max_new_tokens reached */
    DGEMMA_FINISH_EOS = 1,       /* an EOS id was committed */
    DGEMMA_FINISH_STOPPED = 2,   /* on_canvas asked to stop */
    DGEMMA_FINISH_CANCELLED = 3  /* on_step asked to cancel (the canvas in progress is dropped) */
} dgemma_finish_reason;

typedef struct dgemma_generate_result {
    int64_t n_tokens;      /* tokens written to out_tokens */
    int32_t n_steps;       /* decoder steps run */
    int32_t n_canvases;    /* canvases finished */
    int32_t finish_reason; /* dgemma_finish_reason */
    double decode_seconds; /* decoder forward passes */
    double sample_seconds; /* the sampler */
    double commit_seconds; /* encoder passes committing canvases */
} dgemma_generate_result;

/*
 * Generates after what the session has cached (prefill the prompt first): canvas after canvas of the
 * model's canvas length, each denoised by the sampler and its argmax committed through encoder mode
 * before the next. Writes at most `max_new_tokens` (> 0) ids to `out_tokens`, stopping before the
 * first EOS id. Fails before any work if the canvases needed would pass the context length.
 */
DGEMMA_API dgemma_status dgemma_session_generate(dgemma_session *session, const dgemma_sampler_params *params,
                                                 int64_t max_new_tokens, const dgemma_generate_options *options,
                                                 int32_t *out_tokens, dgemma_generate_result *result);

/*
 * Several sequences as one batch: every denoising step decodes the canvases of all sequences still
 * denoising in one pass, so the weights are read once for all. Each sequence has its own session,
 * parameters (params[i]), options (options[i]; options may be NULL), output buffer and result, and
 * stops on its own; its tokens equal what dgemma_session_generate gives it alone. The sessions
 * belong to one model and are distinct.
 */
DGEMMA_API dgemma_status dgemma_generate_batch(dgemma_session *const *sessions, int32_t n_sequences,
                                               const dgemma_sampler_params *params, int64_t max_new_tokens,
                                               const dgemma_generate_options *options, int32_t *const *out_tokens,
                                               dgemma_generate_result *results);

/* The sampler alone, on caller-supplied logits (tests, custom loops). */
typedef struct dgemma_sampler dgemma_sampler;
DGEMMA_API dgemma_status dgemma_sampler_new(int64_t n_canvas, int64_t n_vocab, const dgemma_sampler_params *params,
                                            dgemma_random_fn random, void *user, dgemma_sampler **out_sampler);
DGEMMA_API void dgemma_sampler_free(dgemma_sampler *sampler);
/* Writes a fresh uniform random canvas [n_canvas] and resets the stopping history. */
DGEMMA_API dgemma_status dgemma_sampler_init_canvas(dgemma_sampler *sampler, int32_t *canvas);
/* Step `step` (N .. 1): logits [n_canvas][n_vocab] raw in, processed (divided by the temperature)
 * out; canvas current in, next out; argmax [n_canvas] and accepted [n_canvas] (0/1) out; *stop set
 * when the stable-and-confident criterion fires. */
DGEMMA_API dgemma_status dgemma_sampler_step(dgemma_sampler *sampler, int32_t step, float *logits, int32_t *canvas,
                                             int32_t *argmax, uint8_t *accepted, int32_t *stop);

/* ---- Tensor types and kernels ----------------------------------------------------------------
 * Direct access to the quantized tensor types (ggml type ids and block layouts, e.g. 2 = Q4_0,
 * 12 = Q4_K) and to the CPU dot-product kernels, for tests, tools and benchmarks. Rows hold n
 * elements, n a multiple of the type's block size; a row takes n / block_size * type_size bytes.
 */

/* Block size (elements), type size (bytes per block) and name of a ggml type id. Any out pointer
 * may be NULL. DGEMMA_ERR_UNSUPPORTED for an id this build does not know. */
DGEMMA_API dgemma_status dgemma_type_info(int32_t type, int64_t *block_size, int64_t *type_size, const char **name);

/* Quantizes n floats into `dst` with the type's reference quantizer (ggml's rules). */
DGEMMA_API dgemma_status dgemma_quantize_row(int32_t type, const float *src, int64_t n, void *dst);

/* Quantizes n_rows consecutive rows of n_cols floats (row-major) into consecutive quantized rows,
 * with the same quantizer as dgemma_quantize_row, on n_threads threads (<= 0: one per core). The
 * result does not depend on the thread count. For tools that quantize whole tensors. */
DGEMMA_API dgemma_status dgemma_quantize_rows(int32_t type, const float *src, int64_t n_rows, int64_t n_cols, void *dst,
                                              int32_t n_threads);

/* Dequantizes a row of n elements to float32. */
DGEMMA_API dgemma_status dgemma_dequantize_row(int32_t type, const void *src, int64_t n, float *dst);

/* *out = dot(w_row, x) the way the CPU backend computes it: x is quantized to the type's
 * activation type (Q8_0 or Q8_K) and multiplied with the active instruction set's kernel.
 * DGEMMA_ERR_UNSUPPORTED for a type without an integer dot product. */
DGEMMA_API dgemma_status dgemma_vec_dot(int32_t type, const void *w_row, const float *x, int64_t n, float *out);

/* out[r] = dot(row r of w, x) for n_rows consecutive rows of n elements, x quantized once: the
 * single-threaded matrix-vector product of the CPU backend, for benchmarks. */
DGEMMA_API dgemma_status dgemma_matvec(int32_t type, const void *w, int64_t n_rows, const float *x, int64_t n,
                                       float *out);

/* Selects the instruction set of the CPU kernels for the whole process: "auto" (the best this CPU
 * supports, the default), "generic", "avx2" or "avx512" (AVX-512 VNNI). Fails with
 * DGEMMA_ERR_UNSUPPORTED, changing nothing, if this CPU lacks the set. */
DGEMMA_API dgemma_status dgemma_set_cpu_isa(const char *isa);

/* The instruction set in use: "generic", "avx2" or "avx512". */
DGEMMA_API const char *dgemma_cpu_isa(void);

/* out[t * n_rows + r] = dot(row r of w, row t of x) for n_rows consecutive weight rows and n_tokens
 * consecutive float rows x, all of n elements: every x row quantized to the type's activation type
 * (as they are for F32, F16 and BF16 weights), then the active instruction set's register-blocked
 * kernel, single-threaded: the CPU backend's matrix product, for tests and benchmarks.
 * DGEMMA_ERR_UNSUPPORTED for a type this build cannot read. */
DGEMMA_API dgemma_status dgemma_gemm(int32_t type, const void *w, int64_t n_rows, const float *x, int64_t n_tokens,
                                     int64_t n, float *out);

#ifdef __cplusplus
}
#endif

#endif /* DGEMMA_H */
