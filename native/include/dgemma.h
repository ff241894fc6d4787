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
 *   - Threads: see "Thread safety" below.
 *   - Token ids are int32; logits are float32, row-major [n_tokens, n_vocab].
 *
 * Thread safety (one model, many sessions, many threads)
 *   - Any thread may call any function on a model and on its sessions at any time. The model runs
 *     one forward pass at a time (a model-wide lock, held for each pass and never across a
 *     callback); calls on different sessions interleave between passes.
 *   - A session serves one call at a time: a second call that needs it (prefill, denoise, a
 *     generation) while another runs fails with DGEMMA_ERR_INVALID_ARGUMENT ("in use"), it does not
 *     race. dgemma_session_n_past may be called at any time, also while the session generates.
 *   - Callbacks (dgemma_step_fn, dgemma_canvas_fn) run on the thread that called the generation,
 *     without the model lock: they may call any function of this API on the same model (new
 *     sessions, prefill, another generation), except on the sessions of the call that invoked them.
 *   - dgemma_session_free waits for the call using the session to return; called from that call's
 *     own callback, the session is freed when the call returns. dgemma_model_free waits for every
 *     call in flight on the model and its sessions to return; it must not be called from a callback
 *     (it would wait for itself), and its sessions must be freed first. Using a handle after its
 *     free has begun is the caller's error (the Python bindings refuse it with an exception).
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

#define DGEMMA_API_VERSION 4

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
    int32_t n_threads;   /* worker threads for the CPU backend; <= 0 means one per core */
    int32_t kv_type;     /* KV cache element type, a ggml type id: 0 = F32 (default), 1 = F16, 30 = BF16 */
    const char *backend; /* NULL or "cpu"; "cuda" (device 0) or "cuda:N"; "plan" opens the model for
                            dgemma_model_memory alone (weights neither read nor packed; every
                            computation fails with DGEMMA_ERR_UNSUPPORTED); "opaque" is the test backend
                            (host-opaque memory, transfers counted). CUDA loads libdgemma_cuda on first use;
                            a missing library, driver or device is DGEMMA_ERR_UNSUPPORTED saying which, a
                            weight type without a CUDA kernel too (naming the tensor and type). */
    int32_t host_expert_layers; /* expert offload: the experts of the last N layers stay in host memory;
                                   0: none */
    int32_t expert_offload;     /* how offloaded experts run: DGEMMA_EXPERT_OFFLOAD_STREAM (default) copied
                                   to the device for each pass and computed there (two layers' experts of
                                   device memory staging them); DGEMMA_EXPERT_OFFLOAD_CPU on a CPU backend,
                                   their MoE's rows copied explicitly. Other values: INVALID_ARGUMENT */
} dgemma_model_params;

enum { DGEMMA_EXPERT_OFFLOAD_CPU = 0, DGEMMA_EXPERT_OFFLOAD_STREAM = 1 };

DGEMMA_API dgemma_model_params dgemma_model_default_params(void);

/* CUDA devices this library can run on. Fails with DGEMMA_ERR_UNSUPPORTED, the message saying
 * which, when the CUDA backend library (libdgemma_cuda beside libdgemma, or $DGEMMA_CUDA_LIBRARY),
 * the driver or any device is missing; never loads CUDA before the first of these calls. */
typedef struct dgemma_cuda_device {
    char name[256];
    uint64_t total_memory, free_memory; /* bytes, free at the time of the call */
    int32_t major, minor;               /* compute capability */
} dgemma_cuda_device;
DGEMMA_API dgemma_status dgemma_cuda_device_count(int32_t *count);
DGEMMA_API dgemma_status dgemma_cuda_device_info(int32_t device, dgemma_cuda_device *out);

/* Memory-maps and validates a GGUF file of architecture "diffusion-gemma". */
DGEMMA_API dgemma_status dgemma_model_load(const char *path, const dgemma_model_params *params,
                                           dgemma_model **out_model);

/* Frees the model after every call in flight on it returns. Sessions of the model must be freed
 * first; not from a callback. NULL is ignored. */
DGEMMA_API void dgemma_model_free(dgemma_model *model);

/*
 * Hyperparameters, sampler defaults and weight types as one JSON object, owned by the model:
 * {"n_vocab":..,"n_embd":..,"n_layer":..,"n_head":..,"n_ctx":..,"canvas_length":..,
 *  "layers":[{"sliding":true,"head_dim":..,"n_head_kv":..,"has_v":..},..],
 *  "sampler":{"max_steps":..,"t_min":..,...}, "file_type": .., ...}
 */
DGEMMA_API const char *dgemma_model_config_json(const dgemma_model *model);

/* Memory a model needs (bytes): the weights, one session holding `n_ctx_tokens` positions, and the
 * workspace and sampler state of a batch of `n_batch` canvases; total = weights + n_sessions
 * sessions + the batch. What `dgemma info`, admission control and offload planning read. */
typedef struct dgemma_memory {
    uint64_t weights_mapped; /* file bytes used in place (the CPU maps them and pages them in on demand) */
    uint64_t weights_owned;  /* weight bytes the backend holds beyond the file (uploads, repacked copies, the
                                staging of streamed experts) */
    uint64_t weights_on_host;/* of weights_mapped, the offloaded experts (host memory, computed there or streamed) */
    uint64_t per_session;    /* KV cache of one session */
    uint64_t per_batch;      /* workspace (activations, logits) and sampler state of the batch */
    uint64_t total;
} dgemma_memory;
DGEMMA_API dgemma_status dgemma_model_memory(const dgemma_model *model, int64_t n_ctx_tokens, int32_t n_batch,
                                             int32_t n_sessions, dgemma_memory *out);

/* Bytes that crossed between the host and the backend's memory since load (the "opaque" test
 * backend counts them; the CPU backend reports zeros). */
typedef struct dgemma_transfers {
    uint64_t bytes_to_host, bytes_to_device;
    int64_t downloads, uploads;
} dgemma_transfers;
DGEMMA_API dgemma_status dgemma_model_transfers(const dgemma_model *model, dgemma_transfers *out);

/* A sequence with its own KV cache. */
DGEMMA_API dgemma_status dgemma_session_new(dgemma_model *model, dgemma_session **out_session);
/* Frees the session once no call uses it (see Thread safety). NULL is ignored. */
DGEMMA_API void dgemma_session_free(dgemma_session *session);

/* Number of tokens in the session's KV cache (read under the model lock: never a prefill's midpoint). */
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

/* Randomness. Every random value of a sequence is a raw 64-bit draw r_k, k fixed by what it is for:
 *   k = ((canvas * (max_steps + 1) + s) * 2 + kind) * n_canvas + position
 * with canvas 0, 1, .. in the generation; s = 0 for the canvas's initial ids, s = max_steps - n + 1
 * for the step counting down n; kind 0 = initial id (s = 0) or the step's uniform, 1 = the step's
 * re-noise id. r_k is output k of splitmix64 seeded with `seed` (z = seed + (k + 1) * 0x9e3779b97f4a7c15,
 * then the splitmix64 mix), or entry k of a caller's table of raw draws (tests feed a reference the
 * same values). An id is (r * n_vocab) >> 64; a uniform is (r >> 40) / 2^24. Any backend draws the
 * same values in any order. */
/* After every denoising step: the argmax canvas when drafts are asked for, else NULL; return nonzero to cancel. */
typedef int32_t (*dgemma_step_fn)(void *user, int32_t step, const int32_t *draft, int64_t n_canvas);
/* After every finished canvas: its new output tokens; return nonzero to stop after it. */
typedef int32_t (*dgemma_canvas_fn)(void *user, const int32_t *tokens, int64_t n_tokens);

struct dgemma_generate_result;
/* When a scheduler's request has finished (its result and output tokens are final). */
typedef void (*dgemma_done_fn)(void *user, const struct dgemma_generate_result *result);

typedef struct dgemma_generate_options {
    const int32_t *eos_ids;  /* generation ends at the first of these ids (not output) */
    int64_t n_eos;
    dgemma_step_fn on_step;     /* may be NULL */
    dgemma_canvas_fn on_canvas; /* may be NULL */
    int32_t drafts;             /* nonzero: on_step receives each step's argmax canvas (a copy to the host per step) */
    const uint64_t *draws;      /* NULL: the generator seeded by params.seed; else a table of raw draws (see above) */
    int64_t n_draws;            /* entries in `draws`; a draw past the end fails the call */
    const uint8_t *fixed;       /* NULL, or [canvas_length]: nonzero = position fixed in the first canvas (infill).
                                 * That canvas's output: fixed positions as given (an EOS there is text); an EOS
                                 * at a free position drops the rest of its hole (run of free positions) and ends
                                 * the generation only when no fixed position follows it. Dropped positions
                                 * still count towards max_new_tokens. */
    const int32_t *fixed_tokens;/* [canvas_length]: the tokens of the fixed positions */
    void *user;                 /* passed to the callbacks */
    dgemma_done_fn on_done;     /* may be NULL; a scheduler's request calls it once its result is final */
} dgemma_generate_options;

typedef enum dgemma_finish_reason {
    DGEMMA_FINISH_LENGTH = 0,    /* max_new_tokens reached */
    DGEMMA_FINISH_EOS = 1,       /* an EOS id was committed */
    DGEMMA_FINISH_STOPPED = 2,   /* on_canvas asked to stop */
    DGEMMA_FINISH_CANCELLED = 3  /* on_step asked to cancel (the canvas in progress is dropped) */
} dgemma_finish_reason;

typedef struct dgemma_generate_result { /* times: a pass shared by several sequences counts fully for each */
    int64_t n_tokens;      /* tokens written to out_tokens */
    int32_t n_steps;       /* decoder steps run */
    int32_t n_canvases;    /* canvases finished */
    int32_t finish_reason; /* dgemma_finish_reason */
    double decode_seconds; /* decoder forward passes */
    double sample_seconds; /* the sampler */
    double commit_seconds; /* encoder passes committing canvases */
    double prefill_seconds; /* encoder passes over the prompt (scheduler requests) */
    int64_t n_prompt_cached; /* prompt tokens taken from the prefix cache, not prefilled (scheduler requests) */
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
 * Several sequences as one batch (a scheduler run to completion): every denoising step decodes the
 * canvases of all sequences still denoising in one pass, so the weights are read once for all. Each
 * sequence has its own session, parameters (params[i]), options (options[i]; options may be NULL),
 * output buffer and result, and stops on its own; its tokens equal what dgemma_session_generate
 * gives it alone. The sessions belong to one model and are distinct.
 */
DGEMMA_API dgemma_status dgemma_generate_batch(dgemma_session *const *sessions, int32_t n_sequences,
                                               const dgemma_sampler_params *params, int64_t max_new_tokens,
                                               const dgemma_generate_options *options, int32_t *const *out_tokens,
                                               dgemma_generate_result *results);

/* ---- Scheduler: continuous batching --------------------------------------------------------------
 * Requests join and leave between decoder steps. Each step is one forward pass: the canvases being
 * denoised (at most max_batch, taking turns), finished canvases being committed, and one chunk of a
 * newcomer's prompt, so that running streams do not stall while a long prompt is read. A request
 * gets exactly the tokens it would get alone (same seed, same tokens), whenever it arrives. Requests
 * are admitted while the KV caches and sampler state of those running (and of cached conversations)
 * fit memory_budget (dgemma_model_memory's accounting); one always runs. With prefix_cache > 0 a
 * finished conversation keeps its session, keyed by its token ids (prompt, output, and the EOS that
 * ended it), least recently used evicted: a later prompt that extends it prefills only its new tokens.
 *
 * Threads: submit, cancel and stats may be called from any thread; step from one thread at a time
 * (it runs the callbacks, without the model lock). Free the scheduler before its model; requests not
 * finished then are dropped without their on_done. */
typedef struct dgemma_scheduler dgemma_scheduler;
typedef struct dgemma_scheduler_params {
    int32_t max_batch;      /* canvases per decoder pass at most (> 0; default 8) */
    int32_t prefill_chunk;  /* prompt tokens per pass (1 .. 512; default 256) */
    uint64_t memory_budget; /* bytes for running sequences and cached conversations; 0: no limit */
    int32_t prefix_cache;   /* finished conversations kept (>= 0; default 0) */
} dgemma_scheduler_params;
typedef struct dgemma_scheduler_stats {
    int64_t passes;          /* forward passes run */
    int64_t decoder_passes;  /* passes with decoder rows */
    int64_t canvas_steps;    /* denoising steps of all requests (each a canvas in some decoder pass) */
    int64_t prefill_tokens;  /* prompt tokens encoded */
    int64_t cached_tokens;   /* prompt tokens reused from the prefix cache */
    int64_t waiting, running, cached;  /* requests queued, admitted; conversations cached */
    uint64_t memory_used;    /* bytes held by running requests and cached conversations */
} dgemma_scheduler_stats;

DGEMMA_API dgemma_scheduler_params dgemma_scheduler_default_params(void);
DGEMMA_API dgemma_status dgemma_scheduler_new(dgemma_model *model, const dgemma_scheduler_params *params,
                                              dgemma_scheduler **out_scheduler);
DGEMMA_API void dgemma_scheduler_free(dgemma_scheduler *scheduler);
/* Queues a request: the prompt (copied), sampler parameters, up to max_new_tokens ids to write to
 * out_tokens, options (copied; callbacks run in the thread calling step), and the result written
 * before options->on_done. Fails at once (nothing queued) on a bad parameter or a prompt whose
 * canvases would pass the context. out_tokens and result must stay valid until on_done. */
DGEMMA_API dgemma_status dgemma_scheduler_submit(dgemma_scheduler *scheduler, const int32_t *prompt, int64_t n_prompt,
                                                 const dgemma_sampler_params *params, int64_t max_new_tokens,
                                                 const dgemma_generate_options *options, int32_t *out_tokens,
                                                 dgemma_generate_result *result, int64_t *out_id);
/* Cancels a request at the next step (finish reason cancelled; its canvas in progress is dropped). */
DGEMMA_API dgemma_status dgemma_scheduler_cancel(dgemma_scheduler *scheduler, int64_t id);
/* One pass; *out_pending (may be NULL) = requests not yet finished. */
DGEMMA_API dgemma_status dgemma_scheduler_step(dgemma_scheduler *scheduler, int32_t *out_pending);
DGEMMA_API dgemma_status dgemma_scheduler_stats_get(dgemma_scheduler *scheduler, dgemma_scheduler_stats *out);

/* The sampler alone, on caller-supplied logits (tests, custom loops): the reference every backend's
 * sampler reproduces bit for bit (entropies, softmax sums and the inverse-CDF draw summed over
 * vocabulary chunks of 1024 by a halving tree, the chunks in order; exp and log in plain double
 * arithmetic; positions ordered by (entropy, position)). `draws` as in dgemma_generate_options
 * (NULL: the generator seeded by params->seed); the table is copied. */
typedef struct dgemma_sampler dgemma_sampler;
DGEMMA_API dgemma_status dgemma_sampler_new(int64_t n_canvas, int64_t n_vocab, const dgemma_sampler_params *params,
                                            const uint64_t *draws, int64_t n_draws, dgemma_sampler **out_sampler);
DGEMMA_API void dgemma_sampler_free(dgemma_sampler *sampler);
/* Fixed positions for the following canvases: mask [n_canvas], nonzero = fixed; NULL clears. A fixed
 * position keeps the token the caller put in `canvas`, takes no part in the entropy budget or the
 * stop test, and its argmax is that token. */
DGEMMA_API dgemma_status dgemma_sampler_set_fixed(dgemma_sampler *sampler, const uint8_t *mask);
/* Starts the next canvas (canvas 0, 1, ..): writes a fresh id at every free position of `canvas`
 * [n_canvas] and resets the stopping history. */
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
 * Alignment: the functions of this section take every buffer (quantized rows and float arrays, in
 * and out) at any address, e.g. a slice of a byte buffer at an odd offset. One not aligned to 8
 * bytes is copied to aligned scratch first (inputs) or after (outputs), which costs a copy of it;
 * aligned buffers are used in place. (Elsewhere in this API a typed pointer must be aligned to its
 * type, as C requires.)
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
 * supports, the default), "generic", "avx2", "avxvnni" (AVX2 with AVX-VNNI) or "avx512" (AVX-512
 * VNNI). Fails with DGEMMA_ERR_UNSUPPORTED, changing nothing, if this CPU lacks the set. */
DGEMMA_API dgemma_status dgemma_set_cpu_isa(const char *isa);

/* The instruction set in use: "generic", "avx2", "avxvnni" or "avx512". */
DGEMMA_API const char *dgemma_cpu_isa(void);

/* out[t * n_rows + r] = dot(row r of w, row t of x) for n_rows consecutive weight rows and n_tokens
 * consecutive float rows x, all of n elements: every x row quantized to the type's activation type
 * (as they are for F32, F16 and BF16 weights), then the active instruction set's register-blocked
 * kernel, single-threaded: the CPU backend's matrix product, for tests and benchmarks. With the
 * environment variable DGEMMA_GEMM_PACKED=1 the weights are first packed into the kernel's panels,
 * as the CPU backend packs them at load (the tests compare both paths bit for bit).
 * DGEMMA_ERR_UNSUPPORTED for a type this build cannot read. */
DGEMMA_API dgemma_status dgemma_gemm(int32_t type, const void *w, int64_t n_rows, const float *x, int64_t n_tokens,
                                     int64_t n, float *out);

#ifdef __cplusplus
}
#endif

#endif /* DGEMMA_H */
