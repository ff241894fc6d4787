#include "cpu/threadpool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace dg {

namespace {

constexpr std::chrono::microseconds kSpin{100};  // how long an idle worker watches for the next loop

inline void pause() {
#if defined(__x86_64__) || defined(_M_X64)
    _mm_pause();
#endif
}

}  // namespace

int resolve_thread_count(int requested) {
    return requested > 0 ? requested : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads), ranges_(new Range[static_cast<size_t>(n_threads_)]) {
    for (int t = 1; t < n_threads_; ++t) workers_.emplace_back([this, t] { worker(t); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
    }
    wake_.notify_all();
    for (auto &w : workers_) w.join();
}

void ThreadPool::drain(int thread) {
    for (int k = 0; k < n_threads_; ++k) {  // its own range first, then the others' in turn
        Range &r = ranges_[static_cast<size_t>((thread + k) % n_threads_)];
        for (;;) {
            const int64_t task = r.next.fetch_add(1, std::memory_order_relaxed);
            if (task >= r.end) break;
            try {
                (*fn_)(task, thread);
            } catch (...) {
                std::lock_guard<std::mutex> lock(mu_);
                if (!error_) error_ = std::current_exception();
                for (int j = 0; j < n_threads_; ++j) ranges_[static_cast<size_t>(j)].next.store(ranges_[static_cast<size_t>(j)].end);  // skip what is left
            }
        }
    }
}

// A worker joins a loop only while it is open. The caller closes it once every task has been
// handed out and then waits only for the workers that joined (and so are running), never for one
// that has not been scheduled yet: on a busy machine the caller finishes the loop itself.
void ThreadPool::worker(int thread) {
    uint64_t seen = 0;
    for (;;) {
        // A step runs hundreds of short loops back to back: a worker that went to sleep after one
        // takes tens of microseconds to wake for the next, so it first watches for the next loop
        // for a short while.
        // The clock is read every 32 pauses: a spinning worker should leave the core's resources to
        // the thread still working (a sibling hyperthread, often), and a clock read is work.
        const auto spin_until = std::chrono::steady_clock::now() + kSpin;
        for (int i = 1; published_.load(std::memory_order_acquire) == seen; ++i) {
            pause();
            if (i % 32 == 0 && std::chrono::steady_clock::now() >= spin_until) break;
        }
        {
            std::unique_lock<std::mutex> lock(mu_);
            wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
            if (!open_) continue;
            ++active_;
        }
        drain(thread);
        if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            std::lock_guard<std::mutex> lock(mu_);  // the caller checks active_ under mu_ before it sleeps
            done_.notify_one();
        }
    }
}

void ThreadPool::run(int64_t n_tasks, const std::function<void(int64_t, int)> &fn) {
    if (n_tasks <= 0) return;
    if (n_threads_ == 1 || n_tasks == 1) {
        for (int64_t t = 0; t < n_tasks; ++t) fn(t, 0);
        return;
    }
    {
        std::lock_guard<std::mutex> lock(mu_);
        fn_ = &fn;
        for (int i = 0; i < n_threads_; ++i) {
            Range &r = ranges_[static_cast<size_t>(i)];
            r.next.store(n_tasks * i / n_threads_, std::memory_order_relaxed);
            r.end = n_tasks * (i + 1) / n_threads_;
        }
        active_.store(0);
        open_ = true;
        error_ = nullptr;
        ++generation_;
        published_.store(generation_, std::memory_order_release);
    }
    wake_.notify_all();
    drain(0);
    // Close the loop, then wait for the workers that joined it. A worker's last task usually ends
    // within microseconds of the caller's: the caller watches for that first, since sleeping on
    // the condition costs a futex wake-up (tens of microseconds) on every one of a pass's hundreds
    // of loops.
    {
        std::lock_guard<std::mutex> lock(mu_);
        open_ = false;
    }
    const auto spin_until = std::chrono::steady_clock::now() + kSpin;
    for (int i = 1; active_.load(std::memory_order_acquire) != 0; ++i) {
        pause();
        if (i % 32 == 0 && std::chrono::steady_clock::now() >= spin_until) break;
    }
    std::exception_ptr error;
    {
        std::unique_lock<std::mutex> lock(mu_);
        done_.wait(lock, [&] { return active_.load(std::memory_order_acquire) == 0; });
        fn_ = nullptr;
        error = error_;
    }
    if (error) std::rethrow_exception(error);
}

}  // namespace dg
