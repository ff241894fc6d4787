// libFuzzer harness for the model binding: dg::Model construction from arbitrary bytes (the GGUF
// reader, then hyperparameters, the tensor directory checked against them, the weight binding and the
// configuration JSON). A dg::Error is the expected outcome for a bad file; anything else is a finding.
#include <cstdint>

#include "error.h"
#include "memfd_file.h"
#include "model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    MemfdFile file(data, size);
    try {
        dg::Model model(file.path(), 1);
        if (model.config_json().empty()) __builtin_trap();
    } catch (const dg::Error &) {
    }
    return 0;
}
