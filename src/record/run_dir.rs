//! A run's directory, `<out>/<experiment>/<run id>/`: the one place its file names
//! are spelled.

use std::path::{Path, PathBuf};

/// The directory of one run and the paths of everything in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// The resolved spec the run trained (`runner verify` and `predict` read it back).
    pub(crate) const CONFIG: &str = "config.toml";
    /// Every data file with its sha256 and split; its hash is part of the run id.
    pub(crate) const MANIFEST: &str = "manifest.csv";
    /// The epochs' metrics, byte-identical when the run is repeated.
    pub(crate) const METRICS_CSV: &str = "metrics.csv";
    pub(crate) const METRICS_PARQUET: &str = "metrics.parquet";
    /// The epochs' wall time and throughput (not reproducible, so kept apart).
    pub(crate) const TIMING: &str = "timing.csv";
    pub(crate) const CURVES: &str = "curves.png";
    /// The weights of the best epoch by the monitored metric.
    pub(crate) const BEST: &str = "best.safetensors";
    /// Image files that could not be read, with why.
    pub(crate) const SKIPPED: &str = "skipped.csv";
    /// Per-class precision, recall and F1 on the test split.
    pub(crate) const TEST_METRICS: &str = "test_metrics.csv";
    pub(crate) const CONFUSION_CSV: &str = "confusion.csv";
    pub(crate) const CONFUSION_PNG: &str = "confusion.png";
    /// The best weights' prediction of every validation image (`runner compare` reads them).
    pub(crate) const VAL_PREDICTIONS: &str = "val_predictions.csv";
    /// The best weights' confusion matrix on the validation split.
    pub(crate) const VAL_CONFUSION_PNG: &str = "val_confusion.png";
    /// With `eval.calibrate`: accuracy against confidence per bin, before and after.
    pub(crate) const RELIABILITY_PNG: &str = "reliability.png";
    pub(crate) const LOG: &str = "run.log";
    /// `optimizer.lr = "find"`: each such phase's range test, `lr_find_<n>_<phase>.csv` and `.png`.
    pub(crate) const LR_FIND_PREFIX: &str = "lr_find_";
    /// What the run was and how it ended.
    pub(crate) const SUMMARY: &str = "summary.json";
    /// The last epoch's full state, while the run is unfinished.
    pub(crate) const CHECKPOINT: &str = "checkpoint.safetensors";

    /// Everything a run writes: a fresh start removes them all first.
    pub(crate) const OUTPUTS: [&str; 17] = [
        RunDir::CONFIG,
        RunDir::MANIFEST,
        RunDir::METRICS_CSV,
        RunDir::METRICS_PARQUET,
        RunDir::TIMING,
        RunDir::CURVES,
        RunDir::BEST,
        RunDir::SKIPPED,
        RunDir::TEST_METRICS,
        RunDir::CONFUSION_CSV,
        RunDir::CONFUSION_PNG,
        RunDir::VAL_PREDICTIONS,
        RunDir::VAL_CONFUSION_PNG,
        RunDir::RELIABILITY_PNG,
        RunDir::LOG,
        RunDir::SUMMARY,
        RunDir::CHECKPOINT,
    ];

    /// The directory of run `run_id` of `experiment` under `out`.
    pub fn new(out: &Path, experiment: &str, run_id: &str) -> RunDir {
        RunDir { path: out.join(experiment).join(run_id) }
    }

    /// A run directory given by its path (a recorded run to verify, report or predict with).
    pub fn at(path: impl Into<PathBuf>) -> RunDir {
        RunDir { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn display(&self) -> std::path::Display<'_> {
        self.path.display()
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// The path of `name`, one of the constants above.
    pub fn file(&self, name: &str) -> PathBuf {
        debug_assert!(RunDir::OUTPUTS.contains(&name), "{name} is not a run file");
        self.path.join(name)
    }

    pub fn config(&self) -> PathBuf {
        self.file(RunDir::CONFIG)
    }
    pub fn manifest(&self) -> PathBuf {
        self.file(RunDir::MANIFEST)
    }
    pub(crate) fn metrics_csv(&self) -> PathBuf {
        self.file(RunDir::METRICS_CSV)
    }
    pub(crate) fn metrics_parquet(&self) -> PathBuf {
        self.file(RunDir::METRICS_PARQUET)
    }
    pub fn timing(&self) -> PathBuf {
        self.file(RunDir::TIMING)
    }
    pub fn curves(&self) -> PathBuf {
        self.file(RunDir::CURVES)
    }
    pub fn best(&self) -> PathBuf {
        self.file(RunDir::BEST)
    }
    pub fn skipped(&self) -> PathBuf {
        self.file(RunDir::SKIPPED)
    }
    pub fn test_metrics(&self) -> PathBuf {
        self.file(RunDir::TEST_METRICS)
    }
    pub(crate) fn confusion_csv(&self) -> PathBuf {
        self.file(RunDir::CONFUSION_CSV)
    }
    pub(crate) fn confusion_png(&self) -> PathBuf {
        self.file(RunDir::CONFUSION_PNG)
    }
    pub fn log(&self) -> PathBuf {
        self.file(RunDir::LOG)
    }
    pub fn summary(&self) -> PathBuf {
        self.file(RunDir::SUMMARY)
    }
    pub fn checkpoint(&self) -> PathBuf {
        self.file(RunDir::CHECKPOINT)
    }

    /// Removes what an earlier attempt wrote, for a fresh start.
    pub(crate) fn remove_outputs(&self) {
        for name in RunDir::OUTPUTS {
            let _ = std::fs::remove_file(self.path.join(name));
        }
        let Ok(entries) = std::fs::read_dir(&self.path) else { return };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(RunDir::LR_FIND_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Removes temporary files left by a process killed while writing.
    pub(crate) fn remove_temporaries(&self) {
        let Ok(entries) = std::fs::read_dir(&self.path) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_start_removes_every_output_and_temporary_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::new(tmp.path(), "exp", "abc123");
        assert_eq!(dir.path(), tmp.path().join("exp/abc123"));
        std::fs::create_dir_all(dir.path()).unwrap();
        for name in RunDir::OUTPUTS {
            std::fs::write(dir.file(name), b"x").unwrap();
        }
        std::fs::write(dir.path().join(".metrics.csv.tmp123"), b"x").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        dir.remove_temporaries();
        dir.remove_outputs();
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["notes.txt"]);
    }
}
