//! Which floating-point paths libtorch takes on this machine, and pinning them so that a run
//! gives the same bits on any x86_64 processor (`reproducibility = "portable"`).
//!
//! libtorch picks its kernels for the processor it finds: ATen's vectorised kernels for
//! AVX-512 or AVX2, oneDNN's convolutions for the widest ISA it sees, MKL's BLAS for the
//! vendor and model. Each choice sums in another order, so the same spec gives other last
//! bits on another processor. Three environment variables, read once when each library
//! starts, pin them:
//!
//! - `ATEN_CPU_CAPABILITY=avx2`: ATen's AVX2 kernels even where AVX-512 is there;
//! - `ONEDNN_MAX_CPU_ISA=AVX2`: oneDNN's AVX2 kernels (they block by register width only:
//!   the same bits under a processor that reports Intel's cache sizes and one that reports
//!   AMD's, checked by emulating an Intel Haswell on an AMD EPYC with qemu);
//! - `MKL_CBWR=COMPATIBLE,STRICT`: MKL's SSE2 branch without the approximate `rcpps` /
//!   `rsqrtps` (whose results differ between vendors), aligned or not. `MKL_CBWR=AVX2`
//!   would not do: on non-Intel processors MKL ignores it and dispatches as it likes.
//!
//! MKL's vector math (VML) follows none of these on AMD: ATen sends sqrt, atan, acos and
//! log10 of contiguous tensors there. The optimizers' sqrt is runner's own correctly rounded
//! one (train/foreach.cpp); the other three are not on a training path.
//!
//! The variables must be set before libtorch starts, so [`pin_process`] restarts the
//! process with them (and a marker, `RUNNER_NUMERICS_PINNED`) before any tensor exists.

use std::ffi::{CStr, c_char};
use std::os::unix::process::CommandExt;

use serde::{Deserialize, Serialize};

/// The variables that pin libtorch's paths in the portable mode, with their values.
pub(crate) const PORTABLE_ENV: &[(&str, &str)] =
    &[("ATEN_CPU_CAPABILITY", "avx2"), ("ONEDNN_MAX_CPU_ISA", "AVX2"), ("MKL_CBWR", "COMPATIBLE,STRICT")];

unsafe extern "C" {
    fn runner_cpu_capability(buf: *mut c_char, n: usize);
    fn runner_libtorch_version() -> *const c_char;
}

/// Whether this process runs with the portable settings (set by [`pin_process`] or by hand).
pub(crate) fn is_pinned() -> bool {
    std::env::var(crate::sys::env::NUMERICS_PINNED).as_deref() == Ok("portable")
        && PORTABLE_ENV.iter().all(|(k, v)| std::env::var(k).as_deref() == Ok(*v))
}

/// Whether the processor can run the portable paths (AVX2 and FMA).
pub(crate) fn can_pin() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// For a process that will run portable runs (`portable`): restarts it with the portable
/// settings, unless it has them already. Call it before libtorch computes anything. Returns
/// only when no restart is needed; otherwise the process is replaced, or an error says why
/// it cannot be.
pub fn pin_process(portable: bool) -> anyhow::Result<()> {
    if !portable || is_pinned() {
        return Ok(());
    }
    if std::env::var_os(crate::sys::env::NUMERICS_PINNED).is_some() {
        // Set by hand (or by a script) with other values: restarting would loop or, under an
        // emulator, escape it. Say which variable is off instead.
        let off: Vec<String> = PORTABLE_ENV
            .iter()
            .filter(|(k, v)| std::env::var(k).as_deref() != Ok(*v))
            .map(|(k, v)| format!("{k}={:?} (portable: {v})", std::env::var(k).unwrap_or_default()))
            .collect();
        anyhow::bail!(
            "{} is set, but not the portable settings: {}",
            crate::sys::env::NUMERICS_PINNED,
            if off.is_empty() {
                format!(
                    "{}={:?}",
                    crate::sys::env::NUMERICS_PINNED,
                    std::env::var(crate::sys::env::NUMERICS_PINNED).unwrap_or_default()
                )
            } else {
                off.join(", ")
            }
        );
    }
    if !can_pin() {
        anyhow::bail!(
            "reproducibility = \"portable\" needs an x86_64 processor with AVX2 and FMA; this one ({}) has {}",
            cpu_name(),
            widest_isa()
        );
    }
    let exe = std::env::current_exe().map_err(|e| anyhow::anyhow!("cannot find runner's own binary: {e}"))?;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let err = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .envs(PORTABLE_ENV.iter().copied())
        .env(crate::sys::env::NUMERICS_PINNED, "portable")
        .exec();
    anyhow::bail!("cannot restart {} with portable numerics: {err}", exe.display())
}

/// Checks, before a portable run starts, that libtorch really took the pinned paths (the
/// process was pinned before libtorch started).
pub(crate) fn check_portable() -> anyhow::Result<()> {
    let capability = cpu_capability();
    if !is_pinned() || capability != "AVX2" {
        anyhow::bail!(
            "reproducibility = \"portable\": this process's libtorch runs {capability} kernels, not the pinned AVX2 \
             ones; the runner binary pins them at start (sys::numerics::pin_process), a library caller must too, \
             before any tensor exists"
        );
    }
    Ok(())
}

/// The CPU capability ATen dispatches its kernels for: "DEFAULT", "AVX2", "AVX512".
pub(crate) fn cpu_capability() -> String {
    let mut buf = [0 as c_char; 32];
    // SAFETY: the function writes at most buf.len() bytes, NUL included.
    unsafe {
        runner_cpu_capability(buf.as_mut_ptr(), buf.len());
        CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
    }
}

/// The libtorch version runner was built against.
pub(crate) fn libtorch_version() -> String {
    // SAFETY: a static NUL-terminated string.
    unsafe { CStr::from_ptr(runner_libtorch_version()).to_string_lossy().into_owned() }
}

/// The processor's name, as /proc/cpuinfo gives it ("AMD EPYC", "Intel(R) Xeon(R) ...").
pub(crate) fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The widest vector instruction set of the processor: "avx512", "avx2", "avx", "sse4.2", ...
pub(crate) fn widest_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            "avx512"
        } else if std::is_x86_feature_detected!("avx2") {
            "avx2"
        } else if std::is_x86_feature_detected!("avx") {
            "avx"
        } else if std::is_x86_feature_detected!("sse4.2") {
            "sse4.2"
        } else {
            "sse2"
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH
    }
}

/// The version of the numbers runner computes from a spec. Bump it with any change that
/// makes a spec give other metrics (seeding, optimizer formulas, layouts, ...): runs
/// completed by an earlier version then get new ids and run again instead of being
/// reported "already completed" with the old numbers. CI's `runner verify` of the
/// recorded experiment (scripts/ci-verify.sh) is what notices a forgotten bump.
/// 3: BatchNorm folded into the convolution in inference, drop-connect as one multiply.
/// 4: the new head starts as torch.nn.Linear does (`model.head.init = "pytorch"`).
/// 5: the optimizers' square root is correctly rounded on every processor (MKL's vsSqrt,
///    which libtorch used, is 1 ulp off for some values on AMD ones; Intel's numbers are
///    unchanged); a last batch of one image is left out only where BatchNorm layers train
///    (ViTs, ConvNeXts and VGG16 have none).
/// 6: `random_resized_crop` samples its box from the whole image (shorter side at the stored
///    size, aspect kept), as torchvision's does, not from its center square; it falls back to
///    torchvision's center crop clamped to the ratio range. Runs without it are unchanged.
/// 7: parameters unfrozen during a phase join the optimizer in the model's order, so that
///    `clip_grad_norm` sums the total norm alike in a run and in its resume (it summed them
///    in the order they joined, and a resumed run in the model's: the last bits differed).
///    Only runs with gradual unfreezing and `clip_grad_norm` change.
/// 8: the weight decay skips biases and normalisation weights (parameters of one dimension)
///    unless `optimizer.decay_norm_and_bias = true`, as timm and fastai do. Runs with weight
///    decay (`adamw`'s default 0.01 included) change.
pub(crate) const NUMERICS_VERSION: u32 = 8;

/// What decided a run's floating-point paths: recorded in summary.json, compared by verify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// The processor's name.
    pub cpu: String,
    /// Its widest vector instruction set.
    pub isa: String,
    /// The kernels ATen dispatched for ("AVX2", "AVX512", ...).
    pub aten_capability: String,
    /// `ONEDNN_MAX_CPU_ISA` and `MKL_CBWR` as the run saw them ("" when unset).
    pub onednn_max_cpu_isa: String,
    pub mkl_cbwr: String,
    pub libtorch: String,
    /// The run's `reproducibility`: "machine" or "portable".
    pub reproducibility: String,
}

impl Machine {
    /// This machine, for a run whose `reproducibility` is `mode` ("machine" or "portable").
    pub fn here(mode: &str) -> Machine {
        let var = |k| std::env::var(k).unwrap_or_default();
        Machine {
            cpu: cpu_name(),
            isa: widest_isa().into(),
            aten_capability: cpu_capability(),
            onednn_max_cpu_isa: var("ONEDNN_MAX_CPU_ISA"),
            mkl_cbwr: var("MKL_CBWR"),
            libtorch: libtorch_version(),
            reproducibility: mode.into(),
        }
    }

    /// What differs between `self` (a record's) and `other` (a rerun's), as "field: a vs b".
    pub fn differences(&self, other: &Machine) -> Vec<String> {
        let fields = [
            ("processor", &self.cpu, &other.cpu),
            ("widest ISA", &self.isa, &other.isa),
            ("ATen kernels", &self.aten_capability, &other.aten_capability),
            ("ONEDNN_MAX_CPU_ISA", &self.onednn_max_cpu_isa, &other.onednn_max_cpu_isa),
            ("MKL_CBWR", &self.mkl_cbwr, &other.mkl_cbwr),
            ("libtorch", &self.libtorch, &other.libtorch),
        ];
        fields
            .iter()
            .filter(|(_, a, b)| a != b)
            .map(|(name, a, b)| format!("{name} {} vs {}", or_unset(a), or_unset(b)))
            .collect()
    }

    /// One line: "AMD EPYC (avx512; ATen AVX2, oneDNN AVX2, MKL COMPATIBLE,STRICT; libtorch 2.11.0)".
    pub fn describe(&self) -> String {
        format!(
            "{} ({}; ATen {}, oneDNN {}, MKL {}; libtorch {})",
            self.cpu,
            self.isa,
            self.aten_capability,
            or_unset(&self.onednn_max_cpu_isa),
            or_unset(&self.mkl_cbwr),
            self.libtorch
        )
    }
}

fn or_unset(s: &str) -> &str {
    if s.is_empty() { "default" } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_names_what_differs_from_another() {
        let a = Machine::here("machine");
        assert!(a.differences(&a).is_empty());
        assert!(!a.cpu.is_empty() && !a.aten_capability.is_empty(), "{a:?}");
        assert_eq!(a.libtorch, "2.11.0");
        let b = Machine { cpu: "Intel(R) Xeon(R) Example".into(), mkl_cbwr: String::new(), ..a.clone() };
        let d = b.differences(&Machine { mkl_cbwr: "AVX2".into(), ..a.clone() });
        assert_eq!(d.len(), if a.cpu == b.cpu { 1 } else { 2 }, "{d:?}");
        assert!(d.iter().any(|l| l == "MKL_CBWR default vs AVX2"), "{d:?}");
        assert!(a.describe().starts_with(&a.cpu));
    }
}
