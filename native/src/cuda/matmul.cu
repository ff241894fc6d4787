// Matrix products and the soft embedding over weights of any supported type: the reference,
// dequantizing element by element (cuda/dequant.h), plain and obviously right, run when
// DGEMMA_CUDA_KERNELS=reference; the float32 tiles (cuda/tile_gemm.cuh, 'float'); and for the
// products and the soft embedding the bf16 tensor-core tiles (cuda/tile_mma.cuh, the default from
// sm_80), with Q4_K, Q6_K, Q5_0 and Q8_0 products on int8 tensor cores when the backend gives their
// scratch (int8_mma.cu, DGEMMA_CUDA_INT8=1). No set's results depend on the pass's other rows.
#include "cuda/dequant.h"
#include "cuda/int8_mma.h"
#include "cuda/kernels.h"
#include "cuda/qmma.cuh"
#include "cuda/tile_gemm.cuh"
#include "cuda/tile_mma.cuh"
#include "cuda/wgmma.h"

namespace dg::cuda {

namespace {

constexpr int kRowsPerBlock = 8;  // one warp per weight row
constexpr int kTokens = 8;        // activation rows per warp

__global__ void matmul_kernel(WeightView w, const float *x, int64_t n, float *y, Epilogue ep) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + warp;
    const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kTokens;
    if (r >= w.rows) return;
    const int nt = static_cast<int>(min(int64_t{kTokens}, n - t0));
    const uint8_t *wr = w.data + r * w.row_stride;
    float acc[kTokens] = {};
    for (int64_t c = lane; c < w.cols; c += 32) {
        const float wv = dequant(w.type, wr, c);
#pragma unroll
        for (int t = 0; t < kTokens; ++t)
            if (t < nt) acc[t] += wv * x[(t0 + t) * w.cols + c];
    }
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
        const float v = warp_sum(acc[t]);
        if (lane == 0 && t < nt) y[(t0 + t) * w.rows + r] = ep(v);
    }
}

template <TensorType T, int N>
__global__ void __launch_bounds__(kTileThreads) matmul_tiled_kernel(WeightView w, const float *x, int64_t n, float *y, Epilogue ep) {
    __shared__ TileOperand<kTileRows> ws;
    __shared__ TileOperand<N> xs;
    const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kTileRows, t0 = static_cast<int64_t>(blockIdx.y) * N;
    const int64_t my_token = t0 + loader_token<N>();
    float acc[4][N / 16] = {};
    tile_accumulate<T, N>(ws, xs, w.data, w.row_stride, w.rows, w.cols, row0, my_token < n ? x + my_token * w.cols : nullptr,
                          acc);
    tile_store<N>(acc, [&](int r, int t, float v) {
        if (row0 + r < w.rows && t0 + t < n) y[(t0 + t) * w.rows + row0 + r] = ep(v);
    });
}

// The tensor-core product (cuda/tile_mma.cuh): a block per kMmaRows weight rows x N tokens of the
// bf16 copy xb of the activations (rows of mma_padded_cols(w.cols)) x k slice blockIdx.z, chunks
// z * slice_chunks .. of the columns (mma_k_split); slice z writes y + z * n * w.rows (a split product's
// epilogue is its sum's).
template <TensorType T, int N>
__global__ void __launch_bounds__(kMmaThreads) matmul_mma_kernel(WeightView w, const __nv_bfloat16 *xb, int64_t n, float *y,
                                                                 int64_t slice_chunks, Epilogue ep) {
    __shared__ MmaStage<N, 1> st[2];
    const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kMmaRows, t0 = static_cast<int64_t>(blockIdx.y) * N;
    const int64_t c_begin = static_cast<int64_t>(blockIdx.z) * slice_chunks;
    const int64_t c_end = min((w.cols + kMmaK - 1) / kMmaK, c_begin + slice_chunks);
    y += static_cast<int64_t>(blockIdx.z) * n * w.rows;
    const int64_t padded = mma_padded_cols(w.cols);
    MmaWeightLoader<T, 1> wl;
    wl.base[0] = w.data;
    wl.row_stride[0] = w.row_stride;
    wl.n_rows = w.rows;
    wl.n_cols = w.cols;
    wl.row0 = row0;
    MmaTokenLoader<N> xl;
    xl.bind([&](int t) { return t0 + t < n ? xb + (t0 + t) * padded : nullptr; });
    MmaAcc<N, 1> acc = {};
    mma_accumulate<T, N, 1>(st, wl, xl, acc, c_begin, c_end);
    mma_for_each<N>([&](int mt, int nt, int r, int row, int t) {
        if (row0 + row < w.rows && t0 + t < n) y[(t0 + t) * w.rows + row0 + row] = ep(acc[0][mt][nt][r]);
    });
}

// Block (group chunk, row t0 + blockIdx.y): a thread converts elements 8 g .. 8 g + 7 of the row.
// (A flat index divided into row and group was a 64-bit division and modulo a thread: library calls
// that cost more than the conversion's bytes.)
__global__ void to_bf16_rows_kernel(const float *x, int64_t t0, int64_t cols, int64_t padded, __nv_bfloat16 *out) {
    const int64_t t = t0 + blockIdx.y, c0 = 8 * (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x);
    if (c0 >= padded) return;
    float f[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) f[j] = c0 + j < cols ? x[t * cols + c0 + j] : 0.0f;
    store8_bf16(out + t * padded + c0, f);
}

// y = x . W^T for Q4_K and Q5_0 weights (qmma.cuh): block (row group, token tile), 4 warps of 16 rows.
template <TensorType T>
__global__ void __launch_bounds__(kQmmaThreads, 3) matmul_qmma_kernel(WeightView w, const __nv_bfloat16 *xb,
                                                                      const float *x_sums, int64_t n, float *y, Epilogue ep) {
    const int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4;
    const int64_t Kp = mma_padded_cols(w.cols), t0 = static_cast<int64_t>(blockIdx.y) * kQmmaTokens;
    const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * kQmmaWarps + warp) * kQmmaWarpRows;
    if (row0 >= w.rows) return;
    QmmaOperands<1> op;
#pragma unroll
    for (int half = 0; half < 2; ++half)  // rows past the matrix: its last (not stored)
        op.row[0][half] = w.data + min(row0 + g + 8 * half, w.rows - 1) * w.row_stride;
    qmma_bind_tokens(op, xb, x_sums, Kp, n - t0, [&](int sl) { return t0 + sl; });
    float acc[1][kQmmaNT][4] = {};
    qmma_accumulate<T, 1>(op, w.cols, acc);
    qmma_for_each(op.n_used, [&](int nt, int r, int row, int tk) {
        if (t0 + tk < n && row0 + row < w.rows) y[(t0 + tk) * w.rows + row0 + row] = ep(acc[0][nt][r]);
    });
}

// Thread i: block i of 32 bf16 (rows are padded to whole blocks, so block i is at 32 i), summed in order.
__global__ void bf16_block_sums_kernel(const __nv_bfloat16 *rows, int64_t blocks, float *sums) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= blocks) return;
    const uint4 *p = reinterpret_cast<const uint4 *>(rows + 32 * i);
    float s = 0.0f;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
        const uint4 v = p[q];
        const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            s += __uint_as_float(w[j] << 16);
            s += __uint_as_float(w[j] & 0xffff0000u);
        }
    }
    sums[i] = s;
}

__global__ void embed_kernel(WeightView table, const int32_t *ids, float scale, float *out) {
    const int64_t t = blockIdx.x;
    const uint8_t *row = table.data + static_cast<int64_t>(ids[t]) * table.row_stride;
    for (int64_t i = threadIdx.x; i < table.cols; i += blockDim.x) out[t * table.cols + i] = dequant(table.type, row, i) * scale;
}

// Per logits row: its maximum and 1 / sum exp(z - max) (the sum in double, as the CPU).
__global__ void softmax_stats_kernel(const float *logits, int64_t V, float *row_max, float *row_inv_sum) {
    __shared__ float redf[32];
    __shared__ double redd[32];
    const float *z = logits + static_cast<int64_t>(blockIdx.x) * V;
    float mx = -INFINITY;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, z[v]);
    mx = block_max(mx, redf);
    double sum = 0.0;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) sum += expf(z[v] - mx);
    sum = block_sum(sum, redd);
    if (threadIdx.x == 0) {
        row_max[blockIdx.x] = mx;
        row_inv_sum[blockIdx.x] = static_cast<float>(1.0 / sum);
    }
}

constexpr int kSoftCols = 128;  // threads per block, one embedding column each
constexpr int kSoftTokens = 8;

__global__ void soft_embed_kernel(WeightView table, const float *logits, int64_t n, const float *row_max,
                                  const float *row_inv_sum, float scale, float *out) {
    __shared__ float p[kSoftTokens][kSoftCols];
    const int64_t V = table.rows, E = table.cols;
    const int64_t col = static_cast<int64_t>(blockIdx.x) * kSoftCols + threadIdx.x;
    const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kSoftTokens;
    const int nt = static_cast<int>(min(int64_t{kSoftTokens}, n - t0));
    float acc[kSoftTokens] = {};
    for (int64_t v0 = 0; v0 < V; v0 += kSoftCols) {
        const int64_t v = v0 + threadIdx.x;
        for (int t = 0; t < kSoftTokens; ++t)
            p[t][threadIdx.x] = (t < nt && v < V) ? expf(logits[(t0 + t) * V + v] - row_max[t0 + t]) * row_inv_sum[t0 + t] : 0.0f;
        __syncthreads();
        if (col < E) {
            const int64_t m = min(int64_t{kSoftCols}, V - v0);
            for (int64_t j = 0; j < m; ++j) {
                const float w = dequant(table.type, table.data + (v0 + j) * table.row_stride, col);
#pragma unroll
                for (int t = 0; t < kSoftTokens; ++t) acc[t] += p[t][j] * w;
            }
        }
        __syncthreads();
    }
    if (col < E)
        for (int t = 0; t < nt; ++t) out[(t0 + t) * E + col] = acc[t] * scale;
}

// The tiled soft embedding: out[t][col] = scale * sum_v p[t][v] * table[v][col], p = softmax(z[t]).
// The same tile machinery with the roles turned: the table's columns are the tile's rows and the
// vocabulary is the walked dimension; thread t loads vocabulary row t / 8, columns 8 * (t % 8) ...
// Block z walks vocabulary part z (soft_embed_part_rows each) and writes its unscaled sums to
// partial[z][token][col]: one block per column tile and token tile alone would be 176 blocks at the
// 26B shapes, too few to fill the device. The parts are fixed, so a row's sums do not depend on n.
template <TensorType T>
__global__ void __launch_bounds__(kTileThreads) soft_embed_tiled_kernel(WeightView table, const float *logits, int64_t n,
                                                                         const float *row_max, const float *row_inv_sum,
                                                                         float *partial) {
    constexpr int N = 64;
    __shared__ TileOperand<kTileRows> ws;
    __shared__ TileOperand<N> ps;
    const int64_t V = table.rows, E = table.cols;
    const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kTileRows, t0 = static_cast<int64_t>(blockIdx.y) * N;
    const int64_t part_rows = soft_embed_part_rows(V), v_begin = blockIdx.z * part_rows, v_end = min(V, v_begin + part_rows);
    const int64_t my_token = t0 + loader_token<N>();
    const bool has_row = my_token < n;
    const float *z = logits + (has_row ? my_token : 0) * V;
    const float mx = has_row ? row_max[my_token] : 0.0f, inv = has_row ? row_inv_sum[my_token] : 0.0f;
    const int vr = threadIdx.x / 8, c_off = 8 * (threadIdx.x % 8);
    float acc[4][N / 16] = {};
    for (int64_t v0 = v_begin; v0 < v_end; v0 += kTileK) {
        float f[8];
        load_weight8<T>(table.data, table.row_stride, v_end, E, v0 + vr, col0 + c_off, f);
#pragma unroll
        for (int j = 0; j < 8; ++j) ws.v[vr][c_off + j] = f[j];
        load_activation_tile<N>(ps, has_row, v_end, v0, [&](int64_t u) { return expf(z[u] - mx) * inv; });
        __syncthreads();
        tile_multiply<N>(ws, ps, acc);
        __syncthreads();
    }
    float *part = partial + static_cast<int64_t>(blockIdx.z) * n * E;
    tile_store<N>(acc, [&](int c, int t, float v) {
        if (col0 + c < E && t0 + t < n) part[(t0 + t) * E + col0 + c] = v;
    });
}

// The soft embedding on tensor cores: the tiled kernel's parts and roles (the table's columns are the
// tile's kMmaRows lines, the vocabulary the walked k), bf16 operands. The table is loaded turned
// (mma_turned_loader_coord); the tokens' operand is the bf16 probabilities soft_probs_kernel wrote,
// rows [t - t_base] of probs (padded to whole chunks with zeros; a part is whole chunks), for the
// tokens t_base .. t_end - 1 of n (partial is [parts][n][E]).
template <TensorType T>
__global__ void __launch_bounds__(kMmaThreads) soft_embed_mma_kernel(WeightView table, const __nv_bfloat16 *probs,
                                                                      int64_t t_base, int64_t t_end, int64_t n, float *partial) {
    constexpr int N = 128;
    __shared__ MmaStage<N, 1> st[2];
    const int64_t V = table.rows, E = table.cols, Vp = mma_padded_cols(V);
    const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kMmaRows, t0 = t_base + static_cast<int64_t>(blockIdx.y) * N;
    const int64_t part_rows = soft_embed_part_rows(V), v_begin = blockIdx.z * part_rows, v_end = min(V, v_begin + part_rows);
    WeightFetch8<T> w[kMmaWeightGroups];
    MmaTokenLoader<N> xl;
    xl.bind([&](int tl) { return t0 + tl < t_end ? probs + (t0 + tl - t_base) * Vp : nullptr; });
    auto fetch = [&](int64_t v0) {
#pragma unroll
        for (int i = 0; i < kMmaWeightGroups; ++i) {
            const Coord c = mma_turned_loader_coord(threadIdx.x, i);
            w[i].fetch(table.data, table.row_stride, v_end, E, v0 + c.k, col0 + c.line);
        }
        xl.fetch(v0);
    };
    auto store = [&](MmaStage<N, 1> &s) {
#pragma unroll
        for (int i = 0; i < kMmaWeightGroups; ++i) {
            const Coord c = mma_turned_loader_coord(threadIdx.x, i);
            float f[8];
            w[i].value(f);
#pragma unroll
            for (int j = 0; j < 8; ++j) s.w[0][c.line + j][c.k] = __float2bfloat16_rn(f[j]);
        }
        xl.store(s);
    };
    MmaAcc<N, 1> acc = {};
    const int64_t chunks = (v_end - v_begin + kMmaK - 1) / kMmaK;
    if (chunks > 0) {
        fetch(v_begin);
        store(st[0]);
    }
    __syncthreads();
    for (int64_t c = 0; c < chunks; ++c) {
        const bool more = c + 1 < chunks;
        if (more) fetch(v_begin + (c + 1) * kMmaK);
        mma_stage<N, 1>(st[c % 2], acc);
        if (more) store(st[(c + 1) % 2]);
        __syncthreads();
    }
    float *part = partial + static_cast<int64_t>(blockIdx.z) * n * E;
    mma_for_each<N>([&](int mt, int nt, int r, int col, int t) {
        if (col0 + col < E && t0 + t < t_end) part[(t0 + t) * E + col0 + col] = acc[0][mt][nt][r];
    });
}

// probs[t - t_base][v] = bf16(exp(z[t][v] - max) * inv_sum) for tokens t = t_base + blockIdx.y, zeros
// from V to the padded width: a thread writes 8 entries (as to_bf16_rows, no division a thread).
__global__ void soft_probs_kernel(const float *logits, int64_t V, int64_t t_base, const float *row_max, const float *row_inv_sum,
                                  __nv_bfloat16 *probs) {
    const int64_t r = blockIdx.y, t = t_base + r, v0 = 8 * (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x);
    if (v0 >= mma_padded_cols(V)) return;
    const float *z = logits + t * V;
    const float mx = row_max[t], inv = row_inv_sum[t];
    float p[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) p[j] = v0 + j < V ? expf(z[v0 + j] - mx) * inv : 0.0f;
    store8_bf16(probs + r * mma_padded_cols(V) + v0, p);
}

// out[i] = scale * (partial[0][i] + partial[1][i] + ...), the `parts` parts in order.
__global__ void sum_parts_kernel(const float *partial, int parts, int64_t count, float scale, float *out, Epilogue ep = {}) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= count) return;
    float s = partial[i];
    for (int p = 1; p < parts; ++p) s += partial[p * count + i];
    out[i] = ep(s * scale);
}

// True when the scratch already holds the first n rows of x [.][cols] in `form`; otherwise records
// that it will (the caller converts them next).
bool act_held(ActScratch *held, const float *x, int64_t n, int64_t cols, ActForm form) {
    if (held && held->form == form && held->x == x && held->cols == cols && held->rows >= n) return true;
    if (held) *held = ActScratch{x, n, cols, form};
    return false;
}

}  // namespace

void to_bf16_rows(cudaStream_t s, const float *x, int64_t n, int64_t cols, __nv_bfloat16 *out) {
    if (n <= 0) return;
    const int64_t padded = mma_padded_cols(cols);
    for (int64_t t0 = 0; t0 < n; t0 += kMaxGridRows) {
        const dim3 grid(blocks_for(padded / 8, 256), static_cast<unsigned>(std::min(kMaxGridRows, n - t0)));
        to_bf16_rows_kernel<<<grid, 256, 0, s>>>(x, t0, cols, padded, out);
        check_launch("activations to bf16");
    }
}

void bf16_block_sums(cudaStream_t s, const __nv_bfloat16 *rows, int64_t n, int64_t padded, float *sums) {
    const int64_t blocks = n * (padded / kQmmaSub);
    if (blocks <= 0) return;
    bf16_block_sums_kernel<<<blocks_for(blocks, 256), 256, 0, s>>>(rows, blocks, sums);
    check_launch("bf16 block sums");
}

void matmul(cudaStream_t s, const WeightView &w, const float *x, int64_t n, float *y, KernelSet k, const MatmulScratch &m) {
    if (n <= 0 || w.rows <= 0) return;
    __nv_bfloat16 *x_bf16 = m.x_bf16;
    float *x_sums = m.x_sums, *split_partial = m.split_partial;
    const int sm_count = m.sm_count;
    if (k == KernelSet::tensor && m.wgmma && wg_matmul_runs(w, n, sm_count)) {
        if (!act_held(m.held, x, n, w.cols, ActForm::bf16)) to_bf16_rows(s, x, n, w.cols, x_bf16);
        wg_matmul(s, w, x_bf16, n, y, m.epilogue);
        return;
    }
    if (k == KernelSet::tensor && m.x_q8 && i8_runs(w)) {
        const ActForm form = i8_act_of(w.type) == I8Act::q8_k ? ActForm::q8_k : ActForm::q8_0;
        if (!act_held(m.held, x, n, w.cols, form)) i8_quantize(s, w.type, x, n, w.cols, m.x_q8, m.x_q8_d);
        i8_matmul(s, w, m.x_q8, m.x_q8_d, n, y, sm_count, m.epilogue);
        return;
    }
    if (k == KernelSet::tensor && x_sums && qmma_runs(w)) {
        if (!act_held(m.held, x, n, w.cols, ActForm::bf16_sums)) {
            to_bf16_rows(s, x, n, w.cols, x_bf16);
            bf16_block_sums(s, x_bf16, n, mma_padded_cols(w.cols), x_sums);
        }
        const dim3 grid(blocks_for(w.rows, kQmmaWarps * kQmmaWarpRows), blocks_for(n, kQmmaTokens));
        with_qmma_type(w.type, [&](auto type) {
            matmul_qmma_kernel<decltype(type)::value><<<grid, kQmmaThreads, 0, s>>>(w, x_bf16, x_sums, n, y, m.epilogue);
        });
        check_launch("matmul (tensor cores, quantized)");
        return;
    }
    if (k == KernelSet::tensor) {
        if (!act_held(m.held, x, n, w.cols, ActForm::bf16)) to_bf16_rows(s, x, n, w.cols, x_bf16);
        const MmaSplit split = mma_k_split(w.rows, w.cols, sm_count);
        const int64_t padded = mma_padded_cols(w.cols);
        // A split product runs kMmaSplitTokens tokens a launch into the partial sums, then adds them.
        const int64_t step = split.slices > 1 ? kMmaSplitTokens : n;
        for (int64_t t0 = 0; t0 < n; t0 += step) {
            const int64_t rows = min(step, n - t0);
            float *out = split.slices > 1 ? split_partial : y + t0 * w.rows;
            auto launch = [&](auto width) {
                constexpr int N = decltype(width)::value;
                const dim3 grid(blocks_for(w.rows, kMmaRows), blocks_for(rows, N), split.slices);
                with_weight_type(w.type, [&](auto type) {
                    matmul_mma_kernel<decltype(type)::value, N>
                        <<<grid, kMmaThreads, 0, s>>>(w, x_bf16 + t0 * padded, rows, out, split.slice_chunks,
                                                      split.slices > 1 ? Epilogue{} : m.epilogue);
                });
            };
            if (mma_tile_tokens(w.rows, rows, sm_count, split.slices) == 32)
                launch(std::integral_constant<int, 32>{});
            else
                launch(std::integral_constant<int, 128>{});
            check_launch("matmul (tensor cores)");
            if (split.slices > 1) {
                sum_parts_kernel<<<blocks_for(rows * w.rows, 256), 256, 0, s>>>(split_partial, split.slices, rows * w.rows, 1.0f,
                                                                               y + t0 * w.rows, m.epilogue);
                check_launch("matmul (sum of k slices)");
            }
        }
        return;
    }
    if (k == KernelSet::reference) {
        const dim3 grid(blocks_for(w.rows, kRowsPerBlock), blocks_for(n, kTokens));
        matmul_kernel<<<grid, 32 * kRowsPerBlock, 0, s>>>(w, x, n, y, m.epilogue);
        check_launch("matmul");
        return;
    }
    with_tile_width(n, [&](auto width) {
        constexpr int N = decltype(width)::value;
        const dim3 grid(blocks_for(w.rows, kTileRows), blocks_for(n, N));
        with_weight_type(w.type, [&](auto type) {
            matmul_tiled_kernel<decltype(type)::value, N><<<grid, kTileThreads, 0, s>>>(w, x, n, y, m.epilogue);
        });
    });
    check_launch("matmul (tiled)");
}

void embed(cudaStream_t s, const WeightView &table, const int32_t *ids, int64_t n, float scale, float *out) {
    if (n <= 0) return;
    embed_kernel<<<static_cast<unsigned>(n), 256, 0, s>>>(table, ids, scale, out);
    check_launch("embed");
}

void soft_embed(cudaStream_t s, const WeightView &table, const float *logits, int64_t n, float scale, float *out,
                float *row_max, float *row_inv_sum, float *partial, __nv_bfloat16 *probs, KernelSet k, bool wgmma,
                int sm_count) {
    if (n <= 0) return;
    softmax_stats_kernel<<<static_cast<unsigned>(n), 256, 0, s>>>(logits, table.rows, row_max, row_inv_sum);
    check_launch("soft_embed statistics");
    if (k == KernelSet::reference) {
        const dim3 grid(blocks_for(table.cols, kSoftCols), blocks_for(n, kSoftTokens));
        soft_embed_kernel<<<grid, kSoftCols, 0, s>>>(table, logits, n, row_max, row_inv_sum, scale, out);
        check_launch("soft_embed");
        return;
    }
    int parts = kSoftEmbedParts;
    if (k == KernelSet::tensor) {
        if (wgmma) parts = wg_soft_embed_parts(table.cols, sm_count, kSoftEmbedParts);
        for (int64_t t_base = 0; t_base < n; t_base += kSoftProbTokens) {
            const int64_t m = min(kSoftProbTokens, n - t_base);
            static_assert(kSoftProbTokens <= kMaxGridRows, "a grid's second dimension");
            const dim3 probs_grid(blocks_for(mma_padded_cols(table.rows) / 8, 256), static_cast<unsigned>(m));
            soft_probs_kernel<<<probs_grid, 256, 0, s>>>(logits, table.rows, t_base, row_max, row_inv_sum, probs);
            check_launch("soft_embed probabilities");
            if (wgmma) {
                wg_soft_embed(s, table, probs, t_base, t_base + m, n, parts, partial);
                continue;
            }
            const dim3 grid(blocks_for(table.cols, kMmaRows), blocks_for(m, 128), kSoftEmbedParts);
            with_weight_type(table.type, [&](auto type) {
                soft_embed_mma_kernel<decltype(type)::value><<<grid, kMmaThreads, 0, s>>>(table, probs, t_base, t_base + m,
                                                                                        n, partial);
            });
            check_launch("soft_embed (tensor cores)");
        }
    } else {
        const dim3 grid(blocks_for(table.cols, kTileRows), blocks_for(n, 64), kSoftEmbedParts);
        with_weight_type(table.type, [&](auto type) {
            soft_embed_tiled_kernel<decltype(type)::value><<<grid, kTileThreads, 0, s>>>(table, logits, n, row_max,
                                                                                          row_inv_sum, partial);
        });
        check_launch("soft_embed (tiled)");
    }
    sum_parts_kernel<<<blocks_for(n * table.cols, 256), 256, 0, s>>>(partial, parts, n * table.cols, scale, out);
    check_launch("soft_embed (sum of parts)");
}

}  // namespace dg::cuda
