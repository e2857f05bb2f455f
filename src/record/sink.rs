//! What a run records, behind one small trait: each output (the metrics tables, the
//! curves, the best weights, the checkpoint, the summary, TensorBoard, MLflow) is a
//! [`Sink`], registered once when the run starts (`run::sinks`). The epoch loop hands
//! every sink the same [`Epoch`] and knows none of them.

use anyhow::Result;

use crate::config::spec::Spec;
use crate::record::checkpoint::TrainState;
use crate::record::log::RunLog;
use crate::record::run_dir::RunDir;
use crate::record::summary::Summary;
use crate::train::metrics::EpochRecord;
use crate::train::{PhaseRun, Trainer};

/// What every sink may read and write while the run records: its spec, its directory,
/// its run.log and its summary (kept by the run, written by the summary sink).
pub(crate) struct Records<'a> {
    pub(crate) spec: &'a Spec,
    pub(crate) dir: &'a RunDir,
    pub(crate) log: &'a mut RunLog,
    pub(crate) summary: &'a mut Summary,
}

impl Records<'_> {
    /// The plots' title: the experiment and the run id.
    pub(crate) fn title(&self) -> String {
        format!("{} ({})", self.spec.name, self.summary.run_id)
    }
}

/// An epoch just trained and its place in the run, as every sink sees it.
pub(crate) struct Epoch<'a> {
    pub(crate) trainer: &'a Trainer,
    pub(crate) phase: &'a PhaseRun,
    /// Where the run stands after this epoch (best, early stopping, next phase).
    pub(crate) state: &'a TrainState,
    /// Every epoch so far; this one is the last.
    pub(crate) rows: &'a [EpochRecord],
    /// It is the best epoch so far by the monitored metric.
    pub(crate) improved: bool,
    /// Its phase is over (its last epoch, or early stopping).
    pub(crate) phase_over: bool,
    /// The loss diverged: the run fails after this epoch, whose weights are ruined. Only
    /// the metrics and curves record it; the last good checkpoint and best weights stand.
    pub(crate) diverged: bool,
}

/// One of the outputs a run records.
pub(crate) trait Sink {
    /// The run starts, or resumes with `rows` already trained.
    fn start(&mut self, _records: &mut Records, _trainer: &Trainer, _rows: &[EpochRecord]) -> Result<()> {
        Ok(())
    }

    /// An epoch ended. An error fails the run.
    fn epoch(&mut self, records: &mut Records, epoch: &Epoch) -> Result<()>;

    /// The run ended; its summary says how and is written already.
    fn finish(&mut self, _records: &mut Records) -> Result<()> {
        Ok(())
    }
}
