// Float32 inner kernels of the CPU backend. Compiled for several instruction sets and chosen by
// the loader at run time (GCC/Clang function multi-versioning); the "default" clone is the
// portable path. Sums run in 8 fixed lanes (GCC vector extensions), so the clones agree up to FMA
// contraction and results do not depend on the instruction set's width.
#pragma once

#include <cstdint>

namespace dg {

// y[t][r] = dot(x[t], w[r]) for t < n_tokens, r < n_rows; rows of length k.
void dot_tile(const float *x, int64_t ldx, int64_t n_tokens, const float *w, int64_t ldw, int64_t n_rows, int64_t k,
              float *y, int64_t ldy);

// y += a * x over n values.
void axpy(float a, const float *x, float *y, int64_t n);

}  // namespace dg
