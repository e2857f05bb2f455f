//! Mixed precision as `torch.autocast` runs it: the forward pass's matrix products and
//! convolutions in float16 (`precision = "fp16"`, CUDA, with the loss scaler of
//! [`crate::train::optim::GradScaler`]) or bfloat16 (`precision = "bf16"`, CUDA or CPU,
//! no scaler: bfloat16 has float32's range).
//!
//! tch's `autocast` goes through libtorch's deprecated device-less
//! `at::autocast::set_enabled` (a deprecation warning on every call, one per batch) and
//! cannot choose the dtype, so this calls the functions that replace it, which libtorch_cpu
//! exports: `set_autocast_enabled` / `set_autocast_dtype` per device type.

use tch::{Device, Kind};

use crate::config::spec::Precision;

unsafe extern "C" {
    #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
    fn at_set_autocast_enabled(device_type: i8, enabled: bool);
    #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
    fn at_is_autocast_enabled(device_type: i8) -> bool;
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_set_autocast_dtype(device_type: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn at_get_autocast_dtype(device_type: i8) -> i8;
}

/// `c10::DeviceType` (an int8 enum).
const CPU: i8 = 0;
const CUDA: i8 = 1;

/// `c10::ScalarType` (an int8 enum) of a floating-point kind autocast may cast to.
fn scalar_type(kind: Kind) -> i8 {
    match kind {
        Kind::Half => 5,
        Kind::BFloat16 => 15,
        other => unreachable!("autocast casts to float16 or bfloat16, not {other:?}"),
    }
}

/// The autocast of one precision on one device: a device type and the dtype it casts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Autocast {
    device_type: i8,
    kind: Kind,
}

impl Autocast {
    /// What `precision` runs on `device` (none for fp32).
    pub(crate) fn new(precision: Precision, device: Device) -> Option<Autocast> {
        let device_type = if device.is_cuda() { CUDA } else { CPU };
        match precision {
            Precision::Fp32 => None,
            Precision::Fp16 => Some(Autocast { device_type, kind: Kind::Half }),
            Precision::Bf16 => Some(Autocast { device_type, kind: Kind::BFloat16 }),
        }
    }

    /// Runs `f` under this autocast (`with torch.autocast(device, dtype):`), restoring the
    /// previous state afterwards; without one, just runs `f`.
    pub(crate) fn run<T>(autocast: Option<Autocast>, f: impl FnOnce() -> T) -> T {
        let Some(Autocast { device_type, kind }) = autocast else { return f() };
        // SAFETY: plain calls into libtorch with valid device and scalar types; the previous
        // state is restored below.
        let (was_enabled, was_dtype) =
            unsafe { (at_is_autocast_enabled(device_type), at_get_autocast_dtype(device_type)) };
        unsafe {
            at_set_autocast_dtype(device_type, scalar_type(kind));
            at_set_autocast_enabled(device_type, true);
            torch_sys::at_autocast_increment_nesting();
        }
        let result = f();
        unsafe {
            if torch_sys::at_autocast_decrement_nesting() == 0 {
                torch_sys::at_autocast_clear_cache();
            }
            at_set_autocast_enabled(device_type, was_enabled);
            at_set_autocast_dtype(device_type, was_dtype);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use tch::{Tensor, nn, nn::Module};

    use super::*;

    #[test]
    fn bf16_autocast_on_the_cpu_runs_linear_layers_in_bfloat16_and_restores_the_state() {
        let vs = nn::VarStore::new(Device::Cpu);
        let linear = nn::linear(vs.root(), 8, 4, Default::default());
        let conv = nn::conv2d(vs.root(), 3, 4, 3, Default::default());
        let x = Tensor::randn([2, 8], (Kind::Float, Device::Cpu));
        let image = Tensor::randn([1, 3, 8, 8], (Kind::Float, Device::Cpu));
        let bf16 = Autocast::new(Precision::Bf16, Device::Cpu);
        let (y, c, sum) = Autocast::run(bf16, || (linear.forward(&x), conv.forward(&image), x.sum(Kind::Float)));
        assert_eq!((y.kind(), c.kind()), (Kind::BFloat16, Kind::BFloat16));
        // Ops autocast keeps in float32 stay there.
        assert_eq!(sum.kind(), Kind::Float);
        // The result is float32's to bfloat16's precision (8 bits of mantissa).
        let exact = linear.forward(&x);
        assert_eq!(exact.kind(), Kind::Float, "autocast is off again after run");
        let diff = f64::try_from((y.to_kind(Kind::Float) - &exact).abs().max()).unwrap();
        let scale = f64::try_from(exact.abs().max()).unwrap();
        assert!(diff > 0.0 && diff <= scale * 2f64.powi(-6), "{diff} of {scale}");
        // The previous dtype comes back, and nesting works.
        let before = unsafe { at_get_autocast_dtype(CPU) };
        let inside =
            Autocast::run(Autocast::new(Precision::Fp16, Device::Cpu), || unsafe { at_get_autocast_dtype(CPU) });
        assert_eq!(inside, scalar_type(Kind::Half));
        assert_eq!(unsafe { at_get_autocast_dtype(CPU) }, before);
        let outer = Autocast::run(bf16, || Autocast::run(bf16, || linear.forward(&x)).kind());
        assert_eq!(outer, Kind::BFloat16);
        assert!(!unsafe { at_is_autocast_enabled(CPU) });
        // fp32 is no autocast at all.
        assert_eq!(Autocast::new(Precision::Fp32, Device::Cpu), None);
        assert_eq!(Autocast::run(None, || linear.forward(&x)).kind(), Kind::Float);
    }
}
