// A fixed pool of worker threads that runs one parallel loop at a time.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace dg {

// The thread count a caller asked for, or one per core when it asked for none (n <= 0). The one
// place this fallback lives: the model, the backend and the tools all resolve through it.
int resolve_thread_count(int requested);

class ThreadPool {
public:
    explicit ThreadPool(int n_threads);  // n_threads counts the calling thread
    ~ThreadPool();
    ThreadPool(const ThreadPool &) = delete;
    ThreadPool &operator=(const ThreadPool &) = delete;

    int size() const { return n_threads_; }

    // Calls fn(task, thread) for every task in [0, n_tasks), tasks handed out dynamically;
    // `thread` in [0, size()) identifies the worker (for per-thread scratch). Returns when all
    // tasks are done. The first exception a task throws is rethrown here.
    void run(int64_t n_tasks, const std::function<void(int64_t task, int thread)> &fn);

private:
    void worker(int thread);
    void drain(int thread);

    int n_threads_;
    std::vector<std::thread> workers_;
    std::mutex mu_;
    std::condition_variable wake_;
    std::condition_variable done_;
    const std::function<void(int64_t, int)> *fn_ = nullptr;
    int64_t n_tasks_ = 0;
    std::atomic<int64_t> next_{0};
    std::atomic<int> active_{0};  // workers inside the current loop (joined under mu_)
    bool open_ = false;  // the current loop still accepts workers
    uint64_t generation_ = 0;
    std::atomic<uint64_t> published_{0};  // generation_, readable without the lock (workers' spin)
    bool stop_ = false;
    std::exception_ptr error_;
};

}  // namespace dg
