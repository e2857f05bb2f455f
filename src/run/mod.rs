//! One run of a spec, end to end: check everything that can be checked before
//! anything is written, then train the phases in order and keep the run
//! directory (`<out>/<experiment>/<run-id>/`) up to date after every epoch.

pub mod lock;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor, nn};

use crate::config::experiment::Experiment;
use crate::config::spec::{Classes, Monitor, Precision, Spec, StopScope};
use crate::data::{self, Dataset, Transform};
use crate::error::{Error, SpecError};
use crate::model::Classifier;
use crate::model::weights;
use crate::record::checkpoint::{self, Best, Checkpoint, EarlyStopState, TrainState};
use crate::record::confusion::Confusion;
use crate::record::plot;
use crate::record::table;
use crate::sys::atomic::{with_temp_path, write_atomic};
use crate::sys::fetch::sha256_hex;
use crate::train::Trainer;
use crate::train::metrics::EpochRecord;

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Root of the run directories (`reports/runs` by default).
    pub out: PathBuf,
    /// Rerun even when a completed result exists.
    pub force: bool,
    pub quiet: bool,
    /// Continue an interrupted run from its checkpoint.
    pub resume: bool,
    /// With `resume`: when the spec's run has no directory but the experiment has an
    /// interrupted run of another config, refuse (a single-run spec that was edited).
    /// Off for grids, whose other points are legitimately other configs.
    pub refuse_changed_config: bool,
    pub device: Device,
    /// Intra-op threads; `None`: `RUNNER_THREADS`, else every core.
    pub threads: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Completed,
    Failed,
    Diverged,
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
    /// [`NUMERICS_VERSION`] of the runner that ran it (1: before it was recorded).
    #[serde(default = "numerics_v1")]
    pub numerics_version: u32,
    pub backbone: String,
    pub classes: Vec<String>,
    pub train_images: usize,
    pub val_images: usize,
    pub skipped_files: usize,
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
}

impl Status {
    /// The status as summary.json spells it.
    pub fn name(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Diverged => "diverged",
        }
    }
}

fn numerics_v1() -> u32 {
    1
}

pub struct RunOutcome {
    pub dir: PathBuf,
    pub summary: Summary,
    /// False when a completed result already existed and nothing ran.
    pub ran: bool,
}

/// What a run is: its resolved spec and the exact files of its data.
pub struct Identity {
    /// Short hash of the canonical spec and the manifest's sha256.
    pub run_id: String,
    pub files: data::FileSplit,
    pub manifest: Vec<data::ManifestRow>,
    pub manifest_sha256: String,
}

/// The version of the numbers runner computes from a spec. Bump it with any change that
/// makes a spec give other metrics (seeding, optimizer formulas, layouts, ...): runs
/// completed by an earlier version then get new ids and run again instead of being
/// reported "already completed" with the old numbers. CI's `runner verify` of the
/// recorded experiment (scripts/ci-verify.sh) is what notices a forgotten bump.
/// 3: BatchNorm folded into the convolution in inference, drop-connect as one multiply.
pub const NUMERICS_VERSION: u32 = 3;

/// The id of a run of `spec` on the data whose manifest.csv has this sha256.
pub fn run_id(spec: &Spec, manifest_sha256: &str) -> String {
    let mut bytes = spec.canonical();
    bytes.push(b'\n');
    bytes.extend_from_slice(manifest_sha256.as_bytes());
    // Runs of version 1 (before the version existed) hashed nothing more: they all get new ids.
    bytes.extend_from_slice(format!("\nnumerics {NUMERICS_VERSION}").as_bytes());
    sha256_hex(&bytes)[..10].to_string()
}

/// The files of a spec's data: its source made a folder (downloaded, extracted), then split.
pub fn data_files(spec: &Spec, quiet: bool) -> Result<data::FileSplit> {
    let root = crate::data::archive::materialize(&spec.data.source, quiet)?;
    data::discover(&root, &spec.data.split, spec.seed)
}

/// Finds a run's data and hashes every file of it (no decoding) to name the run.
pub fn identify(spec: &Spec, quiet: bool) -> Result<Identity> {
    let files = data_files(spec, quiet)?;
    let manifest = data::manifest(&files, quiet)?;
    let manifest_sha256 = sha256_hex(data::manifest_csv(&manifest).as_bytes());
    Ok(Identity { run_id: run_id(spec, &manifest_sha256), files, manifest, manifest_sha256 })
}

pub fn run_dir(out: &Path, spec: &Spec, id: &Identity) -> PathBuf {
    out.join(&spec.name).join(&id.run_id)
}

pub fn read_summary(dir: &Path) -> Option<Summary> {
    let text = std::fs::read_to_string(dir.join("summary.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Everything a run needs, checked and loaded, with nothing written yet.
pub fn prepare(spec: &Spec, device: Device, quiet: bool) -> Result<Trainer> {
    prepare_files(spec, &data_files(spec, quiet)?, device, quiet)
}

/// [`prepare`] for data already discovered.
pub fn prepare_files(spec: &Spec, files: &data::FileSplit, device: Device, quiet: bool) -> Result<Trainer> {
    let backbone = spec.model.backbone;
    let source = weights::resolve(backbone, &spec.model.weights, spec.model.sha256.as_deref(), quiet)?;
    if let Some(msg) = head_mismatch(spec, &files.classes) {
        bail!("model.head.classes: {msg}");
    }
    let dataset: Dataset = data::load(files, spec.data.image_size, spec.data.strict, quiet)?;

    tch::manual_seed(spec.seed as i64);
    let mut vs = nn::VarStore::new(device);
    let dropout = spec.model.head.dropout.unwrap_or(backbone.default_dropout());
    let hidden: Vec<i64> = spec.model.head.hidden.iter().map(|&h| h as i64).collect();
    let model = Classifier::with_hidden(backbone, &vs.root(), dataset.classes.len() as i64, dropout, &hidden);
    if let weights::WeightsSource::File(path) = &source {
        let entries = weights::read(path)?;
        weights::load_into(&mut vs, entries, Some(backbone.classifier_prefix()), path)?;
    }
    let (mean, std) = backbone.normalization();
    let transform = Transform::new(spec.data.image_size, &spec.data.augment, mean, std);
    let mut trainer = Trainer::new(vs, model, dataset, transform, spec.data.batch_size, spec.seed, quiet);
    trainer.cache = spec.data.cache;
    trainer.cache_views = spec.data.cache_views;
    trainer.precision = spec.precision;
    if spec.precision == Precision::Fp16 && !device.is_cuda() {
        if !quiet {
            eprintln!("warning: precision = \"fp16\" needs a CUDA device; training in fp32 on the CPU");
        }
        trainer.precision = Precision::Fp32;
    }
    Ok(trainer)
}

/// Why `model.head.classes` cannot fit a dataset with these classes, if it cannot.
fn head_mismatch(spec: &Spec, classes: &[String]) -> Option<String> {
    match spec.model.head.classes {
        Classes::Count(n) if n != classes.len() => Some(format!(
            "expected {} to match the {} class folders of {} ({}), found {n}",
            classes.len(),
            classes.len(),
            spec.data.source,
            classes.join(", ")
        )),
        _ => None,
    }
}

/// Checks of the runs of an experiment that need to look at their data, before any
/// run starts. Datasets that cannot be read are left for the run to report, and so are
/// those still to be downloaded or generated: a plan or a dry run fetches nothing.
pub fn preflight(exp: &Experiment) -> Result<(), SpecError> {
    for (i, run) in exp.runs.iter().enumerate() {
        let spec = &run.spec;
        if crate::data::archive::needs_fetch(&spec.data.source) {
            continue;
        }
        let Ok(files) = data_files(spec, false) else { continue };
        if let Some(msg) = head_mismatch(spec, &files.classes) {
            let mut e = exp.source.error(&["model", "head", "classes"], msg);
            if exp.runs.len() > 1 {
                e.message.push_str(&format!(" (run {} of the grid)", i + 1));
            }
            return Err(e);
        }
    }
    Ok(())
}

/// The files a run writes; a fresh start removes them all first.
const OUTPUTS: [&str; 13] = [
    "metrics.csv",
    "metrics.parquet",
    "timing.csv",
    "curves.png",
    "best.safetensors",
    "skipped.csv",
    "manifest.csv",
    "test_metrics.csv",
    "confusion.csv",
    "confusion.png",
    "run.log",
    "summary.json",
    checkpoint::FILE,
];

/// Runs `spec` into its run directory under `opts.out`.
pub fn execute(spec: &Spec, opts: &RunOptions) -> crate::Result<RunOutcome> {
    let id = identify(spec, opts.quiet)?;
    execute_identified(spec, &id, opts)
}

/// [`execute`] for a run already identified.
pub fn execute_identified(spec: &Spec, id: &Identity, opts: &RunOptions) -> crate::Result<RunOutcome> {
    let started = Instant::now();
    let dir = run_dir(&opts.out, spec, id);
    let completed = || read_summary(&dir).filter(|s| s.status == Status::Completed && !opts.force);
    if let Some(summary) = completed() {
        return Ok(RunOutcome { dir, summary, ran: false });
    }
    let lock_path = lock::path(&opts.out, &spec.name, &id.run_id);
    let busy = |holder: String| Error::Busy { experiment: spec.name.clone(), run_id: id.run_id.clone(), holder };
    if let Some(holder) = lock::holder_of(&lock_path) {
        return Err(busy(holder));
    }
    let config_sha256 = sha256_hex(&spec.canonical());
    let checkpoint_path = dir.join(checkpoint::FILE);
    let modified = || std::fs::metadata(&checkpoint_path).and_then(|m| m.modified()).ok();
    // What can be refused is refused before the slow part (data, weights).
    let seen = modified();
    let mut resume = find_checkpoint(spec, id, &dir, opts, &config_sha256)?;
    crate::sys::malloc::tune()?;
    let threads = configure_threads(opts.threads);
    let mut trainer = prepare_files(spec, &id.files, opts.device, opts.quiet)?;

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

    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create run directory {}", dir.display()))?;
    remove_temporaries(&dir);
    if resume.is_none() {
        // A fresh start: nothing of an earlier attempt survives it.
        for stale in OUTPUTS {
            let _ = std::fs::remove_file(dir.join(stale));
        }
    }
    write_atomic(&dir.join("config.toml"), spec.to_toml().as_bytes())?;
    write_atomic(&dir.join("manifest.csv"), data::manifest_csv(&id.manifest).as_bytes())?;
    let mut log = RunLog::open(&dir, opts.quiet);
    let mut summary = Summary {
        run_id: id.run_id.clone(),
        experiment: spec.name.clone(),
        status: Status::Running,
        monitor: spec.monitor(),
        best_value: None,
        best_val_acc: None,
        best_epoch: None,
        epochs: 0,
        epochs_planned: spec.total_epochs(),
        early_stopping: None,
        test_acc: None,
        test_loss: None,
        resumed_after: vec![],
        wall_s: 0.0,
        runner_version: env!("CARGO_PKG_VERSION").into(),
        numerics_version: NUMERICS_VERSION,
        backbone: spec.model.backbone.to_string(),
        classes: trainer.data.classes.clone(),
        train_images: trainer.data.train.len(),
        val_images: trainer.data.val.len(),
        skipped_files: trainer.data.skipped.len(),
        test_images: trainer.data.test.len(),
        manifest_sha256: id.manifest_sha256.clone(),
        threads,
        interop_threads: tch::get_num_interop_threads(),
        precision: trainer.precision,
        device: format!("{:?}", opts.device).to_lowercase(),
        error: None,
    };
    if let Some(ck) = &resume {
        let earlier = read_summary(&dir);
        summary.resumed_after = earlier.map(|s| s.resumed_after).unwrap_or_default();
        summary.resumed_after.push(ck.state.epoch);
        log.line(&format!(
            "resuming run {} after epoch {} of {} ({threads} threads; it started with {})",
            id.run_id,
            ck.state.epoch,
            spec.total_epochs(),
            ck.state.threads
        ));
        if ck.state.threads != threads && !opts.quiet {
            eprintln!(
                "warning: resuming with {threads} threads, the run started with {}: the numbers may differ \
                 in the last digits from an uninterrupted run",
                ck.state.threads
            );
        }
    } else {
        log.line(&format!(
            "starting run {} of {}: {} epochs, {} train / {} val / {} test images, {threads} threads, {}",
            id.run_id,
            spec.name,
            spec.total_epochs(),
            summary.train_images,
            summary.val_images,
            summary.test_images,
            summary.device
        ));
    }
    if let Some(note) = trainer.place_data() {
        log.line(&note);
    }
    if !trainer.data.skipped.is_empty() {
        write_skipped(&dir, &trainer.data.skipped)?;
        let msg = format!(
            "skipped {} unreadable image files (listed in {})",
            trainer.data.skipped.len(),
            dir.join("skipped.csv").display()
        );
        if !opts.quiet {
            eprintln!("warning: {msg}");
        }
        log.quiet_line(&msg);
    }
    write_summary(&dir, &summary)?;

    let state = match resume {
        Some(ck) => restore(&mut trainer, ck)?,
        None => {
            let mut state = TrainState::new(&id.run_id, &config_sha256, threads);
            state.early_stopping =
                spec.early_stopping.as_ref().map(|e| EarlyStopState::new(e.monitor, e.patience, e.min_delta));
            (state, vec![], vec![])
        }
    };
    let result = train_all(spec, &mut trainer, &dir, &mut summary, state, &mut log, started)
        .and_then(|()| Ok(evaluate_test(spec, &mut trainer, &dir, &mut summary, &mut log)?));
    summary.wall_s = started.elapsed().as_secs_f64();
    match &result {
        Ok(()) => summary.status = Status::Completed,
        Err(e) => {
            summary.status = if matches!(e, Error::Diverged { .. }) { Status::Diverged } else { Status::Failed };
            summary.error = Some(format!("{e:#}"));
        }
    }
    write_summary(&dir, &summary)?;
    log.quiet_line(&match &result {
        Ok(()) => format!("completed in {:.1}s", summary.wall_s),
        Err(e) => format!("{}: {e:#}", summary.status.name()),
    });
    if result.is_ok() {
        // The best weights and the metrics are the result; the last epoch's state is no longer needed.
        let _ = std::fs::remove_file(&checkpoint_path);
    }
    if let Err(cause) = result {
        return Err(Error::Run { run_id: summary.run_id, dir, cause: Box::new(cause) });
    }
    Ok(RunOutcome { dir, summary, ran: true })
}

/// The checkpoint to resume from, if the run has one and may continue: an error when
/// it may not (no `--resume`, or another config wrote it).
fn find_checkpoint(
    spec: &Spec,
    id: &Identity,
    dir: &Path,
    opts: &RunOptions,
    config_sha256: &str,
) -> Result<Option<Checkpoint>> {
    let checkpoint_path = dir.join(checkpoint::FILE);
    if checkpoint_path.exists() && !opts.force {
        let ck = Checkpoint::read(&checkpoint_path)?;
        if !opts.resume {
            bail!(
                "{} holds an interrupted run (checkpoint after epoch {} of {}): pass --resume to continue it, \
                 or --force to start it over",
                dir.display(),
                ck.state.epoch,
                spec.total_epochs()
            );
        }
        if ck.state.config_sha256 != config_sha256 || ck.state.run_id != id.run_id {
            bail!(
                "refusing to resume: {} was written by a different config (run {}, config sha256 {}); \
                 this spec is run {}. Use --force to start over",
                checkpoint_path.display(),
                ck.state.run_id,
                &ck.state.config_sha256[..12.min(ck.state.config_sha256.len())],
                id.run_id
            );
        }
        Ok(Some(ck))
    } else {
        if opts.resume && opts.refuse_changed_config && !opts.force && !dir.exists() {
            refuse_changed_config(&opts.out, spec)?;
        }
        Ok(None)
    }
}

/// `--resume` for a spec that has no run directory: if the same experiment has an
/// interrupted run of another config, say how its config differs instead of starting afresh.
fn refuse_changed_config(out: &Path, spec: &Spec) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(out.join(&spec.name)) else { return Ok(()) };
    let mine = serde_json::to_value(spec)?;
    for entry in entries.flatten() {
        let dir = entry.path();
        // Interrupted: a checkpoint, and neither completed nor diverged (a diverged run keeps its last one).
        let interrupted = dir.join(checkpoint::FILE).exists()
            && read_summary(&dir).is_none_or(|s| matches!(s.status, Status::Running | Status::Failed));
        if !interrupted {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(dir.join("config.toml")) else { continue };
        let Ok(theirs) = toml::from_str::<Spec>(&text) else { continue };
        let mut changes = vec![];
        diff_values("", &serde_json::to_value(&theirs)?, &mine, &mut changes);
        bail!(
            "refusing to resume: the interrupted run {} of `{}` has a different config ({}); resuming it with \
             this spec would mix two experiments. Restore the spec, or run without --resume to start a new run",
            dir.display(),
            spec.name,
            if changes.is_empty() { "its data changed".to_string() } else { changes.join(", ") }
        );
    }
    Ok(())
}

/// Dotted keys whose values differ, as `key: old -> new`.
fn diff_values(prefix: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    let key = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                diff_values(&key(k), a.get(k).unwrap_or(&Value::Null), b.get(k).unwrap_or(&Value::Null), out);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_values(&key(&i.to_string()), x, y, out);
            }
        }
        (a, b) if a != b => out.push(format!("{prefix}: {a} -> {b}")),
        _ => {}
    }
}

/// Removes temporary files left by a process killed while writing.
fn remove_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A run's training state, its metrics rows and its current optimizer's state.
type Restored = (TrainState, Vec<EpochRecord>, Vec<(String, Tensor)>);

/// Puts a checkpoint's weights into the model; returns its state, metrics rows and optimizer state.
fn restore(trainer: &mut Trainer, ck: Checkpoint) -> Result<Restored> {
    let vars = trainer.vs.variables();
    if ck.model.len() != vars.len() {
        bail!("the checkpoint holds {} variables, the model {}", ck.model.len(), vars.len());
    }
    tch::no_grad(|| -> Result<()> {
        for (name, value) in &ck.model {
            let Some(var) = vars.get(name) else { bail!("the checkpoint's variable {name} is not in the model") };
            if var.size() != value.size() {
                bail!("checkpoint variable {name} has shape {:?}, the model {:?}", value.size(), var.size());
            }
            var.shallow_clone().copy_(value);
        }
        Ok(())
    })?;
    if let Some(scaler) = &ck.state.scaler {
        trainer.scaler = scaler.clone();
    }
    Ok((ck.state, ck.rows, ck.optimizer))
}

fn train_all(
    spec: &Spec,
    trainer: &mut Trainer,
    dir: &Path,
    summary: &mut Summary,
    (mut state, mut rows, mut optimizer_state): Restored,
    log: &mut RunLog,
    started: Instant,
) -> crate::Result<()> {
    let total = spec.total_epochs();
    let title = format!("{} ({})", spec.name, summary.run_id);
    let monitor = spec.monitor();
    let scope = spec.early_stopping.as_ref().map(|e| e.scope);
    let lrs = spec.phase_lrs();
    let best_path = dir.join("best.safetensors");
    sync_summary(summary, &state, &rows);
    while !state.finished {
        let p = state.next_phase;
        let phase = &spec.phases[p];
        trainer.later_boundaries =
            spec.phases[p + 1..].iter().map(|later| trainer.frozen_layers(later.freeze_up_to)).collect();
        let mut run = trainer.start_phase(phase, lrs[p]);
        log.line(&format!("phase {} ({}): {}", p + 1, phase.name, run.cache_note));
        if state.next_phase_epoch > 0 {
            run.opt.load_state(&optimizer_state).context("cannot restore the optimizer from the checkpoint")?;
        } else if scope == Some(StopScope::Phase)
            && let Some(es) = &mut state.early_stopping
        {
            es.reset();
        }
        optimizer_state.clear();
        for e in state.next_phase_epoch..phase.epochs {
            let epoch = state.epoch + 1;
            let lr = phase.schedule.lr_at(lrs[p], e, phase.epochs);
            let r = trainer.run_epoch(&mut run, lr, epoch, total);
            log.line(&r.log_line(total));
            rows.push(r.clone());
            if !r.train_loss.is_finite() {
                // The weights are ruined: keep the metrics so far and the last good checkpoint as they are.
                table::write_metrics(dir, &rows)?;
                plot::write_curves(&dir.join("curves.png"), &title, &rows)?;
                summary.epochs = epoch;
                return Err(Error::Diverged { epoch, loss: r.train_loss });
            }
            let value = r.monitored(monitor);
            if monitor.improves(value, state.best.as_ref().map(|b| b.value), 0.0) {
                save_weights(&trainer.vs, &best_path)?;
                state.best = Some(Best { epoch, monitor, value });
            }
            let stop = state.early_stopping.as_mut().is_some_and(|es| es.update(epoch, value));
            state.epoch = epoch;
            state.row_phases.push(phase.name.clone());
            let phase_over = stop || e + 1 == phase.epochs;
            if phase_over {
                state.next_phase = p + 1;
                state.next_phase_epoch = 0;
                state.finished = state.next_phase == spec.phases.len() || (stop && scope == Some(StopScope::Run));
            } else {
                state.next_phase_epoch = e + 1;
            }
            table::write_metrics(dir, &rows)?;
            plot::write_curves(&dir.join("curves.png"), &title, &rows)?;
            state.scaler = (trainer.precision == Precision::Fp16).then(|| trainer.scaler.clone());
            let ck = Checkpoint {
                state: state.clone(),
                rows: rows.clone(),
                model: named_variables(&trainer.vs),
                optimizer: if phase_over { vec![] } else { run.opt.state_tensors() },
            };
            ck.write(&dir.join(checkpoint::FILE))?;
            sync_summary(summary, &state, &rows);
            summary.wall_s = started.elapsed().as_secs_f64();
            write_summary(dir, summary)?;
            if stop {
                let es = state.early_stopping.as_ref().expect("stopping needs early stopping");
                log.line(&format!(
                    "early stopping after epoch {epoch}: {} has not improved by more than {} for {} epochs \
                     (best {:.4} at epoch {}){}",
                    monitor.name(),
                    es.min_delta,
                    es.patience,
                    es.best.unwrap_or(f64::NAN),
                    es.best_epoch.unwrap_or(0),
                    if state.finished { "" } else { "; going on with the next phase" }
                ));
            }
            if phase_over {
                break;
            }
        }
    }
    Ok(())
}

/// The summary's view of the training state.
fn sync_summary(summary: &mut Summary, state: &TrainState, rows: &[EpochRecord]) {
    summary.epochs = state.epoch;
    summary.best_epoch = state.best.as_ref().map(|b| b.epoch);
    summary.best_value = state.best.as_ref().map(|b| b.value);
    summary.best_val_acc = summary.best_epoch.and_then(|e| rows.get(e - 1)).map(|r| r.val_acc);
    summary.early_stopping = state.early_stopping.clone();
}

/// With a test split: the best weights, evaluated once on it.
fn evaluate_test(
    spec: &Spec,
    trainer: &mut Trainer,
    dir: &Path,
    summary: &mut Summary,
    log: &mut RunLog,
) -> Result<()> {
    let best = dir.join("best.safetensors");
    if trainer.data.test.is_empty() || !best.exists() {
        return Ok(());
    }
    tch::no_grad(|| trainer.vs.read_safetensors(&best)).with_context(|| format!("cannot load {}", best.display()))?;
    let (loss, acc, predicted) = trainer.evaluate_and_predict(&trainer.data.test);
    let truth = Vec::<i64>::try_from(&trainer.data.test.labels.to_device(Device::Cpu)).context("test labels")?;
    let confusion = Confusion::new(&trainer.data.classes, &truth, &predicted);
    confusion.write(dir)?;
    plot::write_confusion(&dir.join("confusion.png"), &format!("{} ({})", spec.name, summary.run_id), &confusion)?;
    summary.test_acc = Some(acc);
    summary.test_loss = Some(loss);
    log.line(&format!(
        "test ({} images, best weights of epoch {}): loss {loss:.4} acc {acc:.4}; per class in {}",
        trainer.data.test.len(),
        summary.best_epoch.unwrap_or(0),
        dir.join("test_metrics.csv").display()
    ));
    Ok(())
}

/// Every variable by name, sorted, in standard (contiguous NCHW) memory.
fn named_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (n, t.contiguous())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// run.log in the run directory: what happened, with times; lines also go to
/// stdout unless quiet. Logging never fails a run.
struct RunLog {
    file: Option<std::fs::File>,
    quiet: bool,
}

impl RunLog {
    fn open(dir: &Path, quiet: bool) -> RunLog {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("run.log")).ok();
        RunLog { file, quiet }
    }

    /// Logs and prints.
    fn line(&mut self, msg: &str) {
        if !self.quiet {
            println!("{msg}");
        }
        self.quiet_line(msg);
    }

    /// Logs only.
    fn quiet_line(&mut self, msg: &str) {
        use std::io::Write;
        if let Some(f) = &mut self.file {
            let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
            let _ = writeln!(f, "{now} {msg}");
        }
    }
}

/// Saves every variable (backbone and head) as safetensors, atomically.
pub fn save_weights(vs: &nn::VarStore, path: &Path) -> Result<()> {
    let named = named_variables(vs);
    with_temp_path(path, |tmp| {
        tch::Tensor::write_safetensors(&named, tmp).with_context(|| format!("cannot write {}", tmp.display()))
    })
}

fn write_summary(dir: &Path, summary: &Summary) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(summary).context("cannot serialise summary")?;
    json.push(b'\n');
    write_atomic(&dir.join("summary.json"), &json)
}

fn write_skipped(dir: &Path, skipped: &[data::Skipped]) -> Result<()> {
    let mut csv = String::from("path,reason\n");
    for s in skipped {
        csv.push_str(&format!("{},{}\n", data::csv_field(&s.path), data::csv_field(&s.reason)));
    }
    write_atomic(&dir.join("skipped.csv"), csv.as_bytes())
}

/// intra-op threads = `threads`, else `RUNNER_THREADS`, else cores; inter-op = 1.
/// Returns the intra-op count.
fn configure_threads(threads: Option<i32>) -> i32 {
    static INTEROP: std::sync::Once = std::sync::Once::new();
    // libtorch accepts the inter-op count only once, before any parallel work.
    INTEROP.call_once(|| tch::set_num_interop_threads(1));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as i32;
    let threads = threads.filter(|n| *n > 0).unwrap_or_else(|| {
        std::env::var(crate::sys::env::THREADS).ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(cores)
    });
    tch::set_num_threads(threads);
    threads
}
