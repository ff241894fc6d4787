// Run-time choice of the CPU instruction set for the quantized dot products.
//
// The library is compiled without -march flags; SIMD kernels are compiled per instruction set with
// function target attributes and picked here from what cpuid (and the OS's saved register state)
// reports. TypeTraits::vec_dot holds a stable entry point that forwards to the active set's kernel.
#pragma once

#include <cstdint>

#include "quant/types.h"

namespace dg {

enum class Isa {
    Generic,  // portable C++
    Avx2,     // AVX2 + FMA + F16C
    AvxVnni,  // Avx2 + AVX-VNNI (vpdpbusd on 256-bit registers: Intel client cores without AVX-512)
    Avx512,   // AVX-512 F/BW/VL + VNNI (256-bit VNNI dot products)
};

using VecDotFn = float (*)(const void *w, const void *x, int64_t n);

bool isa_supported(Isa isa);
Isa best_isa();                  // the widest set this CPU supports; the default
Isa active_isa();
bool set_isa(Isa isa);           // false, leaving the active set unchanged, if the CPU lacks it
const char *isa_name(Isa isa);   // "generic", "avx2", "avxvnni", "avx512"
bool isa_from_name(const char *name, Isa *isa);  // the inverse of isa_name; false for an unknown name
const char *isa_features_string();  // e.g. "avx2 fma f16c avx512f avx512bw avx512vl avx512vnni"

// The kernel of weight type `type` for `isa` (its generic kernel where the set has no own version);
// null if the type has no dot product.
VecDotFn vec_dot_kernel(TensorType type, Isa isa);
// Forwards to vec_dot_kernel(type, active_isa()); null if the type has no dot product.
VecDotFn vec_dot_entry(TensorType type);

}  // namespace dg
