// Which of a finished canvas's tokens become output (contract: Generation; infill: issue 14).
//
// Without fixed positions: the tokens before the first EOS; an EOS ends the generation.
// With fixed positions (infill, edit, templates), EOS counts only inside holes (maximal runs of free
// positions): a fixed position is output as it is, whatever its token (the caller's text, written
// once); an EOS at a free position ends its hole, whose remaining positions are dropped; it ends the
// generation only when no fixed position follows it in the canvas.
#pragma once

#include <cstdint>
#include <vector>

namespace dg {

struct CanvasOutput {
    int64_t n_tokens = 0;  // tokens written
    bool eos = false;      // an EOS ended the generation
};

// Writes the output tokens of canvas positions [0, room) to `out` (room tokens at most).
// `fixed` is the canvas's mask ([room] or more) or null.
CanvasOutput canvas_output(const int32_t *amax, const int8_t *fixed, int64_t room, const std::vector<int32_t> &eos_ids,
                           int32_t *out);

}  // namespace dg
