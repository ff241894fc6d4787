// AVX2 + FMA + F16C dot products (kernels in vec_dot_x86.inc).
#include "cpu/vec_dot_simd.h"

#if defined(__x86_64__) || defined(_M_X64)

#define DG_TARGET __attribute__((target("avx2,fma,f16c")))
#define DG_DOT_U8S8(a, u, s) _mm256_add_epi32((a), _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1)))
#define DG_MADD_I16(a, p, s) _mm256_add_epi32((a), _mm256_madd_epi16((p), (s)))
#include "cpu/vec_dot_x86.inc"

namespace dg {
const VecDotKernels &vec_dot_kernels_avx2() { return kKernels; }
}  // namespace dg

#endif
