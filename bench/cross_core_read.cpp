// How much a core pays to read rows another core has just written, against rows it wrote itself:
// the reason the CPU thread pool hands each thread the same contiguous range of tasks op after op
// (cpu/threadpool.h). Threads pinned to CPUs 0 and 1; half a 512 x 704 float activation (720 KB).
// Prints the best of 20 reads each way.
//
//   g++ -O2 -march=native bench/cross_core_read.cpp -o /tmp/cross_core_read -lpthread && /tmp/cross_core_read
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

// Reads every cache line of a (the sum of one float per line and a few more keeps the loop honest).
float read_all(const std::vector<float> &a) {
    float s = 0.0f;
    for (size_t i = 0; i < a.size(); i += 16) s += a[i] + a[i + 5] + a[i + 15];
    return s;
}

}  // namespace

int main() {
    pin(0);
    std::vector<float> a(512 * 704 / 2);
    double own = 1e9, other = 1e9;
    float sink = 0.0f;
    for (int rep = 0; rep < 20; ++rep) {
        std::thread([&] { pin(1); std::fill(a.begin(), a.end(), 1.0f); }).join();  // out of this core's cache
        std::fill(a.begin(), a.end(), 0.5f);  // written here
        double t0 = now();
        sink += read_all(a);
        own = std::min(own, now() - t0);
        std::thread([&] { pin(1); std::fill(a.begin(), a.end(), 0.25f); }).join();  // written by the other core
        t0 = now();
        sink += read_all(a);
        other = std::min(other, now() - t0);
    }
    std::printf("read %zu KB: written by this core %.1f us, by the other core %.1f us (%s)\n", a.size() * sizeof(float) / 1024,
                own * 1e6, other * 1e6, sink > 0 ? "ok" : "?");
}
