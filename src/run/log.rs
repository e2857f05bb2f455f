//! run.log in the run directory: what happened, with times.

use crate::record::run_dir::RunDir;

/// run.log: lines also go to stdout unless quiet. Logging never fails a run.
pub(crate) struct RunLog {
    file: Option<std::fs::File>,
    quiet: bool,
}

impl RunLog {
    pub(crate) fn open(dir: &RunDir, quiet: bool) -> RunLog {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(dir.log()).ok();
        RunLog { file, quiet }
    }

    /// Logs and prints.
    pub(crate) fn line(&mut self, msg: &str) {
        let msg = &crate::sys::redact::credentials(msg);
        if !self.quiet {
            println!("{msg}");
        }
        self.quiet_line(msg);
    }

    /// Logs only.
    pub(crate) fn quiet_line(&mut self, msg: &str) {
        use std::io::Write;
        if let Some(f) = &mut self.file {
            let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
            let _ = writeln!(f, "{now} {}", crate::sys::redact::credentials(msg));
        }
    }
}
