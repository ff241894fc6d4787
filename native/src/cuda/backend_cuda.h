// The CUDA backend, built into libdgemma_cuda (see cuda_plugin.h for how the core reaches it).
#pragma once

#include <memory>

#include "backend.h"

namespace dg {

// A backend on CUDA device `device`; throws dg::Error when the device cannot be used.
std::unique_ptr<Backend> make_cuda_backend_direct(int device);

}  // namespace dg
