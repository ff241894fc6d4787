// cuda/wgmma.h (the warpgroup products of cuda/wgmma.cu) on the host, stage by stage and thread by
// thread as the kernels run it:
//   - the loaders (tokens by cp.async, dense weights, turned table) write every element of a stage's
//     operands once, and each warp's stores are free of bank conflicts;
//   - the descriptors hold the layout's offsets in their fields;
//   - the products, read from the stage bytes the way the PTX ISA's K-major, no-swizzle canonical layout
//     says a descriptor addresses them (restated here from the ISA's text, not from wgmma.h), and
//     handed out by the ISA's m64nNk16 accumulator table (restated likewise), equal a plain product of
//     the bf16-rounded operands for every (row, token) of a block, each owned by one accumulator;
//   - the soft embedding's parts cover the vocabulary in whole stages;
//   - the L2 prefetches are whole blocks of GGUF's shapes, cover each block of a row once, and touch
//     every 128-byte line of their ranges from any start of the row.
// Prints "ok <outputs compared>" or the first failure.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

#include "cuda/wgmma.h"

using namespace dg;
using namespace dg::cuda;

namespace {

int failures = 0;
#define CHECK(c, ...)                                 \
    do {                                              \
        if (!(c)) {                                   \
            if (failures++ < 10) {                    \
                std::printf("FAIL %d: ", __LINE__);   \
                std::printf(__VA_ARGS__);             \
                std::printf("\n");                    \
            }                                         \
        }                                             \
    } while (0)

uint16_t bf16_bits(float f) {  // round to nearest even, as __float2bfloat16_rn (finite inputs)
    uint32_t u;
    std::memcpy(&u, &f, 4);
    u += 0x7FFF + ((u >> 16) & 1);
    return static_cast<uint16_t>(u >> 16);
}
float bf16_value(uint16_t b) {
    const uint32_t u = static_cast<uint32_t>(b) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// A stage as bytes, with a count of writes per byte.
struct Stage {
    std::vector<uint8_t> bytes = std::vector<uint8_t>(kWgStageBytes, 0);
    std::vector<int> writes = std::vector<int>(kWgStageBytes, 0);
    void put16(int at, uint16_t v) {
        std::memcpy(&bytes[at], &v, 2);
        ++writes[at];
        ++writes[at + 1];
    }
    uint16_t get16(int at) const {
        uint16_t v;
        std::memcpy(&v, &bytes[at], 2);
        return v;
    }
};

// 16-byte stores of one warp: per 8-lane phase, the 16-byte bank slots must differ.
void check_16_byte_phases(const int (&byte)[32], const char *what) {
    for (int p = 0; p < 4; ++p) {
        bool seen[8] = {};
        for (int l = 8 * p; l < 8 * p + 8; ++l) {
            CHECK(byte[l] % 16 == 0, "%s: a 16-byte store at byte %d", what, byte[l]);
            const int slot = (byte[l] / 16) % 8;
            CHECK(!seen[slot], "%s: lanes of phase %d share 16-byte slot %d", what, p, slot);
            seen[slot] = true;
        }
    }
}
// 4-byte stores of one warp: 32 different banks.
void check_word_banks(const int (&byte)[32], const char *what) {
    bool seen[32] = {};
    for (int l = 0; l < 32; ++l) {
        const int b = wg_bank(byte[l]);
        CHECK(!seen[b], "%s: two lanes store to bank %d", what, b);
        seen[b] = true;
    }
}

// The ISA's reading of a K-major operand without swizzle (PTX ISA, "Shared Memory Matrix Layout":
// core matrices of 8 rows x 16 bytes, each row's 8 elements contiguous, 8 rows 16 bytes apart; the
// leading byte offset between core matrices adjacent in K, the stride byte offset between those
// adjacent in M or N), from a descriptor's fields: the byte of element (row, k) of the 16-k step.
struct Descriptor {
    uint32_t start, lbo, sbo;
    int swizzle, base_offset;
};
Descriptor decode(uint64_t d) {
    return {static_cast<uint32_t>(d & 0x3FFF) << 4, static_cast<uint32_t>((d >> 16) & 0x3FFF) << 4,
            static_cast<uint32_t>((d >> 32) & 0x3FFF) << 4, static_cast<int>((d >> 62) & 3), static_cast<int>((d >> 49) & 7)};
}
uint32_t isa_byte(const Descriptor &d, int row, int k) {
    return d.start + (row / 8) * d.sbo + (k / 8) * d.lbo + (row % 8) * 16 + (k % 8) * 2;
}

// The ISA's accumulator table for m64nNk16 (f32): thread T of a warpgroup holds, for each 8-column
// chunk j, d[4j] at (16 (T / 32) + (T % 32) / 4, 8 j + 2 (T % 4)), d[4j + 1] one column right,
// d[4j + 2] and d[4j + 3] eight rows down.
void isa_acc(int T, int i, int &row, int &col) {
    const int j = i / 4, r = i % 4;
    row = 16 * (T / 32) + (T % 32) / 4 + (r >= 2 ? 8 : 0);
    col = 8 * j + 2 * (T % 4) + (r % 2);
}

// One block of kWgRows x kWgTokens over K (rows_valid rows and n_valid tokens hold data; the rest
// reads as zeros, as the kernels' bounds make them). turned: A is the transposed table (line = a
// column of the table, k = its row), written by the turned loader.
long run_block(std::mt19937 &rng, int K, int rows_valid, int n_valid, bool turned) {
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    // A[line][k] and B[token][k], already bf16 (the kernels round once on the way into shared memory).
    std::vector<uint16_t> A(static_cast<size_t>(kWgRows) * K), B(static_cast<size_t>(kWgTokens) * K);
    for (int r = 0; r < kWgRows; ++r)
        for (int k = 0; k < K; ++k) A[static_cast<size_t>(r) * K + k] = r < rows_valid ? bf16_bits(u(rng)) : 0;
    for (int t = 0; t < kWgTokens; ++t)
        for (int k = 0; k < K; ++k) B[static_cast<size_t>(t) * K + k] = t < n_valid ? bf16_bits(u(rng)) : 0;
    auto a_at = [&](int line, int k) -> uint16_t { return k < K ? A[static_cast<size_t>(line) * K + k] : 0; };
    auto b_at = [&](int t, int k) -> uint16_t { return k < K ? B[static_cast<size_t>(t) * K + k] : 0; };

    std::vector<double> D(static_cast<size_t>(kWgRows) * kWgTokens, 0.0);
    const uint32_t stage_addr = 2 * kWgStageBytes;  // a stage that is not the window's first (the kernels' second)
    const int stages = (K + kWgK - 1) / kWgK;
    for (int c = 0; c < stages; ++c) {
        Stage st;
        const int k0 = c * kWgK;
        // The tokens' copies and the dense weights: group coordinates, 16 bytes each.
        for (int w = 0; w < kWgThreads / 32; ++w) {
            for (int i = 0; i < kWgBGroups; ++i) {
                int byte[32];
                for (int l = 0; l < 32; ++l) {
                    const WgCoord g = wg_group_coord(32 * w + l, i);
                    byte[l] = kWgStageA + wg_offset(g.line, g.k);
                    for (int j = 0; j < 8; ++j) st.put16(byte[l] + 2 * j, b_at(g.line, k0 + g.k + j));
                }
                check_16_byte_phases(byte, "tokens");
            }
            if (!turned) {
                for (int i = 0; i < kWgDenseGroups; ++i) {
                    int byte[32];
                    for (int l = 0; l < 32; ++l) {
                        const WgCoord g = wg_group_coord(32 * w + l, i);
                        byte[l] = wg_offset(g.line, g.k);
                        for (int j = 0; j < 8; ++j) st.put16(byte[l] + 2 * j, a_at(g.line, k0 + g.k + j));
                    }
                    check_16_byte_phases(byte, "dense weights");
                }
            } else {
                for (int i = 0; i < kWgTurnedGroups; ++i)
                    for (int j = 0; j < 8; ++j) {  // store j of each lane: the pair (k, k + 1) of line + j
                        int byte[32];
                        for (int l = 0; l < 32; ++l) {
                            const WgCoord g = wg_turned_coord(32 * w + l, i);
                            byte[l] = wg_offset(g.line + j, g.k);
                            CHECK(g.k % 2 == 0 && byte[l] % 4 == 0, "turned pair at k %d, byte %d", g.k, byte[l]);
                            st.put16(byte[l], a_at(g.line + j, k0 + g.k));
                            st.put16(byte[l] + 2, a_at(g.line + j, k0 + g.k + 1));
                        }
                        check_word_banks(byte, "turned table");
                    }
            }
        }
        // Every element of both operands written once; nothing written outside them.
        for (int line = 0; line < kWgRows; ++line)
            for (int k = 0; k < kWgK; ++k) {
                const int at = wg_offset(line, k);
                CHECK(st.writes[at] == 1 && st.writes[at + 1] == 1, "A (%d, %d) written %d times", line, k, st.writes[at]);
            }
        for (int t = 0; t < kWgTokens; ++t)
            for (int k = 0; k < kWgK; ++k) {
                const int at = kWgStageA + wg_offset(t, k);
                CHECK(st.writes[at] == 1 && st.writes[at + 1] == 1, "B (%d, %d) written %d times", t, k, st.writes[at]);
            }
        long total = 0;
        for (int w : st.writes) total += w;
        CHECK(total == 2L * kWgK * (kWgRows + kWgTokens), "stage writes %ld bytes", total);

        // The warpgroups' products, operands read as the ISA reads the descriptors.
        for (int g = 0; g < kWgGroups; ++g)
            for (int s = 0; s < kWgK / 16; ++s) {
                const Descriptor da = decode(wg_descriptor(stage_addr + wg_a_step_offset(g, s)));
                const Descriptor db = decode(wg_descriptor(stage_addr + kWgStageA + wg_b_step_offset(s)));
                CHECK(da.swizzle == 0 && db.swizzle == 0 && da.base_offset == 0, "descriptor mode bits");
                CHECK(da.lbo == kWgLbo && da.sbo == kWgSbo && db.lbo == kWgLbo && db.sbo == kWgSbo, "descriptor offsets");
                CHECK(da.start % 16 == 0 && db.start % 16 == 0, "descriptor start");
                for (int m = 0; m < 64; ++m)
                    for (int n = 0; n < kWgTokens; ++n) {
                        double sum = 0.0;
                        for (int k = 0; k < 16; ++k) {
                            const uint32_t ab = isa_byte(da, m, k) - stage_addr, bb = isa_byte(db, n, k) - stage_addr;
                            CHECK(ab + 1 < kWgStageA && bb >= kWgStageA && bb + 1 < kWgStageBytes, "operand read outside");
                            sum += static_cast<double>(bf16_value(st.get16(static_cast<int>(ab)))) * bf16_value(st.get16(static_cast<int>(bb)));
                        }
                        D[static_cast<size_t>(64 * g + m) * kWgTokens + n] += sum;
                    }
            }
    }

    // Hand the accumulators out by the ISA's table; each must be the one wg_acc_coord names, and each
    // (row, token) owned once.
    std::vector<int> owned(static_cast<size_t>(kWgRows) * kWgTokens, 0);
    long compared = 0;
    for (int t = 0; t < kWgThreads; ++t)
        for (int i = 0; i < kWgAcc; ++i) {
            int row, col;
            isa_acc(t % 128, i, row, col);
            row += 64 * (t / 128);
            const WgCoord o = wg_acc_coord(t, i);
            CHECK(o.line == row && o.k == col, "accumulator %d of thread %d: (%d, %d) against the ISA's (%d, %d)", i, t, o.line,
                  o.k, row, col);
            ++owned[static_cast<size_t>(row) * kWgTokens + col];
            if (row < rows_valid && col < n_valid) {
                double want = 0.0, mag = 0.0;
                for (int k = 0; k < K; ++k) {
                    const double p = static_cast<double>(bf16_value(a_at(row, k))) * bf16_value(b_at(col, k));
                    want += p;
                    mag += std::fabs(p);
                }
                const double got = D[static_cast<size_t>(row) * kWgTokens + col];
                CHECK(std::fabs(got - want) <= 1e-9 * (mag + 1.0), "D(%d, %d) = %g, want %g", row, col, got, want);
                ++compared;
            }
        }
    for (int v : owned) CHECK(v == 1, "an output owned %d times", v);
    return compared;
}

}  // namespace

int main() {
    std::mt19937 rng(20261208);
    long compared = 0;
    // Whole stages, a k ending inside a stage, and partial row and token tiles; dense and turned.
    const int cases[][3] = {{64, kWgRows, kWgTokens}, {96, 100, 256}, {40, 128, 17}, {32, 1, 1}, {136, 77, 200}};
    for (const auto &c : cases)
        for (bool turned : {false, true}) compared += run_block(rng, c[0], c[1], c[2], turned);

    // Shapes and limits: the stage fits the shared memory a block may ask for, the descriptor fields
    // hold the offsets and the last stage's address, the operands do not overlap.
    CHECK(kWgSmemBytes <= 227 * 1024, "stages take %d bytes", kWgSmemBytes);
    CHECK((kWgLbo >> 4) < (1 << 14) && (kWgSbo >> 4) < (1 << 14) && ((kWgSmemBytes >> 4) < (1 << 14)), "descriptor fields");
    CHECK(kWgLbo % 16 == 0 && kWgSbo % 16 == 0 && kWgStageA % 128 == 0 && kWgStageBytes % 128 == 0, "alignment");
    CHECK(wg_offset(kWgRows - 1, kWgK - 1) + 2 <= kWgStageA && wg_offset(kWgTokens - 1, kWgK - 1) + 2 <= kWgStageB, "sizes");

    // The soft embedding's parts: whole stages, the vocabulary covered, a wave of blocks at the 26B
    // shapes on 132 multiprocessors.
    CHECK(wg_soft_embed_parts(2816, 132, 16) == 6, "26B parts %d", wg_soft_embed_parts(2816, 132, 16));
    for (int64_t V : {int64_t{262144}, int64_t{8192}, int64_t{1000}, int64_t{33}})
        for (int parts : {1, 6, 16}) {
            const int64_t rows = wg_part_rows(V, parts);
            CHECK(rows % kWgK == 0 && rows * parts >= V && rows * (parts - 1) < V + kWgK * parts, "parts of %lld", (long long)V);
        }
    CHECK(wg_soft_embed_parts(100000, 132, 16) == 1 && wg_soft_embed_parts(64, 132, 16) == 16, "part bounds");

    // The L2 prefetches: a range is the whole blocks of its elements; a dense row's prefetches cover
    // every block of the row once; the lines called cover every 128-byte line a range touches, from
    // any start of the row.
    // (type, elements and bytes of a block: GGUF's, ggml's type table)
    const std::tuple<TensorType, int64_t, int64_t, const char *> shapes[] = {
        {TensorType::F32, 1, 4, "F32"},      {TensorType::F16, 1, 2, "F16"},      {TensorType::BF16, 1, 2, "BF16"},
        {TensorType::Q8_0, 32, 34, "Q8_0"},  {TensorType::Q4_0, 32, 18, "Q4_0"},  {TensorType::Q4_1, 32, 20, "Q4_1"},
        {TensorType::Q5_0, 32, 22, "Q5_0"},  {TensorType::Q5_1, 32, 24, "Q5_1"},  {TensorType::Q4_K, 256, 144, "Q4_K"},
        {TensorType::Q5_K, 256, 176, "Q5_K"}, {TensorType::Q6_K, 256, 210, "Q6_K"}};
    for (const auto &[t, elements, bytes, name] : shapes) {
        const WgBlockShape b = wg_block_shape(t);
        CHECK(b.elements == elements && b.bytes == bytes, "%s block shape", name);
        const int64_t K = 2816 / b.elements * b.elements;
        std::vector<int> covered(static_cast<size_t>(K / b.elements * b.bytes), 0);
        for (int64_t k0 = 0; k0 < K; k0 += kWgK)
            if (wg_dense_prefetch_at(t, k0)) {
                const WgByteRange r = wg_dense_prefetch_bytes(t, k0);
                CHECK(r.first == k0 / b.elements * b.bytes, "%s range start", name);
                for (int64_t x = r.first; x <= r.last && x < static_cast<int64_t>(covered.size()); ++x) ++covered[x];
            }
        for (int c : covered) CHECK(c == 1, "%s: a row byte prefetched %d times", name, c);
        for (int64_t e0 : {int64_t{0}, int64_t{128}, int64_t{256}, int64_t{2688}}) {
            const WgByteRange r = wg_block_bytes(t, e0, 128);
            CHECK(r.first <= e0 / b.elements * b.bytes && r.last >= ((e0 + 127) / b.elements + 1) * b.bytes - 1 &&
                      (r.last - r.first + 1) % b.bytes == 0, "%s columns from %lld", name, (long long)e0);
        }
        for (int64_t base : {int64_t{0}, int64_t{2}, int64_t{126}, int64_t{1000}})
            for (int64_t first = 0; first < 600; first += 37)
                for (int64_t len : {int64_t{1}, int64_t{34}, int64_t{128}, int64_t{210}, int64_t{420}, int64_t{512}}) {
                    std::vector<int> lines;
                    wg_for_each_line(WgByteRange{first, first + len - 1}, [&](int64_t x) {
                        CHECK(x >= first && x <= first + len - 1, "a line call outside its range");
                        lines.push_back(static_cast<int>((base + x) / 128));
                    });
                    for (int64_t line = (base + first) / 128; line <= (base + first + len - 1) / 128; ++line)
                        CHECK(std::count(lines.begin(), lines.end(), line) >= 1, "line %lld of a range not prefetched", (long long)line);
                }
    }

    if (failures) {
        std::printf("%d failures\n", failures);
        return 1;
    }
    std::printf("ok %ld\n", compared);
    return 0;
}
