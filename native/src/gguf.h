// GGUF reader: memory-maps a file and validates everything before anything is used.
//
// Layout (little-endian): "GGUF", u32 version (2 or 3), u64 n_tensors, u64 n_kv; n_kv entries of
// (string key, u32 value type, value); n_tensors entries of (string name, u32 n_dims,
// u64 ne[n_dims] fastest-first, u32 ggml type, u64 offset into the data section); padding to
// `general.alignment` (default 32); the data section. A string is a u64 length and UTF-8 bytes.
// Every length, count, offset and size is checked against the file before it is followed;
// problems throw dg::Error(DGEMMA_ERR_FORMAT) naming the key or tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "quant/types.h"

namespace dg {

enum class GgufValueType : uint32_t {
    U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9,
    U64 = 10, I64 = 11, F64 = 12,
};

struct GgufValue {
    GgufValueType type = GgufValueType::U8;
    GgufValueType elem_type = GgufValueType::U8;  // arrays only
    uint64_t count = 0;                           // arrays only
    const uint8_t *data = nullptr;                // scalar bytes, or the first numeric array element
    std::string_view str;                         // strings
    std::vector<std::string_view> strs;           // string arrays
};

struct GgufTensor {
    std::string name;
    uint32_t n_dims = 0;
    int64_t ne[4] = {1, 1, 1, 1};  // fastest-first
    uint32_t type_id = 0;
    const TypeTraits *type = nullptr;
    const uint8_t *data = nullptr;
    size_t nbytes = 0;
};

class GgufFile {
public:
    explicit GgufFile(const std::string &path);
    ~GgufFile();
    GgufFile(const GgufFile &) = delete;
    GgufFile &operator=(const GgufFile &) = delete;

    const std::string &path() const { return path_; }
    size_t size() const { return size_; }  // bytes of the mapped file

    bool has(const std::string &key) const { return kv_.count(key) != 0; }
    const GgufValue *find(const std::string &key) const;

    // Typed getters; a missing key (getters without a default) or a value of the wrong kind
    // throws DGEMMA_ERR_MODEL naming the key. Integer getters accept any integer type in range.
    int64_t get_int(const std::string &key) const;
    int64_t get_int(const std::string &key, int64_t fallback) const;
    double get_float(const std::string &key) const;
    double get_float(const std::string &key, double fallback) const;
    // An integer array, or a scalar integer repeated `n` times (llama.cpp writes either).
    std::vector<int64_t> get_int_array(const std::string &key, size_t n) const;
    std::vector<bool> get_bool_array(const std::string &key) const;

    const GgufTensor *tensor(const std::string &name) const;
    const std::vector<GgufTensor> &tensors() const { return tensors_; }

private:
    void parse();

    std::string path_;
    int fd_ = -1;
    const uint8_t *base_ = nullptr;
    size_t size_ = 0;
    std::map<std::string, GgufValue, std::less<>> kv_;
    std::vector<GgufTensor> tensors_;
    std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace dg
