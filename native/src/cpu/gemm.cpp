#include "cpu/gemm.h"

#include <algorithm>
#include <vector>

#include "cpu/kernels.h"

namespace dg {

GemmKernel gemm_kernel(TensorType type, Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
    switch (isa) {
        case Isa::Avx512: return gemm_kernel_avx512(type);
        case Isa::Avx2: return gemm_kernel_avx2(type);
        case Isa::AvxVnni: return gemm_kernel_avxvnni(type);
        case Isa::Generic: break;
    }
#endif
    return {};
}

size_t gemm_activation_bytes(TensorType type, int64_t k) {
    const GemmKernel kernel = gemm_kernel(type, active_isa());
    if (kernel.pack) return kernel.packed_bytes(k);
    const TypeTraits &tt = *type_traits(type);
    return tt.vec_dot ? row_bytes(*type_traits(tt.vec_dot_type), k) : 0;
}

void gemm_pack_activations(TensorType type, const float *x, void *dst, int64_t k) {
    const GemmKernel kernel = gemm_kernel(type, active_isa());
    if (kernel.pack) return kernel.pack(x, dst, k);
    type_traits(type_traits(type)->vec_dot_type)->from_float(x, dst, k);
}

size_t gemm_packed_bytes(TensorType type, int64_t n_rows, int64_t k) {
    const GemmKernel kernel = gemm_kernel(type, active_isa());
    if (!kernel.pack_panel) return 0;
    return static_cast<size_t>((n_rows + kPanelRows - 1) / kPanelRows) * kernel.panel_bytes(k);
}

void gemm_pack_weights(TensorType type, const uint8_t *w, size_t w_stride, int64_t n_rows, int64_t k, uint8_t *dst) {
    const GemmKernel kernel = gemm_kernel(type, active_isa());
    const size_t panel = kernel.panel_bytes(k);
    for (int64_t r0 = 0; r0 < n_rows; r0 += kPanelRows, dst += panel)
        kernel.pack_panel(w + r0 * w_stride, w_stride, std::min(kPanelRows, n_rows - r0), k, dst);
}

size_t gemm_packed_offset(TensorType type, int64_t r, int64_t k) {
    return static_cast<size_t>(r / kPanelRows) * gemm_kernel(type, active_isa()).panel_bytes(k);
}

namespace {

// The product over at most one chunk of activation rows (see gemm()).
void gemm_chunk(TensorType type, const GemmArgs &a) {
    const Isa isa = active_isa();
    const GemmKernel kernel = gemm_kernel(type, isa);
    if (a.y_rows && !(kernel.run && a.k <= kernel.add_rows_max_k)) {
        // Stored, then added row by row: y_rows[t] += y_scale[t] * (token t's results).
        thread_local std::vector<float> tile;
        if (tile.size() < static_cast<size_t>(a.n_tokens * a.n_rows)) tile.resize(static_cast<size_t>(a.n_tokens * a.n_rows));
        GemmArgs s = a;
        s.y = tile.data();
        s.ldy = a.n_rows;
        s.y_rows = nullptr;
        s.y_scale = nullptr;
        gemm_chunk(type, s);
        for (int64_t t = 0; t < a.n_tokens; ++t) axpy(a.y_rows[t], tile.data() + t * a.n_rows, a.y_scale[t], a.n_rows);
        return;
    }
    if (kernel.run) return kernel.run(a);
    if (const VecDotFn dot = vec_dot_kernel(type, isa)) {
        for (int64_t r = 0; r < a.n_rows; ++r) {
            const uint8_t *wr = a.w + r * a.w_stride;
            for (int64_t t = 0; t < a.n_tokens; ++t) a.y[t * a.ldy + r] = dot(wr, a.x + t * a.x_stride, a.k);
        }
        return;
    }
    const float *x = reinterpret_cast<const float *>(a.x);
    const int64_t ldx = static_cast<int64_t>(a.x_stride / sizeof(float));
    if (type == TensorType::F32) {
        dot_tile(x, ldx, a.n_tokens, reinterpret_cast<const float *>(a.w), static_cast<int64_t>(a.w_stride / sizeof(float)),
                 a.n_rows, a.k, a.y, a.ldy);
        return;
    }
    thread_local std::vector<float> tile;
    if (tile.size() < static_cast<size_t>(a.n_rows * a.k)) tile.resize(static_cast<size_t>(a.n_rows * a.k));
    const TypeTraits &tt = *type_traits(type);
    for (int64_t r = 0; r < a.n_rows; ++r) tt.to_float(a.w + r * a.w_stride, tile.data() + r * a.k, a.k);
    dot_tile(x, ldx, a.n_tokens, tile.data(), a.k, a.n_rows, a.k, a.y, a.ldy);
}

// Activation bytes per chunk: a chunk stays in L2 while every weight row of the call passes over it.
constexpr size_t kChunkBytes = 256 << 10;
// Chunks hold whole groups of every kernel's token tile (3 or 4 tokens), so a token's result is the
// same whatever the chunking.
constexpr int64_t kTokenGroup = 12;

}  // namespace

// The kernels sweep all their activation rows once per few weight rows. A batched pass has
// thousands of rows (megabytes: the logits product of 8 canvases streamed gigabytes from memory
// and made one pass of 8 canvases cost more than 8 passes of one), so they take them in chunks.
void gemm(TensorType type, const GemmArgs &a) {
    const int64_t chunk = std::max<int64_t>(1, static_cast<int64_t>(kChunkBytes / a.x_stride) / kTokenGroup) * kTokenGroup;
    for (int64_t t0 = 0; t0 < a.n_tokens; t0 += chunk) {
        GemmArgs c = a;
        c.x = a.x + t0 * a.x_stride;
        c.n_tokens = std::min(chunk, a.n_tokens - t0);
        if (a.y_rows) {
            c.y_rows = a.y_rows + t0;
            c.y_scale = a.y_scale + t0;
        } else {
            c.y = a.y + t0 * a.ldy;
        }
        gemm_chunk(type, c);
    }
}

}  // namespace dg
