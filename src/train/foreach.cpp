// libtorch's multi-tensor (`_foreach_*`) operations, which tch does not bind, for the
// optimizers of optim.rs: one call updates every parameter (on CUDA, a few kernel launches
// instead of several per parameter). Tensors come as tch's handles (`at::Tensor*`), lists
// as arrays of them; each function returns nullptr, or an error message (malloc'd, freed
// by the caller) when libtorch threw.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cmath>

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

// The correctly rounded square root of every element. ATen hands a contiguous float
// tensor's sqrt on the CPU to MKL's vsSqrt, which is correctly rounded on Intel processors
// but not on AMD ones (on an AMD EPYC 3,241 of 19,200 values were 1 ulp off, whatever
// MKL_CBWR said), so an optimizer step gave other bits on the two. std::sqrt is IEEE 754's
// square root, the same bits on every processor, and what MKL gives on Intel.
at::Tensor exact_sqrt(const at::Tensor& t) {
    if (t.scalar_type() != at::kFloat && t.scalar_type() != at::kDouble) return at::sqrt(t);
    // Dense tensors keep their layout (channels-last weights stay so); others are copied.
    at::Tensor src = t.is_non_overlapping_and_dense() ? t : t.contiguous();
    at::Tensor out = at::empty_like(src);
    if (out.strides() != src.strides()) {
        src = src.contiguous();
        out = at::empty_like(src);
    }
    AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "runner_exact_sqrt", [&] {
        const scalar_t* in = src.const_data_ptr<scalar_t>();
        scalar_t* o = out.data_ptr<scalar_t>();
        at::parallel_for(0, src.numel(), 1 << 15, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) o[i] = std::sqrt(in[i]);
        });
    });
    return out;
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
    return guarded([&] {
        List tensors = list(a, n);
        if (!tensors.empty() && !tensors[0].device().is_cpu()) return give(at::_foreach_sqrt(tensors), out);
        List result;
        for (const auto& t : tensors) result.push_back(exact_sqrt(t));
        give(result, out);
    });
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
