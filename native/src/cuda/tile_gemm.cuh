// Tiled products: a block computes a kTileRows x N tile of Y[token][row] = sum_c W[row][c] * X[token][c]
// (N = 64 or 16 tokens), walking c in chunks of kTileK. Each chunk's weight tile is dequantized once
// into shared memory (dequant.h, the CPU's values) and reused by every token of the tile; each
// thread accumulates 4 rows x N/16 tokens in float32 registers.
//
// Every output is one float32 fused multiply-add chain over c = 0, 1, 2, ... whatever N and whatever
// else shares its tile, so the two widths give the same bits, and a token's result does not depend
// on how many other rows its pass holds (a batch gives each sequence what it gets alone). The width
// is chosen by rows per pass (or per expert) only to waste less work on small ones.
//
// Thread t of the 256: rows 4 * (t % 16) .. + 3 and tokens (N / 16) * (t / 16) .. of the tile.
// Loads: weights, thread t fills row t / 4, chunk elements 8 * (t % 4) .. + 7; activations, token
// t / (256 / N), N / 8 consecutive chunk elements. The chunk loop fetches chunk c + 1 into
// registers before multiplying chunk c (one shared buffer, two barriers per chunk).
#pragma once

#include <string>
#include <type_traits>
#include <utility>

#include "cuda/common.cuh"
#include "cuda/dequant.h"

namespace dg::cuda {

constexpr int kTileRows = 64, kTileK = 32, kTileThreads = 256;
constexpr int kTilePad = 4;  // keeps rows 16-byte aligned for float4 reads

// Shared memory of one operand: [kTileK][N + kTilePad] floats, chunk element k as a row, so that
// the inner loop reads consecutive rows (or tokens) of one k at once.
template <int N>
struct __align__(16) TileOperand {  // float4 reads
    static_assert(N == 64 || N == 16, "tile widths: 64 or 16");
    float v[kTileK][N + kTilePad];
};

// Elements c .. c + 7 (c a multiple of 8) of row `row` of a matrix of type T whose row r starts at
// base + r * row_stride; 0 past its rows and columns. Quantized rows are whole blocks (multiples of
// 32), so eight elements are all in or all out; a float row may end within them.
template <TensorType T>
__device__ inline void load_weight8(const uint8_t *base, size_t row_stride, int64_t n_rows, int64_t n_cols, int64_t row,
                                    int64_t c, float (&f)[8]) {
    const uint8_t *p = base + row * row_stride;
    if (row < n_rows && c + 8 <= n_cols) {
        dequant8(T, p, c, f);
        return;
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) f[j] = row < n_rows && c + j < n_cols ? dequant(T, p, c + j) : 0.0f;
}

// The same eight elements in two halves: fetch() issues the loads (gather8), value() decodes them,
// so a loader can fetch the next chunk before multiplying the current one. Edge groups (past the
// rows, or a float row ending within the eight) are read at value() time instead.
template <TensorType T>
struct WeightFetch8 {
    Raw8 raw;
    const uint8_t *p = nullptr;
    int64_t c = 0, n_cols = 0;
    bool whole = false, in_rows = false;

    __device__ void fetch(const uint8_t *base, size_t row_stride, int64_t n_rows, int64_t cols, int64_t row, int64_t col) {
        p = base + row * row_stride;
        c = col;
        n_cols = cols;
        in_rows = row < n_rows;
        whole = in_rows && c + 8 <= n_cols;
        if (whole) gather8(T, p, c, raw);
    }
    __device__ void value(float (&f)[8]) const {
        if (whole) {
            decode8(T, raw, f);
            return;
        }
        // A quantized row is whole blocks (32 or 256 elements), so a group that is not whole lies
        // past the row or past its columns: zeros. Only F32/F16/BF16 rows end inside a group.
        if constexpr (T != TensorType::F32 && T != TensorType::F16 && T != TensorType::BF16) {
#pragma unroll
            for (int j = 0; j < 8; ++j) f[j] = 0.0f;
        } else {
#pragma unroll
            for (int j = 0; j < 8; ++j) f[j] = in_rows && c + j < n_cols ? dequant(T, p, c + j) : 0.0f;
        }
    }
};

// Weight rows row0 .. row0 + 63 (rows past `n_rows` read as 0), chunk c0 .. c0 + 31 of a matrix of
// type T whose row r starts at base + r * row_stride: thread t's part, fetched then stored.
__device__ inline int weight_loader_row() { return threadIdx.x / 4; }
__device__ inline int weight_loader_k() { return 8 * (threadIdx.x % 4); }

template <TensorType T>
__device__ inline void store_weight_tile(TileOperand<kTileRows> &s, const WeightFetch8<T> &w) {
    float f[8];
    w.value(f);
#pragma unroll
    for (int j = 0; j < 8; ++j) s.v[weight_loader_k() + j][weight_loader_row()] = f[j];
}

// The token of an N-wide tile whose activations thread t loads.
template <int N>
__device__ inline int loader_token() { return threadIdx.x / (kTileThreads / N); }

// Activations: the loader token's row is x_row (null past the tile's tokens: zeros); value(c)
// gives element c of it (the identity for plain rows; soft_embed turns logits into probabilities).
template <int N, typename Value>
__device__ inline void load_activation_tile(TileOperand<N> &s, bool has_row, int64_t n_cols, int64_t c0, Value value) {
    constexpr int per = N / 8, threads_per_token = kTileThreads / N;
    const int i = loader_token<N>(), k0 = per * (threadIdx.x % threads_per_token);
#pragma unroll
    for (int j = 0; j < per; ++j) {
        const int64_t c = c0 + k0 + j;
        s.v[k0 + j][i] = has_row && c < n_cols ? value(c) : 0.0f;
    }
}
// Plain activation rows in two halves, as WeightFetch8: fetch() reads this thread's N / 8 values of
// chunk c0, store() writes them where load_activation_tile would.
template <int N>
struct ActivationFetch {
    float v[N / 8];
    __device__ void fetch(const float *x_row, int64_t n_cols, int64_t c0) {
        const int k0 = (N / 8) * (threadIdx.x % (kTileThreads / N));
#pragma unroll
        for (int j = 0; j < N / 8; ++j) v[j] = x_row && c0 + k0 + j < n_cols ? x_row[c0 + k0 + j] : 0.0f;
    }
    __device__ void store(TileOperand<N> &s) const {
        const int i = loader_token<N>(), k0 = (N / 8) * (threadIdx.x % (kTileThreads / N));
#pragma unroll
        for (int j = 0; j < N / 8; ++j) s.v[k0 + j][i] = v[j];
    }
};

// acc[a][b] += W[row 4 * (t % 16) + a] * X[token (N / 16) * (t / 16) + b] over one chunk, k ascending.
template <int N>
__device__ inline void tile_multiply(const TileOperand<kTileRows> &w, const TileOperand<N> &x, float (&acc)[4][N / 16]) {
    constexpr int B = N / 16;
    const int tr = 4 * (threadIdx.x % 16), tt = B * (threadIdx.x / 16);
#pragma unroll 8
    for (int k = 0; k < kTileK; ++k) {
        const float4 a = *reinterpret_cast<const float4 *>(&w.v[k][tr]);
        const float av[4] = {a.x, a.y, a.z, a.w};
        float bv[B];
        if constexpr (B == 4) {
            const float4 b = *reinterpret_cast<const float4 *>(&x.v[k][tt]);
            bv[0] = b.x, bv[1] = b.y, bv[2] = b.z, bv[3] = b.w;
        } else {
            bv[0] = x.v[k][tt];
        }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < B; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
}

// The tile's row (0..63) and token (0..N-1) of accumulator acc[a][b] for this thread.
__device__ inline int tile_row(int a) { return 4 * (threadIdx.x % 16) + a; }
template <int N>
__device__ inline int tile_token(int b) { return (N / 16) * (threadIdx.x / 16) + b; }

// acc += W[row0 .. row0 + 63] . X[the tile's tokens] over all n_cols columns: the chunk loop of the
// tiled products (W's row r at base + r * row_stride; x_row as in load_activation_tile).
template <TensorType T, int N>
__device__ inline void tile_accumulate(TileOperand<kTileRows> &ws, TileOperand<N> &xs, const uint8_t *base,
                                       size_t row_stride, int64_t n_rows, int64_t n_cols, int64_t row0,
                                       const float *x_row, float (&acc)[4][N / 16]) {
    // The next chunk's loads are issued before this chunk's multiply and used after it.
    WeightFetch8<T> w;
    ActivationFetch<N> x;
    w.fetch(base, row_stride, n_rows, n_cols, row0 + weight_loader_row(), weight_loader_k());
    x.fetch(x_row, n_cols, 0);
    for (int64_t c0 = 0; c0 < n_cols; c0 += kTileK) {
        store_weight_tile<T>(ws, w);
        x.store(xs);
        __syncthreads();
        if (c0 + kTileK < n_cols) {
            w.fetch(base, row_stride, n_rows, n_cols, row0 + weight_loader_row(), c0 + kTileK + weight_loader_k());
            x.fetch(x_row, n_cols, c0 + kTileK);
        }
        tile_multiply<N>(ws, xs, acc);
        __syncthreads();
    }
}

// Calls out(row, token, value) with the tile-relative row and token of each of this thread's
// accumulators.
template <int N, typename Out>
__device__ inline void tile_store(const float (&acc)[4][N / 16], Out out) {
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < N / 16; ++b) out(tile_row(a), tile_token<N>(b), acc[a][b]);
}

// Calls f(std::integral_constant<TensorType, T>{}) for the weight type t (one of kCudaWeightTypes),
// so that a kernel template's dequant(T, ...) folds to one type's code.
template <typename F, size_t... I>
void with_weight_type_impl(TensorType t, F &&f, std::index_sequence<I...>) {
    const bool found = ((t == kCudaWeightTypes[I] ? (f(std::integral_constant<TensorType, kCudaWeightTypes[I]>{}), true) : false) || ...);
    if (!found) throw Error(DGEMMA_ERR_UNSUPPORTED, "CUDA: weight type " + std::to_string(static_cast<unsigned>(t)) + " has no kernel");
}
template <typename F>
void with_weight_type(TensorType t, F &&f) {
    with_weight_type_impl(t, std::forward<F>(f), std::make_index_sequence<std::size(kCudaWeightTypes)>{});
}

// Calls f(std::integral_constant<int, N>{}) with the tile width for `rows` tokens per tile column.
template <typename F>
void with_tile_width(int64_t rows, F &&f) {
    if (rows <= 16)
        f(std::integral_constant<int, 16>{});
    else
        f(std::integral_constant<int, 64>{});
}

}  // namespace dg::cuda
