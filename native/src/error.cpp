#include "error.h"

namespace dg {

namespace {
thread_local std::string g_last_error;
}

dgemma_status set_error(dgemma_status status, const std::string &message) {
    g_last_error = message;
    return status;
}

void clear_error() { g_last_error.clear(); }

const char *last_error() { return g_last_error.c_str(); }

}  // namespace dg

extern "C" DGEMMA_API const char *dgemma_last_error(void) { return dg::last_error(); }
