// SIMD dot-product kernels, one table per instruction set (cpu/vec_dot_avx2.cpp, vec_dot_avx512.cpp).
// The functions only exist on x86-64 builds and must only be called when the CPU supports the set.
#pragma once

#include "cpu/dispatch.h"

namespace dg {

struct VecDotKernels {
    VecDotFn q4_0, q4_1, q5_0, q5_1, q8_0;          // against Q8_0 activations
    VecDotFn q2_k, q3_k, q4_k, q5_k, q6_k, iq4_xs;  // against Q8_K activations
};

#if defined(__x86_64__) || defined(_M_X64)
const VecDotKernels &vec_dot_kernels_avx2();
const VecDotKernels &vec_dot_kernels_avx512();
#endif

}  // namespace dg
