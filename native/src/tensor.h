// Views of weights in the mapped GGUF file. Nothing here owns memory.
#pragma once

#include <cstddef>
#include <cstdint>

#include "quant/types.h"

namespace dg {

// A 2-D weight: n_rows rows of n_cols elements of one type (ggml ne0 = n_cols, ne1 = n_rows).
// A linear layer y = W x stores W[out, in] as n_rows = out, n_cols = in.
struct Matrix {
    const uint8_t *data = nullptr;
    const TypeTraits *type = nullptr;
    int64_t n_cols = 0;
    int64_t n_rows = 0;
    size_t row_stride = 0;  // bytes between rows

    const uint8_t *row(int64_t r) const { return data + static_cast<size_t>(r) * row_stride; }
    explicit operator bool() const { return data != nullptr; }
};

// A stack of per-expert matrices [n_experts][n_rows][n_cols] (ggml ne2 = experts).
struct ExpertMatrices {
    Matrix first;  // expert 0
    size_t expert_stride = 0;
    int64_t n_experts = 0;

    Matrix expert(int64_t e) const {
        Matrix m = first;
        m.data += static_cast<size_t>(e) * expert_stride;
        return m;
    }
};

// The experts of one MoE layer: out = down_e(gelu_tanh(gate_e x) * up_e x). GGUF stores gate and up
// fused ([n_embd, 2 * n_ff, n_expert], gate rows first) or split; both become these two views.
struct MoeWeights {
    ExpertMatrices gate;  // [n_expert][n_ff][n_embd]
    ExpertMatrices up;    // [n_expert][n_ff][n_embd]
    ExpertMatrices down;  // [n_expert][n_embd][n_ff]
};

}  // namespace dg
