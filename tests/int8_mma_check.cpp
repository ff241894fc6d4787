// cuda/int8_mma.h on the host: the int8 tensor-core path (int8_mma.cu) run lane by lane as the kernels
// run it, against the CPU's portable reference (quant/*.cpp), bit for bit:
//   - the activation quantizer: a warp per 256-element unit, each lane's 8 elements, the lanes'
//     candidates reduced by xor shuffles as the kernel does, gives q8_k_row_from_float's and
//     q8_0_row_from_float's codes and scales exactly (rows with planted ties of opposite sign,
//     all-zero units, rows that end inside a unit);
//   - a block's tile: the stage copies (i8_weight_span, i8_token_span, the scales' copies) fill
//     every byte of a unit once, zeros past the rows and tokens; each warp's A and B registers come
//     from the stage through I8Weight<T> and i8_b_coord, the products are taken as mma.m16n8k32
//     takes them (the fragment tables restated below from the PTX ISA, not from int8_mma.h: every
//     element of A and B supplied exactly once), the sums combined as the kernels combine them; the
//     result equals vec_dot_q4_k_q8_k, vec_dot_q5_0_q8_0 and vec_dot_q8_0_q8_0 for every row and
//     token, bit for bit, for row counts and k that end inside a block's tile and inside a unit;
//   - the fragment reads from shared memory fall in distinct banks (or broadcast).
// Prints "ok <outputs compared>"; exits 1 on the first disagreements, printing them.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

#include "cuda/int8_mma.h"

using namespace dg;
using namespace dg::cuda;

namespace {

int failures = 0;
void fail(const char *what, long a = 0, long b = 0) {
    if (++failures <= 20) std::printf("FAIL %s (%ld, %ld)\n", what, a, b);
}

// PTX ISA, "Matrix Fragments for mma.m16n8k32" (.s8): element i (0..15 of A, 0..7 of B) of a lane,
// register i / 4, byte i % 4; groupID = lane >> 2, threadID_in_group = lane % 4.
//   A: row = groupID for a0..a3 and a8..a11, groupID + 8 otherwise;
//      col = threadID_in_group * 4 + (i & 3) for i < 8, + 16 for i >= 8.
//   B: row (k) = threadID_in_group * 4 + (i & 3) for i < 4, + 16 for i >= 4; col (n) = groupID.
//   C: row = groupID for c0, c1, groupID + 8 for c2, c3; col = threadID_in_group * 2 + (i & 1).
struct RowCol {
    int row, col;
};
RowCol ptx_a(int lane, int i) {
    const bool upper = i < 4 || (i >= 8 && i < 12);
    return {(lane >> 2) + (upper ? 0 : 8), (lane % 4) * 4 + (i & 3) + (i >= 8 ? 16 : 0)};
}
RowCol ptx_b(int lane, int i) { return {(lane % 4) * 4 + (i & 3) + (i >= 4 ? 16 : 0), lane >> 2}; }
RowCol ptx_c(int lane, int i) { return {(lane >> 2) + (i >= 2 ? 8 : 0), (lane % 4) * 2 + (i & 1)}; }

int8_t byte_of(uint32_t reg, int j) { return static_cast<int8_t>((reg >> (8 * j)) & 0xffu); }

// One mma.m16n8k32.s8 of a warp: d[lane][r] = sum_k A[row][k] B[k][col] + c[lane][r], the operands
// read from the lanes' registers where the hardware reads them. Checks every element supplied once.
void warp_mma(const uint32_t (&a)[32][4], const uint32_t (&b)[32][2], const int32_t (&c)[32][4], int32_t (&d)[32][4]) {
    int8_t A[16][32], B[32][8];
    int seen_a[16][32] = {}, seen_b[32][8] = {};
    for (int lane = 0; lane < 32; ++lane) {
        for (int i = 0; i < 16; ++i) {
            const RowCol p = ptx_a(lane, i);
            A[p.row][p.col] = byte_of(a[lane][i / 4], i % 4);
            ++seen_a[p.row][p.col];
        }
        for (int i = 0; i < 8; ++i) {
            const RowCol p = ptx_b(lane, i);
            B[p.row][p.col] = byte_of(b[lane][i / 4], i % 4);
            ++seen_b[p.row][p.col];
        }
    }
    for (int r = 0; r < 16; ++r)
        for (int k = 0; k < 32; ++k)
            if (seen_a[r][k] != 1) fail("A element not supplied once", r, k);
    for (int k = 0; k < 32; ++k)
        for (int n = 0; n < 8; ++n)
            if (seen_b[k][n] != 1) fail("B element not supplied once", k, n);
    for (int lane = 0; lane < 32; ++lane)
        for (int i = 0; i < 4; ++i) {
            const RowCol p = ptx_c(lane, i);
            int32_t s = c[lane][i];
            for (int k = 0; k < 32; ++k) s += int32_t{A[p.row][k]} * B[k][p.col];
            d[lane][i] = s;
        }
}

// PTX ISA, "Matrix Fragments for mma.m16n8k16" with integer types (.s8): A element i (0..7), register
// i / 4: row groupID for i < 4, groupID + 8 otherwise, col threadID_in_group * 4 + (i & 3); B element
// i (0..3): row (k) threadID_in_group * 4 + i, col groupID; C as m16n8k32's.
void warp_mma_k16(const uint32_t (&a)[32][2], const uint32_t (&b)[32], int32_t (&d)[32][4]) {
    int8_t A[16][16], B[16][8];
    int seen_a[16][16] = {}, seen_b[16][8] = {};
    for (int lane = 0; lane < 32; ++lane) {
        for (int i = 0; i < 8; ++i) {
            const int row = (lane >> 2) + (i < 4 ? 0 : 8), col = (lane % 4) * 4 + (i & 3);
            A[row][col] = byte_of(a[lane][i / 4], i % 4);
            ++seen_a[row][col];
        }
        for (int i = 0; i < 4; ++i) {
            const int row = (lane % 4) * 4 + i, col = lane >> 2;
            B[row][col] = byte_of(b[lane], i);
            ++seen_b[row][col];
        }
    }
    for (int r = 0; r < 16; ++r)
        for (int k = 0; k < 16; ++k)
            if (seen_a[r][k] != 1) fail("k16 A element not supplied once", r, k);
    for (int k = 0; k < 16; ++k)
        for (int n = 0; n < 8; ++n)
            if (seen_b[k][n] != 1) fail("k16 B element not supplied once", k, n);
    for (int lane = 0; lane < 32; ++lane)
        for (int i = 0; i < 4; ++i) {
            const RowCol p = ptx_c(lane, i);
            int32_t s = 0;
            for (int k = 0; k < 16; ++k) s += int32_t{A[p.row][k]} * B[k][p.col];
            d[lane][i] = s;
        }
}

// A warp-wide 32-bit load at byte addresses addr[lane] (shared memory): no two different words in
// one bank (the same word is a broadcast).
void check_banks(const long (&addr)[32], const char *what) {
    for (int i = 0; i < 32; ++i)
        for (int j = 0; j < i; ++j)
            if (addr[i] / 4 != addr[j] / 4 && addr[i] / 4 % 32 == addr[j] / 4 % 32) {
                fail(what, i, j);
                return;
            }
}

// --- the activation quantizer, lane by lane ---------------------------------------------------------

// One row as i8_quantize_kernel writes it: codes [padded] and scales [padded / group].
void quantize_like_the_kernel(I8Act format, const float *x, int64_t cols, std::vector<int8_t> &q, std::vector<float> &d) {
    const int64_t padded = i8_padded_cols(cols);
    q.assign(padded, 0x55);  // poisoned: every byte must be written
    d.assign(padded / i8_act_group(format), NAN);
    for (int64_t u = 0; u < padded / kI8UnitK; ++u) {
        float v[32][kI8QuantLaneElems];
        for (int lane = 0; lane < 32; ++lane)
            for (int i = 0; i < kI8QuantLaneElems; ++i) {
                const int64_t c = u * kI8UnitK + kI8QuantLaneElems * lane + i;
                v[lane][i] = c < cols ? x[c] : 0.0f;
            }
        int8_t code[32][kI8QuantLaneElems];
        if (format == I8Act::q8_k) {
            I8Max best[32];
            for (int lane = 0; lane < 32; ++lane) {
                best[lane] = I8Max{0.0f, 0.0f, 0x7fffffff};
                for (int i = 0; i < kI8QuantLaneElems; ++i)
                    if (std::fabs(v[lane][i]) > best[lane].amax) best[lane] = I8Max{std::fabs(v[lane][i]), v[lane][i], kI8QuantLaneElems * lane + i};
            }
            for (int o = 16; o > 0; o >>= 1) {  // __shfl_xor_sync: every lane reads its partner's value before any writes
                I8Max next[32];
                for (int lane = 0; lane < 32; ++lane) next[lane] = i8_pick_max(best[lane], best[lane ^ o]);
                for (int lane = 0; lane < 32; ++lane) best[lane] = next[lane];
            }
            for (int lane = 1; lane < 32; ++lane)
                if (best[lane].index != best[0].index) fail("lanes disagree on the unit's maximum", lane);
            const float iscale = best[0].amax == 0.0f ? 0.0f : q8_k_iscale(best[0].value);
            for (int lane = 0; lane < 32; ++lane)
                for (int i = 0; i < kI8QuantLaneElems; ++i) code[lane][i] = best[0].amax == 0.0f ? int8_t{0} : q8_k_code(iscale, v[lane][i]);
            d[u] = best[0].amax == 0.0f ? 0.0f : 1.0f / iscale;
        } else {
            float amax[32];
            for (int lane = 0; lane < 32; ++lane) {
                amax[lane] = 0.0f;
                for (int i = 0; i < kI8QuantLaneElems; ++i) amax[lane] = std::fmax(amax[lane], std::fabs(v[lane][i]));
            }
            for (int o : {1, 2}) {
                float next[32];
                for (int lane = 0; lane < 32; ++lane) next[lane] = std::fmax(amax[lane], amax[lane ^ o]);
                for (int lane = 0; lane < 32; ++lane) amax[lane] = next[lane];
            }
            for (int lane = 0; lane < 32; ++lane) {
                const float dd = q8_0_d(amax[lane]), id = q8_0_id(dd);
                for (int i = 0; i < kI8QuantLaneElems; ++i) code[lane][i] = q8_0_code(id, v[lane][i]);
                if (lane % 4 == 0) d[u * (kI8UnitK / 32) + lane / 4] = q8_0_scale(dd);
            }
        }
        for (int lane = 0; lane < 32; ++lane)
            for (int i = 0; i < kI8QuantLaneElems; ++i) q[u * kI8UnitK + kI8QuantLaneElems * lane + i] = code[lane][i];
    }
}

std::vector<float> random_row(std::mt19937_64 &rng, int64_t cols) {
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::uniform_real_distribution<float> scale(0.01f, 30.0f);
    const float s = scale(rng);
    std::vector<float> x(cols);
    for (float &v : x) v = nd(rng) * s;
    // Planted: an all-zero 256-element unit, and a largest magnitude taken twice with both signs
    // (Q8_K's sign follows the first), the second one in another lane.
    if (cols >= 512 && rng() % 2) std::fill(x.begin() + 256, x.begin() + 512, 0.0f);
    if (cols >= 256) {
        const int64_t u = (rng() % (cols / 256)) * 256, i = u + rng() % 100, j = u + 128 + rng() % 100;
        const float big = 100.0f * s;
        x[i] = rng() % 2 ? big : -big;
        x[j] = -x[i];
    }
    return x;
}

long check_quantizer(std::mt19937_64 &rng) {
    long compared = 0;
    for (int trial = 0; trial < 200; ++trial) {
        const int64_t cols = trial % 2 ? 256 * (1 + rng() % 12) : 32 * (1 + rng() % 90);
        const std::vector<float> x = random_row(rng, cols);
        std::vector<int8_t> q;
        std::vector<float> d;
        if (cols % 256 == 0) {
            std::vector<BlockQ8_K> ref(cols / 256);
            q8_k_row_from_float(x.data(), ref.data(), cols);
            quantize_like_the_kernel(I8Act::q8_k, x.data(), cols, q, d);
            for (int64_t b = 0; b < cols / 256; ++b) {
                if (std::memcmp(&d[b], &ref[b].d, 4) != 0) fail("Q8_K scale", trial, b);
                for (int e = 0; e < 256; ++e) compared += q[256 * b + e] == ref[b].qs[e] ? 1 : (fail("Q8_K code", trial, 256 * b + e), 0);
            }
        }
        std::vector<BlockQ8_0> ref(cols / 32);
        q8_0_row_from_float(x.data(), ref.data(), cols);
        quantize_like_the_kernel(I8Act::q8_0, x.data(), cols, q, d);
        for (int64_t b = 0; b < cols / 32; ++b) {
            const float want = f16_to_f32(ref[b].d);
            if (std::memcmp(&d[b], &want, 4) != 0) fail("Q8_0 scale", trial, b);
            for (int e = 0; e < 32; ++e) compared += q[32 * b + e] == ref[b].qs[e] ? 1 : (fail("Q8_0 code", trial, 32 * b + e), 0);
        }
        for (int64_t c = cols; c < i8_padded_cols(cols); ++c)
            if (q[c] != 0) fail("padding code not zero", trial, c);
        for (size_t b = cols / 32; b < d.size(); ++b)
            if (d[b] != 0.0f) fail("padding scale not zero", trial, static_cast<long>(b));
    }
    return compared;
}

// --- a block's tile -----------------------------------------------------------------------------

// The four types' blocks and quantizers (the CPU's reference rules).
template <TensorType T>
size_t block_bytes() {
    return T == TensorType::Q4_K   ? sizeof(BlockQ4_K)
           : T == TensorType::Q6_K ? sizeof(BlockQ6_K)
           : T == TensorType::Q5_0 ? sizeof(BlockQ5_0)
                                   : sizeof(BlockQ8_0);
}
template <TensorType T>
size_t row_bytes_of(int64_t cols) {
    return block_bytes<T>() * static_cast<size_t>(cols / (i8_k_quant(T) ? 256 : 32));
}
template <TensorType T>
void quantize_row(const float *x, void *dst, int64_t cols) {
    if (T == TensorType::Q4_K) q4_k_row_from_float(x, dst, cols);
    else if (T == TensorType::Q6_K) q6_k_row_from_float(x, dst, cols);
    else if (T == TensorType::Q5_0) q5_0_row_from_float(x, dst, cols);
    else q8_0_row_from_float(x, dst, cols);
}
const char *type_name(TensorType t) {
    return t == TensorType::Q4_K ? "Q4_K" : t == TensorType::Q6_K ? "Q6_K" : t == TensorType::Q5_0 ? "Q5_0" : "Q8_0";
}

template <TensorType T>
std::vector<uint8_t> random_weights(std::mt19937_64 &rng, int64_t rows, int64_t cols) {
    const size_t rb = row_bytes_of<T>(cols);
    std::vector<uint8_t> w(rb * rows);
    for (int64_t r = 0; r < rows; ++r) {
        if (r % 3 == 2) {  // raw bytes: every scale and min bit pattern, with finite f16 scales
            for (size_t i = 0; i < rb; ++i) w[r * rb + i] = static_cast<uint8_t>(rng());
            const size_t block = block_bytes<T>();
            for (size_t b = 0; b < rb / block; ++b) {
                uint8_t *blk = w.data() + r * rb + b * block;
                const uint16_t h = f32_to_f16(std::ldexp(static_cast<float>(rng() % 1000) / 1000.0f, -static_cast<int>(rng() % 8)));
                std::memcpy(blk + (T == TensorType::Q6_K ? 208 : 0), &h, 2);  // the super-scale (Q6_K's last)
                if (T == TensorType::Q4_K) std::memcpy(blk + 2, &h, 2);
            }
        } else {
            const std::vector<float> x = random_row(rng, cols);
            quantize_row<T>(x.data(), w.data() + r * rb, cols);
        }
    }
    return w;
}

float vec_dot(TensorType t, const uint8_t *w, const void *x, int64_t cols) {
    if (t == TensorType::Q4_K) return vec_dot_q4_k_q8_k(w, x, cols);
    if (t == TensorType::Q6_K) return vec_dot_q6_k_q8_k(w, x, cols);
    if (t == TensorType::Q5_0) return vec_dot_q5_0_q8_0(w, x, cols);
    return vec_dot_q8_0_q8_0(w, x, cols);
}

// A block of NW = 1 matrix, rows_left rows of `cols`, n_tok valid tokens of 8 NT, run as the kernel
// runs it; every output compared with the CPU's vec_dot of the same row and token.
template <TensorType T, int NT>
long check_tile(std::mt19937_64 &rng, int64_t rows_left, int64_t cols, int n_tok) {
    using Q = I8Weight<T>;
    using S = I8Stage<T, 1, NT>;
    constexpr int kTokens = S::kTokens;
    const size_t rb = row_bytes_of<T>(cols);
    const std::vector<uint8_t> w = random_weights<T>(rng, rows_left, cols);
    // The tokens' rows: the CPU's quantized form (the reference's operand) and the kernel's layout.
    const int64_t Kq = i8_padded_cols(cols), groups = i8_scales_per_row(Q::kAct, cols);
    std::vector<int8_t> xq(kTokens * Kq, 0);
    std::vector<float> xd(kTokens * groups, 0.0f);
    std::vector<std::vector<uint8_t>> ref_x(kTokens);
    for (int tk = 0; tk < n_tok; ++tk) {
        const std::vector<float> x = random_row(rng, cols);
        if (Q::kAct == I8Act::q8_k) {
            std::vector<BlockQ8_K> b(cols / 256);
            q8_k_row_from_float(x.data(), b.data(), cols);
            for (int64_t i = 0; i < cols / 256; ++i) {
                std::memcpy(&xq[tk * Kq + 256 * i], b[i].qs, 256);
                xd[tk * groups + i] = b[i].d;
            }
            ref_x[tk].resize(b.size() * sizeof(BlockQ8_K));
            std::memcpy(ref_x[tk].data(), b.data(), ref_x[tk].size());
        } else {
            std::vector<BlockQ8_0> b(cols / 32);
            q8_0_row_from_float(x.data(), b.data(), cols);
            for (int64_t i = 0; i < cols / 32; ++i) {
                std::memcpy(&xq[tk * Kq + 32 * i], b[i].qs, 32);
                xd[tk * groups + i] = f16_to_f32(b[i].d);
            }
            ref_x[tk].resize(b.size() * sizeof(BlockQ8_0));
            std::memcpy(ref_x[tk].data(), b.data(), ref_x[tk].size());
        }
    }
    int32_t tok[kTokens];
    for (int i = 0; i < kTokens; ++i) tok[i] = i < n_tok ? i : -1;
    const int n_used = std::min<int>(NT, (n_tok + 7) / 8);

    float acc[kI8Warps][32][NT][4] = {};
    for (int64_t u = 0; u < i8_units(cols); ++u) {
        // The stage, poisoned, then filled by the copies of every thread (i8_load_stage).
        S st;
        std::memset(&st, 0xa5, sizeof st);
        std::vector<int> seen(sizeof st, 0);
        // Sources: inside the weights (rows_left rows: reading past them would leave the matrix), the
        // codes or the scales; also for the copies that only zero (their address is still issued).
        const auto inside = [&](const void *src, int bytes, const void *base, size_t size) {
            const uint8_t *p = static_cast<const uint8_t *>(src), *b = static_cast<const uint8_t *>(base);
            return p >= b && p + bytes <= b + size;
        };
        // A copy of a granule of `bytes`: n of them read (then zeros), the source aligned to the granule
        // within its operand (the operands' starts are: cp.async's rule) and inside it for the bytes read.
        const auto copy = [&](void *dst, const void *src, int bytes, int n) {
            const size_t at = static_cast<uint8_t *>(dst) - reinterpret_cast<uint8_t *>(&st);
            if (at + bytes > sizeof st || at % bytes != 0) return fail("copy past the stage or unaligned there", static_cast<long>(at));
            const int reads = n > 0 ? n : 1;
            const void *base = inside(src, reads, w.data(), w.size()) ? static_cast<const void *>(w.data())
                               : inside(src, reads, xq.data(), xq.size()) ? static_cast<const void *>(xq.data())
                               : inside(src, reads, xd.data(), xd.size() * sizeof(float)) ? static_cast<const void *>(xd.data())
                                                                                          : nullptr;
            if (!base) return fail("copy reads outside its operands", static_cast<long>(at), n);
            if ((static_cast<const uint8_t *>(src) - static_cast<const uint8_t *>(base)) % bytes != 0)
                return fail("copy source not aligned to its granule", static_cast<long>(at), bytes);
            if (n < 0 || n > bytes) return fail("copy of more than its granule", static_cast<long>(at), n);
            for (int i = 0; i < bytes; ++i) ++seen[at + i];
            std::memcpy(dst, src, n);
            std::memset(static_cast<uint8_t *>(dst) + n, 0, bytes - n);
        };
        const int bytes = i8_unit_bytes_at(T, cols, u);
        I8Operands<1> op;
        op.w[0] = w.data();
        op.row_stride = rb;
        op.rows_left = rows_left;
        op.cols = cols;
        op.xq = xq.data();
        op.xd = xd.data();
        op.xq_stride = Kq;
        op.xd_stride = groups;
        for (int tid = 0; tid < kI8Threads; ++tid)  // i8_load_stage, thread by thread
            i8_stage_copies(tid, st, op, tok, u, [&](auto size, void *dst, const void *src, int n) { copy(dst, src, decltype(size)::value, n); });
        // Every byte of the weights' lines, the tokens' codes (the unit's 256 of each line) and the
        // scales copied exactly once; the padding of the lines never.
        for (int row = 0; row < kI8Rows; ++row)
            for (int i = 0; i < Q::kLineBytes; ++i)
                if (seen[reinterpret_cast<uint8_t *>(&st.w[0][row][i]) - reinterpret_cast<uint8_t *>(&st)] != 1) fail("weight byte not copied once", row, i);
        for (int tk = 0; tk < kTokens; ++tk) {
            for (int i = 0; i < kI8XPitch; ++i)
                if (seen[reinterpret_cast<uint8_t *>(&st.x[tk][i]) - reinterpret_cast<uint8_t *>(&st)] != (i < kI8UnitK ? 1 : 0))
                    fail("token byte not copied once", tk, i);
            for (int i = 0; i < S::kScales; ++i)
                if (seen[reinterpret_cast<uint8_t *>(&st.xd[tk][i]) - reinterpret_cast<uint8_t *>(&st)] != 1) fail("scale not copied once", tk, i);
        }

        // Each warp's step: registers per lane, the warp's products, the kernel's sums.
        for (int warp = 0; warp < kI8Warps; ++warp) {
            const auto r0 = [&](int lane) { return 16 * warp + lane / 4; };
            const auto b_regs = [&](int j, uint32_t (&b)[NT][32][2]) {
                for (int nt = 0; nt < NT; ++nt)
                    for (int r = 0; r < 2; ++r) {
                        long addr[32];
                        for (int lane = 0; lane < 32; ++lane) {
                            const Coord c = i8_b_coord(lane, r);
                            const int8_t *p = &st.x[8 * nt + c.line][32 * j + c.k];
                            addr[lane] = reinterpret_cast<const uint8_t *>(p) - reinterpret_cast<uint8_t *>(&st);
                            b[nt][lane][r] = nt < n_used ? load_u32(reinterpret_cast<const uint8_t *>(p)) : 0u;
                        }
                        check_banks(addr, "B fragment read");
                    }
            };
            if constexpr (T == TensorType::Q4_K) {
                typename Q::Head head[32][2];
                for (int lane = 0; lane < 32; ++lane)
                    for (int h = 0; h < 2; ++h) head[lane][h] = Q::head(st.w[0][r0(lane) + 8 * h]);
                int32_t isum[NT][32][4] = {}, msum[NT][32][4] = {};
                for (int p = 0; p < 4; ++p) {
                    uint32_t cw[32][2][2];
                    for (int h = 0; h < 2; ++h)
                        for (int i = 0; i < 2; ++i) {
                            long addr[32];
                            for (int lane = 0; lane < 32; ++lane) {
                                Q::code_words(st.w[0][r0(lane) + 8 * h], p, lane % 4, cw[lane][h]);
                                addr[lane] = &st.w[0][r0(lane) + 8 * h][16 + 32 * p + 16 * i + 4 * (lane % 4)] - reinterpret_cast<uint8_t *>(&st);
                            }
                            check_banks(addr, "Q4_K code read");
                        }
                    for (int half = 0; half < 2; ++half) {
                        const int j = 2 * p + half;
                        uint32_t b[NT][32][2];
                        b_regs(j, b);
                        uint32_t a[32][4], am[32][4];
                        for (int lane = 0; lane < 32; ++lane) {
                            Q::a_regs(cw[lane][0], cw[lane][1], j, a[lane]);
                            const uint32_t mg = Q::min_reg(head[lane][0], j), mg8 = Q::min_reg(head[lane][1], j);
                            am[lane][0] = am[lane][2] = mg;
                            am[lane][1] = am[lane][3] = mg8;
                        }
                        for (int nt = 0; nt < n_used; ++nt) {
                            const int32_t zero[32][4] = {};
                            int32_t c[32][4], ms[32][4];
                            warp_mma(a, b[nt], zero, c);
                            warp_mma(am, b[nt], msum[nt], ms);
                            for (int lane = 0; lane < 32; ++lane)
                                for (int r = 0; r < 4; ++r) {
                                    isum[nt][lane][r] += Q::sub_scale(head[lane][r / 2], j) * c[lane][r];
                                    msum[nt][lane][r] = ms[lane][r];
                                }
                        }
                    }
                }
                for (int nt = 0; nt < n_used; ++nt)
                    for (int lane = 0; lane < 32; ++lane)
                        for (int r = 0; r < 4; ++r) {
                            const float d_x = st.xd[8 * nt + mma_c_coord(lane, r).k][0];
                            acc[warp][lane][nt][r] = Q::combine(acc[warp][lane][nt][r], d_x, head[lane][r / 2], isum[nt][lane][r], msum[nt][lane][r]);
                        }
            } else if constexpr (T == TensorType::Q6_K) {
                // Rows' units at their shifts in the lines; per group, a k16 product and the scale.
                const auto unit = [&](int lane, int h) { return &st.w[0][r0(lane) + 8 * h][q6_k_shift(rb, r0(lane) + 8 * h, u)]; };
                int32_t isum[NT][32][4] = {};
                for (int j = 0; j < Q::kSteps; ++j)
                    for (int h = 0; h < 2; ++h) {
                        uint32_t b[NT][32], a[32][2];
                        for (int nt = 0; nt < NT; ++nt)
                            for (int lane = 0; lane < 32; ++lane) {
                                const Coord c = i8_b_coord(lane, 0);
                                b[nt][lane] = nt < n_used ? load_u32(reinterpret_cast<const uint8_t *>(&st.x[8 * nt + c.line][32 * j + 16 * h + c.k])) : 0u;
                            }
                        for (int lane = 0; lane < 32; ++lane)
                            for (int hh = 0; hh < 2; ++hh) a[lane][hh] = Q::a_reg(unit(lane, hh), j, h, lane % 4);
                        for (int nt = 0; nt < n_used; ++nt) {
                            int32_t c[32][4];
                            warp_mma_k16(a, b[nt], c);
                            for (int lane = 0; lane < 32; ++lane)
                                for (int r = 0; r < 4; ++r) isum[nt][lane][r] += Q::group_scale(unit(lane, r / 2), 2 * j + h) * c[lane][r];
                        }
                    }
                for (int nt = 0; nt < n_used; ++nt)
                    for (int lane = 0; lane < 32; ++lane)
                        for (int r = 0; r < 4; ++r) {
                            const float d_x = st.xd[8 * nt + mma_c_coord(lane, r).k][0];
                            acc[warp][lane][nt][r] = Q::combine(acc[warp][lane][nt][r], d_x, Q::d(unit(lane, r / 2)), isum[nt][lane][r]);
                        }
            } else {
                for (int blk = 0; blk < Q::kSteps && blk < bytes / Q::kBlockBytes; ++blk) {
                    uint32_t b[NT][32][2];
                    b_regs(blk, b);
                    uint32_t a[32][4];
                    for (int h = 0; h < 2; ++h)
                        for (int half = 0; half < 2; ++half) {  // the two 16-bit loads of the codes
                            long addr[32];
                            for (int lane = 0; lane < 32; ++lane) {
                                const int qs = T == TensorType::Q5_0 ? 6 : 2;
                                addr[lane] = &st.w[0][r0(lane) + 8 * h][Q::kBlockBytes * blk + qs + 4 * (lane % 4) + 2 * half] -
                                             reinterpret_cast<uint8_t *>(&st);
                                addr[lane] -= addr[lane] % 4;  // the word a 16-bit load touches
                            }
                            check_banks(addr, "block code read");
                        }
                    for (int lane = 0; lane < 32; ++lane) Q::a_regs(st.w[0][r0(lane)], st.w[0][r0(lane) + 8], blk, lane % 4, a[lane]);
                    for (int nt = 0; nt < n_used; ++nt) {
                        const int32_t zero[32][4] = {};
                        int32_t c[32][4];
                        warp_mma(a, b[nt], zero, c);
                        for (int lane = 0; lane < 32; ++lane)
                            for (int r = 0; r < 4; ++r) {
                                const float d_w = Q::block_d(st.w[0][r0(lane) + 8 * (r / 2)], blk);
                                acc[warp][lane][nt][r] = i8_block_combine(acc[warp][lane][nt][r], c[lane][r], d_w, st.xd[8 * nt + mma_c_coord(lane, r).k][blk]);
                            }
                    }
                }
            }
        }
    }
    // The stores (i8_for_each): row 16 warp + c.line, token 8 nt + c.k, for rows and tokens in range.
    long compared = 0;
    std::vector<int> stored(kI8Rows * kTokens, 0);
    for (int warp = 0; warp < kI8Warps; ++warp)
        for (int lane = 0; lane < 32; ++lane)
            for (int nt = 0; nt < n_used; ++nt)
                for (int r = 0; r < 4; ++r) {
                    const Coord c = mma_c_coord(lane, r);
                    const int row = 16 * warp + c.line, token = 8 * nt + c.k;
                    if (row >= rows_left || token >= n_tok) continue;
                    ++stored[row * kTokens + token];
                    const float want = vec_dot(T, w.data() + row * rb, ref_x[token].data(), cols), got = acc[warp][lane][nt][r];
                    if (std::memcmp(&want, &got, 4) != 0) {
                        fail("output differs from the CPU's vec_dot", row, token);
                        if (failures <= 20) std::printf("  %s k=%ld rows=%ld: %.9g vs %.9g\n", type_name(T), long(cols), long(rows_left), got, want);
                    }
                    ++compared;
                }
    for (int row = 0; row < std::min<int64_t>(rows_left, kI8Rows); ++row)
        for (int token = 0; token < n_tok; ++token)
            if (stored[row * kTokens + token] != 1) fail("output not stored once", row, token);
    return compared;
}

}  // namespace

int main() {
    std::mt19937_64 rng(20261207);
    long compared = check_quantizer(rng);
    // Q4_K: k of 1, 3 and 11 super-blocks; the 32-element types: units ending inside (2, 22, 66
    // blocks); rows filling the tile, ending inside it; tokens filling 2, 4 or 8 n-tiles or part of one.
    for (auto [k, rows, tokens] : {std::tuple<int64_t, int64_t, int>{256, 64, 32}, {768, 37, 13}, {2816, 64, 17}}) {
        compared += check_tile<TensorType::Q4_K, 4>(rng, rows, k, tokens);
        compared += check_tile<TensorType::Q4_K, 8>(rng, rows, k, std::min(64, 3 * tokens));
        // Q6_K: 210-byte blocks, so its rows' units sit at shifts 0 and 2 in turn.
        compared += check_tile<TensorType::Q6_K, 4>(rng, rows, k, tokens);
        compared += check_tile<TensorType::Q6_K, 8>(rng, rows, k, std::min(64, 3 * tokens));
    }
    for (auto [k, rows, tokens] : {std::tuple<int64_t, int64_t, int>{64, 64, 32}, {704, 50, 9}, {2112, 64, 30}}) {
        compared += check_tile<TensorType::Q5_0, 4>(rng, rows, k, tokens);
        compared += check_tile<TensorType::Q8_0, 4>(rng, rows, k, tokens);
        compared += check_tile<TensorType::Q5_0, 8>(rng, rows, k, std::min(64, 2 * tokens + 1));
        compared += check_tile<TensorType::Q8_0, 8>(rng, rows, k, std::min(64, 2 * tokens + 1));
    }
    // The dense products' tile width: 64 tokens only while that leaves two blocks a multiprocessor.
    // Q6_K's shifts: every (row parity, unit parity) of a 2310-byte row, and none with 4-aligned rows.
    if (q6_k_shift(2310, 1, 0) != 2 || q6_k_shift(2310, 1, 1) != 0 || q6_k_shift(2310, 2, 1) != 2 || q6_k_shift(3360, 5, 2) != 0)
        fail("q6_k_shift");
    if (i8_tile_tokens(4096, 256, 132) != 64 || i8_tile_tokens(2816, 256, 132) != 32 || i8_tile_tokens(4096, 32, 132) != 32 ||
        i8_tile_tokens(262144, 256, 132) != 64)
        fail("i8_tile_tokens");
    if (failures) {
        std::printf("%d failures\n", failures);
        return 1;
    }
    std::printf("ok %ld\n", compared);
    return 0;
}
