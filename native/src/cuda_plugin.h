// The boundary between the core (libdgemma) and the CUDA backend library (libdgemma_cuda), which
// the core loads with dlopen only when a CUDA device is asked for, so that the core runs where there
// is no CUDA runtime, driver or GPU. Both are built from this tree by one compiler; the plugin
// links against libdgemma for the few core symbols marked DG_CORE_EXPORT.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dg {

class Backend;

// Bumped whenever this file or backend.h changes: the core refuses a plugin of another version.
constexpr int kCudaPluginAbi = 1;

struct CudaDeviceInfo {
    char name[256];
    uint64_t total_memory, free_memory;
    int32_t major, minor;  // compute capability
};

}  // namespace dg

// Entry points of libdgemma_cuda, found with dlsym under these names:
//   dg_cuda_plugin_abi, dg_cuda_plugin_device_count, dg_cuda_plugin_device_info, dg_cuda_plugin_backend_new.
// Each but the first returns DGEMMA_OK (0) or a dgemma_status with a message written to err.
extern "C" {
typedef int (*dg_cuda_abi_fn)(void);
typedef int (*dg_cuda_device_count_fn)(int32_t *count, char *err, size_t err_size);
typedef int (*dg_cuda_device_info_fn)(int32_t device, dg::CudaDeviceInfo *out, char *err, size_t err_size);
typedef int (*dg_cuda_backend_new_fn)(int32_t device, dg::Backend **out, char *err, size_t err_size);
}
