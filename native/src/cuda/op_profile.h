// Device time per op of the CUDA backend, for finding where a step goes (DGEMMA_CUDA_PROFILE=1).
// Each op records a pair of events on the backend's stream; completed pairs are added up at the
// next wait (synchronize, download) so that recording never waits; the table goes to stderr when
// the backend is destroyed. Off (the default), an op costs one branch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

namespace dg::cuda {

class OpProfile {
public:
    OpProfile() {
        const char *e = std::getenv("DGEMMA_CUDA_PROFILE");
        on_ = e && *e && std::string(e) != "0";
    }
    ~OpProfile() {
        if (!on_) return;
        collect();
        double total = 0;
        for (const auto &[name, s] : stats_) total += s.ms;
        std::vector<std::pair<std::string, Stat>> rows(stats_.begin(), stats_.end());
        std::sort(rows.begin(), rows.end(), [](const auto &a, const auto &b) { return a.second.ms > b.second.ms; });
        std::fprintf(stderr, "dgemma CUDA profile (device time per op, DGEMMA_CUDA_PROFILE)\n%-14s %8s %11s %10s %6s\n", "op",
                     "calls", "total ms", "mean us", "share");
        for (const auto &[name, s] : rows)
            std::fprintf(stderr, "%-14s %8ld %11.3f %10.2f %5.1f%%\n", name.c_str(), s.calls, s.ms, 1e3 * s.ms / s.calls,
                         total > 0 ? 100.0 * s.ms / total : 0.0);
        for (Pending &p : free_) destroy(p);
    }
    OpProfile(const OpProfile &) = delete;
    OpProfile &operator=(const OpProfile &) = delete;

    bool on() const { return on_; }
    uint64_t ops() const { return ops_; }

    // Brackets one op: begin() before its launches, end() after (with the same name). Every op of
    // the backend passes through begin(), so ops() numbers them, profiling on or off (the backend
    // keeps derived data only while the ops that use it follow each other).
    void begin(cudaStream_t s) {
        ++ops_;
        if (!on_) return;
        current_ = take();
        cudaEventRecord(current_.start, s);
    }
    void end(cudaStream_t s, const char *name) {
        if (!on_) return;
        cudaEventRecord(current_.stop, s);
        current_.name = name;
        pending_.push_back(current_);
    }
    // The stream is idle: every recorded pair has completed.
    void collect() {
        if (!on_) return;
        for (Pending &p : pending_) {
            float ms = 0;
            if (cudaEventElapsedTime(&ms, p.start, p.stop) == cudaSuccess) {
                Stat &s = stats_[p.name];
                s.ms += ms;
                ++s.calls;
            }
            free_.push_back(p);
        }
        pending_.clear();
    }

private:
    struct Pending {
        cudaEvent_t start = nullptr, stop = nullptr;
        const char *name = "";
    };
    struct Stat {
        double ms = 0;
        long calls = 0;
    };
    Pending take() {
        if (!free_.empty()) {
            Pending p = free_.back();
            free_.pop_back();
            return p;
        }
        Pending p;
        cudaEventCreate(&p.start);
        cudaEventCreate(&p.stop);
        return p;
    }
    static void destroy(Pending &p) {
        cudaEventDestroy(p.start);
        cudaEventDestroy(p.stop);
    }

    bool on_ = false;
    uint64_t ops_ = 0;
    Pending current_;
    std::vector<Pending> pending_, free_;
    std::map<std::string, Stat> stats_;
};

// RAII bracket: OpScope scope(profile, stream, "matmul");
class OpScope {
public:
    OpScope(OpProfile &p, cudaStream_t s, const char *name) : p_(p), s_(s), name_(name) { p_.begin(s_); }
    ~OpScope() { p_.end(s_, name_); }
    OpScope(const OpScope &) = delete;
    OpScope &operator=(const OpScope &) = delete;

private:
    OpProfile &p_;
    cudaStream_t s_;
    const char *name_;
};

}  // namespace dg::cuda
