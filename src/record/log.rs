//! run.log in the run directory: what happened, with times. Each line also goes to the
//! installed reporter (`sys::reporter`), which the binary shows unless quiet. Logging
//! never fails a run.

use crate::record::run_dir::RunDir;

/// A run's run.log, open for appending.
pub(crate) struct RunLog {
    file: Option<std::fs::File>,
}

impl RunLog {
    pub(crate) fn open(dir: &RunDir) -> RunLog {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(dir.log()).ok();
        RunLog { file }
    }

    /// Logs, and reports what the run does.
    pub fn line(&mut self, msg: &str) {
        let msg = &crate::sys::redact::credentials(msg);
        crate::sys::reporter::info(msg);
        self.file_line(msg);
    }

    /// Logs, and reports as a warning (stderr), `warning: ` before it.
    pub fn warning(&mut self, msg: &str) {
        let msg = &crate::sys::redact::credentials(msg);
        let msg = format!("warning: {msg}");
        crate::sys::reporter::note(&msg);
        self.file_line(&msg);
    }

    /// Logs only.
    pub(crate) fn file_line(&mut self, msg: &str) {
        use std::io::Write;
        if let Some(f) = &mut self.file {
            let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
            let _ = writeln!(f, "{now} {}", crate::sys::redact::credentials(msg));
        }
    }
}
