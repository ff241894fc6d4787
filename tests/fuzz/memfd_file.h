// The fuzzers hand the core a path, as a user would: the input bytes go into an anonymous memory file
// (memfd) reached through /proc/self/fd, so nothing touches the disk and every run starts clean.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

class MemfdFile {
public:
    MemfdFile(const uint8_t *data, size_t size) {
        fd_ = memfd_create("fuzz.gguf", MFD_CLOEXEC);
        if (fd_ < 0) std::abort();
        for (size_t done = 0; done < size;) {
            const ssize_t n = ::write(fd_, data + done, size - done);
            if (n <= 0) std::abort();
            done += static_cast<size_t>(n);
        }
        path_ = "/proc/self/fd/" + std::to_string(fd_);
    }
    ~MemfdFile() { ::close(fd_); }
    const std::string &path() const { return path_; }

private:
    int fd_ = -1;
    std::string path_;
};
