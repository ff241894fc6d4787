#include "cpu/kernels.h"

namespace dg {

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(_WIN32)
#define DG_MULTIVERSION __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define DG_MULTIVERSION
#endif

namespace {

constexpr int kLanes = 16;

inline float dot(const float *a, const float *b, int64_t k) {
    float acc[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= k; i += kLanes)
        for (int l = 0; l < kLanes; ++l) acc[l] += a[i + l] * b[i + l];
    float tail = 0.0f;
    for (; i < k; ++i) tail += a[i] * b[i];
    float sum = 0.0f;
    for (int l = 0; l < kLanes; ++l) sum += acc[l];
    return sum + tail;
}

}  // namespace

DG_MULTIVERSION
void dot_tile(const float *x, int64_t ldx, int64_t n_tokens, const float *w, int64_t ldw, int64_t n_rows, int64_t k,
              float *y, int64_t ldy) {
    for (int64_t t = 0; t < n_tokens; ++t) {
        const float *xt = x + t * ldx;
        for (int64_t r = 0; r < n_rows; ++r) y[t * ldy + r] = dot(xt, w + r * ldw, k);
    }
}

DG_MULTIVERSION
void axpy(float a, const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace dg
