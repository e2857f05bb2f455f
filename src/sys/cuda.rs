//! Finding the GPU at run time.
//!
//! The binary links only libtorch_cpu (it is built against a CPU libtorch).
//! Run against a CUDA build of the same libtorch (LD_LIBRARY_PATH pointing at
//! its lib/), the CUDA backend still has to be loaded for its hooks to
//! register: loading libtorch_cuda.so globally before the first CUDA call does
//! that. Where there is no such library this is a no-op and runs stay on CPU.

use std::sync::OnceLock;

/// Loads libtorch_cuda.so if the dynamic linker can find it. Returns whether it did.
pub fn load_cuda_backend() -> bool {
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        #[cfg(target_os = "linux")]
        {
            use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
            // SAFETY: loading libtorch's own CUDA backend runs its static initialisers,
            // which register CUDA hooks with the libtorch already loaded; the library is
            // kept loaded for the life of the process.
            match unsafe { Library::open(Some("libtorch_cuda.so"), RTLD_NOW | RTLD_GLOBAL) } {
                Ok(lib) => {
                    std::mem::forget(lib);
                    true
                }
                Err(_) => false,
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    })
}
