// Typed tensors in backend memory. A Tensor is a view: type, shape, byte strides and a pointer
// that only its backend may dereference (a device address, or a tagged handle in the test
// backend). Memory is owned by a TensorBuffer (allocations) or by the mapped file (weights the CPU
// backend uses in place). See docs/backends.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include "core_export.h"
#include "quant/types.h"

namespace dg {

class Backend;

// Shapes list dimensions fastest first, as GGUF and ggml do: a matrix of n_rows rows of n_cols
// elements has ne = {n_cols, n_rows, 1, 1}; a linear layer y = W x stores W[out, in] as
// n_cols = in, n_rows = out. Activations [n tokens][width] are ne = {width, n}.
struct Tensor {
    void *data = nullptr;            // backend memory; never dereference outside the backend
    const TypeTraits *type = nullptr;
    TensorType type_id = TensorType::F32;
    int64_t ne[4] = {0, 1, 1, 1};
    size_t nb[4] = {0, 0, 0, 0};     // byte strides; nb[0] = bytes per block
    Backend *backend = nullptr;

    explicit operator bool() const { return data != nullptr; }
    int64_t n_cols() const { return ne[0]; }
    int64_t n_rows() const { return ne[1]; }
    int64_t count() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
    size_t row_stride() const { return nb[1]; }
    size_t bytes() const { return nb[3] * static_cast<size_t>(ne[3]); }
    // Rows [r0, r0 + n) of a 2-D tensor (dimension 1), same type and strides.
    Tensor rows(int64_t r0, int64_t n) const;
    // Slice i of dimension 2 (an expert of a stacked [n_expert][rows][cols] tensor), as a 2-D tensor.
    Tensor slice(int64_t i) const;
    // Elements are byte offsets only for the owning backend: host pointer arithmetic for CPU code.
    uint8_t *bytes_at(size_t offset) const { return static_cast<uint8_t *>(data) + offset; }
};

// A contiguous tensor of type t and shape ne over `data` (strides filled in).
DG_CORE_EXPORT Tensor make_tensor(void *data, TensorType t, int64_t ne0, int64_t ne1 = 1, int64_t ne2 = 1, int64_t ne3 = 1,
                   Backend *backend = nullptr);

// Backend memory owned by the holder: freed by its backend on destruction. Move-only.
class TensorBuffer {
public:
    TensorBuffer() = default;
    TensorBuffer(Tensor t) : t_(t) {}
    ~TensorBuffer() { reset(); }
    TensorBuffer(TensorBuffer &&o) noexcept : t_(std::exchange(o.t_, Tensor{})) {}
    TensorBuffer &operator=(TensorBuffer &&o) noexcept {
        if (this != &o) {
            reset();
            t_ = std::exchange(o.t_, Tensor{});
        }
        return *this;
    }
    TensorBuffer(const TensorBuffer &) = delete;
    TensorBuffer &operator=(const TensorBuffer &) = delete;

    const Tensor &operator*() const { return t_; }
    const Tensor *operator->() const { return &t_; }
    explicit operator bool() const { return static_cast<bool>(t_); }
    void reset();

private:
    Tensor t_;
};

// The experts of one MoE layer: out = down_e(gelu_tanh(gate_e x) * up_e x), each a stack
// [n_expert][rows][cols] (ne = {cols, rows, n_expert}). GGUF stores gate and up fused
// ([n_embd, 2 * n_ff, n_expert], gate rows first) or split; both become these two views.
struct MoeWeights {
    Tensor gate;  // ne = {n_embd, n_ff, n_expert}
    Tensor up;    // ne = {n_embd, n_ff, n_expert}
    Tensor down;  // ne = {n_ff, n_embd, n_expert}
};

}  // namespace dg
