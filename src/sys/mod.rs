//! The system layer: what runner needs from the machine and the filesystem,
//! with no knowledge of specs, models or runs. Atomic files, downloads into
//! the per-user cache with their sha256 checks, the environment variables
//! runner reads, the allocator setting, loading CUDA, crash-test hooks.

pub mod atomic;
pub mod cuda;
pub mod env;
pub mod failpoint;
pub mod fetch;
pub mod filestore;
pub mod malloc;
pub(crate) mod memory;
pub mod numerics;
pub mod redact;
pub mod reporter;
pub mod signal;
