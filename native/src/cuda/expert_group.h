// The experts' grouping (moe.cu's group_kernel): which assignments a thread counts and places, and
// which count entries it scans. Plain functions, so tests/expert_group_check.cpp runs the kernel's
// phases thread by thread on the host against a stable sort by expert.
//
// One block of kGroupThreads threads groups `total` = n * k assignments over X experts. The
// assignments are cut into S = group_segments(X) segments of `len` = ceil(total / S); task (e, seg)
// counts, then places, expert e's assignments of segment seg. Counts live at entry e * S + seg, so
// the exclusive prefix over the entries gives each (e, seg) its first slot in (expert, assignment)
// order: expert e's slots are offsets[e] .. offsets[e + 1] - 1, its assignments in increasing order.
//
// The same kernel lists the pass's slot tiles for the experts' product kernels: tile t is expert e's
// slots s0 .. s0 + W - 1 (W: the kernel's slot width), tiles[0] = their number, tiles[1 + 2 t] = e,
// tiles[2 + 2 t] = s0 (from the expert's first slot). Their grids run over this list: over (expert,
// every tile a token count allows) 7 of 8 blocks at the 26B shapes found no slots and returned, each
// after a dependent read of the offsets (e.g. 39K of 45K blocks of the int8 down product a layer).
#pragma once

#include <cstdint>

#include "host_device.h"

namespace dg::cuda {

constexpr int kGroupThreads = 1024;

DG_HD int group_segments(int X) { return X >= kGroupThreads ? 1 : kGroupThreads / X; }

struct GroupTask {
    int e, seg;
};

// Task t of X * S, segment-major: the lanes of a warp take consecutive experts of one segment, so
// they read each assignment of it together (one broadcast read instead of a line per lane).
DG_HD GroupTask group_task(int t, int X) { return {t % X, t / X}; }

// The count entry of a task: expert-major, the order of the slots.
DG_HD int group_entry(GroupTask task, int S) { return task.e * S + task.seg; }

// Thread tid's run of consecutive count entries [r0, r1) in the parallel prefix (runs in thread
// order cover 0 .. entries - 1 once; threads past the end get empty runs).
struct GroupRun {
    int r0, r1;
};
DG_HD GroupRun group_run(int tid, int entries, int threads) {
    const int per = (entries + threads - 1) / threads;
    const int r0 = tid * per < entries ? tid * per : entries;
    return {r0, r0 + per < entries ? r0 + per : entries};
}

// --- the slot tiles
constexpr int kGroupMinTile = 16;  // the narrowest slot width of the expert kernels (the float tiles')

// Tiles of an expert with `count` slots.
DG_HD int group_expert_tiles(int count, int W) { return (count + W - 1) / W; }

// The most tiles a pass of `slots` assignments over X experts lists: every expert with slots adds at
// most one partial tile to slots / W whole ones. The grids' second dimension.
DG_HD int group_tiles_bound(int slots, int X, int W) { return slots / W + (X < slots ? X : slots); }

// Tile t of the list as (expert, first slot); false past its end (the block returns).
DG_HD bool group_tile(const int32_t *tiles, int t, int64_t &e, int64_t &s0) {
    if (t >= tiles[0]) return false;
    e = tiles[1 + 2 * t];
    s0 = tiles[2 + 2 * t];
    return true;
}

}  // namespace dg::cuda
