// Host launchers of the CUDA backend's kernels, one per op of backend.h (the reference for each is
// the CPU backend, cpu/backend_cpu.cpp). All enqueue on `s` and return at once. Activations are
// contiguous F32 [rows][width].
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/mma_layout.h"
#include "sampler.h"

namespace dg::cuda {

// Which kernels run the matrix products (DGEMMA_CUDA_KERNELS; the backend's kernel_set): the float32
// tiles ('float'), the per-row reference kernels, or the bf16 tensor-core tiles (sm_80+, the default
// there; cuda/tile_mma.cuh).
enum class KernelSet { float_tiles, reference, tensor };

// --- matrices (matmul.cu)
// The tensor set's scratch for a product over n rows of w.cols (null members under the other sets):
//   x_bf16: n * mma_padded_cols(w.cols), the bf16 copy of x the tiles multiply;
//   split_partial: mma_split_partial_floats(sm_count), the split products' partial sums;
//   x_sums: n * mma_padded_cols(w.cols) / 32 for Q4_K and Q5_0 on quantized fragments (qmma.cuh;
//     null: the bf16 tiles, DGEMMA_CUDA_QMMA unset);
//   x_q8, x_q8_d: n * i8_padded_cols(w.cols) codes and n * i8_padded_cols(w.cols) / 32 scales for
//     Q4_K, Q6_K, Q5_0 and Q8_0 on int8 tensor cores (int8_mma.h; null: DGEMMA_CUDA_INT8 unset).
// sm_count: the device's multiprocessors (tile widths and k slices: mma_tile_tokens, mma_k_split,
// i8_tile_tokens).
// held: what x_bf16 (with x_sums) or x_q8 (with x_q8_d) hold now, read and updated by matmul so
// that back-to-back products over one input convert it once (backend.h: what an op derives from its
// inputs may be kept until the next op; the backend clears it when another op ran). Null: convert.
enum class ActForm { none, bf16, bf16_sums, q8_k, q8_0 };
struct ActScratch {
    const float *x = nullptr;
    int64_t rows = 0, cols = 0;
    ActForm form = ActForm::none;
};
struct MatmulScratch {
    __nv_bfloat16 *x_bf16 = nullptr;
    float *split_partial = nullptr, *x_sums = nullptr;
    int8_t *x_q8 = nullptr;
    float *x_q8_d = nullptr;
    int sm_count = 0;
    ActScratch *held = nullptr;
    Epilogue epilogue;  // applied to each output (matmul_softcap's cap)
    bool wgmma = false;  // products of wg_matmul_runs' size on the warpgroup kernels (DGEMMA_CUDA_WGMMA)
};
// y[n][w.rows] = x[n][w.cols] . W^T.
void matmul(cudaStream_t s, const WeightView &w, const float *x, int64_t n, float *y, KernelSet k, const MatmulScratch &m);
void embed(cudaStream_t s, const WeightView &table, const int32_t *ids, int64_t n, float scale, float *out);
// row_max / row_inv_sum: scratch [n]; partial: scratch [kSoftEmbedParts][n][table.cols] (the tiles
// sum the vocabulary in kSoftEmbedParts fixed parts, soft_embed_part_rows rows each, then add them).
// 16 parts: at the 26B shapes 22 column tiles x 2 token tiles x 16 = 704 blocks of 512 chunks
// (4 parts gave 176 blocks of 2048 chunks for 132 multiprocessors); the partial sums take 46 MB.
// A part is a whole number of kMmaK-row chunks, so the tensor set's chunks never straddle two parts.
// probs (tensor set; null under the others): scratch [soft_probs_rows(n)][mma_padded_cols(n_vocab)]
// bf16, the probabilities computed once per token and entry (in kSoftProbTokens-token pieces) rather
// than by each of the 22 column tiles that read them (run 10: 10.9 ms a step against lm_head's 4.7
// for the same product).
constexpr int kSoftEmbedParts = 16;
constexpr int64_t kSoftProbTokens = 256;
__host__ __device__ inline int64_t soft_embed_part_rows(int64_t n_vocab) {
    return ((n_vocab + kSoftEmbedParts - 1) / kSoftEmbedParts + kMmaK - 1) / kMmaK * kMmaK;
}
__host__ __device__ inline int64_t soft_probs_rows(int64_t n) { return n < kSoftProbTokens ? n : kSoftProbTokens; }
// wgmma (tensor set, DGEMMA_CUDA_WGMMA): the product on the warpgroup kernels, in
// wg_soft_embed_parts(table.cols, sm_count, kSoftEmbedParts) parts.
void soft_embed(cudaStream_t s, const WeightView &table, const float *logits, int64_t n, float scale, float *out,
                float *row_max, float *row_inv_sum, float *partial, __nv_bfloat16 *probs, KernelSet k, bool wgmma = false,
                int sm_count = 0);

// --- warpgroup products (wgmma.cu, sm_90a; cuda/wgmma.h): opt-in by DGEMMA_CUDA_WGMMA=1 on compute
// capability 9.0, when the library holds sm_90a code. wg_prepare runs a probe kernel (synchronously)
// and, when the code is there, raises the kernels' shared memory on the current device; true then.
bool wg_prepare();
// Whether a product of w over n tokens takes the warpgroup kernel: enough row tiles for a wave of
// blocks without splitting k (the vocabulary-sized products: 2048 tiles at the 26B shapes).
bool wg_matmul_runs(const WeightView &w, int64_t n, int sm_count);
// y[n][w.rows] = ep(xb . W^T), xb: n bf16 rows padded to mma_padded_cols(w.cols).
void wg_matmul(cudaStream_t s, const WeightView &w, const __nv_bfloat16 *xb, int64_t n, float *y, Epilogue ep);
// partial[p][t][e] for p < parts, tokens t_base .. t_end - 1 (probs: their rows, soft_probs_kernel's
// layout), the vocabulary in wg_part_rows(table.rows, parts) rows a part.
void wg_soft_embed(cudaStream_t s, const WeightView &table, const __nv_bfloat16 *probs, int64_t t_base, int64_t t_end, int64_t n,
                   int parts, float *partial);

// --- experts (moe.cu)
struct MoeScratch {
    int32_t *offsets = nullptr;  // [n_expert + 1]
    int32_t *order = nullptr;    // [slots]: assignment (t * k + j) in slot order
    int32_t *slot_of = nullptr;  // [slots]
    int32_t *tiles = nullptr;    // [1 + 2 * group_tiles_bound(slots, n_expert, kGroupMinTile)] (expert_group.h)
    float *act = nullptr;        // [slots][n_ff_exp]
    float *y = nullptr;          // [slots][n_embd]
    // The tensor set's bf16 operands, rows padded to mma_padded_cols: x [n][n_embd], act [slots][n_ff_exp].
    __nv_bfloat16 *x_bf16 = nullptr, *act_bf16 = nullptr;
    // Their 32-element sums (bf16_block_sums), for Q4_K and Q5_0 weights on quantized fragments
    // (qmma.cuh): [n][.] and [slots][.]; null: the bf16 tiles.
    float *x_sums = nullptr, *act_sums = nullptr;
    // The int8 operands (int8_mma.h), for Q4_K, Q6_K, Q5_0 and Q8_0 experts on int8 tensor cores: codes of
    // x [n][i8_padded_cols(n_embd)] and of act [slots][i8_padded_cols(n_ff_exp)], and their scales
    // (a 32nd of that, enough for either activation format); null: DGEMMA_CUDA_INT8 unset.
    int8_t *x_q8 = nullptr, *act_q8 = nullptr;
    float *x_q8_d = nullptr, *act_q8_d = nullptr;
};
struct RouteScratch {
    float *z = nullptr;       // [n][n_embd]: the router's input
    float *logits = nullptr;  // [n][n_expert]
};
void route(cudaStream_t s, const WeightView &w, const float *x, int64_t n, const float *scale,
           const float *per_expert_scale, float eps, int k, int32_t *expert, float *weight, const RouteScratch &r,
           KernelSet kernels);
void moe(cudaStream_t s, const WeightView &gate, const WeightView &up, const WeightView &down, int64_t n_expert,
         const float *x, int64_t n, const int32_t *expert, const float *weight, int k, float *out, const MoeScratch &m,
         KernelSet kernels);

// --- int8 tensor cores (int8_mma.cu; DGEMMA_CUDA_INT8=1 under the tensor set)
// Allows the tiles' shared memory (above the default 48 KB) on the current device: once, before any launch.
void i8_prepare();
// Whether w's type has the int8 tile (Q4_K, Q6_K, Q5_0, Q8_0) and its rows meet the tile's copies.
bool i8_runs(const WeightView &w);
// Rows x [n][cols] quantized as the CPU quantizes activations for weights of weight_type: codes q
// [n][i8_padded_cols(cols)], scales d [n][i8_scales_per_row(i8_act_of(weight_type), cols)].
void i8_quantize(cudaStream_t s, TensorType weight_type, const float *x, int64_t n, int64_t cols, int8_t *q, float *d);
// y[n][w.rows] = W . x from x's codes and scales (i8_quantize for w's type); i8_runs(w).
void i8_matmul(cudaStream_t s, const WeightView &w, const int8_t *xq, const float *xd, int64_t n, float *y, int sm_count,
               Epilogue ep);
// The experts on int8 tiles, grouped as moe() groups them (offsets, order over n tokens x k):
// act[slot][gate.rows] = gelu(gate . x) * (up . x) from the tokens' codes, and y[slot][down.rows] =
// down . act from the slots' codes (i8_quantize of act for down's type).
// Blocks over the grouping's slot tiles (tiles, at most max_tiles: cuda/expert_group.h).
void i8_moe_gate_up(cudaStream_t s, const WeightView &gate, const WeightView &up, const int8_t *xq, const float *xd, int k,
                    const int32_t *offsets, const int32_t *tiles, unsigned max_tiles, const int32_t *order, float *act);
void i8_moe_down(cudaStream_t s, const WeightView &down, const int8_t *aq, const float *ad, const int32_t *offsets,
                 const int32_t *tiles, unsigned max_tiles, float *y);

// --- row-wise and elementwise (elementwise.cu)
void rmsnorm(cudaStream_t s, const float *x, const float *w, float eps, int64_t rows, int64_t dim, float *y);
void rope(cudaStream_t s, float *x, int64_t n, int n_heads, int head_dim, const int32_t *pos, const float *inv_freq,
          int n_rot);
// Backend::add_rmsnorm over rows [rows][dim] (row_mode and scalars both given or both null) and
// Backend::rmsnorm_rope over x [n][n_heads][head_dim]: one kernel each, the bits of the ops they fuse.
void add_rmsnorm(cudaStream_t s, float *h, const float *d, const float *d_norm, const int32_t *row_mode, const float *scalars,
                 const float *w, float eps, int64_t rows, int64_t dim, float *out);
void rmsnorm_rope(cudaStream_t s, float *x, int64_t n, const float *w, float eps, int n_heads, int head_dim, const int32_t *pos,
                  const float *inv_freq, int n_rot);
void gelu_mul(cudaStream_t s, const float *gate, const float *up, int64_t count, float *out);
void add(cudaStream_t s, float *y, const float *x, int64_t count);
void scale_rows(cudaStream_t s, float *x, int64_t rows, int64_t width, const int32_t *row_mode, float s0, float s1);
void softcap(cudaStream_t s, float *x, int64_t count, float cap);
// Rows [row0 + skip, row0 + n) of src [.][row] to slots (pos0 + skip + i) % capacity, converted.
void cache_store(cudaStream_t s, const float *src, int64_t row, int64_t row0, int64_t skip, int64_t n, int64_t pos0,
                 uint8_t *dst, TensorType type, size_t dst_row_bytes, int64_t capacity);

// --- attention (attention.cu): one segment of a pass
struct AttentionSegment {
    int64_t row0 = 0, n = 0, n_past = 0;
    bool causal = false;
    int64_t window = 0;      // > 0 only for encoder rows of sliding layers
    int64_t cache_pos0 = 0;  // first cached position kept (sliding rings hold the last capacity)
    const uint8_t *k_cache = nullptr, *v_cache = nullptr;
    TensorType cache_type = TensorType::F32;
    size_t cache_row_bytes = 0;
    int64_t capacity = 0;
};
// The tiles serve head_dim <= 512, a multiple of 4 (attention_tiles_fit); others, and the reference
// set, take the per-query kernel. flash (null but under DGEMMA_CUDA_FLASH): the tensor set's
// segments go to flash_attention (flash_attention.cu) where flash_attention_fits.
struct FlashScratch {
    // Slices' partial sums (flash_attention.h): outputs [kFaMaxSlices][rows][n_head][d] and maxima and
    // sums [kFaMaxSlices][rows][n_head][2], with their capacities in floats (null: no slices).
    float *part_o = nullptr, *part_ml = nullptr;
    size_t o_floats = 0, ml_floats = 0;
    int sm_count = 0;
};
bool attention_tiles_fit(int head_dim);
void attention(cudaStream_t s, const float *q, const float *k, const float *v, float *out, int n_head, int n_head_kv,
               int head_dim, const AttentionSegment &g, KernelSet kernels, const FlashScratch *flash = nullptr);
// Decoder segments (not causal, no window) of head dimensions fa_fits takes and whole GQA groups.
bool flash_attention_fits(int head_dim, int n_head, int n_head_kv, const AttentionSegment &g);
void flash_attention(cudaStream_t s, const float *q, const float *k, const float *v, float *out, int n_head, int n_head_kv,
                     int head_dim, const AttentionSegment &g, const FlashScratch &scratch);

// --- the sampler (sampler.cu, compiled without contraction: the contract's arithmetic)
struct DrawSpec {
    uint64_t seed = 0;
    const uint64_t *table = nullptr;  // device, or null: the generator
};
void sampler_init(cudaStream_t s, int32_t *canvas, const int8_t *fixed, int32_t *history, int64_t n_history,
                  int64_t C, DrawSpec draws, int64_t canvas_no, int max_steps, int64_t n_vocab);
struct SampleScratch {
    double *entropy = nullptr;  // [C]
    int32_t *draw = nullptr;    // [C]
    int32_t *order = nullptr;   // [C]
};
void sample(cudaStream_t s, float *logits, int64_t C, int64_t V, float t, const SamplerParams &p, int step,
            int64_t canvas_no, DrawSpec draws, int32_t *canvas, int32_t *argmax, const int8_t *fixed, int32_t *history,
            int32_t *stop, int8_t *accepted, const SampleScratch &scratch);

}  // namespace dg::cuda
