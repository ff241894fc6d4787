// Errors inside the core. Internal code throws dg::Error; the C API boundary (api*.cpp) catches it,
// records the message for dgemma_last_error() and returns the status. No exception leaves the API.
#pragma once

#include <stdexcept>
#include <string>

#include "core_export.h"
#include "dgemma.h"

namespace dg {

class DG_CORE_EXPORT Error : public std::runtime_error {
public:
    Error(dgemma_status status, const std::string &message) : std::runtime_error(message), status_(status) {}
    dgemma_status status() const { return status_; }

private:
    dgemma_status status_;
};

// Records `message` as the calling thread's last error and returns `status`.
dgemma_status set_error(dgemma_status status, const std::string &message);
void clear_error();
const char *last_error();

// Runs `body` and converts anything it throws into a status plus a recorded message.
template <typename F>
dgemma_status guarded(F &&body) {
    try {
        clear_error();
        body();
        return DGEMMA_OK;
    } catch (const Error &e) {
        return set_error(e.status(), e.what());
    } catch (const std::bad_alloc &) {
        return set_error(DGEMMA_ERR_OUT_OF_MEMORY, "out of memory");
    } catch (const std::exception &e) {
        return set_error(DGEMMA_ERR_INTERNAL, std::string("internal error: ") + e.what());
    } catch (...) {
        return set_error(DGEMMA_ERR_INTERNAL, "internal error: unknown exception");
    }
}

}  // namespace dg
