// Host check of weight_stream.h, the plan of streamed weights (expert offload by streaming): random
// groups of random pieces, run through uses as a backend would (copy the group into its slot when
// asked, then check that every byte a use reads from its slot is that group's host byte, then the
// look-ahead copy). Uses in order (passes), with the last group skipped (encoder-only passes), and
// at random. Also: locate() on interior, boundary and foreign addresses, and the copies an in-order
// pass costs (each group once, none waited for after the first pass when there are 3 groups or
// more), and no copy into the slot the previous use computes from. Prints the uses checked; exits 1 on any failure.
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "weight_stream.h"

namespace {

int failures = 0;

void expect(bool ok, const char *what, int trial) {
    if (!ok && failures++ < 20) std::printf("FAIL trial %d: %s\n", trial, what);
}

}  // namespace

int main() {
    std::mt19937_64 rng(std::random_device{}());
    long uses = 0;
    for (int trial = 0; trial < 400; ++trial) {
        const int G = 1 + static_cast<int>(rng() % 6);
        // Host memory: each group's pieces, random sizes (unaligned), random bytes, in one arena with gaps.
        std::vector<std::vector<uint8_t>> host;
        dg::WeightStream ws;
        std::vector<std::vector<size_t>> piece_of(G);
        for (int g = 0; g < G; ++g) {
            const int pieces = 1 + static_cast<int>(rng() % 3);
            for (int p = 0; p < pieces; ++p) {
                const size_t bytes = 1 + rng() % 700;
                host.emplace_back(bytes + 16);  // 16 bytes past the piece: foreign memory
                for (uint8_t &b : host.back()) b = static_cast<uint8_t>(rng());
                ws.add(10 * g + 3, host.back().data(), bytes);
                piece_of[g].push_back(host.size() - 1);
            }
        }
        expect(ws.n_groups() == G, "group count", trial);
        expect(ws.n_slots() == (G >= 2 ? 2 : 1), "slot count", trial);
        size_t largest = 0;
        for (int g = 0; g < G; ++g) {
            const dg::WeightStream::Group &gr = ws.group(g);
            expect(gr.id == 10 * g + 3, "group id", trial);
            size_t end = 0;
            for (size_t p = 0; p < gr.pieces.size(); ++p) {
                const dg::WeightStream::Piece &pc = gr.pieces[p];
                expect(pc.offset % dg::WeightStream::kAlign == 0, "piece alignment", trial);
                expect(pc.offset >= end && pc.offset < end + dg::WeightStream::kAlign, "piece packing", trial);
                end = pc.offset + pc.bytes;
                const uint8_t *h = host[piece_of[g][p]].data();
                const size_t at = rng() % pc.bytes;
                const dg::WeightStream::Where w = ws.locate(h + at);
                expect(pc.host == h && w.group == g && w.offset == pc.offset + at, "locate inside a piece", trial);
                expect(ws.locate(h).offset == pc.offset && ws.locate(h + pc.bytes - 1).offset == end - 1, "locate at a piece's ends", trial);
                expect(ws.locate(h + pc.bytes).group < 0, "locate just past a piece", trial);
            }
            expect(gr.bytes == end, "group bytes", trial);
            largest = std::max(largest, end);
        }
        const uint8_t foreign = 0;
        expect(ws.locate(&foreign).group < 0, "locate of a foreign address", trial);
        expect(ws.slot_bytes() == largest && ws.staging_bytes() == largest * ws.n_slots(), "slot bytes", trial);

        // The "device": slots of slot_bytes, filled with junk.
        std::vector<std::vector<uint8_t>> slot(ws.n_slots(), std::vector<uint8_t>(ws.slot_bytes(), 0xA5));
        size_t copied = 0;
        int last_slot = -1;
        auto copy = [&](int g, int s) {
            for (const dg::WeightStream::Piece &pc : ws.group(g).pieces) {
                std::memcpy(slot[s].data() + pc.offset, pc.host, pc.bytes);
                copied += pc.bytes;
            }
        };
        auto run = [&](int g) {
            const dg::WeightStream::Plan plan = ws.use(g);
            expect(plan.slot >= 0 && plan.slot < ws.n_slots(), "slot in range", trial);
            // A copy never goes into the slot the previous use computes from (its kernel may still run).
            if (plan.copy && ws.n_slots() == 2 && last_slot >= 0) expect(plan.slot != last_slot, "copy beside the running group", trial);
            last_slot = plan.slot;
            if (plan.copy) copy(g, plan.slot);
            for (size_t p = 0; p < piece_of[g].size(); ++p) {
                const dg::WeightStream::Piece &pc = ws.group(g).pieces[p];
                expect(std::memcmp(slot[plan.slot].data() + pc.offset, host[piece_of[g][p]].data(), pc.bytes) == 0,
                       "a use reads its group's bytes", trial);
            }
            if (plan.prefetch_group >= 0) {
                expect(plan.prefetch_slot == 1 - plan.slot, "look-ahead into the other slot", trial);
                expect(plan.prefetch_group == (g + 1) % G, "look-ahead of the next group", trial);
                copy(plan.prefetch_group, plan.prefetch_slot);
            }
            ++uses;
            return plan;
        };
        // Passes in order: after the first, a group is staged before its use (when there are 3 or
        // more), and a pass copies each group once.
        for (int pass = 0; pass < 4; ++pass) {
            const size_t before = copied;
            for (int g = 0; g < G; ++g) {
                const dg::WeightStream::Plan plan = run(g);
                if (pass > 0) expect(!plan.copy, "a group in order is staged ahead", trial);
            }
            size_t all = 0;
            for (int g = 0; g < G; ++g)
                for (const dg::WeightStream::Piece &pc : ws.group(g).pieces) all += pc.bytes;
            if (pass > 0) expect(copied - before == (G > 2 ? all : 0), "bytes a pass in order copies", trial);
        }
        // Encoder-only passes skip the last group; then random uses.
        for (int pass = 0; pass < 3; ++pass)
            for (int g = 0; g + 1 < G; ++g) run(g);
        for (int i = 0; i < 40; ++i) run(static_cast<int>(rng() % G));
    }
    // Misuse is an internal error, not a silent mix-up.
    {
        dg::WeightStream ws;
        uint8_t a[8], b[8], c[8];
        ws.add(0, a, 8);
        ws.add(1, b, 8);
        bool threw = false;
        try {
            ws.add(0, c, 8);
        } catch (const dg::Error &) {
            threw = true;
        }
        expect(threw, "a group's weights added apart", -1);
        threw = false;
        ws.use(0);
        try {
            ws.add(2, c, 8);
        } catch (const dg::Error &) {
            threw = true;
        }
        expect(threw, "a weight added after the first use", -1);
        threw = false;
        try {
            ws.use(2);
        } catch (const dg::Error &) {
            threw = true;
        }
        expect(threw, "use of an unknown group", -1);
    }
    std::printf("%s %ld\n", failures ? "FAILED" : "ok", uses);
    return failures ? 1 : 0;
}
