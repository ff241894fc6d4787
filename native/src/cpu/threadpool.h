// A fixed pool of worker threads that runs one parallel loop at a time.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
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

    // Calls fn(task, thread) for every task in [0, n_tasks), handed out dynamically: thread i
    // starts at the i-th of size() contiguous ranges of tasks and, its own range done, takes from
    // the others'. Loops over rows thus give thread i about the same rows op after op (the rows it
    // wrote are in its own cache: read by the other core they cost twice as much here). `thread` in
    // [0, size()) identifies the worker (for per-thread scratch). Returns when all tasks are done.
    // The first exception a task throws is rethrown here.
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
    struct alignas(64) Range {  // the tasks [next, end) not yet handed out of one thread's range
        std::atomic<int64_t> next{0};
        int64_t end = 0;
    };
    std::unique_ptr<Range[]> ranges_;
    std::atomic<int> active_{0};  // workers inside the current loop (joined under mu_)
    bool open_ = false;  // the current loop still accepts workers
    uint64_t generation_ = 0;
    std::atomic<uint64_t> published_{0};  // generation_, readable without the lock (workers' spin)
    bool stop_ = false;
    std::exception_ptr error_;
};

}  // namespace dg
