// Streamed weights (expert offload by streaming; docs/backends.md, "Expert offload"): groups of
// weights (one layer's experts) kept in host memory and copied into staging slots in device memory
// for the ops that read them. WeightStream is the plan every streaming backend shares, plain C++ so
// the CPU tests check it (tests/weight_stream_check.cpp): where each weight lies in its group's
// staged bytes, how large a slot is, which slot a use reads, whether its group must be copied
// first, and which group to copy ahead into the other slot while this one computes.
//
// Groups are used in the order they were added, cyclically (a pass runs the layers in order, and
// the next pass starts again at the first). With two groups or more there are two slots: group g
// computes from one while g + 1 is copied into the other, so a step is bound by the larger of its
// compute and its copies, not their sum. With one group, one slot, copied once and kept. A use out
// of that order (an encoder-only pass skips the last layer's experts) copies its group into the
// slot of the unused look-ahead; only the bytes copied depend on the order, never the results.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "error.h"

namespace dg {

class WeightStream {
public:
    // Each weight starts at a multiple of this in its slot: the alignment of a device allocation,
    // which the kernels' vector loads of a weight row may rely on.
    static constexpr size_t kAlign = 256;

    struct Piece {
        const uint8_t *host = nullptr;
        size_t bytes = 0;
        size_t offset = 0;  // in the group's staged bytes
    };
    struct Group {
        int id = 0;  // the caller's name for it (the layer)
        std::vector<Piece> pieces;
        size_t bytes = 0;  // staged: the end of the last piece
    };
    // Where a host address of a streamed weight lies: its group (index in order of adding) and the
    // offset of that address in the group's staged bytes. group < 0: not a streamed weight.
    struct Where {
        int group = -1;
        size_t offset = 0;
    };
    // What one use of a group asks of the backend, in this order: copy the group into `slot` when
    // `copy` (after the slot's last reader), compute from `slot`, then copy `prefetch_group` into
    // `prefetch_slot` (after that slot's last reader) when prefetch_group >= 0.
    struct Plan {
        int slot = 0;
        bool copy = false;
        int prefetch_group = -1, prefetch_slot = -1;
    };

    // Adds `bytes` of host memory at `host` to group `id`: a new group when `id` differs from the
    // last one added. All weights of a group are added together, before the first use.
    void add(int id, const void *host, size_t bytes) {
        if (used_) throw Error(DGEMMA_ERR_INTERNAL, "a streamed weight was added after the first use of the stream");
        if (groups_.empty() || groups_.back().id != id) {
            for (const Group &g : groups_)
                if (g.id == id) throw Error(DGEMMA_ERR_INTERNAL, "streamed weights of group " + std::to_string(id) + " were not added together");
            groups_.push_back(Group{id, {}, 0});
        }
        Group &g = groups_.back();
        const size_t offset = (g.bytes + kAlign - 1) / kAlign * kAlign;
        const auto *p = static_cast<const uint8_t *>(host);
        g.pieces.push_back(Piece{p, bytes, offset});
        g.bytes = offset + bytes;
        starts_[p] = {static_cast<int>(groups_.size()) - 1, g.pieces.size() - 1};
    }

    int n_groups() const { return static_cast<int>(groups_.size()); }
    const Group &group(int g) const { return groups_.at(static_cast<size_t>(g)); }
    int n_slots() const { return groups_.size() < 2 ? static_cast<int>(groups_.size()) : 2; }
    size_t slot_bytes() const {
        size_t b = 0;
        for (const Group &g : groups_) b = g.bytes > b ? g.bytes : b;
        return b;
    }
    size_t staging_bytes() const { return static_cast<size_t>(n_slots()) * slot_bytes(); }

    Where locate(const void *address) const {
        const auto *p = static_cast<const uint8_t *>(address);
        auto it = starts_.upper_bound(p);
        if (it == starts_.begin()) return {};
        --it;
        const Piece &piece = groups_[static_cast<size_t>(it->second.first)].pieces[it->second.second];
        if (p >= piece.host + piece.bytes) return {};
        return {it->second.first, piece.offset + static_cast<size_t>(p - piece.host)};
    }

    Plan use(int g) {
        if (g < 0 || g >= n_groups()) throw Error(DGEMMA_ERR_INTERNAL, "use of an unknown streamed group");
        used_ = true;
        Plan plan;
        const int slots = n_slots();
        int s = -1;
        for (int i = 0; i < slots; ++i)
            if (holds_[i] == g) s = i;
        if (s < 0) {  // not staged: into the slot that does not hold the group used last
            s = slots == 2 && last_slot_ >= 0 ? 1 - last_slot_ : 0;
            holds_[s] = g;
            plan.copy = true;
        }
        plan.slot = s;
        last_slot_ = s;
        if (slots == 2) {
            const int next = (g + 1) % n_groups();
            if (holds_[1 - s] != next) {
                holds_[1 - s] = next;
                plan.prefetch_group = next;
                plan.prefetch_slot = 1 - s;
            }
        }
        return plan;
    }

private:
    std::vector<Group> groups_;
    std::map<const uint8_t *, std::pair<int, size_t>> starts_;  // a piece's host start -> (group, piece)
    int holds_[2] = {-1, -1};  // the group each slot holds (or is being copied), -1: none
    int last_slot_ = -1;
    bool used_ = false;
};

}  // namespace dg
