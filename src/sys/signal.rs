//! SIGINT and SIGTERM end a run cleanly. The first one sets a flag that the training
//! loop reads between batches: the run stops, keeps its last checkpoint, and records
//! itself as `interrupted` (resume with `--resume`). A second one exits at once
//! (status 130), for a run that does not reach a batch boundary soon enough.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Once};

static FLAG: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// The exit status of a process ended by a signal it was asked to stop on (128 + SIGINT).
pub(crate) const EXIT_INTERRUPTED: i32 = 130;

/// Installs the handlers (once per process).
pub(crate) fn watch() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // Registered first, so it sees the flag as the previous signal left it.
            let _ = signal_hook::flag::register_conditional_shutdown(signal, EXIT_INTERRUPTED, FLAG.clone());
            let _ = signal_hook::flag::register(signal, FLAG.clone());
        }
    });
}

/// Whether a stop was asked for.
pub(crate) fn interrupted() -> bool {
    FLAG.load(Ordering::Relaxed)
}
