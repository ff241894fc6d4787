// Matrix products and the soft embedding over weights of any supported type. Two kernels each: the
// reference, dequantizing element by element (cuda/dequant.h), plain and obviously right, run when
// DGEMMA_CUDA_KERNELS=reference; and the tiled one (cuda/tile_gemm.cuh), the default at every size
// (its results do not depend on the pass's other rows). Tensor-core tiles are a later step.
#include "cuda/dequant.h"
#include "cuda/kernels.h"
#include "cuda/tile_gemm.cuh"
#include "cuda/tile_mma.cuh"

namespace dg::cuda {

namespace {

constexpr int kRowsPerBlock = 8;  // one warp per weight row
constexpr int kTokens = 8;        // activation rows per warp

__global__ void matmul_kernel(WeightView w, const float *x, int64_t n, float *y) {
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
        if (lane == 0 && t < nt) y[(t0 + t) * w.rows + r] = v;
    }
}

template <TensorType T, int N>
__global__ void __launch_bounds__(kTileThreads) matmul_tiled_kernel(WeightView w, const float *x, int64_t n, float *y) {
    __shared__ TileOperand<kTileRows> ws;
    __shared__ TileOperand<N> xs;
    const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kTileRows, t0 = static_cast<int64_t>(blockIdx.y) * N;
    const int64_t my_token = t0 + loader_token<N>();
    float acc[4][N / 16] = {};
    tile_accumulate<T, N>(ws, xs, w.data, w.row_stride, w.rows, w.cols, row0, my_token < n ? x + my_token * w.cols : nullptr,
                          acc);
    tile_store<N>(acc, [&](int r, int t, float v) {
        if (row0 + r < w.rows && t0 + t < n) y[(t0 + t) * w.rows + row0 + r] = v;
    });
}

template <TensorType T>
__global__ void __launch_bounds__(kTileThreads) matmul_mma_kernel(WeightView w, const float *x, int64_t n, float *y) {
    __shared__ MmaOperand ws, xs;
    const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kTileRows, t0 = static_cast<int64_t>(blockIdx.y) * kTileRows;
    const int64_t my_token = t0 + mma_loader_token();
    float acc[4][4] = {};
    mma_accumulate<T>(ws, xs, w.data, w.row_stride, w.rows, w.cols, row0, my_token < n ? x + my_token * w.cols : nullptr, acc);
    mma_store(acc, [&](int r, int t, float v) {
        if (row0 + r < w.rows && t0 + t < n) y[(t0 + t) * w.rows + row0 + r] = v;
    });
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

// out[i] = scale * (partial[0][i] + partial[1][i] + ...), the parts in order.
__global__ void soft_embed_sum_kernel(const float *partial, int64_t count, float scale, float *out) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= count) return;
    float s = partial[i];
    for (int p = 1; p < kSoftEmbedParts; ++p) s += partial[p * count + i];
    out[i] = s * scale;
}

}  // namespace

void matmul(cudaStream_t s, const WeightView &w, const float *x, int64_t n, float *y, KernelSet k) {
    if (n <= 0 || w.rows <= 0) return;
    if (k == KernelSet::tensor) {
        const dim3 grid(blocks_for(w.rows, kTileRows), blocks_for(n, kTileRows));
        with_weight_type(w.type, [&](auto type) {
            matmul_mma_kernel<decltype(type)::value><<<grid, kTileThreads, 0, s>>>(w, x, n, y);
        });
        check_launch("matmul (tensor cores)");
        return;
    }
    if (k == KernelSet::reference) {
        const dim3 grid(blocks_for(w.rows, kRowsPerBlock), blocks_for(n, kTokens));
        matmul_kernel<<<grid, 32 * kRowsPerBlock, 0, s>>>(w, x, n, y);
        check_launch("matmul");
        return;
    }
    with_tile_width(n, [&](auto width) {
        constexpr int N = decltype(width)::value;
        const dim3 grid(blocks_for(w.rows, kTileRows), blocks_for(n, N));
        with_weight_type(w.type, [&](auto type) {
            matmul_tiled_kernel<decltype(type)::value, N><<<grid, kTileThreads, 0, s>>>(w, x, n, y);
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
                float *row_max, float *row_inv_sum, float *partial, KernelSet k) {
    if (n <= 0) return;
    softmax_stats_kernel<<<static_cast<unsigned>(n), 256, 0, s>>>(logits, table.rows, row_max, row_inv_sum);
    check_launch("soft_embed statistics");
    if (k == KernelSet::reference) {  // the tensor set keeps the float tiles here (not yet on tensor cores)
        const dim3 grid(blocks_for(table.cols, kSoftCols), blocks_for(n, kSoftTokens));
        soft_embed_kernel<<<grid, kSoftCols, 0, s>>>(table, logits, n, row_max, row_inv_sum, scale, out);
        check_launch("soft_embed");
        return;
    }
    const dim3 grid(blocks_for(table.cols, kTileRows), blocks_for(n, 64), kSoftEmbedParts);
    with_weight_type(table.type, [&](auto type) {
        soft_embed_tiled_kernel<decltype(type)::value><<<grid, kTileThreads, 0, s>>>(table, logits, n, row_max, row_inv_sum,
                                                                                      partial);
    });
    check_launch("soft_embed (tiled)");
    soft_embed_sum_kernel<<<blocks_for(n * table.cols, 256), 256, 0, s>>>(partial, n * table.cols, scale, out);
    check_launch("soft_embed (sum of parts)");
}

}  // namespace dg::cuda
