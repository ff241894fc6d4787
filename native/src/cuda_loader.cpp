// The core's side of the CUDA backend: finds libdgemma_cuda beside libdgemma (or at
// $DGEMMA_CUDA_LIBRARY), loads it on first request and keeps it for the process. Nothing CUDA is
// touched until then, so the core runs on machines without the CUDA runtime, a driver or a GPU;
// each of those missing is a DGEMMA_ERR_UNSUPPORTED that says which.
#include <dlfcn.h>
#include <sys/stat.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include "backend.h"
#include "cuda_plugin.h"
#include "error.h"

namespace dg {

namespace {

struct Plugin {
    dg_cuda_device_count_fn device_count = nullptr;
    dg_cuda_device_info_fn device_info = nullptr;
    dg_cuda_backend_new_fn backend_new = nullptr;
    std::string error;  // why it could not be loaded
};

std::string plugin_path() {
    if (const char *p = std::getenv("DGEMMA_CUDA_LIBRARY"); p && *p) return p;
    Dl_info info;
    if (!dladdr(reinterpret_cast<void *>(&plugin_path), &info) || !info.dli_fname) return "libdgemma_cuda.so";
    std::string dir = info.dli_fname;
    const size_t slash = dir.rfind('/');
    dir = slash == std::string::npos ? "." : dir.substr(0, slash);
    return dir + "/libdgemma_cuda.so";
}

Plugin load() {
    Plugin p;
    const std::string path = plugin_path();
    struct stat st;
    if (stat(path.c_str(), &st) != 0) {
        p.error = "this dgemma was built without CUDA support (no " + path + "; rebuild with nvcc installed or -DDGEMMA_CUDA=ON)";
        return p;
    }
    void *h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        p.error = "cannot load the CUDA backend " + path + " (is the CUDA runtime installed?): " + (why ? why : "unknown error");
        return p;
    }
    auto abi = reinterpret_cast<dg_cuda_abi_fn>(dlsym(h, "dg_cuda_plugin_abi"));
    p.device_count = reinterpret_cast<dg_cuda_device_count_fn>(dlsym(h, "dg_cuda_plugin_device_count"));
    p.device_info = reinterpret_cast<dg_cuda_device_info_fn>(dlsym(h, "dg_cuda_plugin_device_info"));
    p.backend_new = reinterpret_cast<dg_cuda_backend_new_fn>(dlsym(h, "dg_cuda_plugin_backend_new"));
    if (!abi || !p.device_count || !p.device_info || !p.backend_new || abi() != kCudaPluginAbi) {
        p = Plugin{};
        p.error = path + " is not the CUDA backend of this dgemma build (rebuild both together)";
    }
    return p;  // the library stays loaded for the process: backends' code lives there
}

const Plugin &plugin() {
    static const Plugin p = load();
    if (!p.backend_new) throw Error(DGEMMA_ERR_UNSUPPORTED, p.error);
    return p;
}

void check_status(int status, const char *err) {
    if (status != DGEMMA_OK) throw Error(static_cast<dgemma_status>(status), err);
}

}  // namespace

int cuda_device_count() {
    char err[512] = "";
    int32_t n = 0;
    check_status(plugin().device_count(&n, err, sizeof err), err);
    return n;
}

CudaDeviceInfo cuda_device_info(int device) {
    char err[512] = "";
    CudaDeviceInfo info{};
    check_status(plugin().device_info(device, &info, err, sizeof err), err);
    return info;
}

std::unique_ptr<Backend> make_cuda_backend(int device) {
    char err[512] = "";
    Backend *b = nullptr;
    check_status(plugin().backend_new(device, &b, err, sizeof err), err);
    return std::unique_ptr<Backend>(b);
}

}  // namespace dg
