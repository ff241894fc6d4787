// The entry points the core finds with dlsym (cuda_plugin.h). No exception leaves them: a failure
// is a dgemma_status and a message that says what is missing (driver, device).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "cuda/backend_cuda.h"
#include "cuda_plugin.h"
#include "error.h"

namespace {

#define DG_PLUGIN_ENTRY extern "C" __attribute__((visibility("default")))

int fail(int status, const std::string &message, char *err, size_t err_size) {
    if (err && err_size) std::snprintf(err, err_size, "%s", message.c_str());
    return status;
}

// DGEMMA_OK with the count, or DGEMMA_ERR_UNSUPPORTED saying whether the driver or a device is missing.
int count_devices(int32_t *count, char *err, size_t err_size) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaErrorNoDevice || (e == cudaSuccess && n == 0))
        return fail(DGEMMA_ERR_UNSUPPORTED, "no CUDA device: the driver sees no GPU", err, err_size);
    if (e == cudaErrorInsufficientDriver)
        return fail(DGEMMA_ERR_UNSUPPORTED, "the CUDA driver is missing or older than the CUDA runtime this build uses",
                    err, err_size);
    if (e != cudaSuccess)
        return fail(DGEMMA_ERR_UNSUPPORTED, std::string("CUDA is not usable: ") + cudaGetErrorString(e), err, err_size);
    *count = n;
    return DGEMMA_OK;
}

int check_device(int32_t device, char *err, size_t err_size) {
    int32_t n = 0;
    if (const int st = count_devices(&n, err, err_size)) return st;
    if (device < 0 || device >= n)
        return fail(DGEMMA_ERR_UNSUPPORTED, "no CUDA device " + std::to_string(device) + " (this machine has " +
                                                std::to_string(n) + ")", err, err_size);
    return DGEMMA_OK;
}

}  // namespace

DG_PLUGIN_ENTRY int dg_cuda_plugin_abi(void) { return dg::kCudaPluginAbi; }

DG_PLUGIN_ENTRY int dg_cuda_plugin_device_count(int32_t *count, char *err, size_t err_size) {
    return count_devices(count, err, err_size);
}

DG_PLUGIN_ENTRY int dg_cuda_plugin_device_info(int32_t device, dg::CudaDeviceInfo *out, char *err, size_t err_size) {
    if (const int st = check_device(device, err, err_size)) return st;
    cudaDeviceProp prop;
    cudaError_t e = cudaGetDeviceProperties(&prop, device);
    size_t free_b = 0, total_b = 0;
    if (e == cudaSuccess) e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaMemGetInfo(&free_b, &total_b);
    if (e != cudaSuccess)
        return fail(DGEMMA_ERR_UNSUPPORTED, "CUDA device " + std::to_string(device) + ": " + cudaGetErrorString(e), err, err_size);
    std::memset(out, 0, sizeof *out);
    std::snprintf(out->name, sizeof out->name, "%s", prop.name);
    out->total_memory = total_b;
    out->free_memory = free_b;
    out->major = prop.major;
    out->minor = prop.minor;
    return DGEMMA_OK;
}

DG_PLUGIN_ENTRY int dg_cuda_plugin_backend_new(int32_t device, dg::Backend **out, char *err, size_t err_size) {
    *out = nullptr;
    if (const int st = check_device(device, err, err_size)) return st;
    try {
        *out = dg::make_cuda_backend_direct(device).release();
        return DGEMMA_OK;
    } catch (const dg::Error &e) {
        return fail(e.status(), e.what(), err, err_size);
    } catch (const std::exception &e) {
        return fail(DGEMMA_ERR_INTERNAL, e.what(), err, err_size);
    }
}
