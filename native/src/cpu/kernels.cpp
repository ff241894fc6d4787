#include "cpu/kernels.h"

namespace dg {

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(_WIN32)
#define DG_MULTIVERSION __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define DG_MULTIVERSION
#endif

namespace {

// 8 float lanes as a GCC/Clang vector: one AVX register, two SSE registers on the default clone.
typedef float v8 __attribute__((vector_size(32)));
constexpr int kLanes = 8;

__attribute__((always_inline)) inline v8 load8(const float *p) {
    v8 v;
    __builtin_memcpy(&v, p, sizeof(v));
    return v;
}

__attribute__((always_inline)) inline float hsum(v8 v) {
    float s = 0.0f;
    for (int l = 0; l < kLanes; ++l) s += v[l];
    return s;
}

// y[t][r] for a block of up to 2 tokens x 4 rows: each x vector is used 4 times and each w vector
// twice per load, so the loop is bound by arithmetic rather than by loads.
template <int NT, int NR>
__attribute__((always_inline)) inline void block(const float *x, int64_t ldx, const float *w, int64_t ldw, int64_t k, float *y, int64_t ldy) {
    v8 acc[NT][NR] = {};
    int64_t i = 0;
    for (; i + kLanes <= k; i += kLanes) {
        v8 xv[NT], wv[NR];
        for (int a = 0; a < NT; ++a) xv[a] = load8(x + a * ldx + i);
        for (int b = 0; b < NR; ++b) wv[b] = load8(w + b * ldw + i);
        for (int a = 0; a < NT; ++a)
            for (int b = 0; b < NR; ++b) acc[a][b] += xv[a] * wv[b];
    }
    for (int a = 0; a < NT; ++a)
        for (int b = 0; b < NR; ++b) {
            float tail = 0.0f;
            for (int64_t j = i; j < k; ++j) tail += x[a * ldx + j] * w[b * ldw + j];
            y[a * ldy + b] = hsum(acc[a][b]) + tail;
        }
}

}  // namespace

DG_MULTIVERSION
void dot_tile(const float *x, int64_t ldx, int64_t n_tokens, const float *w, int64_t ldw, int64_t n_rows, int64_t k,
              float *y, int64_t ldy) {
    int64_t t = 0;
    for (; t + 2 <= n_tokens; t += 2) {
        int64_t r = 0;
        for (; r + 4 <= n_rows; r += 4) block<2, 4>(x + t * ldx, ldx, w + r * ldw, ldw, k, y + t * ldy + r, ldy);
        for (; r < n_rows; ++r) block<2, 1>(x + t * ldx, ldx, w + r * ldw, ldw, k, y + t * ldy + r, ldy);
    }
    for (; t < n_tokens; ++t) {
        int64_t r = 0;
        for (; r + 4 <= n_rows; r += 4) block<1, 4>(x + t * ldx, ldx, w + r * ldw, ldw, k, y + t * ldy + r, ldy);
        for (; r < n_rows; ++r) block<1, 1>(x + t * ldx, ldx, w + r * ldw, ldw, k, y + t * ldy + r, ldy);
    }
}

DG_MULTIVERSION
void axpy(float a, const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace dg
