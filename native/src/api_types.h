// The opaque handles of the C API, shared by its translation units, and the bookkeeping that keeps
// the thread-safety contract of dgemma.h: calls in flight are counted so that freeing a model or a
// session waits for them, and a session used by one call is refused to every other call.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "error.h"
#include "model.h"
#include "session.h"

struct dgemma_model {
    std::unique_ptr<dg::Model> model;
    std::mutex calls_mu;               // guards `calls` and every session's `busy`
    std::condition_variable calls_done;
    int64_t calls = 0;                 // API calls in flight on the model or its sessions
};

struct dgemma_session {
    std::unique_ptr<dg::Session> session;
    dgemma_model *owner = nullptr;
    int64_t busy = 0;                  // calls in flight on this session (0 or 1)
    std::thread::id busy_thread;       // the thread of that call (its callbacks run there)
    bool free_pending = false;         // freed from a callback of its own call: freed when that call returns
};

namespace dg {

// An API call on a model: counted in flight until it returns.
class ModelCall {
public:
    explicit ModelCall(dgemma_model *m) : m_(m) {
        std::lock_guard<std::mutex> lock(m_->calls_mu);
        ++m_->calls;
    }
    ~ModelCall() {
        std::lock_guard<std::mutex> lock(m_->calls_mu);
        if (--m_->calls == 0) m_->calls_done.notify_all();
    }
    ModelCall(const ModelCall &) = delete;
    ModelCall &operator=(const ModelCall &) = delete;

private:
    dgemma_model *m_;
};

// An API call that uses a session: counted on its model, and the session's only user until it
// returns (a second call on a busy session fails instead of racing it).
class SessionCall {
public:
    explicit SessionCall(dgemma_session *s) : s_(s) {
        std::lock_guard<std::mutex> lock(s_->owner->calls_mu);
        if (s_->busy)
            throw Error(DGEMMA_ERR_INVALID_ARGUMENT,
                        "the session is in use by another call (a generation in progress); use another session");
        ++s_->busy;
        s_->busy_thread = std::this_thread::get_id();
        ++s_->owner->calls;
    }
    ~SessionCall() {
        bool free_now;
        {
            std::lock_guard<std::mutex> lock(s_->owner->calls_mu);
            --s_->busy;
            --s_->owner->calls;
            free_now = s_->free_pending;
            s_->owner->calls_done.notify_all();
        }
        if (free_now) {
            std::lock_guard<std::mutex> lock(s_->owner->model->mutex());
            delete s_;
        }
    }
    SessionCall(const SessionCall &) = delete;
    SessionCall &operator=(const SessionCall &) = delete;

private:
    dgemma_session *s_;
};

}  // namespace dg
