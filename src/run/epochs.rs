//! Training a run's phases epoch by epoch, and what each epoch leaves in the run
//! directory: the metrics and curves, the best weights, the checkpoint and the summary.

use std::time::Instant;

use anyhow::{Context, Result};
use tch::{Device, Tensor, nn};

use super::log::RunLog;
use super::resume::Restored;
use crate::Error;
use crate::config::spec::{DIVERGENCE_FACTOR, Precision, Spec, StopScope};
use crate::record::checkpoint::{Best, Checkpoint, TrainState};
use crate::record::confusion::Confusion;
use crate::record::mlflow::MlflowRun;
use crate::record::run_dir::RunDir;
use crate::record::summary::Summary;
use crate::record::tensorboard::{EventWriter, HParam, SessionStatus, spec_hparams};
use crate::record::{plot, table};
use crate::sys::atomic::with_temp_path;
use crate::train::metrics::EpochRecord;
use crate::train::{PhaseRun, Trainer};

/// What a run's epochs write to, for as long as it trains.
pub(super) struct Records<'a> {
    pub spec: &'a Spec,
    pub dir: &'a RunDir,
    pub summary: &'a mut Summary,
    pub log: &'a mut RunLog,
    pub started: Instant,
    /// The run's TensorBoard event file; `None` when it could not be written (run.log says why).
    pub tensorboard: Option<EventWriter>,
    /// The run's MLflow run; `None` without a tracking server, or once it failed.
    pub mlflow: Option<MlflowRun>,
    /// Pause once this many epochs are done ([`crate::run::RunOptions::stop_after`]).
    pub stop_after: Option<usize>,
    /// Set when training stopped at `stop_after` with epochs left.
    pub paused: bool,
}

impl Records<'_> {
    /// Trains the phases from where `restored` left off to the end (or until early stopping).
    pub(super) fn train_all(
        &mut self,
        trainer: &mut Trainer,
        (mut state, mut rows, mut optimizer_state): Restored,
    ) -> crate::Result<()> {
        let spec = self.spec;
        let total = spec.total_epochs();
        let scope = spec.early_stopping.as_ref().map(|e| e.scope);
        let lrs = spec.phase_lrs();
        sync_summary(self.summary, &state, &rows);
        if let Some(ema) = &trainer.ema {
            self.log.line(&format!(
                "weight EMA (decay {}{}): validation, best.safetensors and the test use the averaged weights",
                ema.decay,
                if ema.warmup { ", with warm-up" } else { "" }
            ));
        }
        if !spec.eval.tta.is_empty() {
            self.log.line(&format!("test-time augmentation: softmax averaged over the image and {:?}", spec.eval.tta));
        }
        while !state.finished {
            if self.stop_after.is_some_and(|cap| state.epoch >= cap) {
                self.paused = true;
                return Ok(());
            }
            let p = state.next_phase;
            let phase = &spec.phases[p];
            let layers = trainer.model.backbone.layers().len();
            // Boundaries a cache pass may keep activations at: this phase's later freeze
            // indices (gradual unfreezing) and the later phases'.
            let mut later: Vec<usize> =
                (state.next_phase_epoch..phase.epochs).map(|e| phase.freeze_up_to.at_epoch(e, layers)).collect();
            later.extend(
                spec.phases[p + 1..].iter().flat_map(|l| (0..l.epochs).map(|e| l.freeze_up_to.at_epoch(e, layers))),
            );
            trainer.later_boundaries = later;
            // The lowest layer trained so far: each earlier phase trained from its last freeze index.
            let done = spec.phases[..p].iter().map(|ph| ph.freeze_up_to.at_epoch(ph.epochs.saturating_sub(1), layers));
            trainer.trained_from =
                done.chain([phase.freeze_up_to.at_epoch(state.next_phase_epoch, layers)]).min().unwrap_or(0);
            let mut run = trainer.start_phase(phase, lrs[p], state.next_phase_epoch);
            self.log_phase_start(trainer, &run, p);
            if state.next_phase_epoch > 0 {
                run.opt.load_state(&optimizer_state).context("cannot restore the optimizer from the checkpoint")?;
            } else if scope == Some(StopScope::Phase)
                && let Some(es) = &mut state.early_stopping
            {
                es.reset();
            }
            optimizer_state.clear();
            for e in state.next_phase_epoch..phase.epochs {
                if let Some(change) = trainer.follow_schedule(&mut run, phase, e) {
                    self.log.line(&format!("epoch {}: {change}", state.epoch + 1));
                }
                let lr = phase.schedule.lr_at(lrs[p], e, phase.epochs);
                let r = trainer.run_epoch(&mut run, lr, state.epoch + 1, total);
                // An epoch cut short by a signal is not recorded: the last checkpoint stands.
                if crate::sys::signal::interrupted() {
                    let what = format!("the checkpoint after epoch {} is kept; continue with --resume", state.epoch);
                    return Err(Error::Interrupted { what });
                }
                self.log.line(&r.log_line(total));
                rows.push(r);
                if self.end_epoch(trainer, &run, &mut state, &rows)? {
                    break;
                }
                if self.stop_after.is_some_and(|cap| state.epoch >= cap) && !state.finished {
                    self.paused = true;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// run.log's lines for phase `p` starting: what it caches, and a last batch it leaves out.
    fn log_phase_start(&mut self, trainer: &Trainer, run: &PhaseRun, p: usize) {
        let name = &self.spec.phases[p].name;
        self.log.line(&format!("phase {} ({name}): {}", p + 1, run.cache_note));
        let train_images = trainer.data.train.len();
        if run.drops_lone_batches() && train_images % self.spec.data.batch_size == 1 {
            self.log.line(&format!(
                "phase {} ({name}): each epoch's last batch holds 1 of the {train_images} train images and is left \
                 out: BatchNorm layers train here, on batch statistics that one image does not have",
                p + 1
            ));
        }
    }

    /// Records the epoch just trained (the last of `rows`) and moves `state` past it:
    /// best weights, metrics, curves, checkpoint, summary. Returns whether its phase is over.
    fn end_epoch(
        &mut self,
        trainer: &Trainer,
        run: &PhaseRun,
        state: &mut TrainState,
        rows: &[EpochRecord],
    ) -> crate::Result<bool> {
        let (spec, dir) = (self.spec, self.dir);
        let r = rows.last().expect("an epoch was trained");
        let epoch = r.epoch;
        let title = format!("{} ({})", spec.name, self.summary.run_id);
        let factor = spec.divergence_factor.unwrap_or(DIVERGENCE_FACTOR);
        let chance = (trainer.data.classes.len().max(2) as f64).ln();
        if diverged(rows, factor, chance) {
            // The weights are ruined: keep the metrics so far and the last good checkpoint as they are.
            table::write_metrics(dir, rows)?;
            plot::write_curves(&dir.curves(), &title, rows, &unfreeze_epochs(spec, rows))?;
            self.summary.epochs = epoch;
            return Err(Error::Diverged { epoch, loss: r.train_loss });
        }
        let monitor = spec.monitor();
        let value = r.monitored(monitor);
        if monitor.improves(value, state.best.as_ref().map(|b| b.value), 0.0) {
            save_weights(&trainer.eval_variables(), &dir.best())?;
            state.best = Some(Best { epoch, monitor, value });
        }
        let stop = state.early_stopping.as_mut().is_some_and(|es| es.update(epoch, value));
        let p = state.next_phase;
        let phase_epoch = state.next_phase_epoch;
        state.epoch = epoch;
        state.row_phases.push(r.phase.clone());
        let phase_over = stop || phase_epoch + 1 == spec.phases[p].epochs;
        if phase_over {
            state.next_phase = p + 1;
            state.next_phase_epoch = 0;
            let scope = spec.early_stopping.as_ref().map(|e| e.scope);
            state.finished = state.next_phase == spec.phases.len() || (stop && scope == Some(StopScope::Run));
        } else {
            state.next_phase_epoch = phase_epoch + 1;
        }
        table::write_metrics(dir, rows)?;
        plot::write_curves(&dir.curves(), &title, rows, &unfreeze_epochs(spec, rows))?;
        self.log_tensorboard(trainer, rows, rows.len() - 1);
        self.log_mlflow(trainer, rows, rows.len() - 1);
        state.scaler = (trainer.precision == Precision::Fp16).then(|| trainer.scaler.clone());
        let ck = Checkpoint {
            state: state.clone(),
            rows: rows.to_vec(),
            model: named_variables(&trainer.vs),
            optimizer: if phase_over { vec![] } else { run.opt.state_tensors() },
            ema: trainer.ema.as_ref().map_or(vec![], |e| e.state_tensors()),
        };
        ck.write(&dir.checkpoint())?;
        sync_summary(self.summary, state, rows);
        self.summary.wall_s = self.started.elapsed().as_secs_f64();
        self.summary.write(dir)?;
        if stop {
            self.log_early_stop(state);
        }
        Ok(phase_over)
    }

    /// Starts the run's event file: the hyperparameters, then the epochs a resumed run has already.
    pub(super) fn open_tensorboard(&mut self, trainer: &Trainer, rows: &[EpochRecord]) {
        let wall = unix_seconds();
        let group = self.summary.run_id.clone();
        let opened = EventWriter::create(self.dir.path(), wall).and_then(|mut w| {
            let metrics = ["accuracy/val", "loss/val", "accuracy/train", "loss/train"];
            w.hparams(wall, &group, &spec_hparams(&self.spec.to_toml()), &metrics)?;
            Ok(w)
        });
        match opened {
            Ok(w) => self.tensorboard = Some(w),
            Err(e) => self.log.line(&format!("warning: no TensorBoard events: {e:#}")),
        }
        for i in 0..rows.len() {
            self.log_tensorboard(trainer, rows, i);
        }
    }

    /// Writes epoch `rows[i]`'s scalars to the event file; a write error ends the file, not the run.
    fn log_tensorboard(&mut self, trainer: &Trainer, rows: &[EpochRecord], i: usize) {
        let Some(w) = &mut self.tensorboard else { return };
        let layers = trainer.model.backbone.layers().len();
        let scalars = epoch_scalars(self.spec, rows, i, layers);
        if let Err(e) = w.scalars(unix_seconds(), rows[i].epoch as i64, &scalars) {
            self.log.line(&format!("warning: TensorBoard events stop here: {e:#}"));
            self.tensorboard = None;
        }
    }

    /// Starts (or, resumed, continues) the run's MLflow run when a tracking server is set:
    /// params, tags, and the epochs a resumed run has already.
    pub(super) fn open_mlflow(&mut self, trainer: &Trainer, rows: &[EpochRecord]) {
        let Some(uri) = self.spec.tracking.mlflow_uri() else { return };
        let tags = [
            ("runner.version", env!("CARGO_PKG_VERSION").to_string()),
            ("runner.numerics_version", crate::run::NUMERICS_VERSION.to_string()),
            ("runner.status", "running".to_string()),
            ("runner.backbone", self.spec.model.backbone.to_string()),
        ];
        let params: Vec<(String, String)> = spec_hparams(&self.spec.to_toml())
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    HParam::Number(x) => format!("{x}"),
                    HParam::Text(s) => s,
                    HParam::Bool(b) => b.to_string(),
                };
                (k, v)
            })
            .collect();
        let started = MlflowRun::start(&uri, &self.spec.name, &self.summary.run_id, &tags)
            .and_then(|run| run.log_params(&params).map(|()| run));
        match started {
            Ok(run) => {
                self.log.line(&format!("MLflow: run {} in experiment {} at {uri}", run.run_id, run.experiment_id));
                self.summary.tracking = Some(format!("mlflow: run {} at {uri}", run.run_id));
                self.mlflow = Some(run);
            }
            Err(e) => self.mlflow_failed(&uri, &e),
        }
        for i in 0..rows.len() {
            self.log_mlflow(trainer, rows, i);
        }
    }

    /// Tracking failed: no more calls this run; run.log and summary.json say why.
    fn mlflow_failed(&mut self, uri: &str, e: &anyhow::Error) {
        self.mlflow = None;
        self.log.line(&format!("warning: MLflow tracking at {uri} failed, the run goes on without it: {e:#}"));
        self.summary.tracking = Some(format!("mlflow: failed at {uri}: {e:#}"));
    }

    /// Epoch `rows[i]`'s metrics to MLflow (the TensorBoard scalars, by the same names).
    fn log_mlflow(&mut self, trainer: &Trainer, rows: &[EpochRecord], i: usize) {
        let Some(run) = &self.mlflow else { return };
        let layers = trainer.model.backbone.layers().len();
        let metrics = epoch_scalars(self.spec, rows, i, layers);
        if let Err(e) = run.log_metrics(rows[i].epoch as i64, &metrics) {
            let uri = self.spec.tracking.mlflow_uri().unwrap_or_default();
            self.mlflow_failed(&uri, &e);
        }
    }

    /// Ends the event file: the curves image and how the run ended.
    pub(super) fn close_tensorboard(&mut self, completed: bool) {
        let Some(mut w) = self.tensorboard.take() else { return };
        let wall = unix_seconds();
        let step = self.summary.epochs as i64;
        let curves = std::fs::read(self.dir.curves()).ok();
        let result = curves
            .and_then(|png| png_size(&png).map(|size| (png, size)))
            .map_or(Ok(()), |(png, size)| w.image(wall, step, "curves", png, size))
            .and_then(|()| {
                w.session_end(wall, if completed { SessionStatus::Success } else { SessionStatus::Failure })
            });
        if let Err(e) = result {
            self.log.line(&format!("warning: TensorBoard events incomplete: {e:#}"));
        }
    }

    fn log_early_stop(&mut self, state: &TrainState) {
        let es = state.early_stopping.as_ref().expect("stopping needs early stopping");
        self.log.line(&format!(
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

    /// With a test split: the best weights, evaluated once on it.
    pub(super) fn evaluate_test(&mut self, trainer: &mut Trainer) -> Result<()> {
        let best = self.dir.best();
        if trainer.data.test.is_empty() || !best.exists() {
            return Ok(());
        }
        tch::no_grad(|| trainer.vs.read_safetensors(&best))
            .with_context(|| format!("cannot load {}", best.display()))?;
        let (loss, acc, predicted) = trainer.evaluate_and_predict(&trainer.data.test);
        let truth = Vec::<i64>::try_from(&trainer.data.test.labels.to_device(Device::Cpu)).context("test labels")?;
        let confusion = Confusion::new(&trainer.data.classes, &truth, &predicted);
        confusion.write(self.dir)?;
        let title = format!("{} ({})", self.spec.name, self.summary.run_id);
        plot::write_confusion(&self.dir.confusion_png(), &title, &confusion)?;
        self.summary.test_acc = Some(acc);
        self.summary.test_loss = Some(loss);
        self.log.line(&format!(
            "test ({} images, best weights of epoch {}): loss {loss:.4} acc {acc:.4}; per class in {}",
            trainer.data.test.len(),
            self.summary.best_epoch.unwrap_or(0),
            self.dir.test_metrics().display()
        ));
        Ok(())
    }
}

/// The epochs (1-based) before which gradual unfreezing unfroze a layer: epoch e of a phase
/// (counted from its rows) whose freeze index is below epoch e - 1's.
/// Ends the MLflow run after the run's own end: the best weights, curves and summary as
/// artifacts, the status tag, and the run's MLflow status; a failure is recorded in run.log
/// and summary.json (rewritten), never raised.
pub(super) fn close_mlflow(run: MlflowRun, dir: &RunDir, summary: &mut Summary, log: &mut RunLog) {
    use crate::record::summary::Status;
    let status = summary.status;
    let result = (|| -> anyhow::Result<()> {
        for file in [dir.best(), dir.curves(), dir.summary()] {
            if file.is_file() {
                let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                run.upload(&file, &name)?;
            }
        }
        run.set_tags(&[("runner.status".to_string(), status.name().to_string())])?;
        run.end(match status {
            Status::Completed => "FINISHED",
            Status::Interrupted | Status::Paused => "KILLED",
            _ => "FAILED",
        })
    })();
    if let Err(e) = result {
        log.line(&format!("warning: MLflow tracking failed at the end of the run: {e:#}"));
        summary.tracking = Some(format!("mlflow: failed at the end of run {}: {e:#}", run.run_id));
        let _ = summary.write(dir);
    }
}

/// Seconds since the Unix epoch.
fn unix_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Width and height of a PNG, from its IHDR chunk.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    let ihdr = png.get(12..24).filter(|_| png.starts_with(b"\x89PNG"))?;
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&ihdr[4..8]), be(&ihdr[8..12])))
}

/// Epoch `rows[i]`'s TensorBoard scalars: losses, accuracies, throughput, the phase's
/// learning rate, and with layer-wise rates the head's and each trainable layer's.
fn epoch_scalars(spec: &Spec, rows: &[EpochRecord], i: usize, layers: usize) -> Vec<(String, f64)> {
    let r = &rows[i];
    let mut out = vec![
        ("loss/train".to_string(), r.train_loss),
        ("loss/val".into(), r.val_loss),
        ("accuracy/train".into(), r.train_acc),
        ("accuracy/val".into(), r.val_acc),
        ("lr".into(), r.lr),
        ("images_per_s/train".into(), r.train_images_per_s),
        ("seconds/epoch".into(), r.seconds),
    ];
    let Some(phase) = spec.phases.iter().find(|p| p.name == r.phase) else { return out };
    let opt = &phase.optimizer;
    if opt.layer_decay.is_some() || opt.head_lr_factor.is_some() {
        let phase_epoch = rows[..i].iter().filter(|x| x.phase == r.phase).count();
        let frozen = phase.freeze_up_to.at_epoch(phase_epoch, layers);
        out.push(("lr/head".into(), r.lr * crate::model::lr_scale(None, layers, opt)));
        for layer in frozen..layers {
            out.push((format!("lr/layer_{layer:02}"), r.lr * crate::model::lr_scale(Some(layer), layers, opt)));
        }
    }
    out
}

fn unfreeze_epochs(spec: &Spec, rows: &[EpochRecord]) -> Vec<usize> {
    let layers = spec.model.backbone.layer_count();
    let mut seen: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut out = vec![];
    for r in rows {
        let e = seen.entry(r.phase.as_str()).or_insert(0);
        if let Some(phase) = spec.phases.iter().find(|p| p.name == r.phase)
            && *e > 0
            && phase.freeze_up_to.at_epoch(*e, layers) < phase.freeze_up_to.at_epoch(*e - 1, layers)
        {
            out.push(r.epoch);
        }
        *e += 1;
    }
    out
}

/// Whether the last epoch's train loss is not a number, or above `factor` times the smaller
/// of the first epoch's and `chance` (the cross-entropy of a uniform guess, ln of the class
/// count): a run that blows up within its first epoch has no sane first loss to compare with.
fn diverged(rows: &[EpochRecord], factor: f64, chance: f64) -> bool {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else { return false };
    let reference = if first.train_loss.is_finite() { first.train_loss.min(chance) } else { chance };
    !last.train_loss.is_finite() || last.train_loss > factor * reference
}

/// The summary's view of the training state.
pub(super) fn sync_summary(summary: &mut Summary, state: &TrainState, rows: &[EpochRecord]) {
    summary.epochs = state.epoch;
    summary.best_epoch = state.best.as_ref().map(|b| b.epoch);
    summary.best_value = state.best.as_ref().map(|b| b.value);
    summary.best_val_acc = summary.best_epoch.and_then(|e| rows.get(e - 1)).map(|r| r.val_acc);
    summary.early_stopping = state.early_stopping.clone();
}

/// Every variable by name, sorted, in standard (contiguous NCHW) memory.
fn named_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    crate::train::sorted_variables(vs)
}

/// Saves these variables (backbone and head) as safetensors, atomically.
fn save_weights(named: &[(String, Tensor)], path: &std::path::Path) -> Result<()> {
    with_temp_path(path, |tmp| {
        tch::Tensor::write_safetensors(named, tmp).with_context(|| format!("cannot write {}", tmp.display()))
    })
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
        // Issue 29: SGD at lr 1000 on two classes, already exploded in its first epoch.
        let two = 2f64.ln();
        assert!(diverged(&rows(&[268_510.0]), 100.0, two));
        assert!(diverged(&rows(&[268_510.0, 387_088.0]), 100.0, two));
        assert!(!diverged(&rows(&[0.9, 0.6]), 100.0, two), "a first epoch above chance is no divergence");
    }
}
