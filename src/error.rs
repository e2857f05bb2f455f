//! The one error type of the library and the exit status of each kind of failure.
//!
//! Everything runner can fail with reaches the binary as an [`Error`]; `main` prints it
//! and exits with [`Error::code`]. The variants are the failures a caller acts on (a
//! sweep tells a busy run from a diverged one without inspecting messages); everything
//! else is [`Error::Other`], an `anyhow` chain of what was being done and why it failed.
//! This module is the bottom layer: it imports nothing from the crate.

use std::path::{Path, PathBuf};

/// `Result` with runner's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The exit statuses of the `runner` binary: the one place they are defined.
pub mod exit {
    /// Everything was done.
    pub const OK: u8 = 0;
    /// A run, a check or a command failed (data, weights, I/O, divergence, a busy run).
    pub(crate) const FAILED: u8 = 1;
    /// What was asked is wrong: a spec (with its file, line and key) or a flag. Like a
    /// flag that clap rejects, nothing was run.
    pub const USAGE: u8 = 2;
    /// Stopped by SIGINT or SIGTERM (128 + SIGINT, as a shell reports it).
    pub(crate) const INTERRUPTED: u8 = 130;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec that could not be read or is not valid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Another process is running this run now (it holds the run's lock).
    #[error("run {run_id} of `{experiment}` is being run by another process ({holder})")]
    Busy { experiment: String, run_id: String, holder: String },
    /// Training stopped because the train loss stopped being a number.
    #[error("training diverged in epoch {epoch}: the train loss is {loss}")]
    Diverged { epoch: usize, loss: f64 },
    /// SIGINT or SIGTERM stopped training; the checkpoint of the last whole epoch is kept.
    #[error("interrupted by a signal: {what}")]
    Interrupted { what: String },
    /// A run that failed once its directory existed: where its partial results are.
    #[error("run {run_id} failed (partial results in {}): {cause:#}", dir.display())]
    Run { run_id: String, dir: PathBuf, cause: Box<Error> },
    /// Any other failure, with the chain of what was being done (`{:#}` prints it all).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Error {
    /// The exit status this error ends the binary with.
    pub fn code(&self) -> u8 {
        match self {
            Error::Spec(_) => exit::USAGE,
            Error::Busy { .. } | Error::Diverged { .. } | Error::Other(_) => exit::FAILED,
            Error::Interrupted { .. } => exit::INTERRUPTED,
            Error::Run { cause, .. } => cause.code(),
        }
    }

    /// The failure itself, without the run it happened in.
    pub(crate) fn cause(&self) -> &Error {
        match self {
            Error::Run { cause, .. } => cause.cause(),
            e => e,
        }
    }
}

/// A spec that could not be read or is not valid, located as precisely as we can.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.render())]
pub struct SpecError {
    pub file: PathBuf,
    /// Dotted key, e.g. `phases.1.optimizer.lr`; empty for whole-file errors.
    pub key: String,
    pub line_col: Option<(usize, usize)>,
    pub message: String,
}

impl SpecError {
    pub fn new(file: &Path, key: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError { file: file.to_path_buf(), key: key.into(), line_col: None, message: message.into() }
    }

    fn render(&self) -> String {
        let mut s = self.file.display().to_string();
        if let Some((line, col)) = self.line_col {
            s.push_str(&format!(":{line}:{col}"));
        }
        if !self.key.is_empty() {
            s.push_str(&format!(": `{}`", self.key));
        }
        format!("{s}: {}", self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_failure_through_the_run_that_wrapped_it() {
        let spec = Error::from(SpecError::new(Path::new("a.toml"), "seed", "expected an integer"));
        assert_eq!(spec.code(), exit::USAGE);
        assert_eq!(spec.to_string(), "a.toml: `seed`: expected an integer");
        let diverged = Error::Run {
            run_id: "abc".into(),
            dir: "runs/x/abc".into(),
            cause: Box::new(Error::Diverged { epoch: 3, loss: f64::NAN }),
        };
        assert_eq!(diverged.code(), exit::FAILED);
        assert!(matches!(diverged.cause(), Error::Diverged { epoch: 3, .. }));
        assert_eq!(
            diverged.to_string(),
            "run abc failed (partial results in runs/x/abc): training diverged in epoch 3: the train loss is NaN"
        );
        let other = Error::from(anyhow::anyhow!("no such file").context("cannot read weights"));
        assert_eq!(format!("{other:#}"), "cannot read weights: no such file");
        assert_eq!(other.code(), exit::FAILED);
        let run = Error::Run { run_id: "abc".into(), dir: "d".into(), cause: Box::new(other) };
        assert_eq!(run.to_string(), "run abc failed (partial results in d): cannot read weights: no such file");
    }
}
