// Host check of cpu/threadpool.cpp, linked alone: many loops of every size back to back (a pass runs
// hundreds), on pools of 2, 3 and 4 threads, each task run exactly once and every loop's tasks done
// when run() returns; a task that throws has its exception rethrown by run() after the loop's other
// workers are done, and the pool runs the next loop normally. The caller's end-of-loop wait watches
// the workers before it sleeps, so loops that end while a worker is mid-task and loops that end
// with none joined are both exercised. Prints the loops checked; exits 1 on any failure.
#include <atomic>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cpu/threadpool.h"

int main() {
    long loops = 0, bad = 0;
    for (int threads : {2, 3, 4}) {
        dg::ThreadPool pool(threads);
        std::vector<std::atomic<int>> hits(4096);
        for (int round = 0; round < 3000; ++round) {
            const int64_t n = round % 7 == 0 ? 4096 : round % 61;  // mostly short loops, some long
            for (int64_t i = 0; i < n; ++i) hits[static_cast<size_t>(i)].store(0);
            std::atomic<int> bad_thread{0};
            pool.run(n, [&](int64_t task, int thread) {
                if (thread < 0 || thread >= threads) bad_thread = 1;
                if (task % 509 == 0) std::this_thread::yield();  // a worker still busy as the loop ends
                hits[static_cast<size_t>(task)].fetch_add(1);
            });
            for (int64_t i = 0; i < n; ++i)
                if (hits[static_cast<size_t>(i)].load() != 1 && bad++ < 10)
                    std::printf("threads %d round %d: task %ld ran %d times\n", threads, round, static_cast<long>(i),
                                hits[static_cast<size_t>(i)].load());
            if (bad_thread && bad++ < 10) std::printf("threads %d round %d: a thread index out of range\n", threads, round);
            ++loops;
            if (round % 100 == 50) {  // a throwing task: rethrown once every joined worker is out
                std::atomic<int> running{0};
                bool caught = false;
                try {
                    pool.run(64, [&](int64_t task, int) {
                        running.fetch_add(1);
                        if (task == 3) {
                            running.fetch_sub(1);
                            throw std::runtime_error("task 3");
                        }
                        std::this_thread::yield();
                        running.fetch_sub(1);
                    });
                } catch (const std::runtime_error &e) {
                    caught = std::string(e.what()) == "task 3";
                }
                if ((!caught || running.load() != 0) && bad++ < 10)
                    std::printf("threads %d round %d: exception %s, %d tasks still running\n", threads, round,
                                caught ? "rethrown" : "lost", running.load());
                ++loops;
            }
        }
    }
    std::printf("bad %ld loops %ld\n", bad, loops);
    return bad ? 1 : 0;
}
