#include "cpu/kernels.h"

#include <cmath>

#include "cpu/dispatch.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include "cpu/quantize_avx512.h"
#define DG_AVX512_REDUCE 1  // block() of 16-lane vectors is only instantiated by tile_avx512
#endif

namespace dg {

namespace {

// Lanes as GCC/Clang vector extensions; each ISA's kernel instantiates the block code with its
// register width. Sums run lane-wise then across lanes, so results are identical for any thread
// count and differ between ISAs only in summation order.
typedef float v8 __attribute__((vector_size(32)));
typedef float v16 __attribute__((vector_size(64)));

// Lane-wise sums of V's float lanes in double: lane l accumulates lane l of every value added, in
// order, and total() adds the lanes in order 0 .. L-1. Held as two halves of register width: GCC
// keeps a double vector wider than a register (16 lanes) in memory, a store-to-load dependency on
// every add.
typedef float v4 __attribute__((vector_size(16)));
typedef double v4d __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));
template <typename V>
struct HalfLanes;  // H: half of V's float lanes; D: as many doubles
template <>
struct HalfLanes<v8> { using H = v4; using D = v4d; };
template <>
struct HalfLanes<v16> { using H = v8; using D = v8d; };

template <typename V>
struct DoubleLanes {
    static constexpr int L = sizeof(V) / sizeof(float);
    using H = typename HalfLanes<V>::H;
    using D = typename HalfLanes<V>::D;
    D lo = {}, hi = {};
    __attribute__((always_inline)) void add(V v) {
        H a, b;
        __builtin_memcpy(&a, &v, sizeof(H));
        __builtin_memcpy(&b, reinterpret_cast<const char *>(&v) + sizeof(H), sizeof(H));
        lo += __builtin_convertvector(a, D);
        hi += __builtin_convertvector(b, D);
    }
    __attribute__((always_inline)) void add_squares(V v) {
        H a, b;
        __builtin_memcpy(&a, &v, sizeof(H));
        __builtin_memcpy(&b, reinterpret_cast<const char *>(&v) + sizeof(H), sizeof(H));
        const D da = __builtin_convertvector(a, D), db = __builtin_convertvector(b, D);
        lo += da * da;
        hi += db * db;
    }
    __attribute__((always_inline)) double total() const {
        double t = 0.0;
        for (int l = 0; l < L / 2; ++l) t += lo[l];
        for (int l = 0; l < L / 2; ++l) t += hi[l];
        return t;
    }
};

template <typename V>
__attribute__((always_inline)) inline V load(const float *p) {
    V v;
    __builtin_memcpy(&v, p, sizeof(V));
    return v;
}

#ifdef DG_AVX512_REDUCE
// y[a * ldy + b] = the horizontal sum of acc[4 * a + b] for a 4 x 4 block of 16-lane sums, through
// one transposing tree (avx512::reduce16) instead of 16 lane-by-lane sums.
DG_TARGET __attribute__((noinline)) void store_sums_4x4(const v16 *acc, float *y, int64_t ldy) {
    __m512 v[16];
    for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b) __builtin_memcpy(&v[4 * b + a], &acc[4 * a + b], sizeof(v16));
    const __m512 s = avx512::reduce16(v);  // quarter a: rows 0..3 of token a
    _mm_storeu_ps(y, _mm512_castps512_ps128(s));
    _mm_storeu_ps(y + ldy, _mm512_extractf32x4_ps(s, 1));
    _mm_storeu_ps(y + 2 * ldy, _mm512_extractf32x4_ps(s, 2));
    _mm_storeu_ps(y + 3 * ldy, _mm512_extractf32x4_ps(s, 3));
}
#endif

template <typename V>
__attribute__((always_inline)) inline float hsum(V v) {
    constexpr int L = sizeof(V) / sizeof(float);
    float s = 0.0f;
    for (int l = 0; l < L; ++l) s += v[l];
    return s;
}

// y[t][r] for a block of NT tokens x NR rows: each x vector is used NR times and each w vector NT
// times per load, so the loop is bound by arithmetic rather than by loads.
template <typename V, int NT, int NR>
__attribute__((always_inline)) inline void block(const float *x, int64_t ldx, const float *w, int64_t ldw, int64_t k,
                                                 float *y, int64_t ldy) {
    constexpr int L = sizeof(V) / sizeof(float);
    V acc[NT][NR] = {};
    int64_t i = 0;
    for (; i + L <= k; i += L) {
        V xv[NT], wv[NR];
        for (int a = 0; a < NT; ++a) xv[a] = load<V>(x + a * ldx + i);
        for (int b = 0; b < NR; ++b) wv[b] = load<V>(w + b * ldw + i);
        for (int a = 0; a < NT; ++a)
            for (int b = 0; b < NR; ++b) acc[a][b] += xv[a] * wv[b];
    }
#ifdef DG_AVX512_REDUCE
    if constexpr (sizeof(V) == 64 && NT == 4 && NR == 4) {
        if (i == k) return store_sums_4x4(&acc[0][0], y, ldy);  // no tail
    }
#endif
    for (int a = 0; a < NT; ++a)
        for (int b = 0; b < NR; ++b) {
            float tail = 0.0f;
            for (int64_t j = i; j < k; ++j) tail += x[a * ldx + j] * w[b * ldw + j];
            y[a * ldy + b] = hsum(acc[a][b]) + tail;
        }
}

// Blocks of NT tokens x NR rows with edge blocks for the remainders. Rows run in the outer loop so
// that one block's NR weight rows stay in L1 while the tokens stream past them.
template <typename V, int NT, int NR>
__attribute__((always_inline)) inline void tile(const float *x, int64_t ldx, int64_t n_tokens, const float *w,
                                                int64_t ldw, int64_t n_rows, int64_t k, float *y, int64_t ldy) {
    int64_t r = 0;
    for (; r + NR <= n_rows; r += NR) {
        int64_t t = 0;
        for (; t + NT <= n_tokens; t += NT) block<V, NT, NR>(x + t * ldx, ldx, w + r * ldw, ldw, k, y + t * ldy + r, ldy);
        for (; t < n_tokens; ++t) block<V, 1, NR>(x + t * ldx, ldx, w + r * ldw, ldw, k, y + t * ldy + r, ldy);
    }
    for (; r < n_rows; ++r) {
        int64_t t = 0;
        for (; t + NT <= n_tokens; t += NT) block<V, NT, 1>(x + t * ldx, ldx, w + r * ldw, ldw, k, y + t * ldy + r, ldy);
        for (; t < n_tokens; ++t) block<V, 1, 1>(x + t * ldx, ldx, w + r * ldw, ldw, k, y + t * ldy + r, ldy);
    }
}

constexpr int64_t kAccumulateRun = 64;  // value rows per run of accumulate (a 64-column slab: 16 KiB)

// o[a][c] += sum_m p[a][m] * v[m][c] for NA rows a and NC vectors of columns c: the NA x NC sums stay
// in registers over all m, each v vector is loaded once for the NA rows and each p once for NC vectors.
template <typename V, int NA, int NC>
__attribute__((always_inline)) inline void accumulate_block(const float *p, int64_t ldp, const float *v, int64_t ldv,
                                                            int64_t n, float *o, int64_t ldo) {
    constexpr int L = sizeof(V) / sizeof(float);
    V acc[NA][NC] = {};
    for (int64_t m = 0; m < n; ++m) {
        V vv[NC];
        for (int c = 0; c < NC; ++c) vv[c] = load<V>(v + m * ldv + c * L);
        for (int a = 0; a < NA; ++a) {
            const float w = p[a * ldp + m];
            for (int c = 0; c < NC; ++c) acc[a][c] += w * vv[c];
        }
    }
    for (int a = 0; a < NA; ++a)
        for (int c = 0; c < NC; ++c) {
            const V sum = load<V>(o + a * ldo + c * L) + acc[a][c];
            __builtin_memcpy(o + a * ldo + c * L, &sum, sizeof(V));
        }
}

// o[a][:] += sum_m p[a][m] * v[m][:] for a < nb rows and m < n: blocks of NA rows x NC vectors of
// columns (attention's weighted sum over values, the soft embedding's sum over the vocabulary).
template <typename V, int NA, int NC>
__attribute__((always_inline)) inline void accumulate(const float *p, int64_t ldp, int64_t nb, const float *v,
                                                      int64_t ldv, int64_t n, int64_t d, float *o, int64_t ldo) {
    constexpr int L = sizeof(V) / sizeof(float);
    // Columns outer: a slab of NC vectors of columns over a run of value rows is read by every
    // block of rows while it is in L1 (rows outer read all of v once per block of rows, from L2);
    // runs of kAccumulateRun value rows keep the slab within L1 (each run's sums are added to o).
    for (int64_t m0 = 0; m0 < n; m0 += kAccumulateRun) {
        const int64_t nm = std::min(kAccumulateRun, n - m0);
        const float *pm = p + m0, *vm = v + m0 * ldv;
        int64_t c = 0;
        for (; c + NC * L <= d; c += NC * L) {
            int64_t a = 0;
            for (; a + NA <= nb; a += NA) accumulate_block<V, NA, NC>(pm + a * ldp, ldp, vm + c, ldv, nm, o + a * ldo + c, ldo);
            for (; a < nb; ++a) accumulate_block<V, 1, NC>(pm + a * ldp, ldp, vm + c, ldv, nm, o + a * ldo + c, ldo);
        }
        for (; c + L <= d; c += L) {
            int64_t a = 0;
            for (; a + NA <= nb; a += NA) accumulate_block<V, NA, 1>(pm + a * ldp, ldp, vm + c, ldv, nm, o + a * ldo + c, ldo);
            for (; a < nb; ++a) accumulate_block<V, 1, 1>(pm + a * ldp, ldp, vm + c, ldv, nm, o + a * ldo + c, ldo);
        }
    }
    const int64_t c0 = d / L * L;  // columns past the last whole vector
    for (int64_t a = 0; a < nb; ++a)
        for (int64_t m = 0; m < n; ++m)
            for (int64_t c = c0; c < d; ++c) o[a * ldo + c] += p[a * ldp + m] * v[m * ldv + c];
}

void accumulate_generic(const float *p, int64_t ldp, int64_t nb, const float *v, int64_t ldv, int64_t n, int64_t d,
                        float *o, int64_t ldo) {
    accumulate<v8, 2, 4>(p, ldp, nb, v, ldv, n, d, o, ldo);  // 8 sums + 4 loads
}

inline float gelu_tanh_reference(float x) {
    const float c = 0.7978845608028654f;  // sqrt(2 / pi)
    return 0.5f * x * (1.0f + std::tanh(c * (x + 0.044715f * x * x * x)));
}

void gelu_generic(const float *gate, const float *up, float *out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = gelu_tanh_reference(gate[i]) * up[i];
}

// exp(x) for x in [-87, 88] (above: clamped; below: 0): 2^n * p(r), r = x - n ln 2 in [-ln2/2, ln2/2], p of degree 6
// (relative error about 2e-7, a few float ulps).
template <typename V>
__attribute__((always_inline)) inline V exp_lanes(V x) {
    typedef int32_t I __attribute__((vector_size(sizeof(V))));
    const auto underflow = x < -87.0f;  // exp is 0 there (a masked score, -inf, gives exactly 0)
    x = x < -87.0f ? V{} - 87.0f : x;
    x = x > 88.0f ? V{} + 88.0f : x;
    const V n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;  // round to nearest
    const V r = (x - n * 0.693359375f) + n * 2.12194440e-4f;      // ln 2 in two parts
    V p = V{} + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const I bits = (__builtin_convertvector(n, I) + 127) << 23;
    V scale;
    __builtin_memcpy(&scale, &bits, sizeof(V));
    return underflow ? V{} : p * scale;
}

template <typename V>
__attribute__((always_inline)) inline void gelu_lanes(const float *gate, const float *up, float *out, int64_t n) {
    constexpr int L = sizeof(V) / sizeof(float);
    const float c = 0.7978845608028654f;
    int64_t i = 0;
    for (; i + L <= n; i += L) {
        const V x = load<V>(gate + i);
        const V u = c * (x + 0.044715f * x * x * x);
        const V y = x / (1.0f + exp_lanes<V>(-2.0f * u)) * load<V>(up + i);  // 0.5 x (1 + tanh u)
        __builtin_memcpy(out + i, &y, sizeof(V));
    }
    for (; i < n; ++i) out[i] = gelu_tanh_reference(gate[i]) * up[i];
}

// tanh(y) = -expm1(-2|y|) / (2 + expm1(-2|y|)) with the sign of y: expm1 keeps full relative
// precision near 0, where 1 - 2 / (exp(2y) + 1) would cancel. expm1(x) = 2^n q(r) + (2^n - 1),
// r = x - n ln 2 in [-ln2/2, ln2/2], q(r) = r + r^2 (1/2 + r/6 + ... + r^5/5040).
template <typename V>
__attribute__((always_inline)) inline V tanh_lanes(V y) {
    typedef int32_t I __attribute__((vector_size(sizeof(V))));
    const V a = y < 0.0f ? -y : y;
    V x = -2.0f * a;
    x = x < -87.0f ? V{} - 87.0f : x;
    const V n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;
    const V r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
    V q = V{} + 1.0f / 5040.0f;
    q = q * r + 1.0f / 720.0f;
    q = q * r + 1.0f / 120.0f;
    q = q * r + 1.0f / 24.0f;
    q = q * r + 1.0f / 6.0f;
    q = q * r + 0.5f;
    q = q * (r * r) + r;
    const I bits = (__builtin_convertvector(n, I) + 127) << 23;
    V p2;
    __builtin_memcpy(&p2, &bits, sizeof(V));
    const V e = p2 * q + (p2 - 1.0f);
    const V t = -e / (2.0f + e);
    return y < 0.0f ? -t : t;
}

template <typename V>
__attribute__((always_inline)) inline void softcap_lanes(float *x, int64_t n, float cap) {
    constexpr int L = sizeof(V) / sizeof(float);
    const float inv = 1.0f / cap;
    int64_t i = 0;
    for (; i + L <= n; i += L) {
        const V y = tanh_lanes<V>(load<V>(x + i) * inv) * cap;
        __builtin_memcpy(x + i, &y, sizeof(V));
    }
    for (; i < n; ++i) x[i] = std::tanh(x[i] * inv) * cap;
}

// out[i] = exp(x[i] - shift) * scale (out may be null); returns the sum of exp(x[i] - shift),
// lane sums in double.
template <typename V>
__attribute__((always_inline)) inline double exp_lanes_sum(const float *x, int64_t n, float shift, float scale, float *out) {
    constexpr int L = sizeof(V) / sizeof(float);
    DoubleLanes<V> sum;
    int64_t i = 0;
    for (; i + L <= n; i += L) {
        const V e = exp_lanes<V>(load<V>(x + i) - shift);
        sum.add(e);
        if (out) {
            const V o = e * scale;
            __builtin_memcpy(out + i, &o, sizeof(V));
        }
    }
    double total = sum.total();
    for (; i < n; ++i) {
        const float e = std::exp(x[i] - shift);
        total += e;
        if (out) out[i] = e * scale;
    }
    return total;
}

template <typename V>
__attribute__((always_inline)) inline float max_lanes(const float *x, int64_t n) {
    constexpr int L = sizeof(V) / sizeof(float);
    float mx = -INFINITY;
    int64_t i = 0;
    if (n >= L) {
        V m = load<V>(x);
        for (i = L; i + L <= n; i += L) {
            const V v = load<V>(x + i);
            m = v > m ? v : m;
        }
        for (int l = 0; l < L; ++l) mx = std::max(mx, m[l]);
    }
    for (; i < n; ++i) mx = std::max(mx, x[i]);
    return mx;
}

template <typename V>
__attribute__((always_inline)) inline void softmax_lanes(float *x, int64_t n) {
    constexpr int L = sizeof(V) / sizeof(float);
    const float inv = static_cast<float>(1.0 / exp_lanes_sum<V>(x, n, max_lanes<V>(x, n), 1.0f, x));
    int64_t i = 0;
    for (; i + L <= n; i += L) {
        const V y = load<V>(x + i) * inv;
        __builtin_memcpy(x + i, &y, sizeof(V));
    }
    for (; i < n; ++i) x[i] *= inv;
}

#ifdef DG_AVX512_REDUCE
// The sum of squares in double on AVX-512: four chains of 8 lanes (the float values widened from
// memory, no shuffles), one tree at the end. Its order differs from the lane sums of the other
// ISAs; the RMS norm's scale rounds to float, so the two agree but for rare last-bit ties.
__attribute__((target("avx512f,avx512bw,avx512vl,fma"), always_inline)) inline double sum_squares_avx512_lanes(const float *x, int64_t n) {
    __m512d a[4] = {_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd()};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int c = 0; c < 4; ++c) {
            const __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8 * c));
            a[c] = _mm512_fmadd_pd(v, v, a[c]);
        }
    for (int c = 0; i + 8 <= n; i += 8, ++c) {
        const __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(x + i));
        a[c] = _mm512_fmadd_pd(v, v, a[c]);
    }
    double total = _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(a[0], a[1]), _mm512_add_pd(a[2], a[3])));
    for (; i < n; ++i) total += static_cast<double>(x[i]) * x[i];
    return total;
}
#endif

template <typename V>
__attribute__((always_inline)) inline double sum_squares_lanes(const float *x, int64_t n) {
    constexpr int L = sizeof(V) / sizeof(float);
    DoubleLanes<V> sum;
    int64_t i = 0;
    for (; i + L <= n; i += L) sum.add_squares(load<V>(x + i));
    double total = sum.total();
    for (; i < n; ++i) total += static_cast<double>(x[i]) * x[i];
    return total;
}

double sum_squares_generic(const float *x, int64_t n) {
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) total += static_cast<double>(x[i]) * x[i];
    return total;
}

void softmax_generic(float *x, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        x[i] = std::exp(x[i] - mx);
        sum += x[i];
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

float max_value_generic(const float *x, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
    return mx;
}

void softcap_generic(float *x, int64_t n, float cap) {
    for (int64_t i = 0; i < n; ++i) x[i] = std::tanh(x[i] / cap) * cap;
}

double exp_sum_generic(const float *x, int64_t n, float shift, float scale, float *out) {
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        const float e = std::exp(x[i] - shift);
        total += e;
        if (out) out[i] = e * scale;
    }
    return total;
}

inline float rms_scale(double sum_squares, int64_t dim, float eps) {
    return static_cast<float>(1.0 / std::sqrt(sum_squares / static_cast<double>(dim) + eps));
}

// y = x * scale * w (the RMS norm's scaling, in that order) for one row.
template <typename V>
__attribute__((always_inline)) inline void rmsnorm_scale_row(const float *xr, const float *w, float scale, float *yr, int64_t dim) {
    constexpr int L = sizeof(V) / sizeof(float);
    int64_t i = 0;
    for (; i + L <= dim; i += L) {
        V v = load<V>(xr + i) * scale;
        if (w) v = v * load<V>(w + i);
        __builtin_memcpy(yr + i, &v, sizeof(V));
    }
    for (; i < dim; ++i) yr[i] = w ? xr[i] * scale * w[i] : xr[i] * scale;
}

// The RMS norm of each row.
template <typename V>
__attribute__((always_inline)) inline void rmsnorm_lanes(const float *x, const float *w, float eps, float *y, int64_t n_rows,
                                                         int64_t dim) {
    for (int64_t r = 0; r < n_rows; ++r)
        rmsnorm_scale_row<V>(x + r * dim, w, rms_scale(sum_squares_lanes<V>(x + r * dim, dim), dim, eps), y + r * dim, dim);
}

template <typename V>
__attribute__((always_inline)) inline void axpy_lanes(float *y, const float *x, float a, int64_t n) {
    constexpr int L = sizeof(V) / sizeof(float);
    int64_t i = 0;
    for (; i + L <= n; i += L) {
        const V v = load<V>(y + i) + load<V>(x + i) * a;
        __builtin_memcpy(y + i, &v, sizeof(V));
    }
    for (; i < n; ++i) y[i] += x[i] * a;
}

template <typename V>
__attribute__((always_inline)) inline void rope_lanes(float *v, const float *cs, int64_t half) {
    constexpr int L = sizeof(V) / sizeof(float);
    int64_t j = 0;
    for (; j + L <= half; j += L) {
        const V a = load<V>(v + j), b = load<V>(v + half + j), c = load<V>(cs + j), s = load<V>(cs + half + j);
        const V lo = a * c - b * s, hi = b * c + a * s;
        __builtin_memcpy(v + j, &lo, sizeof(V));
        __builtin_memcpy(v + half + j, &hi, sizeof(V));
    }
    for (; j < half; ++j) {
        const float a = v[j], b = v[j + half];
        v[j] = a * cs[j] - b * cs[half + j];
        v[j + half] = b * cs[j] + a * cs[half + j];
    }
}

void rmsnorm_generic(const float *x, const float *w, float eps, float *y, int64_t n_rows, int64_t dim) {
    for (int64_t r = 0; r < n_rows; ++r) {
        const float *xr = x + r * dim;
        float *yr = y + r * dim;
        const float scale = static_cast<float>(1.0 / std::sqrt(sum_squares_generic(xr, dim) / static_cast<double>(dim) + eps));
        for (int64_t i = 0; i < dim; ++i) yr[i] = w ? xr[i] * scale * w[i] : xr[i] * scale;
    }
}

void axpy_generic(float *y, const float *x, float a, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += x[i] * a;
}

void rope_generic(float *v, const float *cs, int64_t half) {
    for (int64_t j = 0; j < half; ++j) {
        const float a = v[j], b = v[j + half];
        v[j] = a * cs[j] - b * cs[half + j];
        v[j + half] = b * cs[j] + a * cs[half + j];
    }
}

void tile_generic(const float *x, int64_t ldx, int64_t n, const float *w, int64_t ldw, int64_t rows, int64_t k,
                  float *y, int64_t ldy) {
    tile<v8, 2, 4>(x, ldx, n, w, ldw, rows, k, y, ldy);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DG_X86_KERNELS 1
__attribute__((target("avx2,fma"))) void tile_avx2(const float *x, int64_t ldx, int64_t n, const float *w, int64_t ldw,
                                                   int64_t rows, int64_t k, float *y, int64_t ldy) {
    tile<v8, 2, 4>(x, ldx, n, w, ldw, rows, k, y, ldy);  // 8 accumulators + 6 loads of 16 registers
}

__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) void tile_avx512(const float *x, int64_t ldx, int64_t n,
                                                                          const float *w, int64_t ldw, int64_t rows,
                                                                          int64_t k, float *y, int64_t ldy) {
    tile<v16, 4, 4>(x, ldx, n, w, ldw, rows, k, y, ldy);  // 16 accumulators + 8 loads of 32 registers
}

__attribute__((target("avx2,fma"))) void accumulate_avx2(const float *p, int64_t ldp, int64_t nb, const float *v,
                                                         int64_t ldv, int64_t n, int64_t d, float *o, int64_t ldo) {
    accumulate<v8, 2, 4>(p, ldp, nb, v, ldv, n, d, o, ldo);  // 8 sums + 4 loads
}

__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) void accumulate_avx512(const float *p, int64_t ldp, int64_t nb,
                                                                                const float *v, int64_t ldv, int64_t n,
                                                                                int64_t d, float *o, int64_t ldo) {
    accumulate<v16, 4, 4>(p, ldp, nb, v, ldv, n, d, o, ldo);  // 16 sums + 4 loads
}

__attribute__((target("avx2,fma"))) void gelu_avx2(const float *gate, const float *up, float *out, int64_t n) {
    gelu_lanes<v8>(gate, up, out, n);
}

__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) void gelu_avx512(const float *gate, const float *up, float *out,
                                                                          int64_t n) {
    gelu_lanes<v16>(gate, up, out, n);
}

__attribute__((target("avx2,fma"))) void softcap_avx2(float *x, int64_t n, float cap) { softcap_lanes<v8>(x, n, cap); }

__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) void softcap_avx512(float *x, int64_t n, float cap) {
    softcap_lanes<v16>(x, n, cap);
}

__attribute__((target("avx2,fma"))) double sum_squares_avx2(const float *x, int64_t n) { return sum_squares_lanes<v8>(x, n); }

__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) double sum_squares_avx512(const float *x, int64_t n) {
    return sum_squares_avx512_lanes(x, n);
}

__attribute__((target("avx2,fma"))) void softmax_avx2(float *x, int64_t n) { softmax_lanes<v8>(x, n); }

__attribute__((target("avx2,fma"))) float max_value_avx2(const float *x, int64_t n) { return max_lanes<v8>(x, n); }

__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) float max_value_avx512(const float *x, int64_t n) {
    return max_lanes<v16>(x, n);
}

__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) void softmax_avx512(float *x, int64_t n) {
    softmax_lanes<v16>(x, n);
}

__attribute__((target("avx2,fma"))) double exp_sum_avx2(const float *x, int64_t n, float shift, float scale, float *out) {
    return exp_lanes_sum<v8>(x, n, shift, scale, out);
}

#ifdef DG_AVX512_REDUCE
// exp_sum on AVX-512: the lane sums of exp_lanes_sum<v16> with the last partial vector masked
// instead of a scalar tail (std::exp per element cost as much as the vectors of a 511-key row),
// and each half widened to double by one conversion (GCC's vector-extension widening went through
// extracts and inserts: 1.44 -> ~0.9 cycles per element).
__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) double exp_sum_avx512(const float *x, int64_t n, float shift,
                                                                             float scale, float *out) {
    __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
    const __m512 sc = _mm512_set1_ps(scale);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n - i)) - 1);
        v16 v;
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
        __builtin_memcpy(&v, &xv, sizeof(v));
        const v16 e = exp_lanes<v16>(v - shift);
        __m512 ev;
        __builtin_memcpy(&ev, &e, sizeof(ev));
        ev = _mm512_maskz_mov_ps(m, ev);  // lanes past n add nothing
        lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(ev)));
        hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(ev), 1))));
        if (out) _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(ev, sc));
    }
    alignas(64) double l[16];
    _mm512_store_pd(l, lo);
    _mm512_store_pd(l + 8, hi);
    double total = 0.0;
    for (int j = 0; j < 16; ++j) total += l[j];  // DoubleLanes::total's order
    return total;
}
#else
__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) double exp_sum_avx512(const float *x, int64_t n, float shift,
                                                                             float scale, float *out) {
    return exp_lanes_sum<v16>(x, n, shift, scale, out);
}
#endif
__attribute__((target("avx2,fma"))) void rmsnorm_avx2(const float *x, const float *w, float eps, float *y, int64_t n_rows,
                                                      int64_t dim) {
    rmsnorm_lanes<v8>(x, w, eps, y, n_rows, dim);
}

__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) void rmsnorm_avx512(const float *x, const float *w, float eps, float *y,
                                                                             int64_t n_rows, int64_t dim) {
    for (int64_t r = 0; r < n_rows; ++r)
        rmsnorm_scale_row<v16>(x + r * dim, w, rms_scale(sum_squares_avx512_lanes(x + r * dim, dim), dim, eps), y + r * dim, dim);
}

__attribute__((target("avx2,fma"))) void axpy_avx2(float *y, const float *x, float a, int64_t n) { axpy_lanes<v8>(y, x, a, n); }

__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) void axpy_avx512(float *y, const float *x, float a, int64_t n) {
    axpy_lanes<v16>(y, x, a, n);
}

__attribute__((target("avx2,fma"))) void rope_avx2(float *v, const float *cs, int64_t half) { rope_lanes<v8>(v, cs, half); }

__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) void rope_avx512(float *v, const float *cs, int64_t half) {
    rope_lanes<v16>(v, cs, half);
}
#endif

}  // namespace

void rmsnorm_rows(const float *x, const float *w, float eps, float *y, int64_t n_rows, int64_t dim) {
#ifdef DG_X86_KERNELS
    switch (active_isa()) {
        case Isa::Avx512: return rmsnorm_avx512(x, w, eps, y, n_rows, dim);
        case Isa::Avx2:
        case Isa::AvxVnni: return rmsnorm_avx2(x, w, eps, y, n_rows, dim);
        case Isa::Generic: break;
    }
#endif
    rmsnorm_generic(x, w, eps, y, n_rows, dim);
}

void axpy(float *y, const float *x, float a, int64_t n) {
#ifdef DG_X86_KERNELS
    switch (active_isa()) {
        case Isa::Avx512: return axpy_avx512(y, x, a, n);
        case Isa::Avx2:
        case Isa::AvxVnni: return axpy_avx2(y, x, a, n);
        case Isa::Generic: break;
    }
#endif
    axpy_generic(y, x, a, n);
}

void rope_rotate(float *v, const float *cs, int64_t half) {
#ifdef DG_X86_KERNELS
    switch (active_isa()) {
        case Isa::Avx512: return rope_avx512(v, cs, half);
        case Isa::Avx2:
        case Isa::AvxVnni: return rope_avx2(v, cs, half);
        case Isa::Generic: break;
    }
#endif
    rope_generic(v, cs, half);
}

void gelu_tanh_mul(const float *gate, const float *up, float *out, int64_t n) {
#ifdef DG_X86_KERNELS
    switch (active_isa()) {
        case Isa::Avx512: return gelu_avx512(gate, up, out, n);
        case Isa::Avx2:
        case Isa::AvxVnni: return gelu_avx2(gate, up, out, n);
        case Isa::Generic: break;
    }
#endif
    gelu_generic(gate, up, out, n);
}

void dot_tile(const float *x, int64_t ldx, int64_t n_tokens, const float *w, int64_t ldw, int64_t n_rows, int64_t k,
              float *y, int64_t ldy) {
#ifdef DG_X86_KERNELS
    switch (active_isa()) {
        case Isa::Avx512: return tile_avx512(x, ldx, n_tokens, w, ldw, n_rows, k, y, ldy);
        case Isa::Avx2:
        case Isa::AvxVnni: return tile_avx2(x, ldx, n_tokens, w, ldw, n_rows, k, y, ldy);
        case Isa::Generic: break;
    }
#endif
    tile_generic(x, ldx, n_tokens, w, ldw, n_rows, k, y, ldy);
}

void accumulate_rows(const float *p, int64_t ldp, int64_t nb, const float *v, int64_t ldv, int64_t n, int64_t d,
                     float *o, int64_t ldo) {
#ifdef DG_X86_KERNELS
    switch (active_isa()) {
        case Isa::Avx512: return accumulate_avx512(p, ldp, nb, v, ldv, n, d, o, ldo);
        case Isa::Avx2:
        case Isa::AvxVnni: return accumulate_avx2(p, ldp, nb, v, ldv, n, d, o, ldo);
        case Isa::Generic: break;
    }
#endif
    accumulate_generic(p, ldp, nb, v, ldv, n, d, o, ldo);
}

void softcap(float *x, int64_t n, float cap) {
#ifdef DG_X86_KERNELS
    switch (active_isa()) {
        case Isa::Avx512: return softcap_avx512(x, n, cap);
        case Isa::Avx2:
        case Isa::AvxVnni: return softcap_avx2(x, n, cap);
        case Isa::Generic: break;
    }
#endif
    softcap_generic(x, n, cap);
}

double sum_squares(const float *x, int64_t n) {
#ifdef DG_X86_KERNELS
    switch (active_isa()) {
        case Isa::Avx512: return sum_squares_avx512(x, n);
        case Isa::Avx2:
        case Isa::AvxVnni: return sum_squares_avx2(x, n);
        case Isa::Generic: break;
    }
#endif
    return sum_squares_generic(x, n);
}

void softmax(float *x, int64_t n) {
#ifdef DG_X86_KERNELS
    switch (active_isa()) {
        case Isa::Avx512: return softmax_avx512(x, n);
        case Isa::Avx2:
        case Isa::AvxVnni: return softmax_avx2(x, n);
        case Isa::Generic: break;
    }
#endif
    softmax_generic(x, n);
}

float max_value(const float *x, int64_t n) {
#ifdef DG_X86_KERNELS
    switch (active_isa()) {
        case Isa::Avx512: return max_value_avx512(x, n);
        case Isa::Avx2:
        case Isa::AvxVnni: return max_value_avx2(x, n);
        case Isa::Generic: break;
    }
#endif
    return max_value_generic(x, n);
}

double exp_sum(const float *x, int64_t n, float shift, float scale, float *out) {
#ifdef DG_X86_KERNELS
    switch (active_isa()) {
        case Isa::Avx512: return exp_sum_avx512(x, n, shift, scale, out);
        case Isa::Avx2:
        case Isa::AvxVnni: return exp_sum_avx2(x, n, shift, scale, out);
        case Isa::Generic: break;
    }
#endif
    return exp_sum_generic(x, n, shift, scale, out);
}

}  // namespace dg
