// Host build of the CUDA kernels' block layouts (native/src/cuda/dequant.h): reads a type id, a row
// length, the bytes of a row, a row count and raw quantized rows on stdin, writes every element as float32 through dg::dequant on
// stdout, then every row again through dg::dequant8 (the tile loaders' eight at a time). tests/test_cuda.py compiles it with the host compiler and compares the bits with
// dgemma_dequantize_row, so the layouts are checked on machines without a GPU.
#include <algorithm>
#include <cstdio>
#include <vector>

#include "cuda/dequant.h"

int main() {
    unsigned type = 0;
    long long n = 0, row = 0, rows = 0;
    if (std::fread(&type, sizeof type, 1, stdin) != 1 || std::fread(&n, sizeof n, 1, stdin) != 1 ||
        std::fread(&row, sizeof row, 1, stdin) != 1 || std::fread(&rows, sizeof rows, 1, stdin) != 1)
        return 2;
    const dg::TensorType t = static_cast<dg::TensorType>(type);
    if (!dg::cuda_weight_type_supported(t)) return 3;
    std::vector<uint8_t> data(static_cast<size_t>(row * rows));
    if (std::fread(data.data(), 1, data.size(), stdin) != data.size()) return 2;
    std::vector<float> out(static_cast<size_t>(n));
    for (long long r = 0; r < rows; ++r) {
        for (long long i = 0; i < n; ++i) out[i] = dg::dequant(t, data.data() + r * row, i);
        std::fwrite(out.data(), sizeof(float), out.size(), stdout);
    }
    if (n % 8) return 4;
    for (long long r = 0; r < rows; ++r) {
        for (long long i = 0; i < n; i += 8) {
            float eight[8];
            dg::dequant8(t, data.data() + r * row, i, eight);
            std::copy(eight, eight + 8, out.begin() + i);
        }
        std::fwrite(out.data(), sizeof(float), out.size(), stdout);
    }
    return 0;
}
