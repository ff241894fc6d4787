// cuda/flash_attention.h on the host: flash_attention.cu's blocks run lane by lane for decoder segments
// (head sizes 64 to 512, GQA groups of 1 to 8, rings that wrap, F32/F16/BF16 caches, segments with
// and without cached keys, key slices and their merge), against a plain attention in double precision:
//   - the loaders write every element of a tile's queries, keys and values exactly once (zeros past
//     the segment's rows and keys), from the key fa_key names;
//   - the products are taken as mma.m16n8k16 takes them (the fragment tables restated below from the
//     PTX ISA, every A and B element supplied once), the probabilities' A registers are the scores' C
//     registers (flash attention's trick), and the fragment reads fall in distinct banks;
//   - each output is within bf16's rounding of the exact attention: its relative L2 error over the
//     segment under 1e-2 (bf16 queries, keys, values and probabilities; measured about 3e-3), and
//     within 2e-3 of the attention of the bf16-rounded queries, keys and values (the probabilities'
//     rounding alone), whether the keys are cut into slices (merged as flash_merge_kernel merges them)
//     or not.
// Prints "ok <outputs compared>"; exits 1 on disagreements, printing the first ones.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/flash_attention.h"
#include "quant/float_bits.h"
#include "quant/types.h"

using namespace dg;
using namespace dg::cuda;

namespace {

int failures = 0;
void fail(const char *what, long a = 0, long b = 0) {
    if (++failures <= 20) std::printf("FAIL %s (%ld, %ld)\n", what, a, b);
}

float bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }
uint32_t pack(float lo, float hi) { return f32_to_bf16(lo) | (static_cast<uint32_t>(f32_to_bf16(hi)) << 16); }
float half_of(uint32_t reg, int h) { return bf16_to_f32(static_cast<uint16_t>(reg >> (16 * h))); }

// PTX ISA, "Matrix Fragments for mma.m16n8k16" (.bf16): element i of a lane, register i / 2;
// groupID g = lane >> 2, t = lane % 4.
//   A: row g for a0, a1, a4, a5, g + 8 for a2, a3, a6, a7; col 2t + (i & 1), + 8 for a4..a7.
//   B: row (k) 2t + (i & 1), + 8 for b2, b3; col (n) g.
//   C: row g for c0, c1, g + 8 for c2, c3; col 2t + (i & 1).
void warp_mma(const uint32_t (&a)[32][4], const uint32_t (&b)[32][2], float (&d)[32][4]) {
    float A[16][16], B[16][8];
    int seen_a[16][16] = {}, seen_b[16][8] = {};
    for (int lane = 0; lane < 32; ++lane) {
        const int g = lane >> 2, t = lane % 4;
        for (int i = 0; i < 8; ++i) {
            const int row = g + ((i == 2 || i == 3 || i == 6 || i == 7) ? 8 : 0), col = 2 * t + (i & 1) + (i >= 4 ? 8 : 0);
            A[row][col] = half_of(a[lane][i / 2], i % 2);
            ++seen_a[row][col];
        }
        for (int i = 0; i < 4; ++i) {
            const int row = 2 * t + (i & 1) + (i >= 2 ? 8 : 0);
            B[row][g] = half_of(b[lane][i / 2], i % 2);
            ++seen_b[row][g];
        }
    }
    for (int r = 0; r < 16; ++r)
        for (int k = 0; k < 16; ++k)
            if (seen_a[r][k] != 1) fail("A element not supplied once", r, k);
    for (int k = 0; k < 16; ++k)
        for (int n = 0; n < 8; ++n)
            if (seen_b[k][n] != 1) fail("B element not supplied once", k, n);
    for (int lane = 0; lane < 32; ++lane)
        for (int i = 0; i < 4; ++i) {
            const int row = (lane >> 2) + (i >= 2 ? 8 : 0), col = 2 * (lane % 4) + (i & 1);
            float s = d[lane][i];
            for (int k = 0; k < 16; ++k) s += A[row][k] * B[k][col];
            d[lane][i] = s;
        }
}

// A warp's 32-bit reads at these element offsets of a bf16 array: no two different words in one bank.
void check_banks(const long (&at)[32], const char *what) {
    for (int i = 0; i < 32; ++i)
        for (int j = 0; j < i; ++j)
            if (at[i] / 2 != at[j] / 2 && at[i] / 2 % 32 == at[j] / 2 % 32) return fail(what, i, j);
}

struct Case {
    int d, n_head, n_head_kv;
    int64_t n, n_past, capacity, cache_pos0;
    TensorType cache_type;
    bool causal = false;     // an encoder segment (the prompt, a committed canvas)
    int64_t window = 0;      // > 0: a sliding layer's encoder rows
};

// The cache as its type stores it (float -> type -> float): what the kernel reads.
float stored(TensorType t, float x) {
    if (t == TensorType::F16) return f16_to_f32(f32_to_f16(x));
    if (t == TensorType::BF16) return bf16(x);
    return x;
}

long run(const Case &c, std::mt19937_64 &rng, int sm_count) {
    const int D = c.d, r = c.n_head / c.n_head_kv;
    const FaShape S = fa_shape(D);
    const int64_t n_cached = c.n_past - c.cache_pos0, n_keys = n_cached + c.n, q_stride = int64_t(c.n_head) * D,
                  kv_row = int64_t(c.n_head_kv) * D;
    std::normal_distribution<float> nd(0.0f, 1.0f);
    // Queries scaled so the scores spread over a few units (a softmax neither flat nor one-hot).
    std::vector<float> q(c.n * q_stride), k(c.n * kv_row), v(c.n * kv_row), kc(c.capacity * kv_row), vc(c.capacity * kv_row);
    const float qs = 1.5f / std::sqrt(static_cast<float>(D));
    for (float &x : q) x = nd(rng) * qs;
    for (float &x : k) x = nd(rng);
    for (float &x : v) x = nd(rng);
    for (float &x : kc) x = stored(c.cache_type, nd(rng));
    for (float &x : vc) x = stored(c.cache_type, nd(rng));
    const auto key_row = [&](int64_t j, bool value) -> const float * {  // the row of key j (kv_group's choice)
        const FaKey fk = fa_key(j, n_cached, c.cache_pos0, c.capacity);
        return fk.cached ? (value ? vc : kc).data() + fk.at * kv_row : (value ? v : k).data() + fk.at * kv_row;
    };

    // The reference: exact attention over the visible keys (attention_span.h: key j sits at position
    // cache_pos0 + j), of the inputs and of their bf16 roundings.
    const dg::AttentionSpan span{c.n, c.n_past, c.causal, c.window, c.cache_pos0};
    std::vector<double> want(c.n * q_stride), want_bf(c.n * q_stride);
    for (int64_t i = 0; i < c.n; ++i)
        for (int h = 0; h < c.n_head; ++h)
            for (int rounded = 0; rounded < 2; ++rounded) {
                const int kvh = h / r;
                std::vector<double> p(n_keys);
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < n_keys; ++j) {
                    const int64_t pos = c.cache_pos0 + j;
                    if (pos < dg::span_lo(span, i) || pos >= dg::span_hi(span, i)) {
                        p[j] = -INFINITY;
                        continue;
                    }
                    double s = 0;
                    for (int e = 0; e < D; ++e) {
                        const float a = q[i * q_stride + h * D + e], b = key_row(j, false)[kvh * D + e];
                        s += double(rounded ? bf16(a) : a) * (rounded ? bf16(b) : b);
                    }
                    p[j] = s;
                    mx = std::max(mx, s);
                }
                for (double &x : p) sum += (x = std::exp(x - mx));
                for (int e = 0; e < D; ++e) {
                    double o = 0;
                    for (int64_t j = 0; j < n_keys; ++j) {
                        const float b = key_row(j, true)[kvh * D + e];
                        o += p[j] * (rounded ? bf16(b) : b);
                    }
                    (rounded ? want_bf : want)[i * q_stride + h * D + e] = o / sum;
                }
            }

    // The kernel, block by block: outputs of the slices (unnormalised) and their maxima and sums.
    const int64_t row_blocks = (c.n * r + S.rows - 1) / S.rows, key_tiles = (n_keys + S.keys - 1) / S.keys;
    long compared = 0;
    for (bool cut : {false, true}) {
        const FaSlices sl = fa_slices(key_tiles, row_blocks * c.n_head_kv, sm_count, cut);
        if (cut && sl.slices == 1) continue;  // nothing to cut at this size
        std::vector<float> part_o(sl.slices * c.n * q_stride, NAN), part_ml(sl.slices * c.n * c.n_head * 2, NAN);
        for (int64_t rb = 0; rb < row_blocks; ++rb)
            for (int kvh = 0; kvh < c.n_head_kv; ++kvh)
                for (int slice = 0; slice < sl.slices; ++slice) {
                    const int64_t rho0 = rb * S.rows, n_rows = c.n * r;
                    std::vector<uint16_t> qsh(S.rows * S.ldq, 0xffff), ksh(S.keys * S.ldk, 0xffff), vsh(D * S.ldv, 0xffff);
                    std::vector<int> qseen(qsh.size()), kseen(ksh.size()), vseen(vsh.size());
                    for (int t = 0; t < kFaThreads; ++t)
                        for (int it = 0; it < S.rows * D / 4 / kFaThreads; ++it) {
                            const FaGroup gr = fa_row_group(t, it, D);
                            const int64_t rho = rho0 + gr.line;
                            for (int e = 0; e < 4; ++e) {
                                float x = 0.0f;
                                if (rho < n_rows) {
                                    const FaRow fr = fa_row(rho, r, kvh);
                                    x = q[fr.query * q_stride + fr.head * D + gr.dim + e];
                                }
                                qsh[gr.line * S.ldq + gr.dim + e] = f32_to_bf16(x);
                                ++qseen[gr.line * S.ldq + gr.dim + e];
                            }
                        }
                    for (int line = 0; line < S.rows; ++line)
                        for (int e = 0; e < D; ++e)
                            if (qseen[line * S.ldq + e] != 1) fail("query element not loaded once", line, e);
                    struct Lane {
                        std::vector<float> o;
                        float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
                    };
                    std::vector<Lane> lanes(kFaThreads);
                    const int out_tiles = D / S.split / 8, score_tiles = S.keys / 8;
                    for (Lane &ln : lanes) ln.o.assign(out_tiles * 4, 0.0f);
                    const int64_t tile0 = slice * sl.tiles_per_slice, tile_end = std::min(tile0 + sl.tiles_per_slice, key_tiles);
                    const FaTiles walk = fa_block_keys(span, rho0, S.rows, n_rows, r, S.keys, tile0, tile_end);
                    // Every tile the block skips holds no key any of its rows sees (checked on the keys).
                    for (int64_t tile = tile0; tile < tile_end; ++tile) {
                        if (tile >= walk.first && tile < walk.end) continue;
                        for (int64_t rho = rho0; rho < std::min(rho0 + S.rows, n_rows); ++rho) {
                            const FaKeys kr = fa_query_keys(span, fa_row(rho, r, kvh).query);
                            if (kr.lo < (tile + 1) * S.keys && tile * S.keys < kr.hi) fail("a skipped tile holds a row's key", rho, tile);
                        }
                    }
                    for (int64_t tile = walk.first; tile < walk.end; ++tile) {
                        const int64_t j0 = tile * S.keys, slot0 = j0 < n_cached ? (c.cache_pos0 + j0) % c.capacity : 0;
                        // The kernel's row of the tile's key dj (kv_group: the slot from the tile's first).
                        const auto tile_row = [&](int dj, bool value) -> const float * {
                            const int64_t j = j0 + dj;
                            if (j >= n_cached) return (value ? v : k).data() + (j - n_cached) * kv_row;
                            return (value ? vc : kc).data() + fa_slot(slot0, dj, c.capacity, S.keys) * kv_row;
                        };
                        std::fill(kseen.begin(), kseen.end(), 0);
                        std::fill(vseen.begin(), vseen.end(), 0);
                        for (int t = 0; t < kFaThreads; ++t)
                            for (int it = 0; it < S.keys * D / 4 / kFaThreads; ++it) {
                                const FaGroup gk = fa_row_group(t, it, D), gv = fa_value_group(t, it, S.keys);
                                for (int e = 0; e < 4; ++e) {
                                    const float kx = j0 + gk.line < n_keys ? tile_row(gk.line, false)[kvh * D + gk.dim + e] : 0.0f;
                                    const float vx = j0 + gv.line < n_keys ? tile_row(gv.line, true)[kvh * D + gv.dim + e] : 0.0f;
                                    ksh[gk.line * S.ldk + gk.dim + e] = f32_to_bf16(kx);
                                    ++kseen[gk.line * S.ldk + gk.dim + e];
                                    vsh[(gv.dim + e) * S.ldv + gv.line] = f32_to_bf16(vx);
                                    ++vseen[(gv.dim + e) * S.ldv + gv.line];
                                }
                            }
                        for (int j = 0; j < S.keys; ++j)
                            for (int e = 0; e < D; ++e) {
                                if (kseen[j * S.ldk + e] != 1) fail("key element not loaded once", j, e);
                                if (vseen[e * S.ldv + j] != 1) fail("value element not loaded once", j, e);
                            }
                        for (int warp = 0; warp < kFaWarps; ++warp) {
                            const int row0 = fa_warp_row0(warp, S), dim0 = fa_warp_dim0(warp, S);
                            std::vector<float> s(score_tiles * 32 * 4, 0.0f);  // [nt][lane][4]
                            for (int k0 = 0; k0 < D; k0 += 16) {
                                uint32_t a[32][4];
                                for (int rr = 0; rr < 4; ++rr) {
                                    long at[32];
                                    for (int lane = 0; lane < 32; ++lane) {
                                        const Coord cc = mma_a_coord(lane, rr);
                                        at[lane] = (row0 + cc.line) * S.ldq + k0 + cc.k;
                                        a[lane][rr] = qsh[at[lane]] | (uint32_t(qsh[at[lane] + 1]) << 16);
                                    }
                                    check_banks(at, "query fragment read");
                                }
                                for (int nt = 0; nt < score_tiles; ++nt) {
                                    uint32_t b[32][2];
                                    for (int rr = 0; rr < 2; ++rr) {
                                        long at[32];
                                        for (int lane = 0; lane < 32; ++lane) {
                                            const Coord cc = mma_b_coord(lane, rr);
                                            at[lane] = (8 * nt + cc.line) * S.ldk + k0 + cc.k;
                                            b[lane][rr] = ksh[at[lane]] | (uint32_t(ksh[at[lane] + 1]) << 16);
                                        }
                                        check_banks(at, "key fragment read");
                                    }
                                    float acc[32][4];
                                    for (int lane = 0; lane < 32; ++lane)
                                        for (int i = 0; i < 4; ++i) acc[lane][i] = s[(nt * 32 + lane) * 4 + i];
                                    warp_mma(a, b, acc);
                                    for (int lane = 0; lane < 32; ++lane)
                                        for (int i = 0; i < 4; ++i) s[(nt * 32 + lane) * 4 + i] = acc[lane][i];
                                }
                            }
                            // The softmax per lane and row half, the quad's maximum first.
                            for (int h = 0; h < 2; ++h) {
                                float x[32][2 * kFaMaxDim / 8], mx[32];
                                for (int lane = 0; lane < 32; ++lane) {
                                    mx[lane] = -INFINITY;
                                    const int64_t rho = rho0 + row0 + lane / 4 + 8 * h;  // the kernel's key_lo, key_hi
                                    const FaKeys kr = rho < n_rows ? fa_query_keys(span, fa_row(rho, r, kvh).query) : FaKeys{0, 0};
                                    for (int nt = 0; nt < score_tiles; ++nt)
                                        for (int cc = 0; cc < 2; ++cc) {
                                            const int64_t key = j0 + 8 * nt + mma_c_coord(lane, 2 * h + cc).k;
                                            const float val = key >= kr.lo && key < kr.hi ? s[(nt * 32 + lane) * 4 + 2 * h + cc] : -INFINITY;
                                            x[lane][2 * nt + cc] = val;
                                            mx[lane] = std::max(mx[lane], val);
                                        }
                                }
                                for (int lane = 0; lane < 32; ++lane) {
                                    float qm = -INFINITY;
                                    for (int o = 0; o < 4; ++o) qm = std::max(qm, mx[(lane & ~3) | o]);
                                    Lane &ln = lanes[32 * warp + lane];
                                    float rescale;
                                    if (score_tiles == 8) {
                                        float xs[16];
                                        std::copy(x[lane], x[lane] + 16, xs);
                                        rescale = fa_softmax_lane(xs, qm, ln.m[h], ln.l[h]);
                                        std::copy(xs, xs + 16, x[lane]);
                                    } else {
                                        float xs[8];
                                        std::copy(x[lane], x[lane] + 8, xs);
                                        rescale = fa_softmax_lane(xs, qm, ln.m[h], ln.l[h]);
                                        std::copy(xs, xs + 8, x[lane]);
                                    }
                                    for (int nt = 0; nt < score_tiles; ++nt)
                                        for (int cc = 0; cc < 2; ++cc) s[(nt * 32 + lane) * 4 + 2 * h + cc] = x[lane][2 * nt + cc];
                                    for (int nt = 0; nt < out_tiles; ++nt)
                                        for (int cc = 0; cc < 2; ++cc) ln.o[nt * 4 + 2 * h + cc] *= rescale;
                                }
                            }
                            // P V: the scores' C registers of n-tiles 2 kk, 2 kk + 1 as A.
                            for (int kk = 0; kk < S.keys / 16; ++kk) {
                                uint32_t a[32][4];
                                for (int lane = 0; lane < 32; ++lane) {
                                    const float *s0 = &s[((2 * kk) * 32 + lane) * 4], *s1 = &s[((2 * kk + 1) * 32 + lane) * 4];
                                    a[lane][0] = pack(s0[0], s0[1]);
                                    a[lane][1] = pack(s0[2], s0[3]);
                                    a[lane][2] = pack(s1[0], s1[1]);
                                    a[lane][3] = pack(s1[2], s1[3]);
                                }
                                for (int nt = 0; nt < out_tiles; ++nt) {
                                    uint32_t b[32][2];
                                    for (int rr = 0; rr < 2; ++rr) {
                                        long at[32];
                                        for (int lane = 0; lane < 32; ++lane) {
                                            const Coord cc = mma_b_coord(lane, rr);
                                            at[lane] = (dim0 + 8 * nt + cc.line) * S.ldv + 16 * kk + cc.k;
                                            b[lane][rr] = vsh[at[lane]] | (uint32_t(vsh[at[lane] + 1]) << 16);
                                        }
                                        check_banks(at, "value fragment read");
                                    }
                                    float acc[32][4];
                                    for (int lane = 0; lane < 32; ++lane)
                                        for (int i = 0; i < 4; ++i) acc[lane][i] = lanes[32 * warp + lane].o[nt * 4 + i];
                                    warp_mma(a, b, acc);
                                    for (int lane = 0; lane < 32; ++lane)
                                        for (int i = 0; i < 4; ++i) lanes[32 * warp + lane].o[nt * 4 + i] = acc[lane][i];
                                }
                            }
                        }
                    }
                    // The rows' sums over their quads, and the stores.
                    for (int warp = 0; warp < kFaWarps; ++warp) {
                        const int row0 = fa_warp_row0(warp, S), dim0 = fa_warp_dim0(warp, S);
                        for (int lane = 0; lane < 32; ++lane)
                            for (int h = 0; h < 2; ++h) {
                                float lsum = 0;
                                for (int o = 0; o < 4; ++o) lsum += lanes[32 * warp + ((lane & ~3) | o)].l[h];
                                const int64_t rho = rho0 + row0 + lane / 4 + 8 * h;
                                if (rho >= n_rows) continue;
                                const FaRow fr = fa_row(rho, r, kvh);
                                for (int nt = 0; nt < out_tiles; ++nt)
                                    for (int cc = 0; cc < 2; ++cc) {
                                        const int dim = dim0 + 8 * nt + 2 * (lane % 4) + cc;
                                        part_o[((slice * c.n + fr.query) * c.n_head + fr.head) * D + dim] = lanes[32 * warp + lane].o[nt * 4 + 2 * h + cc];
                                    }
                                if (dim0 == 0 && lane % 4 == 0) {
                                    part_ml[((slice * c.n + fr.query) * c.n_head + fr.head) * 2] = lanes[32 * warp + lane].m[h];
                                    part_ml[((slice * c.n + fr.query) * c.n_head + fr.head) * 2 + 1] = lsum;
                                }
                            }
                    }
                }
        // The merge (flash_merge_kernel's arithmetic; with one slice, the kernel's own division).
        std::vector<float> got(c.n * q_stride, NAN);
        for (int64_t row = 0; row < c.n * c.n_head; ++row) {
            float m_max = -INFINITY, total = 0;
            for (int sidx = 0; sidx < sl.slices; ++sidx) m_max = std::max(m_max, part_ml[(sidx * c.n * c.n_head + row) * 2]);
            for (int sidx = 0; sidx < sl.slices; ++sidx)
                total += fa_merge_weight(part_ml[(sidx * c.n * c.n_head + row) * 2], m_max) * part_ml[(sidx * c.n * c.n_head + row) * 2 + 1];
            for (int e = 0; e < D; ++e) {
                float acc = 0;
                for (int sidx = 0; sidx < sl.slices; ++sidx)
                    acc += fa_merge_weight(part_ml[(sidx * c.n * c.n_head + row) * 2], m_max) * part_o[(sidx * c.n * c.n_head + row) * D + e];
                got[(row / c.n_head) * q_stride + (row % c.n_head) * D + e] = acc / total;
            }
        }
        double num = 0, den = 0, num_bf = 0, den_bf = 0;
        for (size_t i = 0; i < got.size(); ++i) {
            if (!std::isfinite(got[i])) {
                fail("output not written or not finite", static_cast<long>(i));
                break;
            }
            num += (got[i] - want[i]) * (got[i] - want[i]);
            den += want[i] * want[i];
            num_bf += (got[i] - want_bf[i]) * (got[i] - want_bf[i]);
            den_bf += want_bf[i] * want_bf[i];
        }
        const double err = std::sqrt(num / den), err_bf = std::sqrt(num_bf / den_bf);
        if (!(err < 1e-2) || !(err > 0)) fail("output not within bf16 rounding of the attention", long(D), long(1e6 * err));
        if (!(err_bf < 2e-3)) fail("output not within the probabilities' rounding", long(D), long(1e6 * err_bf));
        if (failures) std::printf("  d=%d r=%d n=%ld keys=%ld causal=%d window=%ld slices=%d: %.2e (bf16 inputs %.2e)\n", D, r, long(c.n),
                                  long(n_keys), int(c.causal), long(c.window), sl.slices, err, err_bf);
        compared += static_cast<long>(got.size());
    }
    return compared;
}

}  // namespace

int main() {
    std::mt19937_64 rng(20261207);
    const Case cases[] = {
        {64, 4, 4, 37, 200, 512, 0, TensorType::F32},       // one head a group; cached keys, no ring wrap
        {128, 8, 4, 64, 300, 255, 45, TensorType::F16},     // a ring that wraps (positions 45..299 in 255 slots)
        {256, 16, 8, 96, 512, 1023, 0, TensorType::BF16},   // the 26B's sliding layers' shapes (part of a canvas)
        {512, 16, 2, 40, 900, 2048, 0, TensorType::F32},    // its global layers' head size, groups of 8
        {192, 8, 2, 5, 0, 64, 0, TensorType::F32},          // no cached keys; a partial tile of rows
        {320, 4, 2, 19, 77, 100, 0, TensorType::BF16},      // split dimensions of 160
        {64, 4, 2, 9, 12, 7, 5, TensorType::F16},           // a ring smaller than a tile: several wraps
        // Encoder segments: causal, and windowed in sliding layers (a ring of window - 1 positions).
        {256, 16, 8, 96, 512, 1023, 0, TensorType::BF16, true, 1024},  // the 26B's sliding layers, a prompt chunk
        {512, 16, 2, 40, 900, 2048, 0, TensorType::F32, true, 0},      // its global layers: every earlier position
        {128, 8, 4, 64, 300, 255, 45, TensorType::F16, true, 256},     // a ring that wraps; the window cuts cached keys
        {64, 4, 2, 70, 0, 31, 0, TensorType::F32, true, 32},           // a prompt's first chunk, longer than its window
        {64, 4, 4, 37, 200, 512, 0, TensorType::F32, true, 0},         // one head a group
        {64, 4, 4, 200, 0, 15, 0, TensorType::F32, true, 16},          // a block's queries' windows start in two tiles
    };
    long compared = 0;
    for (const Case &c : cases) compared += run(c, rng, 132);
    if (fa_slices(12, 64, 132, true).slices != 4 || fa_slices(12, 64, 132, false).slices != 1 || fa_slices(3, 8, 132, true).slices != 3 ||
        fa_slices(10, 300, 132, true).slices != 1)
        fail("fa_slices");
    if (failures) {
        std::printf("%d failures\n", failures);
        return 1;
    }
    std::printf("ok %ld\n", compared);
    return 0;
}
