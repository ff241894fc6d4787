#include "tensor.h"

#include "backend.h"

namespace dg {

Tensor make_tensor(void *data, TensorType t, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3, Backend *backend) {
    Tensor x;
    x.data = data;
    x.type_id = t;
    x.type = type_traits(t);
    x.ne[0] = ne0;
    x.ne[1] = ne1;
    x.ne[2] = ne2;
    x.ne[3] = ne3;
    x.nb[0] = x.type->type_size;
    x.nb[1] = row_bytes(*x.type, ne0);
    x.nb[2] = x.nb[1] * static_cast<size_t>(ne1);
    x.nb[3] = x.nb[2] * static_cast<size_t>(ne2);
    x.backend = backend;
    return x;
}

Tensor Tensor::rows(int64_t r0, int64_t n) const {
    Tensor t = *this;
    t.data = bytes_at(static_cast<size_t>(r0) * nb[1]);
    t.ne[1] = n;
    t.ne[2] = t.ne[3] = 1;
    t.nb[2] = t.nb[3] = nb[1] * static_cast<size_t>(n);
    return t;
}

Tensor Tensor::slice(int64_t i) const {
    Tensor t = *this;
    t.data = bytes_at(static_cast<size_t>(i) * nb[2]);
    t.ne[2] = t.ne[3] = 1;
    t.nb[3] = t.nb[2];
    return t;
}

void TensorBuffer::reset() {
    if (t_.data && t_.backend) t_.backend->free(t_);
    t_ = Tensor{};
}

}  // namespace dg
