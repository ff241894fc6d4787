// Host check of cuda/expert_group.h, the experts' grouping (moe.cu's group_kernel): the kernel's
// phases run thread by thread (a barrier is the end of a phase), with its two-level warp scans
// restated lane by lane, on random assignments; offsets, order and slot_of must be those of a
// stable sort of the assignments by expert (the CPU's grouping), every count entry written once,
// every run disjoint, and the slot tiles of widths 16, 32 and 64 cover every slot once within the
// bound the product kernels' grids are sized by. Prints the assignments checked; exits 1 on any failure.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "cuda/expert_group.h"

using dg::cuda::group_entry;
using dg::cuda::group_run;
using dg::cuda::group_segments;
using dg::cuda::group_task;
using dg::cuda::GroupRun;
using dg::cuda::GroupTask;
using dg::cuda::kGroupThreads;

namespace {

int failures = 0;

void expect(bool ok, const char *what, int X, int total) {
    if (!ok && failures++ < 20) std::printf("FAIL X=%d total=%d: %s\n", X, total, what);
}

// block_exclusive_scan as the kernel computes it: an inclusive shuffle-up scan per warp, the warps'
// totals scanned the same way by warp 0, then x - v + the previous warps' total.
std::vector<int32_t> warp_scan_exclusive(const std::vector<int32_t> &v, int32_t &total) {
    const int threads = static_cast<int>(v.size()), warps = threads / 32;
    std::vector<int32_t> x = v, out(threads);
    auto inclusive = [](int32_t *lane_vals) {
        for (int o = 1; o < 32; o *= 2) {
            int32_t shifted[32];
            for (int l = 0; l < 32; ++l) shifted[l] = l >= o ? lane_vals[l - o] : lane_vals[l];  // __shfl_up_sync
            for (int l = 0; l < 32; ++l)
                if (l >= o) lane_vals[l] += shifted[l];
        }
    };
    std::vector<int32_t> sums(32, 0);
    for (int w = 0; w < warps; ++w) {
        inclusive(&x[w * 32]);
        sums[w] = x[w * 32 + 31];
    }
    inclusive(sums.data());
    total = sums[warps - 1];
    for (int t = 0; t < threads; ++t) out[t] = x[t] - v[t] + (t / 32 > 0 ? sums[t / 32 - 1] : 0);
    return out;
}

int ref_count(const std::vector<int32_t> &expert, int64_t e) {
    return static_cast<int>(std::count(expert.begin(), expert.end(), static_cast<int32_t>(e)));
}

}  // namespace

int main() {
    std::mt19937_64 rng(std::random_device{}());
    long checked = 0;
    const int experts[] = {1, 2, 3, 7, 8, 31, 32, 100, 128, 129, 1000, 1023, 1024, 1500, 4096, 12256};
    for (int trial = 0; trial < 120; ++trial) {
        const int X = experts[trial % 16];
        const int totals[] = {1, 7, 2048, 4096, 8192, 1 + static_cast<int>(rng() % 5000)};
        const int total = totals[rng() % 6];
        // Skewed choices: a few popular experts, some never chosen.
        std::vector<int32_t> expert(total);
        const int hot = 1 + static_cast<int>(rng() % std::min(X, 16));
        for (int32_t &e : expert) e = static_cast<int32_t>(rng() % 3 ? rng() % hot : rng() % X);

        const int S = group_segments(X), len = (total + S - 1) / S, tasks = X * S;
        expect(tasks <= std::max(X, kGroupThreads), "entries beyond the shared memory sized for them", X, total);
        // Phase 1: counts.
        std::vector<int32_t> first(tasks, -1);
        std::vector<int> written(tasks, 0);
        for (int tid = 0; tid < kGroupThreads; ++tid)
            for (int t = tid; t < tasks; t += kGroupThreads) {
                const GroupTask task = group_task(t, X);
                expect(task.e >= 0 && task.e < X && task.seg >= 0 && task.seg < S, "task out of range", X, total);
                const int end = std::min(total, (task.seg + 1) * len), entry = group_entry(task, S);
                expect(entry >= 0 && entry < tasks, "count entry out of range", X, total);
                if (entry < 0 || entry >= tasks) continue;
                int32_t c = 0;
                for (int i = task.seg * len; i < end; ++i) c += expert[i] == task.e;
                first[entry] = c;
                ++written[entry];
            }
        for (int r = 0; r < tasks; ++r) expect(written[r] == 1, "a count entry not written exactly once", X, total);
        // Phase 2: runs, the scan, the rewrite.
        std::vector<int32_t> run_count(kGroupThreads, 0);
        std::vector<int> owner(tasks, 0);
        int prev_end = 0;
        for (int tid = 0; tid < kGroupThreads; ++tid) {
            const GroupRun run = group_run(tid, tasks, kGroupThreads);
            expect(run.r0 <= run.r1 && (run.r0 == run.r1 || run.r0 == prev_end), "runs not consecutive in thread order", X, total);
            if (run.r1 > run.r0) prev_end = run.r1;
            for (int r = run.r0; r < run.r1; ++r) {
                run_count[tid] += first[r];
                ++owner[r];
            }
        }
        expect(prev_end == tasks, "runs do not reach the last entry", X, total);
        for (int r = 0; r < tasks; ++r) expect(owner[r] == 1, "an entry in no run or two", X, total);
        int32_t all = 0;
        const std::vector<int32_t> base = warp_scan_exclusive(run_count, all);
        std::vector<int32_t> offsets(X + 1, -1);
        for (int tid = 0; tid < kGroupThreads; ++tid) {
            const GroupRun run = group_run(tid, tasks, kGroupThreads);
            int32_t slot = base[tid];
            for (int r = run.r0; r < run.r1; ++r) {
                const int32_t c = first[r];
                if (r % S == 0) offsets[r / S] = slot;
                first[r] = slot;
                slot += c;
            }
        }
        offsets[X] = all;
        // The slot tiles, for each width the kernels use: every (expert, slot) in exactly one tile,
        // tiles within the bound the grids are sized by, listed in expert order.
        for (int W : {dg::cuda::kGroupMinTile, 32, 64}) {
            std::vector<int32_t> run_tiles(kGroupThreads, 0);
            auto slots_of = [&](int e) { return (e + 1 < X ? first[(e + 1) * S] : all) - first[e * S]; };
            for (int tid = 0; tid < kGroupThreads; ++tid) {
                const GroupRun er = group_run(tid, X, kGroupThreads);
                for (int e = er.r0; e < er.r1; ++e) run_tiles[tid] += dg::cuda::group_expert_tiles(slots_of(e), W);
            }
            int32_t n_tiles = 0;
            const std::vector<int32_t> tile0 = warp_scan_exclusive(run_tiles, n_tiles);
            const int bound = dg::cuda::group_tiles_bound(total, X, W);
            expect(n_tiles <= bound, "more tiles than the grid's bound", X, total);
            std::vector<int32_t> tiles(3 + 2 * static_cast<size_t>(std::max(bound, n_tiles)), -7);  // a tile past the list, unwritten
            for (int tid = 0; tid < kGroupThreads; ++tid) {
                const GroupRun er = group_run(tid, X, kGroupThreads);
                int32_t t = tile0[tid];
                for (int e = er.r0; e < er.r1; ++e)
                    for (int s0 = 0, count = slots_of(e); s0 < count; s0 += W, ++t) {
                        tiles[1 + 2 * t] = e;
                        tiles[2 + 2 * t] = s0;
                    }
            }
            tiles[0] = n_tiles;
            std::vector<int> covered(total, 0);
            int64_t prev_e = -1, prev_s0 = -1;
            for (int t = 0; t <= bound; ++t) {
                int64_t e = -1, s0 = -1;
                const bool listed = dg::cuda::group_tile(tiles.data(), t, e, s0);
                expect(listed == (t < n_tiles), "group_tile's end of the list", X, total);
                if (!listed) continue;
                expect(e >= 0 && e < X && s0 >= 0 && s0 < ref_count(expert, e), "a tile outside its expert's slots", X, total);
                expect(e > prev_e || (e == prev_e && s0 == prev_s0 + W), "tiles out of expert order", X, total);
                prev_e = e;
                prev_s0 = s0;
                if (e < 0 || e >= X) continue;
                for (int64_t s = s0; s < s0 + W && s < offsets[e + 1] - offsets[e]; ++s) ++covered[offsets[e] + s];
            }
            for (int s = 0; s < total; ++s) expect(covered[s] == 1, "a slot in no tile or two", X, total);
        }
        // Phase 3: placing.
        std::vector<int32_t> order(total, -1), slot_of(total, -1);
        for (int tid = 0; tid < kGroupThreads; ++tid)
            for (int t = tid; t < tasks; t += kGroupThreads) {
                const GroupTask task = group_task(t, X);
                const int end = std::min(total, (task.seg + 1) * len);
                const int entry = group_entry(task, S);
                if (entry < 0 || entry >= tasks) continue;
                int32_t next = first[entry];
                for (int i = task.seg * len; i < end; ++i)
                    if (expert[i] == task.e) {
                        expect(next >= 0 && next < total, "slot out of range", X, total);
                        if (next < 0 || next >= total) break;
                        order[next] = i;
                        slot_of[i] = next++;
                    }
            }
        // The reference: a stable sort by expert.
        std::vector<int32_t> ref(total);
        for (int i = 0; i < total; ++i) ref[i] = i;
        std::stable_sort(ref.begin(), ref.end(), [&](int32_t a, int32_t b) { return expert[a] < expert[b]; });
        std::vector<int32_t> ref_offsets(X + 1, 0);
        for (int32_t e : expert) ++ref_offsets[e + 1];
        for (int e = 0; e < X; ++e) ref_offsets[e + 1] += ref_offsets[e];
        expect(offsets == ref_offsets, "offsets differ from the stable sort's", X, total);
        expect(order == ref, "order differs from the stable sort's", X, total);
        for (int s = 0; s < total; ++s) expect(order[s] >= 0 && slot_of[order[s]] == s, "slot_of is not order's inverse", X, total);
        checked += total;
    }
    if (failures) return 1;
    std::printf("ok %ld\n", checked);
    return 0;
}
