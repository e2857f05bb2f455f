//! What the library tells its user while it works, and how: every message and progress
//! bar goes through one [`Reporter`], which the binary installs once at start-up
//! (`src/cli/console.rs`: quiet, terminal and CI modes decided there). The library
//! prints nothing itself; without an installed reporter (the library used from tests or
//! another program) messages are dropped and bars are hidden.

use std::sync::OnceLock;

use indicatif::ProgressBar;

/// Where a message belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// What a run is doing (its run.log lines, a sweep's progress): stdout, hidden by --quiet.
    Info,
    /// A side remark or a warning (a dataset extracted, a class without validation
    /// images): stderr, hidden by --quiet.
    Note,
    /// A line shown even with --quiet, on stdout: a sweep's run headers and results.
    Status,
    /// A failure that does not end the command (one run of a sweep fails): stderr, always.
    Error,
}

/// What a progress bar counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Images (decoding, hashing, an epoch, a feature cache pass, prediction).
    Images,
    /// Bytes (a download).
    Bytes,
}

/// The binary's side: shows messages and makes progress bars.
pub trait Reporter: Send + Sync {
    /// Shows `text` as its level asks.
    fn message(&self, level: Level, text: &str);
    /// A progress bar over `len` units, labelled `label`; hidden where none is shown.
    fn bar(&self, len: u64, unit: Unit, label: &str) -> ProgressBar;
}

/// The reporter of a library used without one: shows nothing.
struct Silent;

impl Reporter for Silent {
    fn message(&self, _: Level, _: &str) {}

    fn bar(&self, _: u64, _: Unit, _: &str) -> ProgressBar {
        ProgressBar::hidden()
    }
}

static REPORTER: OnceLock<Box<dyn Reporter>> = OnceLock::new();

/// Installs the process's reporter; `false` (and nothing changes) if one was installed before.
pub fn install(reporter: Box<dyn Reporter>) -> bool {
    REPORTER.set(reporter).is_ok()
}

/// The installed reporter, or one that shows nothing.
pub fn reporter() -> &'static dyn Reporter {
    REPORTER.get().map_or(&Silent, |r| r.as_ref())
}

/// [`Level::Info`]: what a run is doing.
pub fn info(text: &str) {
    reporter().message(Level::Info, text);
}

/// [`Level::Note`]: a side remark or a warning.
pub(crate) fn note(text: &str) {
    reporter().message(Level::Note, text);
}

/// [`Level::Status`]: shown even when quiet.
pub fn status(text: &str) {
    reporter().message(Level::Status, text);
}

/// [`Level::Error`]: a failure the command goes on after.
pub fn error(text: &str) {
    reporter().message(Level::Error, text);
}

/// A progress bar of the installed reporter.
pub fn bar(len: u64, unit: Unit, label: &str) -> ProgressBar {
    reporter().bar(len, unit, label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_installed_reporter_nothing_shows() {
        // Unit tests never install one: the library is silent.
        let bar = bar(100, Unit::Images, "epoch 1/1");
        assert!(bar.is_hidden());
        info("dropped");
        error("dropped");
    }
}
