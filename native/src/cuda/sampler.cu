// The entropy-bound sampler on the device, bit-identical to the CPU reference (sampler.h,
// sampler.cpp): the same sampler_math.h functions, compiled with -fmad=false (CMakeLists.txt) so
// that no multiply-add is fused; the same halving tree over chunks of kSamplerChunk values (a warp
// per chunk: chunk_lane_sums, then shuffles), chunk sums added in order, positions ordered by
// (entropy, position), the inverse-CDF walk and the acceptance scan run sequentially in order.
#include "cuda/kernels.h"
#include "sampler_math.h"

namespace dg::cuda {

namespace {

constexpr int kSampleThreads = 256;  // a block per position; each warp sums whole chunks
constexpr int kSampleWarps = kSampleThreads / 32;

__device__ inline uint64_t raw_draw(const DrawSpec &d, uint64_t k) { return d.table ? d.table[k] : draw_value(d.seed, k); }

__global__ void init_kernel(int32_t *canvas, const int8_t *fixed, int32_t *history, int64_t n_history, int64_t C,
                            DrawSpec draws, int64_t canvas_no, int max_steps, int64_t V) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < C && !(fixed && fixed[i])) canvas[i] = draw_token(raw_draw(draws, draw_index(canvas_no, 0, 0, i, C, max_steps)), V);
    for (int64_t h = i; h < n_history; h += static_cast<int64_t>(gridDim.x) * blockDim.x) history[h] = -1;
}

// One block per position: y /= t in place, argmax (lowest index of the maximum; NaN never wins),
// entropy and the categorical draw. A warp sums a chunk's e and e * d by chunk_lane_sums (its lane's
// levels of the contract's tree in registers) and five shuffles (the lanes' levels), without a block
// barrier; warps take chunks in turn and the chunk sums are added in chunk order after. The halving
// tree over 512 threads took two barriers a level, 20 a chunk and 5120 a position (run 10: 1.1 ms a
// step). Two blocks a multiprocessor: unbounded, the compiler kept every exponential of a lane in
// flight (254 registers, one block); at 96 it spills nothing. Shared: e [n_chunks + 1] (the chunk
// sums, then the target), a [n_chunks], the walk's chunk [kSamplerChunk].
__global__ void __launch_bounds__(kSampleThreads, 2) position_kernel(float *logits, int64_t V, float t, DrawSpec draws,
                                                                  int64_t canvas_no, int64_t step_index, int64_t C,
                                                                  int max_steps, double *entropy, int32_t *draw,
                                                                  int32_t *argmax) {
    extern __shared__ double shd[];
    const int64_t n_chunks = (V + kSamplerChunk - 1) / kSamplerChunk;
    double *chunk_e = shd, *chunk_a = shd + n_chunks + 1, *walk_e = shd + 2 * n_chunks + 1;
    __shared__ float best_v[kSampleWarps];
    __shared__ int64_t best_i[kSampleWarps];
    __shared__ double walk_cum;
    __shared__ int64_t walk_chunk;
    const int64_t i = blockIdx.x;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    float *y = logits + i * V;
    float mx = -INFINITY;
    int64_t am = -1;
    for (int64_t v = tid; v < V; v += kSampleThreads) {
        y[v] = y[v] / t;
        if (y[v] > mx) { mx = y[v]; am = v; }
    }
    for (int o = 16; o > 0; o /= 2) {  // the larger value; on a tie the lower index; -1 never wins
        const float ov = __shfl_xor_sync(0xffffffffu, mx, o);
        const int64_t oi = __shfl_xor_sync(0xffffffffu, am, o);
        if (oi >= 0 && (am < 0 || ov > mx || (ov == mx && oi < am))) { mx = ov; am = oi; }
    }
    if (lane == 0) { best_v[warp] = mx; best_i[warp] = am; }
    __syncthreads();  // also publishes every thread's y /= t
    mx = -INFINITY;
    am = -1;
    for (int w = 0; w < kSampleWarps; ++w)
        if (best_i[w] >= 0 && (am < 0 || best_v[w] > mx || (best_v[w] == mx && best_i[w] < am))) { mx = best_v[w]; am = best_i[w]; }
    if (am < 0 || !isfinite(mx)) {  // every value NaN or -inf, or a +inf: no distribution
        if (tid == 0) { entropy[i] = INFINITY; draw[i] = 0; argmax[i] = 0; }
        return;
    }
    const double m = mx;
    for (int64_t c = warp; c < n_chunks; c += kSampleWarps) {
        const float *yc = y + c * kSamplerChunk;
        const int64_t n = min(V - c * kSamplerChunk, kSamplerChunk);
        double es, as;
        chunk_lane_sums(
            [&](int q, double &ev, double &av) {  // element lane + 32 q of the chunk; past V: zero
                const int64_t j = lane + kChunkLanes * q;
                ev = 0.0;
                av = 0.0;
                if (j < n) {
                    const double dv = static_cast<double>(yc[j]) - m;
                    ev = sampler_exp(dv);
                    av = ev * (dv >= -708.0 ? dv : 0.0);
                }
            },
            es, as);
        for (int o = kChunkLanes / 2; o >= 1; o /= 2) {  // levels 16 .. 1: x[l] + x[l + o]
            es = es + __shfl_down_sync(0xffffffffu, es, o);
            as = as + __shfl_down_sync(0xffffffffu, as, o);
        }
        if (lane == 0) {
            chunk_e[c] = es;
            chunk_a[c] = as;
        }
    }
    __syncthreads();
    const double u = static_cast<double>(draw_uniform(raw_draw(draws, draw_index(canvas_no, step_index, 0, i, C, max_steps))));
    if (tid == 0) {
        double S = 0.0, A = 0.0;
        for (int64_t c = 0; c < n_chunks; ++c) {
            S = S + chunk_e[c];
            A = A + chunk_a[c];
        }
        entropy[i] = sampler_log(S) - A / S;
        argmax[i] = static_cast<int32_t>(am);
        const double target = u * S;
        double cum = 0.0;
        int64_t c = 0;
        while (c < n_chunks - 1 && !(cum + chunk_e[c] > target)) cum = cum + chunk_e[c++];
        walk_cum = cum;
        walk_chunk = c;
        chunk_e[n_chunks] = target;
    }
    __syncthreads();
    const int64_t v0 = walk_chunk * kSamplerChunk, v1 = min(V, v0 + kSamplerChunk);
    for (int64_t v = v0 + tid; v < v1; v += kSampleThreads) walk_e[v - v0] = sampler_exp(static_cast<double>(y[v]) - m);
    __syncthreads();
    if (tid != 0) return;
    const double target = chunk_e[n_chunks];
    double cum = walk_cum;
    int64_t pick = -1, last_nonzero = -1;
    for (int64_t v = v0; v < v1; ++v) {
        const double ev = walk_e[v - v0];
        if (ev > 0.0) last_nonzero = v;
        cum = cum + ev;
        if (cum > target) { pick = v; break; }
    }
    draw[i] = static_cast<int32_t>(pick >= 0 ? pick : (last_nonzero >= 0 ? last_nonzero : am));
}

// Acceptance over the free positions in (entropy, position) order, re-noising, the stability and
// confidence test, the history shift and the stop flag. One thread keeps the running sums (the
// contract's double additions in rank order) over the entropies the rank phase placed in shared
// memory, marking each rejected position in `order`; everything else runs on all threads: the ranks,
// the draws, the stability test, the history shift (thread by column, so each column's rows move in
// order). The same operations as one thread doing it all, so the same bits; thread 0 walking global
// memory with dependent loads cost about 100-200 us a step.
// sorted_h: dynamic shared memory of C doubles.
__global__ void finish_kernel(int64_t C, int64_t V, SamplerParams p, DrawSpec draws, int64_t canvas_no, int64_t step_index,
                              int32_t *canvas, int32_t *argmax, const int8_t *fixed, int32_t *history, int32_t *stop,
                              int8_t *accepted, const double *entropy, const int32_t *draw, int32_t *order) {
    extern __shared__ double sorted_h[];
    __shared__ int n_free_s;
    __shared__ double total_s;
    auto is_free = [&](int64_t i) { return !(fixed && fixed[i]); };
    if (threadIdx.x == 0) n_free_s = 0;
    __syncthreads();
    int local_free = 0;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
        if (!is_free(i)) {
            argmax[i] = canvas[i];
            if (accepted) accepted[i] = 0;
            continue;
        }
        ++local_free;
        int64_t rank = 0;
        for (int64_t j = 0; j < C; ++j)
            if (is_free(j) && (entropy[j] < entropy[i] || (entropy[j] == entropy[i] && j < i))) ++rank;
        order[rank] = static_cast<int32_t>(i);
        sorted_h[rank] = entropy[i];
    }
    atomicAdd(&n_free_s, local_free);
    __syncthreads();
    const int64_t n_free = n_free_s;
    if (threadIdx.x == 0) {
        double cum = 0.0, total = 0.0;
        for (int64_t k = 0; k < n_free; ++k) {
            const double h = sorted_h[k];
            cum = cum + h;
            if (!(cum - h <= p.entropy_bound)) order[k] = -1 - order[k];  // rejected: re-noised below
            total = total + h;
        }
        total_s = total;
    }
    __syncthreads();
    for (int64_t k = threadIdx.x; k < n_free; k += blockDim.x) {
        const int32_t code = order[k];
        const bool accept = code >= 0;
        const int32_t i = accept ? code : -1 - code;
        if (accepted) accepted[i] = accept ? 1 : 0;
        canvas[i] = accept ? draw[i] : draw_token(raw_draw(draws, draw_index(canvas_no, step_index, 1, i, C, p.max_steps)), V);
    }
    // argmax of every position is written (the fixed ones above, before the barriers; the free ones
    // by position_kernel).
    const int S = p.stability_threshold;
    int same = 1;
    for (int h = 0; h < S; ++h)
        for (int64_t i = threadIdx.x; i < C; i += blockDim.x) same &= argmax[i] == history[static_cast<int64_t>(h) * C + i];
    const bool stable = __syncthreads_and(same);  // every read of history precedes the shift below
    if (S > 0)
        for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
            for (int h = 0; h + 1 < S; ++h) history[static_cast<int64_t>(h) * C + i] = history[static_cast<int64_t>(h + 1) * C + i];
            history[static_cast<int64_t>(S - 1) * C + i] = argmax[i];
        }
    if (threadIdx.x == 0)
        stop[0] = n_free == 0 ? 1 : (stable && total_s / static_cast<double>(n_free) < p.confidence_threshold ? 1 : 0);
}

}  // namespace

void sampler_init(cudaStream_t s, int32_t *canvas, const int8_t *fixed, int32_t *history, int64_t n_history, int64_t C,
                  DrawSpec draws, int64_t canvas_no, int max_steps, int64_t n_vocab) {
    const int64_t n = std::max(C, n_history);
    if (n <= 0) return;
    init_kernel<<<blocks_for(n, 256), 256, 0, s>>>(canvas, fixed, history, n_history, C, draws, canvas_no, max_steps, n_vocab);
    check_launch("sampler_init");
}

void sample(cudaStream_t s, float *logits, int64_t C, int64_t V, float t, const SamplerParams &p, int step,
            int64_t canvas_no, DrawSpec draws, int32_t *canvas, int32_t *argmax, const int8_t *fixed, int32_t *history,
            int32_t *stop, int8_t *accepted, const SampleScratch &scratch) {
    const int64_t step_index = p.max_steps - step + 1;
    const int64_t n_chunks = (V + kSamplerChunk - 1) / kSamplerChunk;
    const size_t shared = static_cast<size_t>(2 * n_chunks + 1 + kSamplerChunk) * sizeof(double);
    if (shared > 40 * 1024)  // beside the kernel's own few hundred bytes, within the 48 KB without opt-in
        throw Error(DGEMMA_ERR_UNSUPPORTED, "CUDA sampler: a vocabulary of " + std::to_string(V) + " needs more shared memory than 40 KB");
    position_kernel<<<static_cast<unsigned>(C), kSampleThreads, shared, s>>>(logits, V, t, draws, canvas_no, step_index, C, p.max_steps,
                                                                   scratch.entropy, scratch.draw, argmax);
    check_launch("sampler positions");
    const size_t finish_shared = static_cast<size_t>(C) * sizeof(double);  // the entropies in rank order
    if (finish_shared > 40 * 1024)
        throw Error(DGEMMA_ERR_UNSUPPORTED, "CUDA sampler: a canvas of " + std::to_string(C) + " positions needs more shared memory than 40 KB");
    finish_kernel<<<1, 256, finish_shared, s>>>(C, V, p, draws, canvas_no, step_index, canvas, argmax, fixed, history, stop,
                                                accepted, scratch.entropy, scratch.draw, scratch.order);
    check_launch("sampler finish");
}

}  // namespace dg::cuda
