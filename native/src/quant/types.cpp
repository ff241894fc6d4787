#include "quant/types.h"

#include "cpu/dispatch.h"
#include "quant/float_types.h"
#include "quant/k_quants.h"
#include "quant/q4_q5.h"
#include "quant/q8_0.h"

namespace dg {

namespace {

// Indexed by ggml type id. Entries with to_float == nullptr are known by name so that errors can
// say which type a file uses, but cannot be read by this build.
const TypeTraits kUnknown{nullptr, 0, 0, nullptr, nullptr, TensorType::F32, nullptr};

TypeTraits make_table_entry(uint32_t id) {
    switch (static_cast<TensorType>(id)) {
        case TensorType::F32: return {"F32", 1, 4, f32_row_to_float, f32_row_from_float, TensorType::F32, nullptr};
        case TensorType::F16: return {"F16", 1, 2, f16_row_to_float, f16_row_from_float, TensorType::F32, nullptr};
        case TensorType::BF16: return {"BF16", 1, 2, bf16_row_to_float, bf16_row_from_float, TensorType::F32, nullptr};
        case TensorType::Q8_0: return {"Q8_0", 32, 34, q8_0_row_to_float, q8_0_row_from_float, TensorType::Q8_0, vec_dot_entry(TensorType::Q8_0)};
        case TensorType::Q4_0: return {"Q4_0", 32, 18, q4_0_row_to_float, q4_0_row_from_float, TensorType::Q8_0, vec_dot_entry(TensorType::Q4_0)};
        case TensorType::Q4_1: return {"Q4_1", 32, 20, q4_1_row_to_float, q4_1_row_from_float, TensorType::Q8_0, vec_dot_entry(TensorType::Q4_1)};
        case TensorType::Q5_0: return {"Q5_0", 32, 22, q5_0_row_to_float, q5_0_row_from_float, TensorType::Q8_0, vec_dot_entry(TensorType::Q5_0)};
        case TensorType::Q5_1: return {"Q5_1", 32, 24, q5_1_row_to_float, q5_1_row_from_float, TensorType::Q8_0, vec_dot_entry(TensorType::Q5_1)};
        case TensorType::Q8_1: return {"Q8_1", 32, 36, nullptr, nullptr, TensorType::F32, nullptr};
        case TensorType::Q2_K: return {"Q2_K", 256, 84, q2_k_row_to_float, q2_k_row_from_float, TensorType::Q8_K, vec_dot_entry(TensorType::Q2_K)};
        case TensorType::Q3_K: return {"Q3_K", 256, 110, q3_k_row_to_float, q3_k_row_from_float, TensorType::Q8_K, vec_dot_entry(TensorType::Q3_K)};
        case TensorType::Q4_K: return {"Q4_K", 256, 144, q4_k_row_to_float, q4_k_row_from_float, TensorType::Q8_K, vec_dot_entry(TensorType::Q4_K)};
        case TensorType::Q5_K: return {"Q5_K", 256, 176, q5_k_row_to_float, q5_k_row_from_float, TensorType::Q8_K, vec_dot_entry(TensorType::Q5_K)};
        case TensorType::Q6_K: return {"Q6_K", 256, 210, q6_k_row_to_float, q6_k_row_from_float, TensorType::Q8_K, vec_dot_entry(TensorType::Q6_K)};
        case TensorType::Q8_K: return {"Q8_K", 256, 292, q8_k_row_to_float, q8_k_row_from_float, TensorType::F32, nullptr};
        // Integer and double tensors (token ids, expert ids, draw tables, sampler sums): backend
        // memory only, never weights, so they have no float conversion.
        case TensorType::I8: return {"I8", 1, 1, nullptr, nullptr, TensorType::F32, nullptr};
        case TensorType::I16: return {"I16", 1, 2, nullptr, nullptr, TensorType::F32, nullptr};
        case TensorType::I32: return {"I32", 1, 4, nullptr, nullptr, TensorType::F32, nullptr};
        case TensorType::I64: return {"I64", 1, 8, nullptr, nullptr, TensorType::F32, nullptr};
        case TensorType::F64: return {"F64", 1, 8, nullptr, nullptr, TensorType::F32, nullptr};
        case TensorType::IQ4_XS: return {"IQ4_XS", 256, 136, iq4_xs_row_to_float, iq4_xs_row_from_float, TensorType::Q8_K, vec_dot_entry(TensorType::IQ4_XS)};
    }
    return kUnknown;
}

constexpr uint32_t kMaxTypeId = 64;

struct Table {
    TypeTraits entries[kMaxTypeId];
    Table() {
        for (uint32_t i = 0; i < kMaxTypeId; ++i) entries[i] = make_table_entry(i);
    }
};

const Table &table() {
    static const Table t;
    return t;
}

}  // namespace

const TypeTraits *type_traits(uint32_t type_id) {
    if (type_id >= kMaxTypeId || table().entries[type_id].name == nullptr) return nullptr;
    return &table().entries[type_id];
}

TensorType type_id(const TypeTraits &tt) { return static_cast<TensorType>(&tt - table().entries); }

}  // namespace dg
