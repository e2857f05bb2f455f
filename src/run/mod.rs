//! One run of a spec, end to end: check everything that can be checked before
//! anything is written, then train the phases in order and keep the run
//! directory (`<out>/<experiment>/<run-id>/`, a [`RunDir`]) up to date after every epoch.

mod epochs;
mod identity;
pub mod lock;
mod prepare;
mod resume;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use polars::prelude::Column;
use tch::Device;

use self::epochs::Training;
pub(crate) use self::identity::{Identity, NUMERICS_VERSION, identify};
pub use self::identity::{data_files, run_id};
pub(crate) use self::prepare::prepare_files;
pub use self::prepare::{check, preflight, prepare};
use self::resume::{Restored, find_checkpoint, restore};
use crate::Error;
use crate::config::spec::{Reproducibility, Spec};
use crate::data;
use crate::record::checkpoint::{Checkpoint, EarlyStopState, TrainState};
use crate::record::confusion::Confusion;
use crate::record::log::RunLog;
use crate::record::plot;
use crate::record::run_dir::RunDir;
use crate::record::sink::Records;
use crate::record::summary::{Status, Summary};
use crate::record::table;
use crate::sys::atomic::write_atomic;
use crate::sys::fetch::sha256_hex;
use crate::train::Trainer;

/// How runs are carried out; `RunOptions::default()` is `runner run`'s defaults.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Root of the run directories (`reports/runs` by default).
    pub out: PathBuf,
    /// Rerun even when a completed result exists.
    pub force: bool,
    /// Continue an interrupted run from its checkpoint.
    pub resume: bool,
    /// With `resume`: when the spec's run has no directory but the experiment has an
    /// interrupted run of another config, refuse (a single-run spec that was edited).
    /// Off for grids, whose other points are legitimately other configs.
    pub refuse_changed_config: bool,
    pub device: Device,
    /// Intra-op threads; `None`: `RUNNER_THREADS`, else every core.
    pub threads: Option<i32>,
    /// Stop (status "paused", checkpoint kept) once this many epochs are done, unless the
    /// run ends first: a halving search's rung budget.
    pub stop_after: Option<usize>,
    /// Where plain feature caches are kept for other runs: grid points, reruns, a halving
    /// search's trials, other processes ([`default_feature_store`] for a command's runs).
    pub feature_store: Option<PathBuf>,
}

/// The feature store of the runs a command starts: `RUNNER_FEATURE_STORE` (a folder, or
/// `off`), else `<RUNNER_CACHE>/features`. A library caller that sets no store shares none.
pub fn default_feature_store() -> Option<PathBuf> {
    crate::sys::filestore::dir_from_env(crate::sys::env::FEATURE_STORE, "features")
}

/// The feature store's size budget in bytes (`RUNNER_FEATURE_STORE_MB`, default 10 GiB).
pub fn feature_store_budget() -> u64 {
    crate::sys::filestore::budget_from_env(crate::sys::env::FEATURE_STORE_MB, 10 << 10)
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            out: PathBuf::from("reports/runs"),
            force: false,
            resume: false,
            refuse_changed_config: false,
            device: Device::Cpu,
            threads: None,
            stop_after: None,
            feature_store: None,
        }
    }
}

pub struct RunOutcome {
    pub dir: RunDir,
    pub summary: Summary,
    /// False when a completed result already existed and nothing ran.
    pub ran: bool,
}

/// The directory of the run `id` of `spec` under `out`.
pub fn run_dir(out: &Path, spec: &Spec, id: &Identity) -> RunDir {
    RunDir::new(out, &spec.name, &id.run_id)
}

/// Runs `spec` into its run directory under `opts.out`.
pub fn execute(spec: &Spec, opts: &RunOptions) -> crate::Result<RunOutcome> {
    let id = identify(spec)?;
    execute_identified(spec, &id, opts)
}

/// [`execute`] for a run already identified.
pub(crate) fn execute_identified(spec: &Spec, id: &Identity, opts: &RunOptions) -> crate::Result<RunOutcome> {
    let started = Instant::now();
    let dir = run_dir(&opts.out, spec, id);
    let completed = || Summary::read(&dir).filter(|s| s.status == Status::Completed && !opts.force);
    if let Some(summary) = completed() {
        return Ok(RunOutcome { dir, summary, ran: false });
    }
    let lock_path = lock::path(&opts.out, &spec.name, &id.run_id);
    let busy = |holder: String| Error::Busy { experiment: spec.name.clone(), run_id: id.run_id.clone(), holder };
    if let Some(holder) = lock::holder_of(&lock_path) {
        return Err(busy(holder));
    }
    let config_sha256 = sha256_hex(&spec.canonical());
    let modified = || std::fs::metadata(dir.checkpoint()).and_then(|m| m.modified()).ok();
    // What can be refused is refused before the slow part (data, weights).
    let seen = modified();
    let mut resume = find_checkpoint(spec, id, &dir, opts, &config_sha256)?;
    check_numerics(spec, opts.device)?;
    crate::sys::malloc::tune()?;
    let threads = prepare::configure_threads(opts.threads);
    let mut trainer = prepare_files(spec, &id.files, &id.manifest, opts.device, opts.feature_store.clone())?;

    crate::sys::signal::watch();
    // Claim the run; nothing has been written so far. Held until this function returns.
    let _lock = match lock::claim(&lock_path)? {
        lock::Claim::Held(held) => held,
        lock::Claim::Busy(holder) => return Err(busy(holder)),
    };
    // Another worker may have completed the run, or moved its checkpoint on, meanwhile.
    if let Some(summary) = completed() {
        return Ok(RunOutcome { dir, summary, ran: false });
    }
    if modified() != seen {
        resume = find_checkpoint(spec, id, &dir, opts, &config_sha256)?;
    }

    open_dir(&dir, spec, id, resume.is_none())?;
    let mut log = RunLog::open(&dir);
    let mut summary = new_summary(spec, id, &trainer, threads, opts.device);
    log_start(&mut log, &mut summary, spec, resume.as_ref(), &dir);
    log_numerics(&mut log, &summary, spec, &trainer);
    warn_unvalidated(&trainer, &mut log);
    log.line(&trainer.data().store);
    record_skipped(&dir, &trainer, &mut log)?;
    summary.write(&dir)?;

    let restored: Restored = match resume {
        Some(ck) => restore(&mut trainer, ck)?,
        None => {
            let mut state = TrainState::new(&id.run_id, &config_sha256, threads);
            state.early_stopping =
                spec.early_stopping.as_ref().map(|e| EarlyStopState::new(e.monitor, e.patience, e.min_delta));
            (state, vec![], vec![])
        }
    };
    let finished = train_and_record(spec, opts, &mut trainer, restored, &dir, &mut summary, &mut log, started);
    finished?;
    Ok(RunOutcome { dir, summary, ran: true })
}

/// A portable run must run on the CPU, in a process whose libtorch paths are pinned.
fn check_numerics(spec: &Spec, device: Device) -> crate::Result<()> {
    if spec.reproducibility != Reproducibility::Portable {
        return Ok(());
    }
    if device.is_cuda() {
        return Err(anyhow::anyhow!(
            "reproducibility = \"portable\" pins the CPU's paths; a CUDA run's bits depend on its GPU: \
             run it with --device cpu, or leave reproducibility at \"machine\""
        )
        .into());
    }
    Ok(crate::sys::numerics::check_portable()?)
}

/// run.log's lines on the run's arithmetic: the pinned paths of a portable run, and fp16
/// asked for where it cannot run.
fn log_numerics(log: &mut RunLog, summary: &Summary, spec: &Spec, trainer: &Trainer) {
    if let Some(m) = summary.machine.as_ref().filter(|m| m.reproducibility == "portable") {
        log.line(&format!("reproducibility portable: {}", m.describe()));
    }
    if spec.precision != trainer.precision() {
        log.line(&format!(
            "warning: precision = \"{}\" needs a CUDA device; training in {} on the {}",
            spec.precision.name(),
            trainer.precision().name(),
            summary.device
        ));
    }
}

/// Trains from `restored` on, recording every epoch into the run's sinks, then ends the
/// run: test split, summary, and the sinks' own ends.
#[allow(clippy::too_many_arguments)]
fn train_and_record(
    spec: &Spec,
    opts: &RunOptions,
    trainer: &mut Trainer,
    restored: Restored,
    dir: &RunDir,
    summary: &mut Summary,
    log: &mut RunLog,
    started: Instant,
) -> crate::Result<()> {
    let mut training = Training {
        records: Records { spec, dir, log, summary },
        sinks: epochs::sinks(started),
        stop_after: opts.stop_after,
        paused: false,
    };
    let result =
        training.start(trainer, &restored.1).and_then(|()| training.train_all(trainer, restored)).and_then(|()| {
            if !training.paused {
                evaluate_best(&mut training.records, trainer)?;
            }
            Ok(())
        });
    let paused = training.paused;
    let records = &mut training.records;
    let finished = finish(records.dir, records.summary, records.log, started, result, paused);
    training.finish();
    finished
}

/// The best weights, evaluated once more: their prediction of every validation image
/// (val_predictions.csv) and, with a test split, their test metrics (test_metrics.csv,
/// confusion.png).
fn evaluate_best(records: &mut Records, trainer: &mut Trainer) -> anyhow::Result<()> {
    let best = records.dir.best();
    if !best.exists() {
        return Ok(());
    }
    trainer.load_weights(&best)?;
    let val = &trainer.data().val;
    let (_, _, predicted) = trainer.evaluate_and_predict(val);
    let truth = Vec::<i64>::try_from(&val.labels.to_device(Device::Cpu)).context("val labels")?;
    let classes = &trainer.data().classes;
    write_predictions(&records.dir.file(RunDir::VAL_PREDICTIONS), classes, &val.paths, &truth, &predicted)?;
    let val_classes: Vec<i64> = predicted.iter().map(|p| p.class).collect();
    let confusion = Confusion::new(classes, &truth, &val_classes);
    plot::write_confusion(&records.dir.file(RunDir::VAL_CONFUSION_PNG), &records.title(), "validation", &confusion)?;
    if records.spec.eval.calibrate == crate::config::spec::Calibrate::Temperature {
        calibrate(records, trainer)?;
    }
    if trainer.data().test.is_empty() {
        return Ok(());
    }
    let test = &trainer.data().test;
    let (loss, acc, predicted) = trainer.evaluate_and_predict(test);
    let truth = Vec::<i64>::try_from(&test.labels.to_device(Device::Cpu)).context("test labels")?;
    let classes: Vec<i64> = predicted.iter().map(|p| p.class).collect();
    let confusion = Confusion::new(&trainer.data().classes, &truth, &classes);
    confusion.write(records.dir)?;
    plot::write_confusion(&records.dir.confusion_png(), &records.title(), "test", &confusion)?;
    records.summary.test_acc = Some(acc);
    records.summary.test_loss = Some(loss);
    records.log.line(&format!(
        "test ({} images, best weights of epoch {}): loss {loss:.4} acc {acc:.4}; per class in {}",
        test.len(),
        records.summary.best_epoch.unwrap_or(0),
        records.dir.test_metrics().display()
    ));
    Ok(())
}

/// `eval.calibrate = "temperature"`: the temperature fitted on the best weights' validation
/// logits, its effect on their NLL and ECE (summary.json, run.log) and their reliability
/// diagram before and after (reliability.png).
fn calibrate(records: &mut Records, trainer: &Trainer) -> anyhow::Result<()> {
    use crate::train::calibration::{ECE_BINS, ece, fit_temperature, nll};
    let val = &trainer.data().val;
    let logits = trainer.logits_of(val);
    let labels = val.labels.to_device(Device::Cpu);
    let temperature = fit_temperature(&logits, &labels);
    let ((ece_before, before), (ece_after, after)) = (ece(&logits, &labels, 1.0), ece(&logits, &labels, temperature));
    let c = crate::record::summary::Calibration {
        temperature,
        images: val.len(),
        nll_before: nll(&logits, &labels, 1.0),
        nll_after: nll(&logits, &labels, temperature),
        ece_before,
        ece_after,
        bins: ECE_BINS,
    };
    plot::write_reliability(
        &records.dir.file(RunDir::RELIABILITY_PNG),
        &records.title(),
        temperature,
        &before,
        &after,
    )?;
    records.log.line(&format!(
        "calibration: temperature {temperature:.4} fitted on {} validation images: NLL {:.4} -> {:.4}, ECE {:.4} -> {:.4}",
        c.images, c.nll_before, c.nll_after, c.ece_before, c.ece_after
    ));
    records.summary.calibration = Some(c);
    Ok(())
}

/// A split's predictions as CSV: path, label, predicted, correct, the predicted class's
/// probability and the true class's.
fn write_predictions(
    path: &Path,
    classes: &[String],
    paths: &[String],
    truth: &[i64],
    predicted: &[crate::train::Prediction],
) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(vec![]);
    w.write_record(["path", "label", "predicted", "correct", "confidence", "p_true"])?;
    for ((file, &label), p) in paths.iter().zip(truth).zip(predicted) {
        let name = |c: i64| classes.get(c as usize).map_or("?", String::as_str);
        w.write_record([
            file.as_str(),
            name(label),
            name(p.class),
            if p.class == label { "true" } else { "false" },
            &format!("{:.6}", p.confidence),
            &format!("{:.6}", p.p_true),
        ])?;
    }
    write_atomic(path, &w.into_inner().context("cannot write predictions")?)
}

/// Makes the run directory ready for this attempt: leftovers of a killed writer
/// removed, everything of an earlier attempt removed on a `fresh` start, and the
/// resolved config and the data manifest written.
fn open_dir(dir: &RunDir, spec: &Spec, id: &Identity, fresh: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.path()).with_context(|| format!("cannot create run directory {}", dir.display()))?;
    dir.remove_temporaries();
    if fresh {
        // A fresh start: nothing of an earlier attempt survives it.
        dir.remove_outputs();
    }
    write_atomic(&dir.config(), spec.to_toml().as_bytes())?;
    write_atomic(&dir.manifest(), data::manifest_csv(&id.manifest).as_bytes())
}

fn new_summary(spec: &Spec, id: &Identity, trainer: &Trainer, threads: i32, device: Device) -> Summary {
    Summary {
        run_id: id.run_id.clone(),
        experiment: spec.name.clone(),
        name: spec.label.clone(),
        status: Status::Running,
        monitor: spec.monitor(),
        best_value: None,
        best_val_acc: None,
        best_epoch: None,
        final_value: None,
        final_val_acc: None,
        phases: vec![],
        epochs: 0,
        epochs_planned: spec.total_epochs(),
        early_stopping: None,
        found_lr: Default::default(),
        test_acc: None,
        test_loss: None,
        calibration: None,
        resumed_after: vec![],
        wall_s: 0.0,
        started: Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()),
        runner_version: env!("CARGO_PKG_VERSION").into(),
        runner_commit: Some(env!("RUNNER_COMMIT").into()),
        numerics_version: NUMERICS_VERSION,
        backbone: spec.model.backbone.to_string(),
        classes: trainer.data().classes.clone(),
        train_images: trainer.data().train.len(),
        val_images: trainer.data().val.len(),
        skipped_files: trainer.data().skipped.len(),
        class_weights: trainer.class_weights(),
        test_images: trainer.data().test.len(),
        data_root: std::path::absolute(&id.files.root).ok().map(|p| p.display().to_string()),
        manifest_sha256: id.manifest_sha256.clone(),
        threads,
        interop_threads: tch::get_num_interop_threads(),
        precision: trainer.precision(),
        device: format!("{device:?}").to_lowercase(),
        error: None,
        tracking: None,
        machine: Some(crate::sys::numerics::Machine::here(spec.reproducibility.name())),
    }
}

/// The run's first line in run.log: a start, or a resume (recorded in the summary).
fn log_start(log: &mut RunLog, summary: &mut Summary, spec: &Spec, resume: Option<&Checkpoint>, dir: &RunDir) {
    let threads = summary.threads;
    let Some(ck) = resume else {
        let named = if spec.label.is_empty() { String::new() } else { format!(" ({})", spec.label) };
        log.line(&format!(
            "starting run {}{named} of {}: {} epochs, {} train / {} val / {} test images, {threads} threads, {}",
            summary.run_id,
            spec.name,
            spec.total_epochs(),
            summary.train_images,
            summary.val_images,
            summary.test_images,
            summary.device
        ));
        return;
    };
    let before = Summary::read(dir);
    summary.started = before.as_ref().and_then(|s| s.started.clone()).or(summary.started.take());
    summary.resumed_after = before.map(|s| s.resumed_after).unwrap_or_default();
    summary.resumed_after.push(ck.state.epoch);
    log.line(&format!(
        "resuming run {} after epoch {} of {} ({threads} threads; it started with {})",
        summary.run_id,
        ck.state.epoch,
        spec.total_epochs(),
        ck.state.threads
    ));
    if ck.state.threads != threads {
        crate::sys::reporter::note(&format!(
            "warning: resuming with {threads} threads, the run started with {}: the numbers may differ \
             in the last digits from an uninterrupted run",
            ck.state.threads
        ));
    }
}

/// A warning for each class without a validation image: its accuracy is never measured.
fn warn_unvalidated(trainer: &Trainer, log: &mut RunLog) {
    let labels = Vec::<i64>::try_from(&trainer.data().val.labels.to_device(Device::Cpu)).unwrap_or_default();
    for (c, name) in trainer.data().classes.iter().enumerate() {
        if !labels.contains(&(c as i64)) {
            log.warning(&format!(
                "class `{name}` has no validation images, so its accuracy is not measured (add images, or a \
                 larger validation fraction in data.split)"
            ));
        }
    }
}

/// skipped.csv and a warning, when some image files could not be read.
fn record_skipped(dir: &RunDir, trainer: &Trainer, log: &mut RunLog) -> anyhow::Result<()> {
    let skipped = &trainer.data().skipped;
    if skipped.is_empty() {
        return Ok(());
    }
    let columns = vec![
        Column::new("path".into(), skipped.iter().map(|s| s.path.as_str()).collect::<Vec<_>>()),
        Column::new("reason".into(), skipped.iter().map(|s| s.reason.as_str()).collect::<Vec<_>>()),
    ];
    table::write_csv(&dir.skipped(), columns, None)?;
    log.warning(&format!("skipped {} unreadable image files (listed in {})", skipped.len(), dir.skipped().display()));
    Ok(())
}

/// Records how the run ended (summary, run.log); a completed run drops its checkpoint.
fn finish(
    dir: &RunDir,
    summary: &mut Summary,
    log: &mut RunLog,
    started: Instant,
    result: crate::Result<()>,
    paused: bool,
) -> crate::Result<()> {
    summary.wall_s = started.elapsed().as_secs_f64();
    match &result {
        Ok(()) if paused => summary.status = Status::Paused,
        Ok(()) => summary.status = Status::Completed,
        Err(e) => {
            summary.status = match e {
                Error::Diverged { .. } => Status::Diverged,
                Error::Interrupted { .. } => Status::Interrupted,
                _ => Status::Failed,
            };
            summary.error = Some(format!("{e:#}"));
        }
    }
    summary.write(dir)?;
    match result {
        Ok(()) if paused => {
            log.file_line(&format!("paused after epoch {} (the checkpoint is kept)", summary.epochs));
            Ok(())
        }
        Ok(()) => {
            log.file_line(&format!("completed in {:.1}s", summary.wall_s));
            // The best weights and the metrics are the result; the last epoch's state is no longer needed.
            let _ = std::fs::remove_file(dir.checkpoint());
            Ok(())
        }
        Err(cause) => {
            log.file_line(&format!("{}: {cause:#}", summary.status.name()));
            Err(Error::Run { run_id: summary.run_id.clone(), dir: dir.path().to_path_buf(), cause: Box::new(cause) })
        }
    }
}
