// One-thread microbenchmark of the CPU products over weights packed as the backend packs them at
// load (dgemma_gemm packs nothing unless DGEMMA_GEMM_PACKED=1, and the Python call costs more than
// an expert's product): ROWS x K weights over M tokens, F16 or Q8_0, cycling over EXPERTS copies
// (1: hot in cache; 64: streamed from L3 like the experts' matrices), best of 7 x 20 calls.
//
//   g++ -std=c++17 -O2 -I native/src -I native/include bench/cpu_gemm_mb.cpp -o /tmp/cpu_gemm_mb -lpthread
//       $(find build/dev/CMakeFiles/dgemma_core.dir -name '*.o' | grep -E 'cpu/(gemm|kernels|dispatch|vec_dot)|quant/|error')
//   /tmp/cpu_gemm_mb ROWS K M EXPERTS [q8]     e.g. 96 176 64 64 (an expert's down), 704 2048 512 1 q8
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>
#include "cpu/gemm.h"
#include "quant/types.h"
using namespace dg;
static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
int main(int argc, char **argv) {
    const int64_t rows = atoi(argv[1]), k = atoi(argv[2]), m = atoi(argv[3]), experts = atoi(argv[4]);
    const TensorType type = argc > 5 && !strcmp(argv[5], "q8") ? TensorType::Q8_0 : TensorType::F16;
    std::mt19937 rng(1);
    std::normal_distribution<float> nd;
    const TypeTraits &tt = *type_traits(type);
    const size_t rb = row_bytes(tt, k);
    std::vector<uint8_t> w(rb * rows * experts);
    std::vector<float> tmp(k);
    for (int64_t r = 0; r < rows * experts; ++r) {
        for (auto &v : tmp) v = nd(rng);
        tt.from_float(tmp.data(), w.data() + r * rb, k);
    }
    const size_t pb = gemm_packed_bytes(type, rows, k);
    uint8_t *packed = static_cast<uint8_t *>(aligned_alloc(64, (pb * experts + 63) / 64 * 64));
    for (int64_t e = 0; e < experts; ++e) gemm_pack_weights(type, w.data() + e * rb * rows, rb, rows, k, packed + e * pb);
    std::vector<float> x(m * k), y(m * rows);
    for (auto &v : x) v = nd(rng);
    size_t xs = k * sizeof(float);
    std::vector<uint8_t> xq;
    const uint8_t *xp = reinterpret_cast<const uint8_t *>(x.data());
    if (gemm_activation_bytes(type, k)) {
        xs = gemm_activation_bytes(type, k);
        xq.resize(xs * m);
        for (int64_t t = 0; t < m; ++t) gemm_pack_activations(type, x.data() + t * k, xq.data() + t * xs, k);
        xp = xq.data();
    }
    double best = 1e9;
    for (int rep = 0; rep < 7; ++rep) {
        const double t0 = now();
        for (int it = 0; it < 20; ++it)
            for (int64_t e = 0; e < experts; ++e)
                gemm(type, GemmArgs{w.data() + e * rb * rows, rb, rows, xp, xs, m, k, y.data(), rows, packed + e * pb});
        best = std::min(best, (now() - t0) / (20 * experts));
    }
    printf("%s rows %ld k %ld m %ld experts %ld: %.2f us/call, %.1f GMAC/s\n", tt.name, rows, k, m, experts, best * 1e6, rows * k * m / best / 1e9);
}
