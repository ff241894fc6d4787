// Helpers shared by the quantized types: ggml's rounding and the numerics rules they rely on.
//
// Include this header from quant/*.cpp only. It switches off floating-point contraction for the
// rest of the file: dequantization must round like numpy (a product, then a sum) so that it matches
// gguf.quants bit for bit, and the reference quantizers must decide like ggml's scalar code.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace dg {

// ggml's nearest_int: round half to even through the float mantissa (valid for |x| <= 2^22).
inline int nearest_int(float x) {
    float v = x + 12582912.0f;
    int32_t i;
    std::memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

constexpr float kGroupMaxEps = 1e-15f;  // ggml's GROUP_MAX_EPS: a group this small is all zero

}  // namespace dg
