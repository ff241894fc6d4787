// The tensor-type section of the C API (dgemma.h): type info, row (de)quantization, dot products
// and the CPU instruction-set choice.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "cpu/dispatch.h"
#include "cpu/gemm.h"
#include "dgemma.h"
#include "cpu/threadpool.h"
#include "error.h"
#include "quant/types.h"

namespace {

using dg::Error;

const dg::TypeTraits &known_type(int32_t type) {
    const dg::TypeTraits *tt = type >= 0 ? dg::type_traits(static_cast<uint32_t>(type)) : nullptr;
    if (!tt) throw Error(DGEMMA_ERR_UNSUPPORTED, "unknown tensor type id " + std::to_string(type));
    return *tt;
}

void check_row(const dg::TypeTraits &tt, int64_t n) {
    if (n < 0 || n % tt.block_size != 0) {
        throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "row length " + std::to_string(n) + " is not a multiple of the " +
                                                     tt.name + " block size " + std::to_string(tt.block_size));
    }
}

void check_pointer(const void *p, const char *what) {
    if (!p) throw Error(DGEMMA_ERR_INVALID_ARGUMENT, std::string(what) + " is NULL");
}

// Bytes in `count` items of `item_bytes` each; the caller's claim about its buffer, refused if it
// does not fit in size_t.
size_t buffer_bytes(int64_t count, size_t item_bytes, const char *what) {
    size_t bytes;
    if (count < 0 || __builtin_mul_overflow(static_cast<uint64_t>(count), item_bytes, &bytes))
        throw Error(DGEMMA_ERR_INVALID_ARGUMENT, std::string(what) + " would take more bytes than memory holds");
    return bytes;
}

bool misaligned(const void *p) { return reinterpret_cast<uintptr_t>(p) % dg::kRowAlignment != 0; }

// The kernels read and write blocks and floats through typed pointers, which is defined only at
// addresses their types allow (dg::kRowAlignment). A caller's buffer may sit anywhere (a slice of a
// byte buffer), so one that does not is copied to aligned scratch: in before the kernel runs,
// out (commit) after. Aligned buffers, the usual case, are used in place.
class Scratch {
  public:
    Scratch(const void *p, size_t bytes) : user_(const_cast<void *>(p)), data_(user_), bytes_(bytes) {
        if (misaligned(p)) {
            copy_.resize((bytes + sizeof(uint64_t) - 1) / sizeof(uint64_t));
            std::memcpy(copy_.data(), p, bytes);
            data_ = copy_.data();
        }
    }
    template <class T> T *get() const { return static_cast<T *>(data_); }
    // Copies the kernel's output back to a misaligned caller buffer.
    void commit() const {
        if (data_ != user_) std::memcpy(user_, data_, bytes_);
    }

  private:
    void *user_;
    void *data_;
    size_t bytes_;
    std::vector<uint64_t> copy_;  // new's alignment (16) covers kRowAlignment
};

}  // namespace

extern "C" {

DGEMMA_API const char *dgemma_cpu_features(void) { return dg::isa_features_string(); }

DGEMMA_API dgemma_status dgemma_type_info(int32_t type, int64_t *block_size, int64_t *type_size, const char **name) {
    return dg::guarded([&] {
        const dg::TypeTraits &tt = known_type(type);
        if (block_size) *block_size = tt.block_size;
        if (type_size) *type_size = static_cast<int64_t>(tt.type_size);
        if (name) *name = tt.name;
    });
}

DGEMMA_API dgemma_status dgemma_quantize_row(int32_t type, const float *src, int64_t n, void *dst) {
    return dg::guarded([&] {
        const dg::TypeTraits &tt = known_type(type);
        check_row(tt, n);
        check_pointer(src, "src");
        check_pointer(dst, "dst");
        if (!tt.from_float) throw Error(DGEMMA_ERR_UNSUPPORTED, std::string("no quantizer for type ") + tt.name);
        const Scratch in(src, buffer_bytes(n, sizeof(float), "src")), out(dst, dg::row_bytes(tt, n));
        tt.from_float(in.get<const float>(), out.get<void>(), n);
        out.commit();
    });
}

DGEMMA_API dgemma_status dgemma_quantize_rows(int32_t type, const float *src, int64_t n_rows, int64_t n_cols, void *dst,
                                              int32_t n_threads) {
    return dg::guarded([&] {
        const dg::TypeTraits &tt = known_type(type);
        check_row(tt, n_cols);
        check_pointer(src, "src");
        check_pointer(dst, "dst");
        if (n_rows < 0) throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "n_rows " + std::to_string(n_rows) + " is negative");
        if (!tt.from_float) throw Error(DGEMMA_ERR_UNSUPPORTED, std::string("no quantizer for type ") + tt.name);
        const int64_t n_workers = std::min<int64_t>(dg::resolve_thread_count(n_threads), std::max<int64_t>(1, n_rows));
        const size_t stride = dg::row_bytes(tt, n_cols);
        const Scratch in(src, buffer_bytes(n_rows, buffer_bytes(n_cols, sizeof(float), "src"), "src")),
            out(dst, buffer_bytes(n_rows, stride, "dst"));
        // Rows are independent; worker w takes the contiguous rows [n_rows * w / n, n_rows * (w + 1) / n).
        auto work = [&](int64_t w) {
            for (int64_t r = n_rows * w / n_workers; r < n_rows * (w + 1) / n_workers; ++r)
                tt.from_float(in.get<const float>() + r * n_cols, out.get<unsigned char>() + r * stride, n_cols);
        };
        std::vector<std::thread> workers;
        for (int64_t w = 1; w < n_workers; ++w) workers.emplace_back(work, w);
        work(0);
        for (std::thread &t : workers) t.join();
        out.commit();
    });
}

DGEMMA_API dgemma_status dgemma_dequantize_row(int32_t type, const void *src, int64_t n, float *dst) {
    return dg::guarded([&] {
        const dg::TypeTraits &tt = known_type(type);
        check_row(tt, n);
        check_pointer(src, "src");
        check_pointer(dst, "dst");
        if (!tt.to_float) throw Error(DGEMMA_ERR_UNSUPPORTED, std::string("type ") + tt.name + " cannot be read by this build");
        const Scratch in(src, dg::row_bytes(tt, n)), out(dst, buffer_bytes(n, sizeof(float), "dst"));
        tt.to_float(in.get<const void>(), out.get<float>(), n);
        out.commit();
    });
}

namespace {
// The checks matvec and gemm share: a known type, rows of n it can hold, the three buffers, n_rows >= 0.
const dg::TypeTraits &product_args(int32_t type, const void *w, int64_t n_rows, const float *x, int64_t n, const float *out) {
    const dg::TypeTraits &tt = known_type(type);
    check_row(tt, n);
    check_pointer(w, "w");
    check_pointer(x, "x");
    check_pointer(out, "out");
    if (n_rows < 0) throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "n_rows " + std::to_string(n_rows) + " is negative");
    return tt;
}
}  // namespace

DGEMMA_API dgemma_status dgemma_matvec(int32_t type, const void *w, int64_t n_rows, const float *x, int64_t n,
                                       float *out) {
    return dg::guarded([&] {
        const dg::TypeTraits &tt = product_args(type, w, n_rows, x, n, out);
        if (!tt.vec_dot) throw Error(DGEMMA_ERR_UNSUPPORTED, std::string("type ") + tt.name + " has no integer dot product");
        const dg::TypeTraits &xt = *dg::type_traits(tt.vec_dot_type);
        check_row(xt, n);
        const size_t stride = dg::row_bytes(tt, n);
        const Scratch w_in(w, buffer_bytes(n_rows, stride, "w")), x_in(x, buffer_bytes(n, sizeof(float), "x")),
            result(out, buffer_bytes(n_rows, sizeof(float), "out"));
        std::vector<unsigned char> xq(dg::row_bytes(xt, n));
        xt.from_float(x_in.get<const float>(), xq.data(), n);
        for (int64_t r = 0; r < n_rows; ++r)
            result.get<float>()[r] = tt.vec_dot(w_in.get<const unsigned char>() + r * stride, xq.data(), n);
        result.commit();
    });
}

DGEMMA_API dgemma_status dgemma_vec_dot(int32_t type, const void *w_row, const float *x, int64_t n, float *out) {
    return dgemma_matvec(type, w_row, 1, x, n, out);
}

DGEMMA_API dgemma_status dgemma_set_cpu_isa(const char *isa) {
    return dg::guarded([&] {
        check_pointer(isa, "isa");
        dg::Isa chosen;
        if (std::strcmp(isa, "auto") == 0) chosen = dg::best_isa();
        else if (!dg::isa_from_name(isa, &chosen))
            throw Error(DGEMMA_ERR_INVALID_ARGUMENT, std::string("unknown instruction set \"") + isa +
                                                         "\" (expected auto, generic, avx2, avxvnni or avx512)");
        if (!dg::set_isa(chosen)) {
            throw Error(DGEMMA_ERR_UNSUPPORTED, std::string("this CPU does not support ") + isa + " (features: \"" +
                                                    dg::isa_features_string() + "\")");
        }
    });
}

DGEMMA_API const char *dgemma_cpu_isa(void) { return dg::isa_name(dg::active_isa()); }

DGEMMA_API dgemma_status dgemma_gemm(int32_t type, const void *w, int64_t n_rows, const float *x, int64_t n_tokens,
                                     int64_t n, float *out) {
    return dg::guarded([&] {
        const dg::TypeTraits &tt = product_args(type, w, n_rows, x, n, out);
        if (n_tokens < 0) throw Error(DGEMMA_ERR_INVALID_ARGUMENT, "n_tokens " + std::to_string(n_tokens) + " is negative");
        if (!tt.to_float) throw Error(DGEMMA_ERR_UNSUPPORTED, std::string("type ") + tt.name + " cannot be read by this build");
        const dg::TensorType id = dg::type_id(tt);
        // DGEMMA_GEMM_PACKED=1 (a test hook): the weights packed into the active kernel's panels
        // first, as the CPU backend packs its weights at load, so the kernel reads the packs.
        std::vector<uint8_t> packs;
        const char *packed_env = std::getenv("DGEMMA_GEMM_PACKED");
        if (packed_env && std::strcmp(packed_env, "1") == 0) {
            if (const size_t bytes = dg::gemm_packed_bytes(id, n_rows, n)) packs.resize(bytes + 64);
        }
        auto packed_rows = [&](const uint8_t *rows) -> const uint8_t * {
            if (packs.empty()) return nullptr;
            uint8_t *at = reinterpret_cast<uint8_t *>((reinterpret_cast<uintptr_t>(packs.data()) + 63) & ~uintptr_t{63});
            dg::gemm_pack_weights(id, rows, dg::row_bytes(tt, n), n_rows, n, at);
            return at;
        };
        const size_t x_row = buffer_bytes(n, sizeof(float), "x");
        const Scratch w_in(w, buffer_bytes(n_rows, dg::row_bytes(tt, n), "w")), x_in(x, buffer_bytes(n_tokens, x_row, "x")),
            result(out, buffer_bytes(n_tokens, buffer_bytes(n_rows, sizeof(float), "out"), "out"));
        if (!tt.vec_dot) {  // float weights take the float rows as they are
            dg::gemm(id, dg::GemmArgs{w_in.get<const uint8_t>(), dg::row_bytes(tt, n), n_rows, x_in.get<const uint8_t>(),
                                      x_row, n_tokens, n, result.get<float>(), n_rows, packed_rows(w_in.get<const uint8_t>())});
            result.commit();
            return;
        }
        check_row(*dg::type_traits(tt.vec_dot_type), n);
        const size_t x_stride = dg::gemm_activation_bytes(id, n);
        std::vector<uint8_t> xq(x_stride * static_cast<size_t>(n_tokens));
        for (int64_t t = 0; t < n_tokens; ++t)
            dg::gemm_pack_activations(id, x_in.get<const float>() + t * n, xq.data() + t * x_stride, n);
        dg::gemm(id, dg::GemmArgs{w_in.get<const uint8_t>(), dg::row_bytes(tt, n), n_rows, xq.data(), x_stride, n_tokens,
                                  n, result.get<float>(), n_rows, packed_rows(w_in.get<const uint8_t>())});
        result.commit();
    });
}

}  // extern "C"
