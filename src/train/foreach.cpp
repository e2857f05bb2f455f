// libtorch's multi-tensor (`_foreach_*`) operations, which tch does not bind, for the
// optimizers of optim.rs: one call updates every parameter (on CUDA, a few kernel launches
// instead of several per parameter). Tensors come as tch's handles (`at::Tensor*`), lists
// as arrays of them; each function returns nullptr, or an error message (malloc'd, freed
// by the caller) when libtorch threw.
#include <ATen/ATen.h>

#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

using List = std::vector<at::Tensor>;

List list(at::Tensor** tensors, size_t n) {
    List out;
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) out.push_back(*tensors[i]);
    return out;
}

std::vector<at::Scalar> scalars(const double* values, size_t n) {
    return std::vector<at::Scalar>(values, values + n);
}

// Hands new tensors to the caller as tch handles.
void give(const List& tensors, at::Tensor** out) {
    for (size_t i = 0; i < tensors.size(); ++i) out[i] = new at::Tensor(tensors[i]);
}

template <typename F>
char* guarded(F f) {
    try {
        f();
        return nullptr;
    } catch (const std::exception& e) {
        return strdup(e.what());
    }
}

}  // namespace

extern "C" {

// a[i] += alpha * b[i]
char* runner_foreach_add_list_(at::Tensor** a, at::Tensor** b, size_t n, double alpha) {
    return guarded([&] { at::_foreach_add_(list(a, n), list(b, n), at::Scalar(alpha)); });
}

// out[i] = a[i] + b[i]
char* runner_foreach_add_list(at::Tensor** a, at::Tensor** b, size_t n, at::Tensor** out) {
    return guarded([&] { give(at::_foreach_add(list(a, n), list(b, n)), out); });
}

// a[i] += s
char* runner_foreach_add_scalar_(at::Tensor** a, size_t n, double s) {
    return guarded([&] { at::_foreach_add_(list(a, n), at::Scalar(s)); });
}

// a[i] *= s
char* runner_foreach_mul_scalar_(at::Tensor** a, size_t n, double s) {
    return guarded([&] { at::_foreach_mul_(list(a, n), at::Scalar(s)); });
}

// a[i] *= s[i]
char* runner_foreach_mul_scalars_(at::Tensor** a, size_t n, const double* s) {
    return guarded([&] { at::_foreach_mul_(list(a, n), scalars(s, n)); });
}

// a[i] *= t (a 0-dimensional tensor, on the device: no wait for its value)
char* runner_foreach_mul_tensor_(at::Tensor** a, size_t n, at::Tensor* t) {
    return guarded([&] { at::_foreach_mul_(list(a, n), *t); });
}

// out[i] = a[i] * s
char* runner_foreach_mul_scalar(at::Tensor** a, size_t n, double s, at::Tensor** out) {
    return guarded([&] { give(at::_foreach_mul(list(a, n), at::Scalar(s)), out); });
}

// out[i] = a[i] * s[i]
char* runner_foreach_mul_scalars(at::Tensor** a, size_t n, const double* s, at::Tensor** out) {
    return guarded([&] { give(at::_foreach_mul(list(a, n), scalars(s, n)), out); });
}

// out[i] = a[i] * b[i]
char* runner_foreach_mul_list(at::Tensor** a, at::Tensor** b, size_t n, at::Tensor** out) {
    return guarded([&] { give(at::_foreach_mul(list(a, n), list(b, n)), out); });
}

// a[i] /= s[i]
char* runner_foreach_div_scalars_(at::Tensor** a, size_t n, const double* s) {
    return guarded([&] { at::_foreach_div_(list(a, n), scalars(s, n)); });
}

// a[i] = a[i] + w * (b[i] - a[i])
char* runner_foreach_lerp_scalar_(at::Tensor** a, at::Tensor** b, size_t n, double w) {
    return guarded([&] { at::_foreach_lerp_(list(a, n), list(b, n), at::Scalar(w)); });
}

// a[i] += t1[i] * t2[i]
char* runner_foreach_addcmul_(at::Tensor** a, at::Tensor** t1, at::Tensor** t2, size_t n) {
    return guarded([&] { at::_foreach_addcmul_(list(a, n), list(t1, n), list(t2, n)); });
}

// a[i] += t1[i] / t2[i]
char* runner_foreach_addcdiv_(at::Tensor** a, at::Tensor** t1, at::Tensor** t2, size_t n) {
    return guarded([&] { at::_foreach_addcdiv_(list(a, n), list(t1, n), list(t2, n)); });
}

// out[i] = sqrt(a[i])
char* runner_foreach_sqrt(at::Tensor** a, size_t n, at::Tensor** out) {
    return guarded([&] { give(at::_foreach_sqrt(list(a, n)), out); });
}

// out[i] = ||a[i]||_2
char* runner_foreach_norm(at::Tensor** a, size_t n, at::Tensor** out) {
    return guarded([&] { give(at::_foreach_norm(list(a, n)), out); });
}

// a[i] = 0
char* runner_foreach_zero_(at::Tensor** a, size_t n) {
    return guarded([&] { at::_foreach_zero_(list(a, n)); });
}

}  // extern "C"
