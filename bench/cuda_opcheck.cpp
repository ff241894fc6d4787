// Every op of backend.h on the CUDA backend against the CPU backend, on fresh random inputs, for
// each weight and cache type and odd shapes (one row, rows that fill no tile, experts without
// tokens), outputs poisoned (NaN) before each run. Every check runs on its own: an exception or a
// mismatch is one failed row, written to OUT/failures.txt with op, type, shape and error, and the
// run goes on. Prints one table (op, type, shape, error, tolerance, time of the whole check: inputs
// made on the host included) and exits 1 when any check failed, 3 when there is no CUDA device.
// Built with the CUDA backend (cmake/cuda.cmake); run by bench/gpu_check.sh. The matrix shapes
// take both the per-row reference kernels (one row) and the tiled ones (67 and 256 rows).
// --bench-full times the ops of one step at the 26B-A4B shapes instead (bench_full below; --reps N
// timed runs of each after a warm-up, 5 by default, 0 for the warm-up alone: gpu_check.sh --ncu);
// Kernel sets (DGEMMA_CUDA_KERNELS): every op is checked with the float32 tiles ('float'), then the
// matrix ops again with the per-row reference kernels and, where the device has compute capability
// 8.0, the bf16 tensor-core tiles (held to 1e-2); under DGEMMA_CUDA_INT8=1 the tensor set's Q4_K,
// Q6_K, Q5_0 and Q8_0 products run on int8 tiles, and its matmul-int8 rows hold them to the CPU's
// portable integer dot products bit for bit; under DGEMMA_CUDA_FLASH=1 its decoder attention is flash
// attention on bf16 tensor cores, held to the set's 1e-2. --sets LIST (comma-separated, default
// float,reference,tensor) checks those sets alone; --no-reference-kernels is --sets float.
// --only OP runs the checks of one op (CI: --self-test --only matmul-reload, the CPU reference).
//
// Tolerances (relative L2 error of CUDA against CPU): float paths 1e-5 (same operations, other
// summation order), products with quantized weights included, since the CPU reference gets their
// dequantized values (g_dequantized_reference); attention 1e-4 (online softmax against two
// passes). The tensor set (bf16 products, tf32 attention) is held to 1e-2 throughout. Embedding lookups, cache stores, copies, route ids and the whole sampler must match
// exactly (the sampler bit for bit, processed logits included; any NaN equals any NaN).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "backend.h"
#include "cuda/backend_cuda.h"
#include "error.h"
#include "quant/k_quants.h"
#include "quant/q4_q5.h"
#include "quant/q8_0.h"
#include "sampler_math.h"

using namespace dg;

namespace {

struct Row {
    std::string op, type, shape, error;
    double err = 0, tol = 0, ms = 0;
    bool ok = false;
};

using Clock = std::chrono::steady_clock;

// A tensor on a backend, freed with it.
struct Buf {
    Backend *be = nullptr;
    Tensor t;
    std::vector<uint8_t> host;  // the mapped-file stand-in of a weight (the CPU uses it in place)
    Buf() = default;
    Buf(const Buf &) = delete;
    Buf(Buf &&o) noexcept : be(o.be), t(o.t), host(std::move(o.host)) { o.t = Tensor{}; }
    Buf &operator=(Buf &&o) noexcept {
        std::swap(be, o.be);
        std::swap(t, o.t);
        std::swap(host, o.host);
        return *this;
    }
    ~Buf() {
        if (be && t && host.empty()) be->free(t);
    }
};

Buf tensor(Backend &be, TensorType type, const void *data, int64_t ne0, int64_t ne1 = 1, int64_t ne2 = 1) {
    Buf b;
    b.be = &be;
    b.t = be.alloc(type, ne0, ne1, ne2);
    if (data) be.upload(b.t, data, b.t.bytes());
    return b;
}

Buf poisoned(Backend &be, TensorType type, int64_t ne0, int64_t ne1 = 1) {
    Buf b = tensor(be, type, nullptr, ne0, ne1);
    std::vector<uint8_t> nan(b.t.bytes(), 0xff);  // NaN as float, -1 as an integer
    be.upload(b.t, nan.data(), nan.size());
    return b;
}

// The reference backend, and whether it gets quantized weights as their dequantized F32 values.
// The CUDA kernels multiply dequantized weights by float activations, while the CPU quantizes the
// activations to Q8_0/Q8_K for its integer dot products (an error near 0.5 % per product): against
// the CPU on the dequantized weights, quantized types are held to the float tolerance. --self-test
// (a second CPU backend in CUDA's place) compares like with like instead.
const Backend *g_reference = nullptr;
bool g_dequantized_reference = false;
// The least tolerance of the matrix products: 0, or 1e-2 for the bf16 tensor-core set (tile_mma.cuh).
double g_matrix_tol_floor = 0;
// Whether the checked backend runs Q4_K, Q6_K, Q5_0 and Q8_0 on int8 tensor cores (the tensor set under
// DGEMMA_CUDA_INT8=1): their products are then the CPU's portable integer dot products bit for bit.
bool g_int8_checked = false;
// Whether the checked backend was asked for the warpgroup products (the tensor set under
// DGEMMA_CUDA_WGMMA=1): then the wide rows below run, whose shapes take those kernels.
bool g_wgmma_checked = false;

// The CPU's portable integer dot product of a weight row of an int8-tile type against activations
// quantized by its reference rule (the dispatched kernels may group their float sums otherwise).
bool int8_tile_type(TensorType t) {
    return t == TensorType::Q4_K || t == TensorType::Q6_K || t == TensorType::Q5_0 || t == TensorType::Q8_0;
}
std::vector<float> portable_products(TensorType type, const std::vector<uint8_t> &w, int64_t K, int64_t R,
                                     const std::vector<float> &x, int64_t n) {
    const TypeTraits &tt = *type_traits(type), &xt = *type_traits(tt.vec_dot_type);
    const auto dot = type == TensorType::Q4_K   ? vec_dot_q4_k_q8_k
                     : type == TensorType::Q6_K ? vec_dot_q6_k_q8_k
                     : type == TensorType::Q5_0 ? vec_dot_q5_0_q8_0
                                                : vec_dot_q8_0_q8_0;
    std::vector<uint8_t> xq(row_bytes(xt, K));
    std::vector<float> y(static_cast<size_t>(R * n));
    for (int64_t t = 0; t < n; ++t) {
        xt.from_float(x.data() + t * K, xq.data(), K);
        for (int64_t r = 0; r < R; ++r) y[t * R + r] = dot(w.data() + static_cast<size_t>(r) * row_bytes(tt, K), xq.data(), K);
    }
    return y;
}

Buf weight(Backend &be, TensorType type, const std::vector<float> &values, int64_t cols, int64_t rows, int64_t n_expert = 1) {
    const TypeTraits &tt = *type_traits(type);
    const int64_t n_rows = rows * n_expert;
    std::vector<uint8_t> q(row_bytes(tt, cols) * static_cast<size_t>(n_rows));
    for (int64_t r = 0; r < n_rows; ++r)
        tt.from_float(values.data() + r * cols, q.data() + static_cast<size_t>(r) * row_bytes(tt, cols), cols);
    Buf b;
    b.be = &be;
    if (&be == g_reference && g_dequantized_reference && tt.block_size > 1) {
        std::vector<float> dq(static_cast<size_t>(cols * n_rows));
        for (int64_t r = 0; r < n_rows; ++r)
            tt.to_float(q.data() + static_cast<size_t>(r) * row_bytes(tt, cols), dq.data() + r * cols, cols);
        b.host.resize(dq.size() * sizeof(float));
        std::memcpy(b.host.data(), dq.data(), b.host.size());
        type = TensorType::F32;
    } else {
        b.host = std::move(q);
    }
    b.t = be.load_weight(make_tensor(b.host.data(), type, cols, rows, n_expert));
    return b;
}

template <typename T>
std::vector<T> fetch(Backend &be, const Tensor &t) {
    std::vector<T> out(t.bytes() / sizeof(T));
    be.download(t, out.data(), t.bytes());
    return out;
}

std::vector<float> randn(std::mt19937_64 &rng, size_t n, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (float &x : v) x = d(rng);
    return v;
}

// Relative L2 error of a against the reference b; infinity when a holds a non-finite value b lacks.
double rel_err(const std::vector<float> &a, const std::vector<float> &b) {
    if (a.size() != b.size()) return INFINITY;
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        if (std::isfinite(a[i]) != std::isfinite(b[i])) return INFINITY;
        if (!std::isfinite(b[i])) continue;
        num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
        den += double(b[i]) * b[i];
    }
    return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

template <typename T>
double mismatches(const std::vector<T> &a, const std::vector<T> &b) {
    if (a.size() != b.size()) return INFINITY;
    double n = 0;
    // Bit for bit, except that any NaN equals any NaN: the device's float arithmetic gives the
    // canonical NaN where x86 keeps the operand's payload (a NaN logit divided by the temperature).
    for (size_t i = 0; i < a.size(); ++i) n += std::memcmp(&a[i], &b[i], sizeof(T)) != 0 && !(a[i] != a[i] && b[i] != b[i]);
    return n;
}

const TensorType kWeightTypes[] = {TensorType::F32,  TensorType::F16,  TensorType::BF16, TensorType::Q8_0,
                                   TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1,
                                   TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K};
const TensorType kCacheTypes[] = {TensorType::F32, TensorType::F16, TensorType::BF16};

bool quantized(TensorType t) { return t != TensorType::F32 && t != TensorType::F16 && t != TensorType::BF16; }

struct Harness {
    Harness(Backend &c, Backend &g) : cpu(c), gpu(g) {}
    Backend &cpu, &gpu;
    std::vector<Row> rows;
    std::ofstream failures;
    uint64_t seed = 1;
    std::string type_suffix;  // "-ref" while checking the CUDA reference kernels
    std::string only;         // --only OP: run the checks of that op alone

    // body(be) runs the op on one backend and returns its outputs as floats; compare() decides.
    void check(const std::string &op, const std::string &type, const std::string &shape, double tol,
               const std::function<std::vector<float>(Backend &, std::mt19937_64 &)> &body, bool exact = false) {
        if (!only.empty() && op != only) return;
        Row r;
        r.op = op;
        r.type = type + type_suffix;
        r.shape = shape;
        r.tol = tol;
        const uint64_t s = seed++;
        try {
            std::mt19937_64 rc(s), rg(s);
            const std::vector<float> ref = body(cpu, rc);
            body(gpu, rg);  // warm-up (module load, first-touch)
            gpu.synchronize();
            std::mt19937_64 rg2(s);
            const auto t0 = Clock::now();
            const std::vector<float> out = body(gpu, rg2);
            gpu.synchronize();
            r.ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
            r.err = exact ? mismatches(out, ref) : rel_err(out, ref);
            r.ok = exact ? r.err == 0 : r.err <= tol;
            if (!r.ok) r.error = exact ? std::to_string(int64_t(r.err)) + " values differ" : "relative error above tolerance";
        } catch (const std::exception &e) {
            r.err = INFINITY;
            r.error = e.what();
        }
        if (!r.ok) failures << r.op << "\t" << r.type << "\t" << r.shape << "\t" << r.error << "\terr=" << r.err << "\n";
        failures.flush();
        // Progress as it goes, so a run stopped by its time limit still says how far it got.
        std::printf("%s %s %s %s %.3g %.3f ms\n", r.ok ? "pass" : "FAIL", op.c_str(), type.c_str(), shape.c_str(), r.err, r.ms);
        std::fflush(stdout);
        rows.push_back(r);
    }
};

// A count of differing values that must be 0 on every backend, the reference included: a throw
// fails the check (comparing two backends' counts would pass two that are wrong alike).
float must_be_zero(double differing, const char *what) {
    if (differing != 0) throw std::runtime_error(std::to_string(static_cast<int64_t>(differing)) + " values: " + what);
    return 0.0f;
}

std::string dims(std::initializer_list<int64_t> v) {
    std::string s;
    for (int64_t x : v) s += (s.empty() ? "" : "x") + std::to_string(x);
    return s;
}

// While alive, the reference gets quantized weights as they are (the CPU's integer products), when on.
struct QuantizedReference {
    bool saved;
    explicit QuantizedReference(bool on) : saved(g_dequantized_reference) {
        if (on) g_dequantized_reference = false;
    }
    ~QuantizedReference() { g_dequantized_reference = saved; }
};

// A product's check: fresh weights of type wt [R][K] and inputs [n][K], the output poisoned.
std::function<std::vector<float>(Backend &, std::mt19937_64 &)> product_body(TensorType wt, int64_t K, int64_t R, int64_t n) {
    return [=](Backend &be, std::mt19937_64 &rng) {
        Buf w = weight(be, wt, randn(rng, K * R), K, R);
        Buf x = tensor(be, TensorType::F32, randn(rng, K * n).data(), K, n);
        Buf y = poisoned(be, TensorType::F32, R, n);
        be.reserve(PassLimits{n, 1, K, K, 1, 1, 1, 1, 0, 0});
        be.matmul(w.t, x.t, y.t);
        return fetch<float>(be, y.t);
    };
}

// DGEMMA_CUDA_WGMMA=1 (cuda/wgmma.cu): the vocabulary-sized products on warpgroup instructions. A
// product takes them from 128 x (multiprocessors) rows (wg_matmul_runs): 17000 rows (a partial last
// row tile) over 300 tokens (a partial second token tile) does on a 132-multiprocessor card, for the
// logits' types (Q6_K in the _M mixes, Q8_0, the float types) and one more of each block size; the
// soft embedding takes them at every shape (these rows: partial column tiles, two 256-token pieces).
// The wgmma-active row fails when the backend runs the other kernels instead (another card, or a
// library without sm_90a code), so that passing rows never stand for kernels that did not run
// (--self-test with DGEMMA_CUDA_WGMMA=1 rehearses the other rows, CPU against CPU, without it).
void warpgroup_ops(Harness &h, bool require_active = true) {
    if (require_active)
        h.check("wgmma-active", "-", "-", 0, [&](Backend &be, std::mt19937_64 &) {
            return std::vector<float>{&be == &h.gpu ? float(be.name().find("warpgroup products") != std::string::npos) : 1.0f};
        }, true);
    for (TensorType wt : {TensorType::Q6_K, TensorType::Q4_K, TensorType::Q8_0, TensorType::Q5_0, TensorType::BF16,
                          TensorType::F16, TensorType::F32}) {
        const char *tn = type_traits(wt)->name;
        const int64_t K = 768, R = 17000, n = 300;
        const double tol = std::max(g_matrix_tol_floor, quantized(wt) && !g_dequantized_reference ? 2e-2 : 1e-5);
        h.check("matmul-wide", tn, dims({K, R, n}), tol, product_body(wt, K, R, n));
        if (wt == TensorType::Q6_K)
            h.check("matmul-wide", std::string(tn) + "-softcap", dims({K, R, n}), tol, [&](Backend &be, std::mt19937_64 &rng) {
                Buf w = weight(be, wt, randn(rng, K * R, 0.5f), K, R);
                Buf x = tensor(be, TensorType::F32, randn(rng, K * n).data(), K, n);
                Buf y = poisoned(be, TensorType::F32, R, n);
                be.reserve(PassLimits{n, 1, K, K, 1, 1, 1, 1, 0, 0});
                be.matmul_softcap(w.t, x.t, y.t, 30.0f);
                return fetch<float>(be, y.t);
            });
        const int64_t E = 400, V = 20000, m = 300;
        h.check("soft_embed-wide", tn, dims({E, V, m}), std::max(g_matrix_tol_floor, 1e-5), [&](Backend &be, std::mt19937_64 &rng) {
            Buf w = weight(be, wt, randn(rng, E * V), E, V);
            Buf z = tensor(be, TensorType::F32, randn(rng, V * m, 3.0f).data(), V, m);
            Buf o = poisoned(be, TensorType::F32, E, m);
            be.reserve(PassLimits{m, 1, E, E, 1, 1, 1, 1, 0, V});
            be.soft_embed(w.t, z.t, 16.0f, o.t);
            return fetch<float>(be, o.t);
        });
    }
}

void matrix_ops(Harness &h) {
    // Products back to back over one input convert it once (the CUDA backend keeps the converted rows
    // until another op): each must give what it gives alone (after another op), bit for bit, over the
    // step's weight types (both int8 activation formats, bf16), a prefix of the rows (the queries of a
    // last layer) and an input changed by an op between two products.
    h.check("matmul-shared-input", "Q4_K-Q6_K-Q5_0-Q8_0-F16", dims({2816, 384, 256}), 0, [&](Backend &be, std::mt19937_64 &rng) {
        const int64_t K = 2816, R = 384, n = 256, m = 100;
        const TensorType types[] = {TensorType::Q4_K, TensorType::Q6_K, TensorType::Q5_0, TensorType::Q4_K, TensorType::Q8_0,
                                    TensorType::F16};
        std::vector<Buf> w;
        for (TensorType t : types) w.push_back(weight(be, t, randn(rng, K * R), K, R));
        const std::vector<float> xs = randn(rng, K * n), ds = randn(rng, K * n);
        std::vector<float> sum(xs.size());
        for (size_t i = 0; i < xs.size(); ++i) sum[i] = xs[i] + ds[i];
        Buf x = tensor(be, TensorType::F32, xs.data(), K, n), d = tensor(be, TensorType::F32, ds.data(), K, n);
        Buf x_alone = tensor(be, TensorType::F32, xs.data(), K, n), xd = tensor(be, TensorType::F32, sum.data(), K, n);
        Buf other = tensor(be, TensorType::F32, nullptr, 64);
        be.reserve(PassLimits{n, 1, K, K, 1, 1, 1, 1, 0, 0});
        const size_t P = std::size(types);
        std::vector<Buf> chained, alone;
        for (size_t i = 0; i <= P + 1; ++i) {
            const int64_t rows = i == P ? m : n;
            chained.push_back(poisoned(be, TensorType::F32, R, rows));
            alone.push_back(poisoned(be, TensorType::F32, R, rows));
        }
        for (size_t i = 0; i < P; ++i) be.matmul(w[i].t, x.t, chained[i].t);
        be.matmul(w[0].t, x.t.rows(0, m), chained[P].t);
        be.add(x.t, d.t);
        be.matmul(w[3].t, x.t, chained[P + 1].t);
        for (size_t i = 0; i <= P + 1; ++i) {
            be.zero(other.t);  // another op first: nothing kept
            const Tensor in = i == P ? x_alone.t.rows(0, m) : (i == P + 1 ? xd.t : x_alone.t);
            be.matmul(w[i == P ? 0 : (i == P + 1 ? 3 : i)].t, in, alone[i].t);
        }
        double differing = 0;
        for (size_t i = 0; i <= P + 1; ++i) differing += mismatches(fetch<float>(be, chained[i].t), fetch<float>(be, alone[i].t));
        return std::vector<float>{must_be_zero(differing, "products sharing an input against each alone")};
    }, true);
    for (TensorType wt : kWeightTypes) {
        const char *tn = type_traits(wt)->name;
        // On the int8 tiles this type's products take the CPU's quantized activations and integer sums:
        // held against the CPU backend on the same quantized weights, to its kernels' float order (1e-5:
        // its dispatched kernels sum the blocks' terms otherwise than the portable vec_dot, measured
        // 0.4-1.9e-7 apart on this harness's shapes, 2026-12-07; the experts 1e-4: gelu's last bits move an
        // activation code now and then), not against their
        // dequantized values, from which both differ by the activations' quantization (0.7 % a product).
        const bool int8 = g_int8_checked && int8_tile_type(wt);
        const double tol = int8 ? 1e-5 : std::max(g_matrix_tol_floor, quantized(wt) && !g_dequantized_reference ? 2e-2 : 1e-5);
        for (auto [K, R, n] : {std::tuple<int64_t, int64_t, int64_t>{256, 37, 1}, {512, 300, 67}, {2816, 2816, 256}}) {
            const QuantizedReference quantized_reference(int8);
            h.check("matmul", tn, dims({K, R, n}), tol, product_body(wt, K, R, n));
        }
        // The logits' product with its soft cap (Backend::matmul_softcap; the CPU runs matmul, then
        // softcap): against the CPU, and against the two ops on the same backend bit for bit, at a shape
        // the tensor set splits along k (the cap then applies to the slices' sum).
        {
            const int64_t K = 2816, R = 2048, n = 256;
            const QuantizedReference quantized_reference(int8);
            auto capped = [&, K, R, n](Backend &be, std::mt19937_64 &rng, bool fused) {
                Buf w = weight(be, wt, randn(rng, K * R, 0.5f), K, R);
                Buf x = tensor(be, TensorType::F32, randn(rng, K * n).data(), K, n);
                Buf y = poisoned(be, TensorType::F32, R, n);
                be.reserve(PassLimits{n, 1, K, K, 1, 1, 1, 1, 0, 0});
                if (fused) {
                    be.matmul_softcap(w.t, x.t, y.t, 30.0f);
                } else {
                    be.matmul(w.t, x.t, y.t);
                    be.softcap(y.t, 30.0f);
                }
                return fetch<float>(be, y.t);
            };
            h.check("matmul_softcap", tn, dims({K, R, n}), tol, [&](Backend &be, std::mt19937_64 &rng) { return capped(be, rng, true); });
            h.check("matmul_softcap", std::string(tn) + "-same-bits", dims({K, R, n}), 0, [&](Backend &be, std::mt19937_64 &rng) {
                std::mt19937_64 again = rng;
                const std::vector<float> fused = capped(be, rng, true), plain = capped(be, again, false);
                return std::vector<float>{must_be_zero(mismatches(fused, plain), "matmul_softcap against matmul, softcap")};
            }, true);
        }
        // A row's result may not depend on its pass's other rows (a batch gives each sequence what it
        // gets alone): 16 rows alone (the 16-wide tiles) against the same rows among 80 (64-wide).
        h.check("matmul-rows", tn, dims({512, 300, 16, 80}), 0, [&](Backend &be, std::mt19937_64 &rng) {
            const int64_t K = 512, R = 300;
            Buf w = weight(be, wt, randn(rng, K * R), K, R);
            const std::vector<float> xs = randn(rng, K * 80);
            Buf x16 = tensor(be, TensorType::F32, xs.data(), K, 16), x80 = tensor(be, TensorType::F32, xs.data(), K, 80);
            Buf y16 = poisoned(be, TensorType::F32, R, 16), y80 = poisoned(be, TensorType::F32, R, 80);
            be.reserve(PassLimits{80, 1, K, K, 1, 1, 1, 1, 0, 0});
            be.matmul(w.t, x16.t, y16.t);
            be.matmul(w.t, x80.t, y80.t);
            const std::vector<float> a = fetch<float>(be, y16.t), b = fetch<float>(be, y80.t);
            return std::vector<float>{must_be_zero(mismatches(a, std::vector<float>(b.begin(), b.begin() + a.size())), "rows differ alone and among 80")};
        }, true);
        // Host bytes that held one weight and then another (the first one's memory released and
        // reused) give the second weight's products: no copy or repacked layout of the first may
        // be found for them. The reloaded weight against the same values loaded elsewhere, bit for bit.
        h.check("matmul-reload", tn, dims({512, 300, 67}), 0, [&](Backend &be, std::mt19937_64 &rng) {
            const int64_t K = 512, R = 300, n = 67;
            Buf w = weight(be, wt, randn(rng, K * R), K, R), fresh = weight(be, wt, randn(rng, K * R), K, R);
            Buf x = tensor(be, TensorType::F32, randn(rng, K * n).data(), K, n);
            Buf y = poisoned(be, TensorType::F32, R, n), y_fresh = poisoned(be, TensorType::F32, R, n);
            be.reserve(PassLimits{n, 1, K, K, 1, 1, 1, 1, 0, 0});
            be.matmul(w.t, x.t, y.t);  // the first weight in use (and any lazily made copy of it)
            std::memcpy(w.host.data(), fresh.host.data(), w.host.size());
            w.t = be.load_weight(make_tensor(w.host.data(), w.t.type_id, K, R));
            be.matmul(w.t, x.t, y.t);
            be.matmul(fresh.t, x.t, y_fresh.t);
            return std::vector<float>{must_be_zero(mismatches(fetch<float>(be, y.t), fetch<float>(be, y_fresh.t)), "outputs differ from the same weight loaded afresh")};
        }, true);
        // Int8 tiles: the CPU's integer sums and its float combination, so bit for bit against its
        // portable reference (not the CPU backend, whose dispatched kernels may sum in another order).
        // k of whole tile units and not (Q5_0, Q8_0: 704 = 2.75 units), rows ending inside a tile;
        // Q6_K's rows of 210-byte blocks at both shifts (odd super-block counts).
        const bool k_quant = wt == TensorType::Q4_K || wt == TensorType::Q6_K;
        if (g_int8_checked && int8_tile_type(wt))
            for (auto [K, R, n] : {std::tuple<int64_t, int64_t, int64_t>{k_quant ? 256 : 64, 37, 1},
                                   {k_quant ? 768 : 704, 300, 67}, {2816, 700, 256}}) {
                h.check("matmul-int8", tn, dims({K, R, n}), 0, [&](Backend &be, std::mt19937_64 &rng) {
                    const TypeTraits &tt = *type_traits(wt);
                    const std::vector<float> wv = randn(rng, K * R), xv = randn(rng, K * n);
                    std::vector<uint8_t> q(row_bytes(tt, K) * static_cast<size_t>(R));
                    for (int64_t r = 0; r < R; ++r) tt.from_float(wv.data() + r * K, q.data() + static_cast<size_t>(r) * row_bytes(tt, K), K);
                    if (&be == g_reference) return portable_products(wt, q, K, R, xv, n);
                    Tensor w = be.load_weight(make_tensor(q.data(), wt, K, R));
                    Buf x = tensor(be, TensorType::F32, xv.data(), K, n);
                    Buf y = poisoned(be, TensorType::F32, R, n);
                    be.reserve(PassLimits{n, 1, K, K, 1, 1, 1, 1, 0, 0});
                    be.matmul(w, x.t, y.t);
                    return fetch<float>(be, y.t);
                }, true);
            }
        const int64_t V = 1000, E = 256, n = 19;
        h.check("embed", tn, dims({E, V, n}), 0, [&](Backend &be, std::mt19937_64 &rng) {
            Buf w = weight(be, wt, randn(rng, E * V), E, V);
            std::vector<int32_t> ids(n);
            for (auto &i : ids) i = int32_t(rng() % V);
            Buf it = tensor(be, TensorType::I32, ids.data(), n);
            Buf o = poisoned(be, TensorType::F32, E, n);
            be.embed(w.t, it.t, 1.7f, o.t);
            return fetch<float>(be, o.t);
        }, true);
        h.check("soft_embed", tn, dims({E, V, n}), std::max(g_matrix_tol_floor, 1e-5), [&](Backend &be, std::mt19937_64 &rng) {
            Buf w = weight(be, wt, randn(rng, E * V), E, V);
            Buf z = tensor(be, TensorType::F32, randn(rng, V * n, 3.0f).data(), V, n);
            Buf o = poisoned(be, TensorType::F32, E, n);
            be.reserve(PassLimits{n, 1, E, E, 1, 1, 1, 1, 0, V});  // n_vocab: the tensor set's probabilities
            be.soft_embed(w.t, z.t, 16.0f, o.t);
            return fetch<float>(be, o.t);
        });
        // Experts: one token (most experts empty), a ragged batch, the fused gate/up layout.
        for (auto [n_tok, fused] : {std::pair<int64_t, bool>{1, false}, {37, false}, {37, true}}) {
            const int64_t Ke = 256, F = 256, X = 8, k = 2;
            const auto moe_body = [&, n_tok = n_tok, fused = fused](Backend &be, std::mt19937_64 &rng) {
                MoeWeights mw;
                Buf gu = weight(be, wt, randn(rng, Ke * 2 * F * X, 0.2f), Ke, 2 * F, X), g2, u2;
                if (fused) {
                    mw.gate = gu.t;
                    mw.gate.ne[1] = F;
                    mw.up = mw.gate;
                    mw.up.data = gu.t.bytes_at(static_cast<size_t>(F) * gu.t.nb[1]);
                } else {
                    g2 = weight(be, wt, randn(rng, Ke * F * X, 0.2f), Ke, F, X);
                    u2 = weight(be, wt, randn(rng, Ke * F * X, 0.2f), Ke, F, X);
                    mw.gate = g2.t;
                    mw.up = u2.t;
                }
                Buf d = weight(be, wt, randn(rng, F * Ke * X, 0.2f), F, Ke, X);
                mw.down = d.t;
                std::vector<int32_t> ids(n_tok * k);
                std::vector<float> wts(n_tok * k);
                for (int64_t t = 0; t < n_tok; ++t) {
                    ids[t * k] = int32_t(rng() % X);
                    ids[t * k + 1] = int32_t((ids[t * k] + 1 + rng() % (X - 1)) % X);
                    wts[t * k] = 0.3f + float(rng() % 100) / 200.0f;
                    wts[t * k + 1] = 1.0f - wts[t * k];
                }
                Buf x = tensor(be, TensorType::F32, randn(rng, Ke * n_tok).data(), Ke, n_tok);
                Buf it = tensor(be, TensorType::I32, ids.data(), k, n_tok), wt_ = tensor(be, TensorType::F32, wts.data(), k, n_tok);
                Buf o = poisoned(be, TensorType::F32, Ke, n_tok);
                be.reserve(PassLimits{n_tok, 1, Ke, std::max(Ke, F), 1, X, k, F, 0, 0});
                be.moe(mw, x.t, it.t, wt_.t, o.t);
                return fetch<float>(be, o.t);
            };
            const std::string shape = dims({Ke, F, X, n_tok}) + (fused ? "-fused" : "");
            const QuantizedReference quantized_reference(int8);
            h.check("moe", tn, shape, int8 ? 1e-4 : std::max(g_matrix_tol_floor, quantized(wt) && !g_dequantized_reference ? 2e-2 : 1e-5),
                    moe_body);
        }
    }
    const int64_t E = 256, X = 16, n = 37, k = 4;
    for (bool ids_only : {true, false})
        h.check("route", ids_only ? "F32-ids" : "F32-weights", dims({E, X, n, k}), 1e-5, [&](Backend &be, std::mt19937_64 &rng) {
            Buf w = weight(be, TensorType::F32, randn(rng, E * X), E, X);
            Buf x = tensor(be, TensorType::F32, randn(rng, E * n).data(), E, n);
            std::vector<float> sc = randn(rng, E), pes = randn(rng, X);
            for (float &v : sc) v = 1.0f + 0.1f * v;
            Buf s = tensor(be, TensorType::F32, sc.data(), E), p = tensor(be, TensorType::F32, pes.data(), X);
            Buf ids = poisoned(be, TensorType::I32, k, n), wts = poisoned(be, TensorType::F32, k, n);
            be.reserve(PassLimits{n, 1, E, E, 1, X, k, 1, 0, 0});
            be.route(w.t, x.t, s.t, p.t, 1e-6f, int(k), ids.t, wts.t);
            if (!ids_only) return fetch<float>(be, wts.t);
            std::vector<float> out;
            for (int32_t i : fetch<int32_t>(be, ids.t)) out.push_back(float(i));
            return out;
        }, ids_only);
}

void row_ops(Harness &h) {
    for (auto [dim, n] : {std::pair<int64_t, int64_t>{64, 1}, {1000, 37}, {2816, 256}})
        for (bool with_w : {false, true})
            h.check("rmsnorm", with_w ? "F32-w" : "F32", dims({dim, n}), 1e-5, [&](Backend &be, std::mt19937_64 &rng) {
                Buf x = tensor(be, TensorType::F32, randn(rng, dim * n).data(), dim, n);
                Buf w = tensor(be, TensorType::F32, randn(rng, dim).data(), dim);
                Buf y = poisoned(be, TensorType::F32, dim, n);
                be.rmsnorm(x.t, with_w ? &w.t : nullptr, 1e-6f, y.t);
                return fetch<float>(be, y.t);
            });
    for (auto [heads, d, n_rot, n] : {std::tuple<int, int, int, int64_t>{4, 64, 16, 1}, {4, 128, 128, 37}, {16, 256, 64, 256}})
        h.check("rope", "F32", dims({heads, d, n_rot, n}), 1e-5, [&](Backend &be, std::mt19937_64 &rng) {
            Buf x = tensor(be, TensorType::F32, randn(rng, heads * d * n).data(), int64_t(heads) * d, n);
            std::vector<int32_t> pos(n);
            for (int64_t i = 0; i < n; ++i) pos[i] = int32_t(rng() % 5000);
            std::vector<float> f(n_rot / 2);
            for (int j = 0; j < n_rot / 2; ++j) f[j] = j % 5 == 4 ? 0.0f : std::pow(10000.0f, -2.0f * j / n_rot);
            Buf p = tensor(be, TensorType::I32, pos.data(), n), fr = tensor(be, TensorType::F32, f.data(), n_rot / 2);
            be.reserve(PassLimits{n, 1, d, d, d, 1, 1, 1, 0, 0});
            be.rope(x.t, heads, d, p.t, fr.t, n_rot);
            return fetch<float>(be, x.t);
        });
    // The composite ops (Backend::add_rmsnorm, rmsnorm_rope): the CPU runs their defaults, the ops
    // they name; each row returns the residual and the normed output. The "-same-bits" rows run the
    // op and its default's ops on one backend and count the values that differ: 0 on every backend.
    for (auto [dim, n] : {std::pair<int64_t, int64_t>{64, 1}, {1000, 37}, {2816, 256}})
        for (int variant = 0; variant < 8; ++variant) {
            const bool scaled = variant & 1, with_w = variant & 2, d_normed = variant & 4;
            auto run = [&, dim = dim, n = n](Backend &be, std::mt19937_64 &rng, bool fused, bool in_place) {
                Buf h = tensor(be, TensorType::F32, randn(rng, dim * n, 2.0f).data(), dim, n);
                Buf d = tensor(be, TensorType::F32, randn(rng, dim * n).data(), dim, n);
                Buf w = tensor(be, TensorType::F32, randn(rng, dim).data(), dim);
                Buf dw = tensor(be, TensorType::F32, randn(rng, dim).data(), dim);
                std::vector<int32_t> mode(n);
                for (int64_t i = 0; i < n; ++i) mode[i] = int32_t(rng() % 2);
                Buf m = tensor(be, TensorType::I32, mode.data(), n);
                const float s[2] = {0.75f, 1.25f};
                Buf o = poisoned(be, TensorType::F32, dim, n);
                const Tensor &out = in_place ? h.t : o.t;
                if (fused) {
                    be.add_rmsnorm(h.t, d.t, d_normed ? &dw.t : nullptr, scaled ? &m.t : nullptr, scaled ? s : nullptr,
                                   with_w ? &w.t : nullptr, 1e-6f, out);
                } else {
                    if (d_normed) be.rmsnorm(d.t, &dw.t, 1e-6f, d.t);
                    be.add(h.t, d.t);
                    if (scaled) be.scale_rows(h.t, m.t, s);
                    be.rmsnorm(h.t, with_w ? &w.t : nullptr, 1e-6f, out);
                }
                std::vector<float> r = fetch<float>(be, h.t);
                if (!in_place) {
                    const std::vector<float> y = fetch<float>(be, o.t);
                    r.insert(r.end(), y.begin(), y.end());
                }
                return r;
            };
            const std::string type = std::string("F32") + (d_normed ? "-dnorm" : "") + (scaled ? "-scaled" : "") + (with_w ? "-w" : "");
            for (bool in_place : {false, true})
                h.check("add_rmsnorm", type + (in_place ? "-in-place" : ""), dims({dim, n}), 1e-5,
                        [&](Backend &be, std::mt19937_64 &rng) { return run(be, rng, true, in_place); });
            h.check("add_rmsnorm", type + "-same-bits", dims({dim, n}), 0, [&](Backend &be, std::mt19937_64 &rng) {
                std::mt19937_64 again = rng;
                const std::vector<float> fused = run(be, rng, true, false), plain = run(be, again, false, false);
                return std::vector<float>{must_be_zero(mismatches(fused, plain), "add_rmsnorm against rmsnorm, add, scale_rows, rmsnorm")};
            }, true);
        }
    for (auto [heads, d, n_rot, n] : {std::tuple<int, int, int, int64_t>{4, 64, 16, 1}, {4, 128, 128, 37}, {16, 256, 64, 256},
                                      {8, 256, 256, 256}, {2, 512, 128, 40}})
        for (bool with_w : {false, true}) {
            auto run = [&, heads = heads, d = d, n_rot = n_rot, n = n](Backend &be, std::mt19937_64 &rng, bool fused) {
                Buf x = tensor(be, TensorType::F32, randn(rng, int64_t(heads) * d * n, 3.0f).data(), int64_t(heads) * d, n);
                Buf w = tensor(be, TensorType::F32, randn(rng, d).data(), d);
                std::vector<int32_t> pos(n);
                for (int64_t i = 0; i < n; ++i) pos[i] = int32_t(rng() % 9000);
                std::vector<float> f(n_rot / 2);
                for (int j = 0; j < n_rot / 2; ++j) f[j] = std::pow(10000.0f, -2.0f * j / n_rot);
                Buf p = tensor(be, TensorType::I32, pos.data(), n), fr = tensor(be, TensorType::F32, f.data(), n_rot / 2);
                be.reserve(PassLimits{n, 1, d, d, d, 1, 1, 1, 0, 0});
                if (fused) {
                    be.rmsnorm_rope(x.t, with_w ? &w.t : nullptr, 1e-6f, heads, d, p.t, fr.t, n_rot);
                } else {
                    const Tensor rows = make_tensor(x.t.data, TensorType::F32, d, n * heads, 1, 1, &be);
                    be.rmsnorm(rows, with_w ? &w.t : nullptr, 1e-6f, rows);
                    be.rope(x.t, heads, d, p.t, fr.t, n_rot);
                }
                return fetch<float>(be, x.t);
            };
            const std::string shape = dims({heads, d, n_rot, n});
            h.check("rmsnorm_rope", with_w ? "F32-w" : "F32", shape, 1e-5,
                    [&](Backend &be, std::mt19937_64 &rng) { return run(be, rng, true); });
            h.check("rmsnorm_rope", std::string(with_w ? "F32-w" : "F32") + "-same-bits", shape, 0,
                    [&](Backend &be, std::mt19937_64 &rng) {
                        std::mt19937_64 again = rng;
                        const std::vector<float> fused = run(be, rng, true), plain = run(be, again, false);
                        return std::vector<float>{must_be_zero(mismatches(fused, plain), "rmsnorm_rope against rmsnorm, rope")};
                    }, true);
        }
    const int64_t w = 333, n = 17;
    auto elementwise = [&](const char *op, std::function<void(Backend &, Buf &, Buf &, Buf &)> f, bool exact = false) {
        h.check(op, "F32", dims({w, n}), 1e-5, [&](Backend &be, std::mt19937_64 &rng) {
            Buf a = tensor(be, TensorType::F32, randn(rng, w * n, 3.0f).data(), w, n);
            Buf b = tensor(be, TensorType::F32, randn(rng, w * n, 3.0f).data(), w, n);
            Buf o = poisoned(be, TensorType::F32, w, n);
            f(be, a, b, o);
            return fetch<float>(be, o.t);
        }, exact);
    };
    elementwise("gelu_mul", [](Backend &be, Buf &a, Buf &b, Buf &o) { be.gelu_mul(a.t, b.t, o.t); });
    elementwise("add", [](Backend &be, Buf &a, Buf &b, Buf &o) { be.copy_rows(a.t, 0, o.t, 0, a.t.n_rows()); be.add(o.t, b.t); });
    elementwise("softcap", [](Backend &be, Buf &a, Buf &, Buf &o) { be.copy_rows(a.t, 0, o.t, 0, a.t.n_rows()); be.softcap(o.t, 30.0f); });
    elementwise("scale_rows", [](Backend &be, Buf &a, Buf &, Buf &o) {
        std::vector<int32_t> mode(a.t.n_rows());
        for (size_t i = 0; i < mode.size(); ++i) mode[i] = int32_t(i % 3 == 0);
        Buf m = tensor(be, TensorType::I32, mode.data(), int64_t(mode.size()));
        const float s[2] = {0.75f, 1.25f};
        be.copy_rows(a.t, 0, o.t, 0, a.t.n_rows());
        be.scale_rows(o.t, m.t, s);
    });
    elementwise("copy_rows", [](Backend &be, Buf &a, Buf &b, Buf &o) {
        be.copy_rows(b.t, 0, o.t, 0, o.t.n_rows());
        be.copy_rows(a.t, 3, o.t, 5, 7);
    }, true);
    elementwise("zero", [](Backend &be, Buf &a, Buf &, Buf &o) { be.zero(o.t); }, true);
}

// A pass of one decoder segment and one encoder segment over caches holding n_past positions.
void attention_ops(Harness &h) {
    struct Case { int heads, kv_heads, d; int64_t window, capacity, n_past, n_dec, n_enc; };
    const Case cases[] = {{4, 2, 16, 8, 7, 5, 1, 1},       {4, 2, 64, 64, 63, 200, 64, 37},
                          {4, 1, 128, 0, 512, 300, 64, 37}, {8, 4, 256, 0, 4096, 3800, 256, 0},
                          {16, 8, 256, 1024, 1023, 1500, 256, 53}, {16, 2, 512, 0, 2048, 900, 40, 70}};
    for (TensorType ct : kCacheTypes)
        for (const Case &c : cases) {
            const std::string shape = dims({c.heads, c.kv_heads, c.d, c.window, c.capacity, c.n_past, c.n_dec, c.n_enc});
            h.check("attention", type_traits(ct)->name, shape, std::max(1e-4, g_matrix_tol_floor), [&](Backend &be, std::mt19937_64 &rng) {
                const int64_t n = c.n_dec + c.n_enc, kv = int64_t(c.kv_heads) * c.d, q = int64_t(c.heads) * c.d;
                std::vector<KvLayer> caches[2];
                std::vector<Buf> keep;
                for (auto &layers : caches) {  // one cache per segment, filled through cache_store
                    KvLayer l;
                    keep.push_back(tensor(be, ct, nullptr, kv, c.capacity));
                    keep.push_back(tensor(be, ct, nullptr, kv, c.capacity));
                    l.k = keep[keep.size() - 2].t;
                    l.v = keep.back().t;
                    l.capacity = c.capacity;
                    Buf ks = tensor(be, TensorType::F32, randn(rng, kv * c.n_past).data(), kv, c.n_past);
                    Buf vs = tensor(be, TensorType::F32, randn(rng, kv * c.n_past).data(), kv, c.n_past);
                    be.cache_store(l, ks.t, vs.t, 0, c.n_past, 0);
                    layers.push_back(l);
                }
                Buf qt = tensor(be, TensorType::F32, randn(rng, q * n, 0.5f).data(), q, n);
                Buf kt = tensor(be, TensorType::F32, randn(rng, kv * n, 0.5f).data(), kv, n);
                Buf vt = tensor(be, TensorType::F32, randn(rng, kv * n).data(), kv, n);
                Buf out = poisoned(be, TensorType::F32, q, n);
                Pass pass;
                pass.n_rows = n;
                pass.segments.push_back({0, c.n_dec, c.n_past, PassMode::Decoder, &caches[0]});
                if (c.n_enc) pass.segments.push_back({c.n_dec, c.n_enc, c.n_past, PassMode::Encoder, &caches[1]});
                // max_cols: the widest row, here the queries' (flash attention's slices size by it).
                be.reserve(PassLimits{n, c.n_past + n, 64, std::max<int64_t>(64, q), c.d, 1, 1, 1, 0, 0});
                AttentionArgs a;
                a.q = qt.t;
                a.k = kt.t;
                a.v = vt.t;
                a.out = out.t;
                a.n_head = c.heads;
                a.n_head_kv = c.kv_heads;
                a.head_dim = c.d;
                a.window = c.window;
                a.layer = 0;
                a.pass = &pass;
                be.attention(a);
                return fetch<float>(be, out.t);
            });
        }
    for (TensorType ct : kCacheTypes)
        for (auto [cap, n, pos0] : {std::tuple<int64_t, int64_t, int64_t>{7, 3, 5}, {7, 20, 40}, {512, 300, 100}})
            h.check("cache_store", type_traits(ct)->name, dims({cap, n, pos0}), 0, [&](Backend &be, std::mt19937_64 &rng) {
                const int64_t kv = 96;
                Buf k = tensor(be, ct, nullptr, kv, cap), v = tensor(be, ct, nullptr, kv, cap);
                std::vector<uint8_t> fill(k.t.bytes(), 0x7b);
                be.upload(k.t, fill.data(), fill.size());
                be.upload(v.t, fill.data(), fill.size());
                Buf ks = tensor(be, TensorType::F32, randn(rng, kv * (n + 2)).data(), kv, n + 2);
                Buf vs = tensor(be, TensorType::F32, randn(rng, kv * (n + 2)).data(), kv, n + 2);
                be.cache_store({k.t, v.t, cap}, ks.t, vs.t, 2, n, pos0);
                std::vector<float> out;
                for (const Tensor *t : {&k.t, &v.t})
                    for (uint8_t b : fetch<uint8_t>(be, *t)) out.push_back(float(b));
                return out;
            }, true);
}

// The sampler, bit for bit: several steps over logits with NaN, -inf and +inf rows, a fixed mask,
// the generator and a draw table; every output of every step is compared.
void sampler_ops(Harness &h) {
    struct Case { int64_t C, V; bool fixed, table; int stability; };
    const Case cases[] = {{64, 3000, false, false, 1}, {64, 3000, true, true, 2}, {16, 1024, true, false, 0},
                          {256, 262144, false, false, 1}};
    for (const Case &c : cases)
        h.check("sampler", std::string(c.table ? "table" : "seed") + (c.fixed ? "-fixed" : ""),
                dims({c.C, c.V, c.stability}), 0, [&](Backend &be, std::mt19937_64 &rng) {
            SamplerParams p;
            p.max_steps = 6;
            p.stability_threshold = c.stability;
            p.entropy_bound = 2.0f;
            p.confidence_threshold = 50.0f;
            const int64_t C = c.C, V = c.V, S = std::max(1, c.stability);
            std::vector<int8_t> fixed(C, 0);
            std::vector<int32_t> canvas0(C, 7);
            if (c.fixed)
                for (int64_t i = 0; i < C; i += 3) fixed[i] = 1;
            std::vector<uint64_t> table(2 * C * (p.max_steps + 1) * 2);
            for (auto &t : table) t = rng();
            Buf canvas = tensor(be, TensorType::I32, canvas0.data(), C), argmax = poisoned(be, TensorType::I32, C);
            Buf hist = poisoned(be, TensorType::I32, C, S), stop = poisoned(be, TensorType::I32, 1);
            Buf acc = poisoned(be, TensorType::I8, C), fx = tensor(be, TensorType::I8, fixed.data(), C);
            Buf tab = tensor(be, TensorType::I64, table.data(), int64_t(table.size()));
            be.reserve(PassLimits{C, 1, 64, 64, 64, 1, 1, 1, C, V});
            be.sampler_init(canvas.t, c.fixed ? fx.t : Tensor{}, hist.t, 1234, c.table ? tab.t : Tensor{}, 1, p, V);
            std::vector<float> out;
            auto take = [&](const Tensor &t, bool as_int) {
                if (as_int)
                    for (int32_t v : fetch<int32_t>(be, t)) out.push_back(float(v));
                else
                    for (int8_t v : fetch<int8_t>(be, t)) out.push_back(float(v));
            };
            take(canvas.t, true);
            for (int step = p.max_steps; step >= 1; --step) {
                std::vector<float> z = randn(rng, C * V, step > 3 ? 4.0f : 0.3f);
                z[5 * V + 3] = NAN;                              // a NaN among finite values
                for (int64_t v = 0; v < V; ++v) z[2 * V + v] = -INFINITY;  // a row without a finite maximum
                z[3 * V + 17] = INFINITY;                        // +inf: no distribution
                for (int64_t v = 0; v < V; v += 7) z[V + v] = z[V];  // ties for the argmax
                Buf logits = tensor(be, TensorType::F32, z.data(), V, C);
                SampleArgs a;
                a.logits = logits.t;
                a.params = &p;
                a.step = step;
                a.canvas_no = 1;
                a.seed = 1234;
                a.draw_table = c.table ? tab.t : Tensor{};
                a.canvas = canvas.t;
                a.argmax = argmax.t;
                a.fixed = c.fixed ? fx.t : Tensor{};
                a.history = hist.t;
                a.stop = stop.t;
                a.accepted = acc.t;
                be.sample(a);
                take(canvas.t, true);
                take(argmax.t, true);
                take(hist.t, true);
                take(stop.t, true);
                take(acc.t, false);
                for (float v : fetch<float>(be, logits.t)) out.push_back(v);
            }
            return out;
        }, true);
}

// One check per line, fields without spaces (bench/gpu_check_report.py splits them).
void print_table(const std::vector<Row> &rows, std::FILE *f) {
    std::fprintf(f, "%-12s %-14s %-28s %-6s %11s %9s %10s\n", "op", "type", "shape", "result", "error", "tolerance", "cuda ms");
    for (const Row &r : rows)
        std::fprintf(f, "%-12s %-14s %-28s %-6s %11.3g %9.1g %10.3f\n", r.op.c_str(), r.type.c_str(), r.shape.c_str(),
                     r.ok ? "pass" : "FAIL", r.err, r.tol, r.ms);
}

// --- --bench-full: the ops of one denoising step at the 26B-A4B shapes (shared/bench/models.json
// "full"), timed on the device; the issue "GPU speed at full 26B-A4B scale" starts from this table.
// Weights are random bytes in the types of a Q4_K_M file (blocks with a small finite scale), so
// nothing is quantized on the host; the matrix ops run with the tiled kernels and with the
// reference ones (DGEMMA_CUDA_KERNELS=reference) on the same data.

// Random blocks of `type` whose f16 scales are set to a small finite value (the bytes of a block's
// d and dmin; the codes and sub-block scales stay random).
Buf random_weight(Backend &be, TensorType type, int64_t cols, int64_t rows, int64_t n_expert, std::mt19937_64 &rng) {
    const TypeTraits &tt = *type_traits(type);
    Buf b;
    b.be = &be;
    b.host.resize(row_bytes(tt, cols) * static_cast<size_t>(rows * n_expert));
    if (type == TensorType::F32) {
        std::vector<float> v = randn(rng, static_cast<size_t>(cols * rows * n_expert), 0.05f);
        std::memcpy(b.host.data(), v.data(), b.host.size());
    } else if (type == TensorType::BF16) {  // random signs and mantissas, magnitudes in [2^-7, 2^-6)
        for (size_t i = 0; i + 8 <= b.host.size(); i += 8) {
            const uint64_t v = (rng() & 0x807f807f807f807full) | 0x3c003c003c003c00ull;
            std::memcpy(&b.host[i], &v, 8);
        }
    } else {
        for (size_t i = 0; i + 8 <= b.host.size(); i += 8) {
            const uint64_t r = rng();
            std::memcpy(&b.host[i], &r, 8);
        }
        std::vector<size_t> f16_at;  // offsets of the f16 scales within a block
        switch (type) {
            case TensorType::Q8_0: case TensorType::Q4_0: case TensorType::Q5_0: f16_at = {0}; break;
            case TensorType::Q4_1: case TensorType::Q5_1: case TensorType::Q4_K: case TensorType::Q5_K: f16_at = {0, 2}; break;
            case TensorType::Q6_K: f16_at = {208}; break;
            default: throw Error(DGEMMA_ERR_UNSUPPORTED, std::string("--bench-full: no random blocks for ") + tt.name);
        }
        const uint16_t small = 0x1800;  // 2^-9 as f16
        for (size_t blk = 0; blk < b.host.size() / tt.type_size; ++blk)
            for (size_t o : f16_at) std::memcpy(&b.host[blk * tt.type_size + o], &small, 2);
    }
    b.t = be.load_weight(make_tensor(b.host.data(), type, cols, rows, n_expert));
    return b;
}

int g_bench_reps = 5;  // --reps N: timed runs after the warm-up (0: the warm-up alone, for ncu)

double median_ms(Backend &be, const std::function<void()> &op) {
    const int reps = g_bench_reps;
    const auto w0 = Clock::now();
    op();  // warm-up
    be.synchronize();
    if (reps <= 0) return std::chrono::duration<double, std::milli>(Clock::now() - w0).count();
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
        const auto t0 = Clock::now();
        op();
        be.synchronize();
        t.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

// A CUDA backend on device 0 with the kernel set `set` (DGEMMA_CUDA_KERNELS).
std::unique_ptr<Backend> make_kernel_set(const char *set) {
    ::setenv("DGEMMA_CUDA_KERNELS", set, 1);
    std::unique_ptr<Backend> be;
    try {
        be = make_cuda_backend_direct(0);
    } catch (...) {
        ::unsetenv("DGEMMA_CUDA_KERNELS");
        throw;
    }
    ::unsetenv("DGEMMA_CUDA_KERNELS");
    return be;
}

int bench_full() {
    constexpr int64_t E = 2816, V = 262144, T = 256, n_past = 512, H = 16, Hkv = 8, D = 256, F = 2112, X = 128,
                      Fe = 704, K = 8, L = 30;
    // The kernel sets side by side: [0] the default tiles, [1] the per-row reference, [2] the bf16
    // tensor-core tiles (null where the device lacks them).
    std::unique_ptr<Backend> sets[3];
    for (int i : {1, 2}) {
        try {
            sets[i] = make_kernel_set(i == 1 ? "reference" : "tensor");
        } catch (const std::exception &e) {
            std::printf("kernel set %s: %s\n", i == 1 ? "reference" : "tensor", e.what());
        }
    }
    sets[0] = make_kernel_set("float");
    std::unique_ptr<Backend> &gpu = sets[0];
    std::printf("26B-A4B shapes, %ld canvas rows over %ld cached positions; weights as in Q4_K_M; %s\n", long(T),
                long(n_past), gpu->name().c_str());
    std::printf("%-22s %-6s %-22s %10s %10s %10s %9s %8s\n", "op", "type", "shape", "ms", "ref ms", "tensor ms", "TFLOP/s",
                "x/step");
    double step = 0, step_best = 0;
    auto row = [&](const char *op, TensorType type, const std::string &shape, const double (&ms)[3], double flop, int per_step) {
        auto cell = [](double v) { return v > 0 ? std::to_string(v).substr(0, 8) : std::string("-"); };
        // TFLOP/s of the default tiles, or of the tensor set on rows measured with it alone.
        std::printf("%-22s %-6s %-22s %10s %10s %10s %9.2f %8d\n", op, type_traits(type)->name, shape.c_str(), cell(ms[0]).c_str(),
                    cell(ms[1]).c_str(), cell(ms[2]).c_str(), flop / ((ms[0] > 0 ? ms[0] : ms[2]) * 1e9), per_step);
        std::fflush(stdout);
        step += ms[0] * per_step;
        step_best += (ms[2] > 0 ? std::min(ms[0], ms[2]) : ms[0]) * per_step;
    };
    auto row1 = [&](const char *op, TensorType type, const std::string &shape, double ms, double flop, int per_step) {
        const double one[3] = {ms, 0, 0};  // ops with one kernel
        row(op, type, shape, one, flop, per_step);
    };
    std::mt19937_64 rng(7);
    // Matrix products: (name, type, cols, rows, times per step)
    struct Mat { const char *name; TensorType type; int64_t cols, rows; int per_step; };
    const Mat mats[] = {{"lm_head", TensorType::Q6_K, E, V, 1},        {"attn_q", TensorType::Q4_K, E, H * D, int(L)},
                        {"attn_k", TensorType::Q4_K, E, Hkv * D, int(L)}, {"attn_v", TensorType::Q6_K, E, Hkv * D, int(L)},
                        {"attn_output", TensorType::Q6_K, H * D, E, int(L)}, {"ffn_gate", TensorType::Q4_K, E, F, int(L)},
                        {"ffn_up", TensorType::Q4_K, E, F, int(L)},       {"ffn_down", TensorType::Q5_0, F, E, int(L)}};
    for (const Mat &m : mats) {
        double ms[3] = {0, 0, 0};
        for (int which = 0; which < 3; ++which) {
            if (!sets[which]) continue;
            Backend &be = *sets[which];
            Buf w = random_weight(be, m.type, m.cols, m.rows, 1, rng);
            Buf x = tensor(be, TensorType::F32, randn(rng, m.cols * T).data(), m.cols, T);
            Buf y = tensor(be, TensorType::F32, nullptr, m.rows, T);
            be.reserve(PassLimits{T, 1, m.cols, m.cols, 1, 1, 1, 1, 0, 0});
            ms[which] = median_ms(be, [&] { be.matmul(w.t, x.t, y.t); });
        }
        row(m.name, m.type, dims({m.cols, m.rows, T}), ms, 2.0 * m.cols * m.rows * T, m.per_step);
    }
    // The vocabulary products on a BF16 copy of the table (1.5 GB against Q6_K's 0.6 GB), tensor set
    // alone, not in the step's sum: what such a copy would buy (a choice of memory for speed).
    const bool bf16_rows = sets[2] != nullptr;
    if (bf16_rows) {
        Backend &b = *sets[2];
        Buf w = random_weight(b, TensorType::BF16, E, V, 1, rng);
        Buf x = tensor(b, TensorType::F32, randn(rng, E * T).data(), E, T);
        Buf y = tensor(b, TensorType::F32, nullptr, V, T);
        b.reserve(PassLimits{T, 1, E, E, 1, 1, 1, 1, T, V});
        const double ms[3] = {0, 0, median_ms(b, [&] { b.matmul(w.t, x.t, y.t); })};
        row("lm_head (BF16 table)", TensorType::BF16, dims({E, V, T}), ms, 2.0 * E * V * T, 0);
        Buf o = tensor(b, TensorType::F32, nullptr, E, T);
        const double ms_soft[3] = {0, 0, median_ms(b, [&] { b.soft_embed(w.t, y.t, 16.0f, o.t); })};
        row("soft_embed (BF16)", TensorType::BF16, dims({E, V, T}), ms_soft, 2.0 * E * V * T, 0);
    }
    {  // the experts: fused gate/up Q4_K, down Q5_0 (704 is not a multiple of 256), top-8 of 128
        double ms[3] = {0, 0, 0};
        for (int which = 0; which < 3; ++which) {
            if (!sets[which]) continue;
            Backend &be = *sets[which];
            Buf gu = random_weight(be, TensorType::Q4_K, E, 2 * Fe, X, rng), d = random_weight(be, TensorType::Q5_0, Fe, E, X, rng);
            MoeWeights mw;
            mw.gate = gu.t;
            mw.gate.ne[1] = Fe;
            mw.up = mw.gate;
            mw.up.data = gu.t.bytes_at(static_cast<size_t>(Fe) * gu.t.nb[1]);
            mw.down = d.t;
            std::vector<int32_t> ids(T * K);
            std::vector<float> wts(T * K, 1.0f / K);
            for (int64_t t = 0; t < T; ++t)  // K distinct experts per token
                for (int64_t j = 0; j < K; ++j) ids[t * K + j] = int32_t((t * 37 + j * 16 + rng() % 16) % X);
            Buf x = tensor(be, TensorType::F32, randn(rng, E * T).data(), E, T);
            Buf it = tensor(be, TensorType::I32, ids.data(), K, T), wt = tensor(be, TensorType::F32, wts.data(), K, T);
            Buf o = tensor(be, TensorType::F32, nullptr, E, T);
            be.reserve(PassLimits{T, 1, E, E, 1, X, K, Fe, 0, 0});
            ms[which] = median_ms(be, [&] { be.moe(mw, x.t, it.t, wt.t, o.t); });
        }
        row("moe (experts)", TensorType::Q4_K, dims({E, Fe, X, K, T}), ms, 2.0 * 3 * E * Fe * K * T, int(L));
    }
    Backend &be = *gpu;
    {
        double ms[3] = {0, 0, 0};
        for (int which = 0; which < 3; ++which) {
            if (!sets[which]) continue;
            Backend &b = *sets[which];
            Buf w = random_weight(b, TensorType::F32, E, X, 1, rng);
            Buf x = tensor(b, TensorType::F32, randn(rng, E * T).data(), E, T);
            std::vector<float> ones(E, 1.0f);
            Buf s = tensor(b, TensorType::F32, ones.data(), E), p = tensor(b, TensorType::F32, ones.data(), X);
            Buf ids = tensor(b, TensorType::I32, nullptr, K, T), wts = tensor(b, TensorType::F32, nullptr, K, T);
            b.reserve(PassLimits{T, 1, E, E, 1, X, K, 1, 0, 0});
            ms[which] = median_ms(b, [&] { b.route(w.t, x.t, s.t, p.t, 1e-6f, int(K), ids.t, wts.t); });
        }
        row("route", TensorType::F32, dims({E, X, T}), ms, 2.0 * E * X * T, int(L));
    }
    // Decoder attention over the prompt's cache and the canvas: 25 sliding layers (8 KV heads of 256)
    // and 5 global ones (2 KV heads of 512): the float tiles, the per-query reference kernel and the
    // tensor set's tf32 tiles.
    auto attention_row = [&](const char *name, int64_t Hk, int64_t Dh, int64_t window, int per_step) {
        double ms[3] = {0, 0, 0};
        for (int which = 0; which < 3; ++which) {
            if (!sets[which]) continue;
            Backend &b = *sets[which];
            std::vector<KvLayer> cache(1);
            Buf kc = tensor(b, TensorType::F32, nullptr, Hk * Dh, n_past), vc = tensor(b, TensorType::F32, nullptr, Hk * Dh, n_past);
            cache[0] = {kc.t, vc.t, n_past};
            Buf ks = tensor(b, TensorType::F32, randn(rng, Hk * Dh * n_past).data(), Hk * Dh, n_past);
            Buf vs = tensor(b, TensorType::F32, randn(rng, Hk * Dh * n_past).data(), Hk * Dh, n_past);
            b.cache_store(cache[0], ks.t, vs.t, 0, n_past, 0);
            Buf q = tensor(b, TensorType::F32, randn(rng, H * Dh * T, 0.1f).data(), H * Dh, T);
            Buf k = tensor(b, TensorType::F32, randn(rng, Hk * Dh * T, 0.1f).data(), Hk * Dh, T);
            Buf v = tensor(b, TensorType::F32, randn(rng, Hk * Dh * T).data(), Hk * Dh, T);
            Buf out = tensor(b, TensorType::F32, nullptr, H * Dh, T);
            Pass pass;
            pass.n_rows = T;
            pass.segments.push_back({0, T, n_past, PassMode::Decoder, &cache});
            b.reserve(PassLimits{T, n_past + T, E, std::max(E, H * Dh), Dh, 1, 1, 1, 0, 0});  // max_cols: the queries' width too
            AttentionArgs a;
            a.q = q.t;
            a.k = k.t;
            a.v = v.t;
            a.out = out.t;
            a.n_head = H;
            a.n_head_kv = int(Hk);
            a.head_dim = int(Dh);
            a.window = window;
            a.layer = 0;
            a.pass = &pass;
            ms[which] = median_ms(b, [&] { b.attention(a); });
        }
        row(name, TensorType::F32, dims({H, Hk, Dh, n_past, T}), ms, 4.0 * H * Dh * T * (n_past + T), per_step);
    };
    attention_row("attention (sliding)", Hkv, D, 1024, int(L) - int(L) / 6);
    attention_row("attention (global)", 2, 512, 0, int(L) / 6);
    {  // a layer's row-wise ops (forward.cpp): 2 norms of the residual width, 3 residual adds with the
       // next norm (2 of them norming the sublayer's output first), the queries' and keys' norm and RoPE
       // (counted at the queries' 16 heads), the values' norm
        Buf x = tensor(be, TensorType::F32, randn(rng, E * T).data(), E, T), y = tensor(be, TensorType::F32, nullptr, E, T);
        Buf d = tensor(be, TensorType::F32, randn(rng, E * T).data(), E, T), w = tensor(be, TensorType::F32, randn(rng, E).data(), E);
        row1("rmsnorm (x2 a layer)", TensorType::F32, dims({E, T}), median_ms(be, [&] { be.rmsnorm(x.t, &w.t, 1e-6f, y.t); }),
             0, int(2 * L));
        row1("add_rmsnorm (x3)", TensorType::F32, dims({E, T}),
             median_ms(be, [&] { be.add_rmsnorm(x.t, d.t, &w.t, nullptr, nullptr, &w.t, 1e-6f, y.t); }), 0, int(3 * L));
        Buf q = tensor(be, TensorType::F32, randn(rng, H * D * T).data(), H * D, T), wd = tensor(be, TensorType::F32, randn(rng, D).data(), D);
        std::vector<int32_t> pos(T);
        for (int64_t i = 0; i < T; ++i) pos[i] = int32_t(n_past + i);
        std::vector<float> f(D / 2);
        for (int64_t j = 0; j < D / 2; ++j) f[j] = std::pow(10000.0f, -2.0f * float(j) / float(D));
        Buf p = tensor(be, TensorType::I32, pos.data(), T), fr = tensor(be, TensorType::F32, f.data(), D / 2);
        row1("rmsnorm_rope (x2)", TensorType::F32, dims({H, D, T}),
             median_ms(be, [&] { be.rmsnorm_rope(q.t, &wd.t, 1e-6f, int(H), int(D), p.t, fr.t, int(D)); }), 0, int(2 * L));
        const Tensor v_rows = make_tensor(q.t.data, TensorType::F32, D, T * Hkv, 1, 1, &be);
        row1("rmsnorm (values)", TensorType::F32, dims({D, T * Hkv}),
             median_ms(be, [&] { be.rmsnorm(v_rows, nullptr, 1e-6f, v_rows); }), 0, int(L));
    }
    {  // self-conditioning's soft embedding and the sampler over the full vocabulary
        double ms[3] = {0, 0, 0};
        for (int which = 0; which < 3; ++which) {
            if (!sets[which]) continue;
            Backend &b = *sets[which];
            Buf w = random_weight(b, TensorType::Q6_K, E, V, 1, rng);
            Buf z = tensor(b, TensorType::F32, randn(rng, V * T, 3.0f).data(), V, T);
            Buf o = tensor(b, TensorType::F32, nullptr, E, T);
            b.reserve(PassLimits{T, 1, E, E, 1, 1, 1, 1, T, V});
            ms[which] = median_ms(b, [&] { b.soft_embed(w.t, z.t, 16.0f, o.t); });
        }
        row("soft_embed", TensorType::Q6_K, dims({E, V, T}), ms, 2.0 * E * V * T, 1);
        Buf z = tensor(be, TensorType::F32, randn(rng, V * T, 3.0f).data(), V, T);
        be.reserve(PassLimits{T, 1, E, E, 1, 1, 1, 1, T, V});
        SamplerParams p;
        std::vector<int32_t> canvas0(T, 7);
        Buf canvas = tensor(be, TensorType::I32, canvas0.data(), T), argmax = tensor(be, TensorType::I32, nullptr, T);
        Buf hist = tensor(be, TensorType::I32, nullptr, T, std::max(1, p.stability_threshold));
        Buf stop = tensor(be, TensorType::I32, nullptr, 1), acc = tensor(be, TensorType::I8, nullptr, T);
        be.sampler_init(canvas.t, Tensor{}, hist.t, 1234, Tensor{}, 1, p, V);
        SampleArgs sa;
        sa.logits = z.t;
        sa.params = &p;
        sa.step = p.max_steps;
        sa.canvas_no = 1;
        sa.seed = 1234;
        sa.canvas = canvas.t;
        sa.argmax = argmax.t;
        sa.history = hist.t;
        sa.stop = stop.t;
        sa.accepted = acc.t;
        row1("sampler", TensorType::F32, dims({T, V}), median_ms(be, [&] { be.sample(sa); }), 0, 1);
    }
    std::printf("one denoising step, estimated as the sum of ms x per step (30 layers; the projections at the sliding shapes): %.1f ms; "
                "with the faster of the tiles and the tensor cores per op: %.1f ms\n", step, step_best);
    return 0;
}

}  // namespace

// --self-test runs the harness with a second CPU backend in place of CUDA (every check must pass,
// the exact ones included): a rehearsal of the harness itself on machines without a GPU.
int main(int argc, char **argv) {
    std::string out_dir = ".", only, sets = "float,reference,tensor";
    bool self_test = false, bench = false;
    for (int i = 1; i < argc; ++i) {
        if (std::string(argv[i]) == "--out" && i + 1 < argc) out_dir = argv[++i];
        else if (std::string(argv[i]) == "--only" && i + 1 < argc) only = argv[++i];
        else if (std::string(argv[i]) == "--self-test") self_test = true;
        else if (std::string(argv[i]) == "--bench-full") bench = true;
        else if (std::string(argv[i]) == "--reps" && i + 1 < argc) g_bench_reps = std::atoi(argv[++i]);
        else if (std::string(argv[i]) == "--no-reference-kernels") sets = "float";
        else if (std::string(argv[i]) == "--sets" && i + 1 < argc) sets = argv[++i];
    }
    if (bench) {
        try {
            return bench_full();
        } catch (const std::exception &e) {
            std::printf("--bench-full: %s\n", e.what());
            return 1;
        }
    }
    std::unique_ptr<Backend> gpu;
    try {
        gpu = self_test ? make_cpu_backend(1) : make_kernel_set("float");
    } catch (const std::exception &e) {
        std::printf("no CUDA device: %s\n", e.what());
        return 3;
    }
    std::unique_ptr<Backend> cpu = make_cpu_backend(0);
    g_reference = cpu.get();
    g_dequantized_reference = !self_test;
    Harness h(*cpu, *gpu);
    h.only = only;
    h.failures.open(out_dir + "/failures.txt");
    std::printf("checked backend: %s\n", gpu->name().c_str());
    const auto wanted = [&](const char *set) { return ("," + sets + ",").find(std::string(",") + set + ",") != std::string::npos; };
    if (self_test && std::getenv("DGEMMA_CUDA_WGMMA")) warpgroup_ops(h, false);
    if (self_test || wanted("float")) {
        matrix_ops(h);
        row_ops(h);
        attention_ops(h);
        sampler_ops(h);
    }
    // The matrix ops again with the other kernel sets (DGEMMA_CUDA_KERNELS): the per-row reference
    // kernels, and the bf16 tensor-core tiles where the device has them (held to 1e-2).
    for (const char *set : {"reference", "tensor"}) {
        if (self_test || !wanted(set)) continue;
        std::unique_ptr<Backend> other;
        try {
            other = make_kernel_set(set);
        } catch (const std::exception &e) {
            std::printf("kernel set %s: not checked: %s\n", set, e.what());
        }
        if (!other) continue;
        Harness hs(*cpu, *other);
        hs.type_suffix = std::string("-") + (set[0] == 'r' ? "ref" : "tc");
        hs.seed = h.seed;
        hs.only = only;
        hs.failures.open(out_dir + "/failures.txt", std::ios::app);
        g_matrix_tol_floor = set[0] == 't' ? 1e-2 : 0;
        const char *int8 = std::getenv("DGEMMA_CUDA_INT8");
        g_int8_checked = set[0] == 't' && int8 && *int8 && std::string(int8) != "0";
        const char *wgmma = std::getenv("DGEMMA_CUDA_WGMMA");
        g_wgmma_checked = set[0] == 't' && wgmma && *wgmma && std::string(wgmma) != "0";
        if (g_wgmma_checked) warpgroup_ops(hs);
        matrix_ops(hs);
        attention_ops(hs);  // the per-query reference kernel; the tensor set's tf32 tiles (head sizes of 64 n)
        g_matrix_tol_floor = 0;
        g_int8_checked = false;
        g_wgmma_checked = false;
        h.rows.insert(h.rows.end(), hs.rows.begin(), hs.rows.end());
    }
    std::FILE *tsv = std::fopen((out_dir + "/opcheck.txt").c_str(), "w");
    if (tsv) {
        print_table(h.rows, tsv);
        std::fclose(tsv);
    }
    print_table(h.rows, stdout);
    const auto failed = std::count_if(h.rows.begin(), h.rows.end(), [](const Row &r) { return !r.ok; });
    std::printf("%zu checks, %ld failed\n", h.rows.size(), static_cast<long>(failed));
    return failed ? 1 : 0;
}
