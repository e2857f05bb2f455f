//! The C allocator tuned for libtorch's CPU tensors.
//!
//! libtorch allocates every CPU tensor with `posix_memalign` and frees it as soon as
//! the op that used it is done: a training step allocates and frees the same few
//! megabyte-sized activations hundreds of times. glibc's defaults serve blocks over
//! its dynamic mmap threshold (128 KiB at start) with a fresh `mmap` and give memory at
//! the top of the heap back to the kernel once more than twice that is free; either
//! way the next batch touches new pages, and the kernel faults and zeroes each 4 KiB
//! page again. On the 2-core benchmark (docs/performance.md) that was ~0.8 million page
//! faults in a 10 s run and a third of the feature-cache pass.
//!
//! [`tune`] keeps freed blocks in the heap for reuse instead: blocks up to glibc's
//! largest mmap threshold (32 MiB on 64-bit) come from the heap, and the heap is not
//! trimmed below [`TRIM_THRESHOLD`] of free memory. What it costs is memory that stays
//! mapped after a peak (on the benchmark the peak RSS grew by ~10 MiB). Tensors above 32 MiB (large
//! images at large batches) are still mapped and unmapped per use.
//!
//! A user who sets glibc's own tunables (`GLIBC_TUNABLES=glibc.malloc.*`) keeps them;
//! `RUNNER_MALLOC=system` leaves glibc's defaults alone (`RUNNER_MALLOC=tuned`, or unset,
//! is the above; any other value is refused).

/// Free memory at the top of the heap that stays mapped.
pub(crate) const TRIM_THRESHOLD: usize = 1 << 30;
/// glibc's upper bound for `M_MMAP_THRESHOLD` on 64-bit targets.
pub(crate) const MMAP_THRESHOLD: usize = 32 << 20;

/// What [`tune`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// Heap reuse as described in the module docs.
    Tuned,
    /// Left alone: `RUNNER_MALLOC=system` or glibc tunables set by the user.
    UserChoice,
    /// Not glibc, or glibc refused the settings.
    Unavailable,
}

/// Applies the settings once per process; later calls return the first outcome.
/// Fails, before touching anything, on a `RUNNER_MALLOC` other than `system` or `tuned`.
pub fn tune() -> anyhow::Result<Tuning> {
    static OUTCOME: std::sync::OnceLock<Tuning> = std::sync::OnceLock::new();
    let choice = std::env::var(crate::sys::env::MALLOC).unwrap_or_default();
    if !matches!(choice.as_str(), "" | "system" | "tuned") {
        anyhow::bail!(
            "RUNNER_MALLOC={choice:?} is not understood: use \"system\" (glibc's defaults) or \"tuned\" (the default)"
        );
    }
    Ok(*OUTCOME.get_or_init(|| {
        let user_tunables = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."));
        if user_tunables || choice == "system" {
            return Tuning::UserChoice;
        }
        apply()
    }))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> Tuning {
    // SAFETY: mallopt only changes allocator parameters; glibc serialises it with its own lock.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
    };
    if ok { Tuning::Tuned } else { Tuning::Unavailable }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> Tuning {
    Tuning::Unavailable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn blocks_under_the_threshold_come_from_the_heap() {
        if std::env::var_os("GLIBC_TUNABLES").is_some() || std::env::var_os(crate::sys::env::MALLOC).is_some() {
            return;
        }
        assert_eq!(tune().unwrap(), Tuning::Tuned);
        // An 8 MiB block, far over glibc's default mmap threshold, now comes from the heap.
        // glibc marks a chunk it mapped on its own with bit 1 (IS_MMAPPED) of the size word
        // just before the block: a property of this block alone, so other test threads'
        // allocations cannot change the answer (a count of mapped blocks they could).
        let block = std::hint::black_box(vec![7u8; 8 << 20]);
        // SAFETY: the word before a malloc'd block is its chunk's size field (glibc's layout).
        let size_word = unsafe { *(block.as_ptr() as *const usize).sub(1) };
        assert_eq!(block[block.len() - 1], 7);
        assert!(size_word >= 8 << 20, "not a glibc chunk header: {size_word:#x}");
        assert_eq!(size_word & 2, 0, "an 8 MiB block was mapped on its own");
        // The same check sees a mapped block: 64 MiB is over the tuned threshold.
        let big = std::hint::black_box(vec![1u8; 64 << 20]);
        // SAFETY: as above.
        let big_word = unsafe { *(big.as_ptr() as *const usize).sub(1) };
        assert_eq!(big_word & 2, 2, "a 64 MiB block comes from mmap");
    }
}
