//! Test hooks for crash tests: `RUNNER_FAILPOINT=<name>` makes the process stop
//! at the named point and wait to be killed (or interrupted), after creating the file named by
//! `RUNNER_FAILPOINT_MARKER` (if set) so the test knows it got there.
//!
//! Points: `epoch-<E>-batch-<B>` (after batch B of epoch E, both 1-based) and
//! `checkpoint-<E>` (halfway through writing the checkpoint of epoch E).
//! Without the variable each check is one load of a cached `None`.

use std::sync::OnceLock;

fn armed() -> Option<&'static str> {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    POINT.get_or_init(|| std::env::var(crate::sys::env::FAILPOINT).ok().filter(|s| !s.is_empty())).as_deref()
}

/// Stops here when the armed point's name is `name()`, until killed or interrupted.
pub fn hit(name: impl FnOnce() -> String) {
    let Some(point) = armed() else { return };
    if point != name() {
        return;
    }
    if let Ok(marker) = std::env::var(crate::sys::env::FAILPOINT_MARKER) {
        let _ = std::fs::write(marker, point);
    }
    // Until killed, or asked to stop by a signal (which the run then handles).
    while !crate::sys::signal::interrupted() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
