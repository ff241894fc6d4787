// DG_HD marks plain functions that both the host compiler and nvcc compile (block layouts, the
// sampler's arithmetic, float bit conversions): one definition serves the CPU, the CUDA kernels
// and the CPU tests that check them.
#pragma once

#if defined(__CUDACC__)
#define DG_HD __host__ __device__ inline
#else
#define DG_HD inline
#endif

// a * b rounded on its own: device code would otherwise fuse it with a following add or subtract
// (the host code it must match is compiled without contraction).
DG_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
