// AVX-512 VNNI dot products (kernels in vec_dot_x86.inc): vpdpbusd / vpdpwssd fuse the multiply,
// the pairwise add and the accumulation. 256-bit vectors (AVX-512VL) keep clock speeds up on
// older Xeons; the loops are bound by memory bandwidth for real weight matrices.
#include "cpu/vec_dot_simd.h"

#if defined(__x86_64__) || defined(_M_X64)

#define DG_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define DG_DOT_U8S8(a, u, s) _mm256_dpbusd_epi32((a), (u), (s))
#define DG_MADD_I16(a, p, s) _mm256_dpwssd_epi32((a), (p), (s))
#include "cpu/vec_dot_x86.inc"

namespace dg {
const VecDotKernels &vec_dot_kernels_avx512() { return kKernels; }
}  // namespace dg

#endif
