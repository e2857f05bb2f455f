//! libtorch's multi-tensor operations (`torch._foreach_*`) on lists of tensors, through the
//! C++ of foreach.cpp: the optimizers update every parameter with one call per operation
//! instead of one per parameter, as PyTorch's `foreach` implementations do (on CUDA, a few
//! kernel launches in all). On the CPU libtorch runs them tensor by tensor, with the
//! kernels of the single-tensor operations: the same numbers.
//!
//! Functions ending in `_` update their first list in place; the others return new tensors.

use std::ffi::{CStr, c_char};

use tch::Tensor;
use torch_sys::C_tensor;

type Handle = *mut C_tensor;

unsafe extern "C" {
    fn runner_foreach_add_list_(a: *const Handle, b: *const Handle, n: usize, alpha: f64) -> *mut c_char;
    fn runner_foreach_add_list(a: *const Handle, b: *const Handle, n: usize, out: *mut Handle) -> *mut c_char;
    fn runner_foreach_add_scalar_(a: *const Handle, n: usize, s: f64) -> *mut c_char;
    fn runner_foreach_mul_scalar_(a: *const Handle, n: usize, s: f64) -> *mut c_char;
    fn runner_foreach_mul_scalars_(a: *const Handle, n: usize, s: *const f64) -> *mut c_char;
    fn runner_foreach_mul_tensor_(a: *const Handle, n: usize, t: Handle) -> *mut c_char;
    fn runner_foreach_mul_scalar(a: *const Handle, n: usize, s: f64, out: *mut Handle) -> *mut c_char;
    fn runner_foreach_mul_scalars(a: *const Handle, n: usize, s: *const f64, out: *mut Handle) -> *mut c_char;
    fn runner_foreach_mul_list(a: *const Handle, b: *const Handle, n: usize, out: *mut Handle) -> *mut c_char;
    fn runner_foreach_div_scalars_(a: *const Handle, n: usize, s: *const f64) -> *mut c_char;
    fn runner_foreach_lerp_scalar_(a: *const Handle, b: *const Handle, n: usize, w: f64) -> *mut c_char;
    fn runner_foreach_addcmul_(a: *const Handle, t1: *const Handle, t2: *const Handle, n: usize) -> *mut c_char;
    fn runner_foreach_addcdiv_(a: *const Handle, t1: *const Handle, t2: *const Handle, n: usize) -> *mut c_char;
    fn runner_foreach_sqrt(a: *const Handle, n: usize, out: *mut Handle) -> *mut c_char;
    fn runner_foreach_norm(a: *const Handle, n: usize, out: *mut Handle) -> *mut c_char;
    fn runner_foreach_zero_(a: *const Handle, n: usize) -> *mut c_char;
}

fn handles(tensors: &[Tensor]) -> Vec<Handle> {
    tensors.iter().map(|t| t.as_ptr() as Handle).collect()
}

/// Panics with libtorch's message if the call failed: the lists are the optimizer's own
/// (same lengths, matching shapes), so a failure is a bug, as a failing tch call is.
fn check(error: *mut c_char) {
    if error.is_null() {
        return;
    }
    // SAFETY: a NUL-terminated string strdup'd by foreach.cpp, freed once here.
    let message = unsafe { CStr::from_ptr(error) }.to_string_lossy().into_owned();
    unsafe { libc::free(error.cast()) };
    panic!("libtorch foreach operation failed: {message}");
}

/// Calls `f` with the lists' handles and a buffer for `n` new tensors, which it returns.
fn returning(n: usize, f: impl FnOnce(*mut Handle) -> *mut c_char) -> Vec<Tensor> {
    let mut out: Vec<Handle> = vec![std::ptr::null_mut(); n];
    check(f(out.as_mut_ptr()));
    // SAFETY: foreach.cpp filled every slot with a new tensor that is ours to own.
    out.into_iter().map(|h| unsafe { Tensor::from_ptr(h) }).collect()
}

fn same_length(a: &[Tensor], b: &[Tensor]) {
    assert_eq!(a.len(), b.len(), "foreach operations take lists of the same length");
}

/// `a[i] += alpha * b[i]`
pub(crate) fn add_list_(a: &[Tensor], b: &[Tensor], alpha: f64) {
    same_length(a, b);
    if !a.is_empty() {
        check(unsafe { runner_foreach_add_list_(handles(a).as_ptr(), handles(b).as_ptr(), a.len(), alpha) });
    }
}

/// `a[i] + b[i]`
pub(crate) fn add_list(a: &[Tensor], b: &[Tensor]) -> Vec<Tensor> {
    same_length(a, b);
    if a.is_empty() {
        return vec![];
    }
    let (ha, hb) = (handles(a), handles(b));
    returning(a.len(), |out| unsafe { runner_foreach_add_list(ha.as_ptr(), hb.as_ptr(), a.len(), out) })
}

/// `a[i] += s`
pub(crate) fn add_scalar_(a: &[Tensor], s: f64) {
    if !a.is_empty() {
        check(unsafe { runner_foreach_add_scalar_(handles(a).as_ptr(), a.len(), s) });
    }
}

/// `a[i] *= s`
pub(crate) fn mul_scalar_(a: &[Tensor], s: f64) {
    if !a.is_empty() {
        check(unsafe { runner_foreach_mul_scalar_(handles(a).as_ptr(), a.len(), s) });
    }
}

/// `a[i] *= s[i]`
pub(crate) fn mul_scalars_(a: &[Tensor], s: &[f64]) {
    assert_eq!(a.len(), s.len(), "one scalar per tensor");
    if !a.is_empty() {
        check(unsafe { runner_foreach_mul_scalars_(handles(a).as_ptr(), a.len(), s.as_ptr()) });
    }
}

/// `a[i] *= t`, `t` a 0-dimensional tensor (read on the device, not by the host).
pub(crate) fn mul_tensor_(a: &[Tensor], t: &Tensor) {
    if !a.is_empty() {
        check(unsafe { runner_foreach_mul_tensor_(handles(a).as_ptr(), a.len(), t.as_ptr() as Handle) });
    }
}

/// `a[i] * s`
pub(crate) fn mul_scalar(a: &[Tensor], s: f64) -> Vec<Tensor> {
    if a.is_empty() {
        return vec![];
    }
    let ha = handles(a);
    returning(a.len(), |out| unsafe { runner_foreach_mul_scalar(ha.as_ptr(), a.len(), s, out) })
}

/// `a[i] * s[i]`
pub(crate) fn mul_scalars(a: &[Tensor], s: &[f64]) -> Vec<Tensor> {
    assert_eq!(a.len(), s.len(), "one scalar per tensor");
    if a.is_empty() {
        return vec![];
    }
    let ha = handles(a);
    returning(a.len(), |out| unsafe { runner_foreach_mul_scalars(ha.as_ptr(), a.len(), s.as_ptr(), out) })
}

/// `a[i] * b[i]`
pub(crate) fn mul_list(a: &[Tensor], b: &[Tensor]) -> Vec<Tensor> {
    same_length(a, b);
    if a.is_empty() {
        return vec![];
    }
    let (ha, hb) = (handles(a), handles(b));
    returning(a.len(), |out| unsafe { runner_foreach_mul_list(ha.as_ptr(), hb.as_ptr(), a.len(), out) })
}

/// `a[i] /= s[i]`
pub(crate) fn div_scalars_(a: &[Tensor], s: &[f64]) {
    assert_eq!(a.len(), s.len(), "one scalar per tensor");
    if !a.is_empty() {
        check(unsafe { runner_foreach_div_scalars_(handles(a).as_ptr(), a.len(), s.as_ptr()) });
    }
}

/// `a[i] += w * (b[i] - a[i])`
pub(crate) fn lerp_scalar_(a: &[Tensor], b: &[Tensor], w: f64) {
    same_length(a, b);
    if !a.is_empty() {
        check(unsafe { runner_foreach_lerp_scalar_(handles(a).as_ptr(), handles(b).as_ptr(), a.len(), w) });
    }
}

/// `a[i] += t1[i] * t2[i]`
pub(crate) fn addcmul_(a: &[Tensor], t1: &[Tensor], t2: &[Tensor]) {
    same_length(a, t1);
    same_length(a, t2);
    if !a.is_empty() {
        let (ha, h1, h2) = (handles(a), handles(t1), handles(t2));
        check(unsafe { runner_foreach_addcmul_(ha.as_ptr(), h1.as_ptr(), h2.as_ptr(), a.len()) });
    }
}

/// `a[i] += t1[i] / t2[i]`
pub(crate) fn addcdiv_(a: &[Tensor], t1: &[Tensor], t2: &[Tensor]) {
    same_length(a, t1);
    same_length(a, t2);
    if !a.is_empty() {
        let (ha, h1, h2) = (handles(a), handles(t1), handles(t2));
        check(unsafe { runner_foreach_addcdiv_(ha.as_ptr(), h1.as_ptr(), h2.as_ptr(), a.len()) });
    }
}

/// `sqrt(a[i])`
pub(crate) fn sqrt(a: &[Tensor]) -> Vec<Tensor> {
    if a.is_empty() {
        return vec![];
    }
    let ha = handles(a);
    returning(a.len(), |out| unsafe { runner_foreach_sqrt(ha.as_ptr(), a.len(), out) })
}

/// The L2 norm of each `a[i]` (0-dimensional tensors).
pub(crate) fn norm(a: &[Tensor]) -> Vec<Tensor> {
    if a.is_empty() {
        return vec![];
    }
    let ha = handles(a);
    returning(a.len(), |out| unsafe { runner_foreach_norm(ha.as_ptr(), a.len(), out) })
}

/// `a[i] = 0`
pub(crate) fn zero_(a: &[Tensor]) {
    if !a.is_empty() {
        check(unsafe { runner_foreach_zero_(handles(a).as_ptr(), a.len()) });
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::*;

    /// Tensors of the given shapes whose values are a formula of `seed` and the position:
    /// the same on every call, whatever other tests draw from libtorch's global generator
    /// meanwhile (a reseeded `Tensor::randn` is not: tests run in parallel threads).
    fn values(shapes: &[&[i64]], seed: i64) -> Vec<Tensor> {
        shapes
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let n: i64 = s.iter().product();
                let phase = 1.3 * seed as f64 + 0.7 * k as f64;
                ((Tensor::arange(n, (Kind::Float, Device::Cpu)) * 2.1 + phase).sin() * 1.7).reshape(*s)
            })
            .collect()
    }

    fn equal(a: &[Tensor], b: &[Tensor]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.equal(y))
    }

    #[test]
    fn each_operation_gives_the_single_tensor_operations_numbers() {
        let shapes: &[&[i64]] = &[&[3, 4], &[5], &[2, 2, 2]];
        let (a, b, c) = (values(shapes, 1), values(shapes, 2), values(shapes, 3));
        let copy = |ts: &[Tensor]| ts.iter().map(Tensor::copy).collect::<Vec<_>>();
        let each =
            |f: &dyn Fn(&Tensor, usize) -> Tensor| a.iter().enumerate().map(|(i, t)| f(t, i)).collect::<Vec<_>>();
        let s = [0.5, -2.0, 3.25];

        assert!(equal(&add_list(&a, &b), &each(&|t, i| t + &b[i])));
        assert!(equal(&mul_scalar(&a, 0.3), &each(&|t, _| t * 0.3)));
        assert!(equal(&mul_scalars(&a, &s), &each(&|t, i| t * s[i])));
        assert!(equal(&mul_list(&a, &b), &each(&|t, i| t * &b[i])));
        let positive: Vec<Tensor> = a.iter().map(Tensor::abs).collect();
        assert_correctly_rounded_sqrt(&positive);
        let norms = norm(&a);
        assert!(norms.iter().zip(&a).all(|(n, t)| n.size().is_empty() && n.equal(&t.norm())));

        let x = copy(&a);
        add_list_(&x, &b, -1.0);
        assert!(equal(&x, &each(&|t, i| t - &b[i])));
        let x = copy(&a);
        add_scalar_(&x, 1e-8);
        assert!(equal(&x, &each(&|t, _| t + 1e-8)));
        let x = copy(&a);
        mul_scalar_(&x, 0.9);
        assert!(equal(&x, &each(&|t, _| t * 0.9)));
        let x = copy(&a);
        mul_scalars_(&x, &s);
        assert!(equal(&x, &each(&|t, i| t * s[i])));
        let x = copy(&a);
        let t = Tensor::from(0.37f64);
        mul_tensor_(&x, &t);
        assert!(equal(&x, &each(&|t, _| t * 0.37)));
        assert_eq!(x[0].kind(), Kind::Float);
        let x = copy(&a);
        div_scalars_(&x, &s);
        assert!(equal(&x, &each(&|t, i| t / s[i])));
        let x = copy(&a);
        lerp_scalar_(&x, &b, 0.1);
        assert!(equal(&x, &each(&|t, i| t.lerp(&b[i], 0.1))));
        let x = copy(&a);
        addcmul_(&x, &b, &c);
        assert!(equal(&x, &each(&|t, i| t.addcmul(&b[i], &c[i]))));
        let x = copy(&a);
        addcdiv_(&x, &b, &c);
        assert!(equal(&x, &each(&|t, i| t.addcdiv(&b[i], &c[i]))));
        let x = copy(&a);
        zero_(&x);
        assert!(x.iter().all(|t| f64::try_from(t.abs().sum(Kind::Double)).unwrap() == 0.0));
        // In place means in the caller's tensors: a is untouched by the copies' updates,
        // and empty lists are no call at all.
        assert!(equal(&a, &values(shapes, 1)));
        zero_(&[]);
        assert!(add_list(&[], &[]).is_empty());
    }

    /// `sqrt` is IEEE's square root, element by element (Rust's `f32::sqrt`), and keeps each
    /// tensor's layout.
    fn assert_correctly_rounded_sqrt(ts: &[Tensor]) {
        for (t, r) in ts.iter().zip(sqrt(ts)) {
            assert_eq!(r.stride(), t.stride());
            let (x, y) =
                (Vec::<f32>::try_from(t.flatten(0, -1)).unwrap(), Vec::<f32>::try_from(r.flatten(0, -1)).unwrap());
            let off = x.iter().zip(&y).filter(|(x, y)| x.sqrt().to_bits() != y.to_bits()).count();
            assert_eq!(off, 0, "{off} of {} square roots are not correctly rounded", x.len());
        }
    }

    #[test]
    fn sqrt_is_correctly_rounded_on_every_processor() {
        // Large enough for ATen to hand Tensor::sqrt to MKL's vsSqrt, which is not correctly
        // rounded on AMD processors (1 ulp off for 17% of these values on an AMD EPYC).
        let big = values(&[&[64, 300], &[4, 8, 3, 3]], 5);
        let mut ts: Vec<Tensor> = big.iter().map(|t| t.abs() * 40.0).collect();
        ts.push(crate::model::channels_last(&ts[1]));
        assert_correctly_rounded_sqrt(&ts);
    }

    #[test]
    #[should_panic(expected = "libtorch foreach operation failed")]
    fn a_libtorch_error_is_a_panic_with_its_message() {
        let a = values(&[&[3]], 1);
        let b = values(&[&[4]], 2);
        add_list_(&a, &b, 1.0);
    }
}
