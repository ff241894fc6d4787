#include "cpu/dispatch.h"

#include <atomic>
#include <string>

#include "cpu/vec_dot_simd.h"
#include "quant/k_quants.h"
#include "quant/q4_q5.h"
#include "quant/q8_0.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

namespace dg {

namespace {

struct CpuFeatures {
    bool avx2 = false, fma = false, f16c = false;
    bool avx512f = false, avx512bw = false, avx512vl = false, avx512vnni = false, avxvnni = false;
    std::string text;
};

const CpuFeatures &cpu_features() {
    static const CpuFeatures f = [] {
        CpuFeatures c;
#if defined(__x86_64__) || defined(_M_X64)
        unsigned a, b, cx, d;
        if (!__get_cpuid(1, &a, &b, &cx, &d)) return c;
        const bool osxsave = cx & (1u << 27), avx = cx & (1u << 28);
        c.fma = cx & (1u << 12);
        c.f16c = cx & (1u << 29);
        uint64_t xcr0 = 0;
        if (osxsave) {  // which register states the OS saves: YMM (bits 1-2), ZMM and masks (5-7)
            unsigned lo, hi;
            __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            xcr0 = (static_cast<uint64_t>(hi) << 32) | lo;
        }
        const bool ymm = avx && (xcr0 & 0x6) == 0x6, zmm = ymm && (xcr0 & 0xe0) == 0xe0;
        if (ymm && __get_cpuid_count(7, 0, &a, &b, &cx, &d)) {
            c.avx2 = b & (1u << 5);
            c.avx512f = zmm && (b & (1u << 16));
            c.avx512bw = zmm && (b & (1u << 30));
            c.avx512vl = zmm && (b & (1u << 31));
            c.avx512vnni = zmm && (cx & (1u << 11));
            unsigned a1, b1, c1, d1;
            if (__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) c.avxvnni = a1 & (1u << 4);
        }
        c.fma = c.fma && ymm;
        c.f16c = c.f16c && ymm;
        const std::pair<bool, const char *> names[] = {
            {c.avx2, "avx2"}, {c.fma, "fma"}, {c.f16c, "f16c"}, {c.avx512f, "avx512f"},
            {c.avx512bw, "avx512bw"}, {c.avx512vl, "avx512vl"}, {c.avx512vnni, "avx512vnni"}, {c.avxvnni, "avxvnni"}};
        for (const auto &[has, name] : names) {
            if (has) c.text += c.text.empty() ? name : std::string(" ") + name;
        }
#endif
        return c;
    }();
    return f;
}

constexpr int kNumIsa = 4;
constexpr uint32_t kNumTypeIds = 64;  // ggml type ids are below this

// Kernels by [isa][type id]; an ISA without its own version of a type uses the generic one.
struct KernelTable {
    VecDotFn fn[kNumIsa][kNumTypeIds] = {};

    KernelTable() {
        const VecDotKernels generic = {
            vec_dot_q4_0_q8_0, vec_dot_q4_1_q8_0, vec_dot_q5_0_q8_0, vec_dot_q5_1_q8_0, vec_dot_q8_0_q8_0,
            vec_dot_q2_k_q8_k, vec_dot_q3_k_q8_k, vec_dot_q4_k_q8_k, vec_dot_q5_k_q8_k, vec_dot_q6_k_q8_k,
            vec_dot_iq4_xs_q8_k,
        };
        fill(Isa::Generic, generic);
#if defined(__x86_64__) || defined(_M_X64)
        fill(Isa::Avx2, vec_dot_kernels_avx2());
        fill(Isa::AvxVnni, vec_dot_kernels_avx2());  // its own kernels are the products (cpu/gemm.h)
        fill(Isa::Avx512, vec_dot_kernels_avx512());
#else
        fill(Isa::Avx2, generic);
        fill(Isa::AvxVnni, generic);
        fill(Isa::Avx512, generic);
#endif
    }

    void fill(Isa isa, const VecDotKernels &k) {
        VecDotFn *f = fn[static_cast<int>(isa)];
        auto set = [f](TensorType t, VecDotFn fn) { f[static_cast<uint32_t>(t)] = fn; };
        set(TensorType::Q4_0, k.q4_0);
        set(TensorType::Q4_1, k.q4_1);
        set(TensorType::Q5_0, k.q5_0);
        set(TensorType::Q5_1, k.q5_1);
        set(TensorType::Q8_0, k.q8_0);
        set(TensorType::Q2_K, k.q2_k);
        set(TensorType::Q3_K, k.q3_k);
        set(TensorType::Q4_K, k.q4_k);
        set(TensorType::Q5_K, k.q5_k);
        set(TensorType::Q6_K, k.q6_k);
        set(TensorType::IQ4_XS, k.iq4_xs);
    }
};

const KernelTable &kernels() {
    static const KernelTable table;
    return table;
}

std::atomic<int> g_active{static_cast<int>(best_isa())};

// Entry point per type: forwards to the active ISA's kernel.
template <TensorType T>
float forward(const void *w, const void *x, int64_t n) {
    return kernels().fn[g_active.load(std::memory_order_relaxed)][static_cast<uint32_t>(T)](w, x, n);
}

}  // namespace

bool isa_supported(Isa isa) {
    const CpuFeatures &c = cpu_features();
    switch (isa) {
        case Isa::Generic: return true;
        case Isa::Avx2: return c.avx2 && c.fma && c.f16c;
        case Isa::AvxVnni: return c.avx2 && c.fma && c.f16c && c.avxvnni;
        case Isa::Avx512: return c.avx2 && c.fma && c.f16c && c.avx512f && c.avx512bw && c.avx512vl && c.avx512vnni;
    }
    return false;
}

Isa best_isa() {
    if (isa_supported(Isa::Avx512)) return Isa::Avx512;
    if (isa_supported(Isa::AvxVnni)) return Isa::AvxVnni;
    if (isa_supported(Isa::Avx2)) return Isa::Avx2;
    return Isa::Generic;
}

Isa active_isa() { return static_cast<Isa>(g_active.load(std::memory_order_relaxed)); }

bool set_isa(Isa isa) {
    if (!isa_supported(isa)) return false;
    g_active.store(static_cast<int>(isa), std::memory_order_relaxed);
    return true;
}

const char *isa_name(Isa isa) {
    switch (isa) {
        case Isa::Generic: return "generic";
        case Isa::Avx2: return "avx2";
        case Isa::AvxVnni: return "avxvnni";
        case Isa::Avx512: return "avx512";
    }
    return "?";
}

bool isa_from_name(const char *name, Isa *isa) {
    for (Isa i : {Isa::Generic, Isa::Avx2, Isa::AvxVnni, Isa::Avx512}) {
        if (std::string(name) == isa_name(i)) {
            *isa = i;
            return true;
        }
    }
    return false;
}

const char *isa_features_string() { return cpu_features().text.c_str(); }

VecDotFn vec_dot_kernel(TensorType type, Isa isa) {
    const uint32_t id = static_cast<uint32_t>(type);
    return id < kNumTypeIds ? kernels().fn[static_cast<int>(isa)][id] : nullptr;
}

VecDotFn vec_dot_entry(TensorType type) {
    switch (type) {
        case TensorType::Q4_0: return forward<TensorType::Q4_0>;
        case TensorType::Q4_1: return forward<TensorType::Q4_1>;
        case TensorType::Q5_0: return forward<TensorType::Q5_0>;
        case TensorType::Q5_1: return forward<TensorType::Q5_1>;
        case TensorType::Q8_0: return forward<TensorType::Q8_0>;
        case TensorType::Q2_K: return forward<TensorType::Q2_K>;
        case TensorType::Q3_K: return forward<TensorType::Q3_K>;
        case TensorType::Q4_K: return forward<TensorType::Q4_K>;
        case TensorType::Q5_K: return forward<TensorType::Q5_K>;
        case TensorType::Q6_K: return forward<TensorType::Q6_K>;
        case TensorType::IQ4_XS: return forward<TensorType::IQ4_XS>;
        default: return nullptr;
    }
}

}  // namespace dg
