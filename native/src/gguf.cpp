#include "gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>

#include "error.h"

namespace dg {

namespace {

constexpr uint64_t kDefaultAlignment = 32;

size_t scalar_size(GgufValueType t) {
    switch (t) {
        case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::BOOL: return 1;
        case GgufValueType::U16: case GgufValueType::I16: return 2;
        case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::F32: return 4;
        case GgufValueType::U64: case GgufValueType::I64: case GgufValueType::F64: return 8;
        default: return 0;
    }
}

// Bounds-checked sequential reader over the mapping.
class Cursor {
public:
    Cursor(const uint8_t *base, size_t size, const std::string &path) : base_(base), size_(size), path_(path) {}

    const uint8_t *take(uint64_t n, const std::string &what) {
        if (n > size_ - pos_) fail("truncated file: " + what + " runs past the end at byte " + std::to_string(pos_));
        const uint8_t *p = base_ + pos_;
        pos_ += n;
        return p;
    }
    template <typename T>
    T read(const std::string &what) {
        T v;
        std::memcpy(&v, take(sizeof(T), what), sizeof(T));
        return v;
    }
    std::string_view string(const std::string &what) {
        const uint64_t n = read<uint64_t>("length of " + what);
        return {reinterpret_cast<const char *>(take(n, what)), static_cast<size_t>(n)};
    }
    size_t pos() const { return pos_; }
    size_t remaining() const { return size_ - pos_; }
    [[noreturn]] void fail(const std::string &msg) const { throw Error(DGEMMA_ERR_FORMAT, path_ + ": " + msg); }

private:
    const uint8_t *base_;
    size_t size_;
    size_t pos_ = 0;
    const std::string &path_;
};

constexpr int kMaxArrayDepth = 8;

// Steps over one nested array (element type, count, elements) at nesting `depth`.
void skip_array(Cursor &c, const std::string &key, int depth) {
    if (depth > kMaxArrayDepth) c.fail("array '" + key + "' nests deeper than " + std::to_string(kMaxArrayDepth) + " levels");
    const auto elem_type = static_cast<GgufValueType>(c.read<uint32_t>("element type in '" + key + "'"));
    const uint64_t count = c.read<uint64_t>("length of an array in '" + key + "'");
    if (elem_type == GgufValueType::ARRAY || elem_type == GgufValueType::STRING) {
        // Each element starts with at least 8 bytes (a length or a type and count).
        if (count > c.remaining() / 8) c.fail("truncated file: array '" + key + "' runs past the end");
        for (uint64_t j = 0; j < count; ++j) {
            if (elem_type == GgufValueType::ARRAY) skip_array(c, key, depth + 1);
            else c.string("element of '" + key + "'");
        }
        return;
    }
    const size_t es = scalar_size(elem_type);
    if (es == 0) c.fail("array '" + key + "' has unsupported element type " + std::to_string(static_cast<uint32_t>(elem_type)));
    if (count > c.remaining() / es) c.fail("truncated file: array '" + key + "' runs past the end");
    c.take(count * es, "array in '" + key + "'");
}

}  // namespace

GgufFile::GgufFile(const std::string &path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw Error(DGEMMA_ERR_IO, path + ": cannot open: " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd_);
        throw Error(DGEMMA_ERR_IO, path + ": not a regular file");
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ < 24) {
        ::close(fd_);
        throw Error(DGEMMA_ERR_FORMAT, path + ": file of " + std::to_string(size_) + " bytes is too short for GGUF");
    }
    void *p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED) {
        ::close(fd_);
        throw Error(DGEMMA_ERR_IO, path + ": cannot map: " + std::strerror(errno));
    }
    base_ = static_cast<const uint8_t *>(p);
    try {
        parse();
    } catch (...) {
        ::munmap(const_cast<uint8_t *>(base_), size_);
        ::close(fd_);
        throw;
    }
}

GgufFile::~GgufFile() {
    if (base_) ::munmap(const_cast<uint8_t *>(base_), size_);
    if (fd_ >= 0) ::close(fd_);
}

void GgufFile::parse() {
    Cursor c(base_, size_, path_);
    if (std::memcmp(c.take(4, "magic"), "GGUF", 4) != 0) c.fail("not a GGUF file (bad magic)");
    const uint32_t version = c.read<uint32_t>("version");
    // A big-endian writer stores 2 or 3 with its bytes swapped; its numbers would all read wrong.
    if (version == 0x02000000u || version == 0x03000000u) c.fail("big-endian GGUF files are not supported (only little-endian)");
    if (version != 2 && version != 3) c.fail("unsupported GGUF version " + std::to_string(version));
    const uint64_t n_tensors = c.read<uint64_t>("tensor count");
    const uint64_t n_kv = c.read<uint64_t>("key count");
    // A key entry takes at least 13 bytes (name length, type, a one-byte value), a tensor entry 32
    // (name length, dimension count, one dimension, type, offset): larger counts cannot be genuine,
    // and the bound keeps what the directory allocates proportional to the file's size.
    if (n_kv > c.remaining() / 13 || n_tensors > (c.remaining() - n_kv * 13) / 32)
        c.fail("truncated file or implausible counts: " + std::to_string(n_tensors) + " tensors and " + std::to_string(n_kv) +
               " keys cannot fit in the " + std::to_string(c.remaining()) + " bytes left");

    for (uint64_t i = 0; i < n_kv; ++i) {
        const std::string key(c.string("key #" + std::to_string(i)));
        GgufValue v;
        v.type = static_cast<GgufValueType>(c.read<uint32_t>("type of key '" + key + "'"));
        const std::string what = "value of '" + key + "'";
        if (v.type == GgufValueType::STRING) {
            v.str = c.string(what);
        } else if (v.type == GgufValueType::ARRAY) {
            v.elem_type = static_cast<GgufValueType>(c.read<uint32_t>("element type of '" + key + "'"));
            v.count = c.read<uint64_t>("length of '" + key + "'");
            if (v.elem_type == GgufValueType::ARRAY) {
                // Arrays of arrays are legal GGUF; no key this project reads holds one, so they are
                // checked and skipped, and the getters refuse them.
                for (uint64_t j = 0; j < v.count; ++j) skip_array(c, key, 1);
            } else if (v.elem_type == GgufValueType::STRING) {
                if (v.count > c.remaining() / 8) c.fail("array '" + key + "' claims more strings than the file holds");
                v.strs.reserve(v.count);
                for (uint64_t j = 0; j < v.count; ++j) v.strs.push_back(c.string("element " + std::to_string(j) + " of '" + key + "'"));
            } else {
                const size_t es = scalar_size(v.elem_type);
                if (es == 0) c.fail("array '" + key + "' has unsupported element type " + std::to_string(static_cast<uint32_t>(v.elem_type)));
                if (v.count > c.remaining() / es) c.fail("truncated file: array '" + key + "' runs past the end");
                v.data = c.take(v.count * es, what);
            }
        } else {
            const size_t es = scalar_size(v.type);
            if (es == 0) c.fail("key '" + key + "' has unknown value type " + std::to_string(static_cast<uint32_t>(v.type)));
            v.data = c.take(es, what);
        }
        if (!kv_.emplace(key, std::move(v)).second) c.fail("duplicate key '" + key + "'");
    }

    uint64_t alignment = kDefaultAlignment;
    if (const GgufValue *a = find("general.alignment")) {
        if (a->type != GgufValueType::U32) c.fail("general.alignment must be a u32");
        uint32_t al;
        std::memcpy(&al, a->data, 4);
        // The GGUF specification asks for a multiple of 8; every ggml block and float then starts at
        // an address its type allows (alignment 1 put F16 scales at odd addresses).
        if (al < kRowAlignment || (al & (al - 1)) != 0)
            c.fail("general.alignment " + std::to_string(al) + " is not a power of two of at least " +
                   std::to_string(kRowAlignment));
        alignment = al;
    }

    struct Pending { GgufTensor t; uint64_t offset; };
    std::vector<Pending> pending;
    pending.reserve(n_tensors);
    for (uint64_t i = 0; i < n_tensors; ++i) {
        Pending p;
        p.t.name = std::string(c.string("tensor name #" + std::to_string(i)));
        const std::string &name = p.t.name;
        p.t.n_dims = c.read<uint32_t>("dimension count of '" + name + "'");
        if (p.t.n_dims < 1 || p.t.n_dims > 4) c.fail("tensor '" + name + "' has " + std::to_string(p.t.n_dims) + " dimensions (1 to 4 allowed)");
        uint64_t n_elements = 1;
        for (uint32_t d = 0; d < p.t.n_dims; ++d) {
            const uint64_t ne = c.read<uint64_t>("shape of '" + name + "'");
            if (ne == 0 || ne > (uint64_t(1) << 40)) c.fail("tensor '" + name + "' has invalid dimension " + std::to_string(ne));
            if (n_elements > (uint64_t(1) << 62) / ne) c.fail("tensor '" + name + "' has too many elements");
            n_elements *= ne;
            p.t.ne[d] = static_cast<int64_t>(ne);
        }
        p.t.type_id = c.read<uint32_t>("type of '" + name + "'");
        p.t.type = type_traits(p.t.type_id);
        if (!p.t.type) c.fail("tensor '" + name + "' has unknown type id " + std::to_string(p.t.type_id));
        if (p.t.ne[0] % p.t.type->block_size != 0)
            c.fail("tensor '" + name + "': row length " + std::to_string(p.t.ne[0]) + " is not a multiple of the " +
                   p.t.type->name + " block size " + std::to_string(p.t.type->block_size));
        p.t.nbytes = static_cast<size_t>(n_elements / p.t.type->block_size) * p.t.type->type_size;
        p.offset = c.read<uint64_t>("offset of '" + name + "'");
        if (p.offset % alignment != 0) c.fail("tensor '" + name + "' data offset " + std::to_string(p.offset) + " is not aligned to " + std::to_string(alignment));
        if (tensor_index_.count(name)) c.fail("duplicate tensor '" + name + "'");
        tensor_index_.emplace(name, pending.size());
        pending.push_back(std::move(p));
    }

    const uint64_t data_start = (c.pos() + alignment - 1) / alignment * alignment;
    for (Pending &p : pending) {
        if (data_start > size_ || p.offset > size_ - data_start || p.t.nbytes > size_ - data_start - p.offset)
            c.fail("truncated file: data of tensor '" + p.t.name + "' (" + std::to_string(p.t.nbytes) + " bytes at offset " +
                   std::to_string(p.offset) + ") lies past the end of the file");
        p.t.data = base_ + data_start + p.offset;
        tensors_.push_back(std::move(p.t));
    }
}

const GgufValue *GgufFile::find(const std::string &key) const {
    auto it = kv_.find(key);
    return it == kv_.end() ? nullptr : &it->second;
}

namespace {

bool read_integer(GgufValueType t, const uint8_t *p, int64_t *out) {
    switch (t) {
        case GgufValueType::U8: *out = *p; return true;
        case GgufValueType::I8: *out = static_cast<int8_t>(*p); return true;
        case GgufValueType::BOOL: *out = *p != 0; return true;
        case GgufValueType::U16: { uint16_t v; std::memcpy(&v, p, 2); *out = v; return true; }
        case GgufValueType::I16: { int16_t v; std::memcpy(&v, p, 2); *out = v; return true; }
        case GgufValueType::U32: { uint32_t v; std::memcpy(&v, p, 4); *out = v; return true; }
        case GgufValueType::I32: { int32_t v; std::memcpy(&v, p, 4); *out = v; return true; }
        case GgufValueType::I64: { int64_t v; std::memcpy(&v, p, 8); *out = v; return true; }
        case GgufValueType::U64: {
            uint64_t v;
            std::memcpy(&v, p, 8);
            if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
            *out = static_cast<int64_t>(v);
            return true;
        }
        default: return false;
    }
}

}  // namespace

int64_t GgufFile::get_int(const std::string &key) const {
    const GgufValue *v = find(key);
    if (!v) throw Error(DGEMMA_ERR_MODEL, path_ + ": missing key '" + key + "'");
    int64_t out;
    if (v->type == GgufValueType::ARRAY || !read_integer(v->type, v->data, &out))
        throw Error(DGEMMA_ERR_MODEL, path_ + ": key '" + key + "' is not an integer");
    return out;
}

int64_t GgufFile::get_int(const std::string &key, int64_t fallback) const { return has(key) ? get_int(key) : fallback; }

double GgufFile::get_float(const std::string &key) const {
    const GgufValue *v = find(key);
    if (!v) throw Error(DGEMMA_ERR_MODEL, path_ + ": missing key '" + key + "'");
    if (v->type == GgufValueType::F32) { float f; std::memcpy(&f, v->data, 4); return f; }
    if (v->type == GgufValueType::F64) { double d; std::memcpy(&d, v->data, 8); return d; }
    int64_t i;
    if (v->type != GgufValueType::ARRAY && read_integer(v->type, v->data, &i)) return static_cast<double>(i);
    throw Error(DGEMMA_ERR_MODEL, path_ + ": key '" + key + "' is not a number");
}

double GgufFile::get_float(const std::string &key, double fallback) const { return has(key) ? get_float(key) : fallback; }

std::vector<int64_t> GgufFile::get_int_array(const std::string &key, size_t n) const {
    const GgufValue *v = find(key);
    if (!v) throw Error(DGEMMA_ERR_MODEL, path_ + ": missing key '" + key + "'");
    if (v->type != GgufValueType::ARRAY) return std::vector<int64_t>(n, get_int(key));
    if (v->count != n)
        throw Error(DGEMMA_ERR_MODEL, path_ + ": key '" + key + "' has " + std::to_string(v->count) + " entries, expected " + std::to_string(n));
    const size_t es = scalar_size(v->elem_type);
    std::vector<int64_t> out(n);
    for (size_t i = 0; i < n; ++i)
        if (!read_integer(v->elem_type, v->data + i * es, &out[i]))
            throw Error(DGEMMA_ERR_MODEL, path_ + ": key '" + key + "' is not an integer array");
    return out;
}

std::vector<bool> GgufFile::get_bool_array(const std::string &key) const {
    const GgufValue *v = find(key);
    if (!v) throw Error(DGEMMA_ERR_MODEL, path_ + ": missing key '" + key + "'");
    if (v->type != GgufValueType::ARRAY || v->elem_type != GgufValueType::BOOL)
        throw Error(DGEMMA_ERR_MODEL, path_ + ": key '" + key + "' is not a bool array");
    std::vector<bool> out(v->count);
    for (size_t i = 0; i < v->count; ++i) out[i] = v->data[i] != 0;
    return out;
}

const GgufTensor *GgufFile::tensor(const std::string &name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace dg
