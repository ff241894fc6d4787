// libFuzzer harness for the GGUF reader (native/src/gguf.*): parse arbitrary bytes, then read every
// key through each typed getter and touch every tensor's bytes. A dg::Error is the expected outcome
// for a bad file; anything else (another exception, a sanitizer report, a crash) is a finding.
#include <cstdint>
#include <cstdlib>

#include "error.h"
#include "gguf.h"
#include "memfd_file.h"

namespace {

void read_all(const dg::GgufFile &f) {
    for (const dg::GgufTensor &t : f.tensors()) {
        // The reader promises that [data, data + nbytes) lies inside the mapping.
        volatile uint8_t sink = 0;
        if (t.nbytes) sink ^= t.data[0] ^ t.data[t.nbytes - 1];
        (void)sink;
        if (f.tensor(t.name) != &t) std::abort();
    }
}

template <typename F>
void expect_error_or_value(F &&get) {
    try {
        get();
    } catch (const dg::Error &) {
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    MemfdFile file(data, size);
    try {
        dg::GgufFile f(file.path());
        read_all(f);
        for (const char *key : {"general.architecture", "general.alignment", "diffusion-gemma.block_count",
                                "diffusion-gemma.attention.head_count", "diffusion-gemma.attention.sliding_window_pattern",
                                "tokenizer.ggml.tokens"}) {
            expect_error_or_value([&] { return f.get_int(key); });
            expect_error_or_value([&] { return f.get_float(key); });
            expect_error_or_value([&] { return f.get_int_array(key, 4); });
            expect_error_or_value([&] { return f.get_bool_array(key); });
        }
    } catch (const dg::Error &) {
    }
    return 0;
}
