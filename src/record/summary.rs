//! summary.json: what a run was and how it ended, kept up to date after every epoch.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::spec::{Monitor, Precision};
use crate::record::checkpoint::EarlyStopState;
use crate::record::run_dir::RunDir;
use crate::sys::atomic::write_atomic;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Completed,
    Failed,
    Diverged,
    /// Stopped by a signal; its checkpoint is kept for `--resume`.
    Interrupted,
    /// Stopped at an epoch budget (a trial of a halving search); its checkpoint is kept,
    /// and a later run with a larger budget (or none) continues it.
    Paused,
}

/// summary.json: what a run was and how it ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub run_id: String,
    pub experiment: String,
    pub status: Status,
    /// The metric that picks the best epoch (`early_stopping.monitor`, or val_acc).
    pub monitor: Monitor,
    /// The monitored metric at the best epoch.
    pub best_value: Option<f64>,
    /// val_acc at the best epoch.
    pub best_val_acc: Option<f64>,
    pub best_epoch: Option<usize>,
    /// Epochs completed.
    pub epochs: usize,
    pub epochs_planned: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStopState>,
    /// The best weights on the test split, when the data has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_acc: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_loss: Option<f64>,
    /// The epochs after which the run was resumed, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumed_after: Vec<usize>,
    pub wall_s: f64,
    pub runner_version: String,
    /// `run::NUMERICS_VERSION` of the runner that ran it (1: before it was recorded).
    #[serde(default = "numerics_v1")]
    pub numerics_version: u32,
    pub backbone: String,
    pub classes: Vec<String>,
    pub train_images: usize,
    pub val_images: usize,
    pub skipped_files: usize,
    /// The class weights of `loss.class_weights` ("balanced" ones as computed on the train split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_weights: Option<Vec<f64>>,
    pub test_images: usize,
    /// sha256 of manifest.csv: exactly which files (and contents) the run used.
    pub manifest_sha256: String,
    pub threads: i32,
    #[serde(default)]
    pub interop_threads: i32,
    /// The arithmetic the run trained in (fp16 falls back to fp32 on the CPU).
    #[serde(default)]
    pub precision: Precision,
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where the run is also logged, or why that failed (`mlflow: ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<String>,
    /// The processor and the libtorch paths that made the numbers (absent before runner recorded them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<crate::sys::numerics::Machine>,
}

impl Status {
    /// The status as summary.json spells it.
    pub fn name(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Diverged => "diverged",
            Status::Interrupted => "interrupted",
            Status::Paused => "paused",
        }
    }
}

fn numerics_v1() -> u32 {
    1
}

impl Summary {
    /// The summary's view of the training state.
    pub(crate) fn sync(
        &mut self,
        state: &crate::record::checkpoint::TrainState,
        rows: &[crate::train::metrics::EpochRecord],
    ) {
        self.epochs = state.epoch;
        self.best_epoch = state.best.as_ref().map(|b| b.epoch);
        self.best_value = state.best.as_ref().map(|b| b.value);
        self.best_val_acc = self.best_epoch.and_then(|e| rows.get(e - 1)).map(|r| r.val_acc);
        self.early_stopping = state.early_stopping.clone();
    }

    /// The summary of the run in `dir`, if it has a readable one.
    pub fn read(dir: &RunDir) -> Option<Summary> {
        // A summary is a few kilobytes: a huge file there is not one, and is not read into memory.
        if std::fs::metadata(dir.summary()).ok()?.len() > 16 << 20 {
            return None;
        }
        let text = std::fs::read_to_string(dir.summary()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes summary.json into `dir`, atomically.
    pub fn write(&self, dir: &RunDir) -> Result<()> {
        let text = serde_json::to_string_pretty(self).context("cannot serialise summary")?;
        let mut json = crate::sys::redact::credentials(&text).into_owned().into_bytes();
        json.push(b'\n');
        write_atomic(&dir.summary(), &json)
    }
}

/// summary.json after every good epoch: the epochs so far, the best, early stopping, the wall time.
pub(crate) struct SummaryFile {
    pub started: std::time::Instant,
}

impl crate::record::sink::Sink for SummaryFile {
    fn epoch(&mut self, records: &mut crate::record::sink::Records, epoch: &crate::record::sink::Epoch) -> Result<()> {
        if epoch.diverged {
            return Ok(());
        }
        records.summary.sync(epoch.state, epoch.rows);
        records.summary.wall_s = self.started.elapsed().as_secs_f64();
        records.summary.write(records.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_summary_file_is_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::at(tmp.path());
        std::fs::write(dir.summary(), vec![b' '; 17 << 20]).unwrap();
        assert!(Summary::read(&dir).is_none());
    }

    #[test]
    fn status_names_are_summary_json_spellings() {
        for s in
            [Status::Running, Status::Completed, Status::Failed, Status::Diverged, Status::Interrupted, Status::Paused]
        {
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
    }
}
