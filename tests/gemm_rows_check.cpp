// Host check of the products' row-adding mode (cpu/gemm.h, GemmArgs::y_rows: the experts' down
// products summed into their tokens' rows): on every instruction set this CPU runs and for weight
// types whose kernels add in their register tiles (F32, F16, BF16 on AVX-512) and whose results go
// through gemm()'s store-then-add (the quantized types, the other sets), the row-adding call must
// leave exactly the bits of a stored product followed by axpy(row, result, scale), on fresh random
// weights, activations and rows, with weights packed at load and read as stored, over token counts
// that leave every tile tail and cross gemm()'s activation chunks.
// Prints the cases checked; exits 1 on any disagreement, printing it.
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/dispatch.h"
#include "cpu/gemm.h"
#include "cpu/kernels.h"
#include "quant/types.h"

namespace {

long cases = 0, bad = 0;

}  // namespace

int main() {
    using namespace dg;
    std::mt19937_64 rng(std::random_device{}());
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const TensorType types[] = {TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q8_0, TensorType::Q5_0, TensorType::Q4_K};
    int isas = 0;
    for (Isa isa : {Isa::Generic, Isa::Avx2, Isa::Avx512}) {
        if (!set_isa(isa)) continue;
        ++isas;
        for (TensorType type : types) {
            const TypeTraits &tt = *type_traits(type);
            for (int64_t k : {int64_t{256}, int64_t{512}, int64_t{768}}) {  // one float chunk, two
                for (int64_t rows : {int64_t{16}, int64_t{40}, int64_t{96}}) {
                    for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{13}, int64_t{300}}) {
                        const size_t rb = row_bytes(tt, k);
                        std::vector<uint8_t> w(rb * rows);
                        std::vector<float> tmp(k);
                        for (int64_t r = 0; r < rows; ++r) {
                            for (float &v : tmp) v = normal(rng);
                            tt.from_float(tmp.data(), w.data() + r * rb, k);
                        }
                        std::vector<uint8_t> pack_buf(gemm_packed_bytes(type, rows, k) + 64);  // packs are 64-byte aligned
                        uint8_t *const packed = reinterpret_cast<uint8_t *>((reinterpret_cast<uintptr_t>(pack_buf.data()) + 63) & ~uintptr_t{63});
                        const bool has_pack = gemm_packed_bytes(type, rows, k) > 0;
                        if (has_pack) gemm_pack_weights(type, w.data(), rb, rows, k, packed);
                        std::vector<float> x(n * k);
                        for (float &v : x) v = normal(rng);
                        size_t xs = k * sizeof(float);
                        std::vector<uint8_t> xq;
                        const uint8_t *xp = reinterpret_cast<const uint8_t *>(x.data());
                        if (const size_t qb = gemm_activation_bytes(type, k)) {
                            xs = qb;
                            xq.resize(qb * n);
                            for (int64_t t = 0; t < n; ++t) gemm_pack_activations(type, x.data() + t * k, xq.data() + t * qb, k);
                            xp = xq.data();
                        }
                        // Destination rows scattered in a larger buffer, with values already in them.
                        const int64_t ld = rows + 24;
                        std::vector<float> base(n * ld), scale(n);
                        for (float &v : base) v = normal(rng);
                        for (float &v : scale) v = normal(rng);
                        for (int with_pack = 0; with_pack <= (has_pack ? 1 : 0); ++with_pack) {
                            const uint8_t *pk = with_pack ? packed : nullptr;
                            std::vector<float> y(n * rows), want = base, got = base;
                            gemm(type, GemmArgs{w.data(), rb, rows, xp, xs, n, k, y.data(), rows, pk});
                            for (int64_t t = 0; t < n; ++t) axpy(want.data() + (n - 1 - t) * ld + 5, y.data() + t * rows, scale[t], rows);
                            std::vector<float *> dst(n);
                            for (int64_t t = 0; t < n; ++t) dst[t] = got.data() + (n - 1 - t) * ld + 5;  // rows in reverse order
                            GemmArgs a{w.data(), rb, rows, xp, xs, n, k, nullptr, 0, pk};
                            a.y_rows = dst.data();
                            a.y_scale = scale.data();
                            gemm(type, a);
                            ++cases;
                            if (std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) != 0 && bad++ < 20) {
                                long at = 0;
                                while (got[at] == want[at]) ++at;
                                std::printf("isa %s type %s k %ld rows %ld n %ld packed %d: element %ld got %.9g want %.9g\n", isa_name(isa), tt.name,
                                            static_cast<long>(k), static_cast<long>(rows), static_cast<long>(n), with_pack, at, got[at], want[at]);
                            }
                        }
                    }
                }
            }
        }
    }
    std::printf("isas %d bad %ld cases %ld\n", isas, bad, cases);
    return bad ? 1 : 0;
}
