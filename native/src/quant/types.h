// Tensor element types: the GGUF/ggml type ids and, per type, its block layout and kernels.
//
// Quant types are data: the model and the backends never switch on a type id, they look up its
// TypeTraits. A new type plugs in by adding one entry to the table in types.cpp.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core_export.h"
#include "quant/float_bits.h"

namespace dg {

// ggml's numbering (stable across GGUF files).
enum class TensorType : uint32_t {
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, IQ4_XS = 23,
    I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, BF16 = 30,
};

// The alignment the kernels may assume of a row's address, so that every block field and float
// sits at an address its type allows: GGUF data sections are aligned to at least this (the loader
// refuses less), and the C API copies a caller's buffer that is not (api_tensor.cpp).
constexpr size_t kRowAlignment = 8;

struct TypeTraits {
    const char *name;
    int64_t block_size;  // elements per block
    size_t type_size;    // bytes per block
    // Dequantizes n elements (n a multiple of block_size) to float32. Null: known, not readable.
    void (*to_float)(const void *src, float *dst, int64_t n);
    // Reference quantizer (ggml's round-to-nearest rules). Null where none exists.
    void (*from_float)(const float *src, void *dst, int64_t n);
    // Optional integer dot product: weights of this type against activations quantized to
    // vec_dot_type (whose from_float must exist). Returns sum_i w[i] * x[i] over n elements.
    // Null: the CPU backend dequantizes weight tiles and uses float32 products instead.
    TensorType vec_dot_type;
    float (*vec_dot)(const void *w, const void *x_quantized, int64_t n);
};

// nullptr for an id this build does not know.
DG_CORE_EXPORT const TypeTraits *type_traits(uint32_t type_id);
inline const TypeTraits *type_traits(TensorType t) { return type_traits(static_cast<uint32_t>(t)); }
// The id of an entry that type_traits returned.
TensorType type_id(const TypeTraits &tt);

// Bytes of a row of n elements; n must be a multiple of the block size.
inline size_t row_bytes(const TypeTraits &tt, int64_t n) { return static_cast<size_t>(n / tt.block_size) * tt.type_size; }

}  // namespace dg
