//! summary.json: what a run was and how it ended, kept up to date after every epoch.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::spec::{Monitor, Precision};
use crate::record::checkpoint::EarlyStopState;
use crate::record::run_dir::RunDir;
use crate::sys::atomic::write_atomic;
use crate::train::metrics::EpochRecord;

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
    /// The run's readable name, from the values its grid point sets (`lr=0.001,seed=0`);
    /// absent for a spec of one run, and in runs made before runner named them.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub status: Status,
    /// The metric that picks the best epoch (`early_stopping.monitor`, or val_acc).
    pub monitor: Monitor,
    /// The monitored metric at the best epoch.
    pub best_value: Option<f64>,
    /// val_acc at the best epoch.
    pub best_val_acc: Option<f64>,
    pub best_epoch: Option<usize>,
    /// The monitored metric and val_acc at the last epoch completed.
    #[serde(default)]
    pub final_value: Option<f64>,
    #[serde(default)]
    pub final_val_acc: Option<f64>,
    /// Each phase's best epoch (by the monitored metric) and last, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseResult>,
    /// Epochs completed.
    pub epochs: usize,
    pub epochs_planned: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStopState>,
    /// The learning rates the range test chose, by phase (`optimizer.lr = "find"`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub found_lr: std::collections::BTreeMap<String, f64>,
    /// The best weights on the test split, when the data has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_acc: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_loss: Option<f64>,
    /// `eval.calibrate`: the temperature fitted on the best weights' validation outputs and
    /// what it did to their NLL and expected calibration error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// The epochs after which the run was resumed, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumed_after: Vec<usize>,
    pub wall_s: f64,
    /// When the run started (RFC 3339, UTC; a resumed run keeps its first start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    pub runner_version: String,
    /// The commit runner was built from (`unknown` outside a git checkout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_commit: Option<String>,
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
    /// The data folder the manifest's paths are relative to (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_root: Option<String>,
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

/// Temperature scaling as summary.json records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// What divides the logits of `predict` and of the exports.
    pub temperature: f64,
    /// The validation images it was fitted on.
    pub images: usize,
    pub nll_before: f64,
    pub nll_after: f64,
    /// Expected calibration error over `bins` equal-width confidence bins.
    pub ece_before: f64,
    pub ece_after: f64,
    pub bins: usize,
}

/// One phase of a run as summary.json records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseResult {
    pub phase: String,
    /// Its epochs completed, `first..=last` (numbered over the whole run from 1).
    pub first_epoch: usize,
    pub last_epoch: usize,
    /// Its best epoch by the run's monitored metric, that metric there, and val_acc there.
    pub best_epoch: Option<usize>,
    pub best_value: Option<f64>,
    pub best_val_acc: Option<f64>,
    /// The monitored metric and val_acc at its last epoch.
    pub final_value: f64,
    pub final_val_acc: f64,
}

/// Each phase's best and last epochs in `rows` (a run's epochs in order), by `monitor`.
pub(crate) fn phase_results(rows: &[EpochRecord], monitor: Monitor) -> Vec<PhaseResult> {
    let mut out: Vec<PhaseResult> = vec![];
    for r in rows {
        let value = r.monitored(monitor);
        match out.last_mut() {
            Some(p) if p.phase == r.phase => {
                p.last_epoch = r.epoch;
                p.final_value = value;
                p.final_val_acc = r.val_acc;
            }
            _ => out.push(PhaseResult {
                phase: r.phase.clone(),
                first_epoch: r.epoch,
                last_epoch: r.epoch,
                best_epoch: None,
                best_value: None,
                best_val_acc: None,
                final_value: value,
                final_val_acc: r.val_acc,
            }),
        }
        let p = out.last_mut().expect("pushed above");
        if monitor.improves(value, p.best_value, 0.0) {
            (p.best_epoch, p.best_value, p.best_val_acc) = (Some(r.epoch), Some(value), Some(r.val_acc));
        }
    }
    out
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
    pub(crate) fn sync(&mut self, state: &crate::record::checkpoint::TrainState, rows: &[EpochRecord]) {
        self.epochs = state.epoch;
        self.best_epoch = state.best.as_ref().map(|b| b.epoch);
        self.best_value = state.best.as_ref().map(|b| b.value);
        self.best_val_acc = self.best_epoch.and_then(|e| rows.get(e - 1)).map(|r| r.val_acc);
        self.final_value = rows.last().map(|r| r.monitored(self.monitor));
        self.final_val_acc = rows.last().map(|r| r.val_acc);
        self.phases = phase_results(rows, self.monitor);
        self.early_stopping = state.early_stopping.clone();
        self.found_lr = state.found_lr.clone();
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

    fn row(epoch: usize, phase: &str, val_acc: f64, val_loss: f64) -> EpochRecord {
        let metrics = [crate::train::metrics::Metric::ValAcc, crate::train::metrics::Metric::ValLoss];
        EpochRecord::from_values(epoch, phase, &metrics, &[val_acc, val_loss])
    }

    #[test]
    fn each_phase_has_its_best_and_its_last_epoch() {
        let rows = [
            row(1, "head", 0.5, 0.9),
            row(2, "head", 0.7, 0.6),
            row(3, "head", 0.6, 0.7),
            row(4, "fine", 0.65, 0.8),
            row(5, "fine", 0.8, 0.5),
        ];
        let p = phase_results(&rows, Monitor::ValAcc);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].phase.as_str(), p[0].first_epoch, p[0].last_epoch), ("head", 1, 3));
        assert_eq!((p[0].best_epoch, p[0].best_val_acc, p[0].final_val_acc), (Some(2), Some(0.7), 0.6));
        assert_eq!((p[1].first_epoch, p[1].best_epoch, p[1].final_value), (4, Some(5), 0.8));
        // Lower is better for a loss: the best epoch is the lowest's, val_acc is read there.
        let p = phase_results(&rows, Monitor::ValLoss);
        assert_eq!((p[0].best_epoch, p[0].best_value, p[0].best_val_acc), (Some(2), Some(0.6), Some(0.7)));
        assert_eq!(p[1].final_value, 0.5);
        assert!(phase_results(&[], Monitor::ValAcc).is_empty());
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
