//! Training a run's phases: the loop over its phases (each phase's epochs run in
//! [`Trainer::train_phase`]), where every epoch moves the run's state on (best epoch,
//! early stopping, next phase) and goes to each of the run's sinks. What the sinks write
//! (tables, curves, best weights, checkpoint, summary, TensorBoard, MLflow) is theirs,
//! in `record/`; this loop knows none of them.

use anyhow::Context;

use super::resume::Restored;
use crate::Error;
use crate::config::spec::{DIVERGENCE_FACTOR, StopScope};
use crate::record::checkpoint::{Best, BestWeights, Checkpoints, TrainState};
use crate::record::mlflow::Mlflow;
use crate::record::plot::Curves;
use crate::record::sink::{Epoch, Records, Sink};
use crate::record::summary::SummaryFile;
use crate::record::table::Tables;
use crate::record::tensorboard::TensorBoard;
use crate::train::metrics::EpochRecord;
use crate::train::{EpochDone, Flow, PhaseRun, RangeTest, Trainer};

/// The sinks of every run, registered once, in the order they write after an epoch.
pub(super) fn sinks(started: std::time::Instant) -> Vec<Box<dyn Sink>> {
    vec![
        Box::new(BestWeights),
        Box::new(Tables),
        Box::new(Curves),
        Box::new(TensorBoard::default()),
        Box::new(Mlflow::default()),
        Box::new(Checkpoints),
        Box::new(SummaryFile { started }),
    ]
}

/// A run's training: where its records go, and when it pauses.
pub(super) struct Training<'a> {
    pub(crate) records: Records<'a>,
    pub(crate) sinks: Vec<Box<dyn Sink>>,
    /// Pause once this many epochs are done ([`crate::run::RunOptions::stop_after`]).
    pub(crate) stop_after: Option<usize>,
    /// Set when training stopped at `stop_after` with epochs left.
    pub(crate) paused: bool,
}

impl Training<'_> {
    /// Opens every sink (a resumed run's sinks see the epochs it has already).
    pub(super) fn start(&mut self, trainer: &Trainer, rows: &[EpochRecord]) -> crate::Result<()> {
        for sink in &mut self.sinks {
            sink.start(&mut self.records, trainer, rows)?;
        }
        Ok(())
    }

    /// Ends every sink after the run's summary is written; a sink that fails here is logged.
    pub(super) fn finish(&mut self) {
        for sink in &mut self.sinks {
            if let Err(e) = sink.finish(&mut self.records) {
                self.records.log.line(&format!("warning: {e:#}"));
            }
        }
    }

    /// Trains the phases from where `restored` left off to the end (or until early stopping).
    pub(super) fn train_all(
        &mut self,
        trainer: &mut Trainer,
        (mut state, mut rows, optimizer_state): Restored,
    ) -> crate::Result<()> {
        let spec = self.records.spec;
        let total = spec.total_epochs();
        let scope = spec.early_stopping.as_ref().map(|e| e.scope);
        self.records.summary.sync(&state, &rows);
        if let Some((decay, warmup)) = trainer.ema_settings() {
            self.records.log.line(&format!(
                "weight EMA (decay {decay}{}): validation, best.safetensors and the test use the averaged weights",
                if warmup { ", with warm-up" } else { "" }
            ));
        }
        if !spec.eval.tta.is_empty() {
            self.records.log.line(&format!(
                "test-time augmentation: softmax averaged over the image and {}",
                tta_names(&spec.eval.tta)
            ));
        }
        let mut optimizer_state = Some(optimizer_state);
        for (name, lr) in &state.found_lr {
            if let Some(p) = spec.phases.iter().position(|ph| &ph.name == name) {
                trainer.use_found_lr(p, *lr, None);
            }
        }
        while !state.finished {
            if self.stop_after.is_some_and(|cap| state.epoch >= cap) {
                self.paused = true;
                return Ok(());
            }
            let p = state.next_phase;
            let from = state.next_phase_epoch;
            let mut run = trainer.start_phase(p, from);
            self.log_phase_start(trainer, &run, p);
            if trainer.schedule().to_find(p) {
                self.find_lr(trainer, &mut run, &mut state)?;
            }
            let restored = optimizer_state.take().unwrap_or_default();
            if from > 0 {
                run.load_optimizer_state(&restored).context("cannot restore the optimizer from the checkpoint")?;
                let name = &spec.phases[p].name;
                run.replay_plateau(rows.iter().filter(|r| &r.phase == name).map(|r| r.monitored(spec.monitor())));
            } else if scope == Some(StopScope::Phase)
                && let Some(es) = &mut state.early_stopping
            {
                es.reset();
            }
            let first = state.epoch + 1;
            trainer.train_phase(&mut run, from, first, total, |done| self.end_epoch(done, &mut state, &mut rows))?;
            if self.paused {
                return Ok(());
            }
        }
        Ok(())
    }

    /// `optimizer.lr = "find"`: the range test from the state the phase starts from (its
    /// plot and steps beside the run's files, its account in run.log); the phase trains at
    /// the suggested rate, which the checkpoint and summary.json keep.
    fn find_lr(&mut self, trainer: &mut Trainer, run: &mut PhaseRun, state: &mut TrainState) -> crate::Result<()> {
        let p = run.index();
        let name = self.records.spec.phases[p].name.clone();
        let test = RangeTest::default();
        let found = trainer.lr_range_test(run, &test);
        self.records.log.line(&format!("phase {} ({name}): {}", p + 1, found.describe(&test)));
        if !(found.suggestion.is_finite() && found.suggestion > 0.0) {
            let why =
                format!("phase {} ({name}): the range test found no learning rate: no step's loss was finite", p + 1);
            return Err(anyhow::anyhow!(why).into());
        }
        let title = format!("{}, phase {name}", self.records.title());
        crate::record::write_lr_find(self.records.dir.path(), &crate::record::lr_find_stem(p, &name), &title, &found)?;
        trainer.use_found_lr(p, found.suggestion, Some(run));
        state.found_lr.insert(name, found.suggestion);
        self.records.summary.found_lr = state.found_lr.clone();
        Ok(())
    }

    /// run.log's lines for phase `p` starting: what it caches, and a last batch it leaves out.
    fn log_phase_start(&mut self, trainer: &Trainer, run: &PhaseRun, p: usize) {
        let spec = self.records.spec;
        let name = &spec.phases[p].name;
        self.records.log.line(&format!("phase {} ({name}): {}", p + 1, run.cache_note()));
        let train_images = trainer.data().train.len();
        if run.drops_lone_batches() && train_images % spec.data.batch_size == 1 {
            self.records.log.line(&format!(
                "phase {} ({name}): each epoch's last batch holds 1 of the {train_images} train images and is left \
                 out: BatchNorm layers train here, on batch statistics that one image does not have",
                p + 1
            ));
        }
    }

    /// Takes the epoch just trained: logs it, moves `state` past it and hands it to every
    /// sink. Says whether its phase goes on.
    fn end_epoch(
        &mut self,
        done: EpochDone,
        state: &mut TrainState,
        rows: &mut Vec<EpochRecord>,
    ) -> crate::Result<Flow> {
        let spec = self.records.spec;
        let total = spec.total_epochs();
        if let Some(change) = &done.unfroze {
            self.records.log.line(&format!("epoch {}: {change}", done.record.epoch));
        }
        self.records.log.line(&done.record.log_line(total));
        if let Some(lr) = done.lowered {
            let monitor = spec.monitor().name();
            let line =
                format!("epoch {}: {monitor} has not improved: the rate is lowered to {lr:e}", done.record.epoch);
            self.records.log.line(&line);
        }
        rows.push(done.record);
        let r = rows.last().expect("just pushed");
        let epoch = r.epoch;
        let factor = spec.divergence_factor.unwrap_or(DIVERGENCE_FACTOR);
        let chance = (done.trainer.data().classes.len().max(2) as f64).ln();
        if diverged(rows, factor, chance) {
            // The weights are ruined: the metrics so far are kept, the last good checkpoint stands.
            let loss = r.train_loss;
            let e = Epoch {
                trainer: done.trainer,
                phase: done.phase,
                state,
                rows,
                improved: false,
                phase_over: false,
                diverged: true,
            };
            self.record(&e)?;
            self.records.summary.epochs = epoch;
            return Err(Error::Diverged { epoch, loss });
        }
        let monitor = spec.monitor();
        let value = r.monitored(monitor);
        let improved = monitor.improves(value, state.best.as_ref().map(|b| b.value), 0.0);
        if improved {
            state.best = Some(Best { epoch, monitor, value });
        }
        let stop = state.early_stopping.as_mut().is_some_and(|es| es.update(epoch, value));
        let phase_over = state.advance(epoch, &r.phase, stop, spec);
        state.scaler = done.trainer.scaler_state();
        let e = Epoch { trainer: done.trainer, phase: done.phase, state, rows, improved, phase_over, diverged: false };
        self.record(&e)?;
        if stop {
            self.log_early_stop(state);
        }
        if phase_over {
            return Ok(Flow::Stop);
        }
        if self.stop_after.is_some_and(|cap| state.epoch >= cap) && !state.finished {
            self.paused = true;
            return Ok(Flow::Stop);
        }
        Ok(Flow::Continue)
    }

    /// The epoch to every sink, in order; the first error fails the run.
    fn record(&mut self, epoch: &Epoch) -> crate::Result<()> {
        for sink in &mut self.sinks {
            sink.epoch(&mut self.records, epoch)?;
        }
        Ok(())
    }

    fn log_early_stop(&mut self, state: &TrainState) {
        let es = state.early_stopping.as_ref().expect("stopping needs early stopping");
        self.records.log.line(&format!(
            "early stopping after epoch {}: {} has not improved by more than {} for {} epochs (best {:.4} at \
             epoch {}){}",
            state.epoch,
            es.monitor.name(),
            es.min_delta,
            es.patience,
            es.best.unwrap_or(f64::NAN),
            es.best_epoch.unwrap_or(0),
            if state.finished { "" } else { "; going on with the next phase" }
        ));
    }
}

/// Whether the last epoch's train loss is not a number, or above `factor` times the smaller
/// of the first epoch's and `chance` (the cross-entropy of a uniform guess, ln of the class
/// count): a run that blows up within its first epoch has no sane first loss to compare with.
fn diverged(rows: &[EpochRecord], factor: f64, chance: f64) -> bool {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else { return false };
    let reference = if first.train_loss.is_finite() { first.train_loss.min(chance) } else { chance };
    // Never below the chance level itself: a model that fitted its first epoch to a loss near
    // 0 has not diverged at a loss a hundred times that, below a uniform guess's.
    let reference = reference.max(chance / factor);
    !last.train_loss.is_finite() || last.train_loss > factor * reference
}

/// Test-time views as the spec writes them: `hflip, { scale = 1.15 }`.
fn tta_names(views: &[crate::config::spec::TtaView]) -> String {
    let name = |v| match toml::Value::try_from(v) {
        Ok(toml::Value::String(s)) => s,
        Ok(toml::Value::Table(t)) => t.iter().map(|(k, v)| format!("{{ {k} = {v} }}")).collect(),
        _ => format!("{v:?}"),
    };
    views.iter().map(|v| name(*v)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_that_explodes_or_stops_being_a_number_diverges() {
        let rows = |losses: &[f64]| -> Vec<EpochRecord> {
            losses
                .iter()
                .enumerate()
                .map(|(i, &l)| EpochRecord::from_values(i + 1, "p", &[crate::train::metrics::Metric::TrainLoss], &[l]))
                .collect()
        };
        let ten = 10f64.ln();
        assert!(!diverged(&rows(&[2.3, 1.0, 150.0]), 100.0, ten));
        assert!(diverged(&rows(&[2.3, 1.0, 1.5e9]), 100.0, ten));
        assert!(diverged(&rows(&[2.3, f64::NAN]), 100.0, ten));
        assert!(diverged(&rows(&[f64::INFINITY]), 100.0, ten));
        assert!(!diverged(&rows(&[2.3, 40.0]), 100.0, ten) && diverged(&rows(&[2.3, 40.0]), 10.0, ten));
        assert!(!diverged(&[], 100.0, ten));
        use crate::config::spec::TtaView;
        assert_eq!(
            tta_names(&[TtaView::Hflip, TtaView::Scale(1.15), TtaView::TenCrop]),
            "hflip, { scale = 1.15 }, ten_crop"
        );
        // Fitted in the first epoch: a loss still below chance level is not divergence.
        assert!(!diverged(&rows(&[1e-10, 1.5e-8, 2.0]), 100.0, ten));
        assert!(diverged(&rows(&[1e-10, 2.4]), 100.0, ten));
        // Issue 29: SGD at lr 1000 on two classes, already exploded in its first epoch.
        let two = 2f64.ln();
        assert!(diverged(&rows(&[268_510.0]), 100.0, two));
        assert!(diverged(&rows(&[268_510.0, 387_088.0]), 100.0, two));
        assert!(!diverged(&rows(&[0.9, 0.6]), 100.0, two), "a first epoch above chance is no divergence");
    }
}
