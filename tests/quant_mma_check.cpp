// cuda/quant_mma.h on the host: a warp's 16 rows x 8 tokens of Q4_K and Q5_0 products, lane by lane
// as the kernels run them (moe.cu's qmma kernels): each lane builds its A registers from the bytes it
// loads and its B registers from four consecutive bf16 of its token, the 32 lanes' registers are
// placed by the PTX fragment tables (mma_layout.h), each k16 step is multiplied as mma.m16n8k16 does,
// and each sub-block's sum is scaled after. Checked: every slot of A and B supplied exactly once per
// step, the 16 slots of a step distinct k of one sub-block, and the result equal to the plain sum of
// dequant(w) * x within 1e-5 of sum |w x| (float rounding of the scale-after form). Prints
// "ok <outputs compared>".
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cuda/dequant.h"
#include "cuda/mma_layout.h"
#include "cuda/quant_mma.h"

using namespace dg;
using namespace dg::cuda;

namespace {

int fail(const char *what, int a = 0, int b = 0) {
    std::printf("FAIL %s (%d, %d)\n", what, a, b);
    return 1;
}

float bf16_pair_half(uint32_t reg, int half) { return bf16_to_f32(static_cast<uint16_t>(reg >> (16 * half))); }

template <TensorType T>
std::vector<uint8_t> random_rows(std::mt19937_64 &rng, int rows, int64_t K) {
    using Q = Qmma<T>;
    const int64_t blocks = K / (T == TensorType::Q4_K ? 256 : 32);
    std::vector<uint8_t> w(rows * blocks * Q::kBlockBytes);
    for (auto &b : w) b = static_cast<uint8_t>(rng());
    std::uniform_real_distribution<float> d(-0.05f, 0.05f), dmin(0.0f, 0.05f);
    for (int64_t i = 0; i < rows * blocks; ++i) {
        uint8_t *blk = w.data() + i * Q::kBlockBytes;
        const uint16_t dh = f32_to_f16(d(rng));
        std::memcpy(blk, &dh, 2);
        if (T == TensorType::Q4_K) {
            const uint16_t mh = f32_to_f16(dmin(rng));
            std::memcpy(blk + 2, &mh, 2);
        }
    }
    return w;
}

template <TensorType T>
int check(std::mt19937_64 &rng, int64_t K, long &compared) {
    using Q = Qmma<T>;
    constexpr int M = 16, N = 8;
    const int64_t row_bytes = K / (T == TensorType::Q4_K ? 256 : 32) * Q::kBlockBytes;
    const std::vector<uint8_t> w = random_rows<T>(rng, M, K);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<uint16_t> x(N * K);  // bf16 bits
    for (auto &v : x) v = f32_to_bf16(nd(rng) * 3.0f);
    const auto xf = [&](int tok, int64_t k) { return bf16_to_f32(x[tok * K + k]); };

    double acc[M][N] = {};
    for (int64_t c = 0; c < K / Q::kChunk; ++c) {
        typename Q::Raw raw[32][2];
        for (int lane = 0; lane < 32; ++lane)
            for (int half = 0; half < 2; ++half)
                Q::load(w.data() + (lane / 4 + 8 * half) * row_bytes, c, lane % 4, raw[lane][half]);
        for (int h = 0; h < Q::kSubs; ++h) {
            double tmp[M][N] = {};
            bool seen_k[kQmmaSub] = {};
            const int64_t sub0 = Q::k0(c, h, 0, 0) / kQmmaSub * kQmmaSub;
            for (int s = 0; s < 2; ++s) {
                float A[M][16], B[16][N];
                int a_set[M][16] = {}, b_set[16][N] = {};
                int64_t slot_k[16];
                for (int i = 0; i < 16; ++i) slot_k[i] = -1;
                for (int lane = 0; lane < 32; ++lane) {
                    const int g = lane / 4, t = lane % 4;
                    const int64_t k0 = Q::k0(c, h, s, t);
                    // lane t's slots: 2t, 2t + 1 -> k0, k0 + 1; 2t + 8, 2t + 9 -> k0 + 2, k0 + 3
                    for (int i = 0; i < 4; ++i) {
                        const int slot = 2 * t + (i % 2) + 8 * (i / 2);
                        if (slot_k[slot] >= 0 && slot_k[slot] != k0 + i) return fail("a slot's k differs between lanes", slot);
                        slot_k[slot] = k0 + i;
                    }
                    uint32_t lo[2], hi[2];  // rows g, g + 8
                    qmma_a_regs<T>(raw[lane][0], h, s, t, lo);
                    qmma_a_regs<T>(raw[lane][1], h, s, t, hi);
                    const uint32_t a[4] = {lo[0], hi[0], lo[1], hi[1]};
                    for (int r = 0; r < 4; ++r)
                        for (int half = 0; half < 2; ++half) {
                            const Coord cd = mma_a_coord(lane, r);
                            A[cd.line][cd.k + half] = bf16_pair_half(a[r], half);
                            ++a_set[cd.line][cd.k + half];
                        }
                    const uint32_t b[2] = {x[g * K + k0] | (uint32_t(x[g * K + k0 + 1]) << 16),
                                           x[g * K + k0 + 2] | (uint32_t(x[g * K + k0 + 3]) << 16)};
                    for (int r = 0; r < 2; ++r)
                        for (int half = 0; half < 2; ++half) {
                            const Coord cd = mma_b_coord(lane, r);
                            B[cd.k + half][cd.line] = bf16_pair_half(b[r], half);
                            ++b_set[cd.k + half][cd.line];
                        }
                }
                for (int i = 0; i < 16; ++i) {
                    if (slot_k[i] < sub0 || slot_k[i] >= sub0 + kQmmaSub) return fail("a slot outside its sub-block", i);
                    if (seen_k[slot_k[i] - sub0]) return fail("a k taken twice in a sub-block", int(slot_k[i]));
                    seen_k[slot_k[i] - sub0] = true;
                    for (int m = 0; m < M; ++m)
                        if (a_set[m][i] != 1) return fail("an A slot not supplied once", m, i);
                    for (int n = 0; n < N; ++n)
                        if (b_set[i][n] != 1) return fail("a B slot not supplied once", i, n);
                }
                for (int m = 0; m < M; ++m)
                    for (int n = 0; n < N; ++n)
                        for (int i = 0; i < 16; ++i) tmp[m][n] += double(A[m][i]) * B[i][n];
            }
            // scale after, per accumulator as the kernels own them
            for (int lane = 0; lane < 32; ++lane)
                for (int r = 0; r < 4; ++r) {
                    const Coord cd = mma_c_coord(lane, r);
                    float a, b;
                    Q::scale(raw[lane][r / 2], static_cast<int>(c % Q::kGroups), h, a, b);
                    double xs = 0;
                    for (int k = 0; k < kQmmaSub; ++k) xs += xf(cd.k, sub0 + k);
                    acc[cd.line][cd.k] += double(a) * tmp[cd.line][cd.k] + double(b) * xs;
                }
        }
    }
    for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
            double want = 0, mag = 0;
            for (int64_t k = 0; k < K; ++k) {
                const double p = double(dequant(T, w.data() + m * row_bytes, k)) * xf(n, k);
                want += p;
                mag += std::fabs(p);
            }
            if (std::fabs(acc[m][n] - want) > 1e-5 * mag + 1e-30) {
                std::printf("FAIL %s row %d token %d: %.9g against %.9g (scale %.3g)\n", T == TensorType::Q4_K ? "Q4_K" : "Q5_0", m, n,
                            acc[m][n], want, mag);
                return 1;
            }
            ++compared;
        }
    return 0;
}

}  // namespace

int main() {
    // the byte permute's host form against its definition
    if (byte_perm(0x44332211u, 0x88776655u, 0x4140u) != 0x55225511u || byte_perm(0x44332211u, 0u, 0x4342u) != 0x00440033u)
        return fail("byte_perm");
    std::mt19937_64 rng(12);
    long compared = 0;
    for (int rep = 0; rep < 20; ++rep) {
        if (check<TensorType::Q4_K>(rng, 256 * (1 + rep % 3), compared)) return 1;
        if (check<TensorType::Q5_0>(rng, 32 * (1 + rep % 5), compared)) return 1;
    }
    std::printf("ok %ld\n", compared);
    return 0;
}
