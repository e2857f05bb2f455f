//! One run of a spec, end to end: check everything that can be checked before
//! anything is written, then train the phases in order and keep the run
//! directory (`<out>/<experiment>/<run-id>/`) up to date after every epoch.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tch::{Device, nn};

use crate::atomic::{with_temp_path, write_atomic};
use crate::backbone::Classifier;
use crate::data::{self, Dataset, Transform};
use crate::experiment::Experiment;
use crate::spec::{Classes, Spec, SpecError};
use crate::table::{self, EpochRecord};
use crate::train::Trainer;
use crate::{plot, weights};

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Root of the run directories (`reports/runs` by default).
    pub out: PathBuf,
    /// Rerun even when a completed result exists.
    pub force: bool,
    pub quiet: bool,
    pub device: Device,
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
    pub best_val_acc: Option<f64>,
    pub best_epoch: Option<usize>,
    /// Epochs completed.
    pub epochs: usize,
    pub epochs_planned: usize,
    pub wall_s: f64,
    pub runner_version: String,
    pub backbone: String,
    pub classes: Vec<String>,
    pub train_images: usize,
    pub val_images: usize,
    pub skipped_files: usize,
    pub test_images: usize,
    /// sha256 of manifest.csv: exactly which files (and contents) the run used.
    pub manifest_sha256: String,
    pub threads: i32,
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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

/// The id of a run of `spec` on the data whose manifest.csv has this sha256.
pub fn run_id(spec: &Spec, manifest_sha256: &str) -> String {
    let mut bytes = spec.canonical();
    bytes.push(b'\n');
    bytes.extend_from_slice(manifest_sha256.as_bytes());
    weights::sha256_hex(&bytes)[..10].to_string()
}

/// The files of a spec's data: its source made a folder (downloaded, extracted), then split.
pub fn data_files(spec: &Spec, quiet: bool) -> Result<data::FileSplit> {
    let root = crate::archive::materialize(&spec.data.source, quiet)?;
    data::discover(&root, &spec.data.split, spec.seed)
}

/// Finds a run's data and hashes every file of it (no decoding) to name the run.
pub fn identify(spec: &Spec, quiet: bool) -> Result<Identity> {
    let files = data_files(spec, quiet)?;
    let manifest = data::manifest(&files, quiet)?;
    let manifest_sha256 = weights::sha256_hex(data::manifest_csv(&manifest).as_bytes());
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
    Ok(Trainer::new(vs, model, dataset, transform, spec.data.batch_size, spec.seed, quiet))
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
/// run starts. Datasets that cannot be read are left for the run to report.
pub fn preflight(exp: &Experiment) -> Result<(), SpecError> {
    for (i, run) in exp.runs.iter().enumerate() {
        let spec = &run.spec;
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

/// Runs `spec` into its run directory under `opts.out`.
pub fn execute(spec: &Spec, opts: &RunOptions) -> Result<RunOutcome> {
    let started = Instant::now();
    let id = identify(spec, opts.quiet)?;
    let dir = run_dir(&opts.out, spec, &id);
    if let Some(summary) = read_summary(&dir)
        && summary.status == Status::Completed
        && !opts.force
    {
        return Ok(RunOutcome { dir, summary, ran: false });
    }
    let threads = configure_threads();
    let mut trainer = prepare_files(spec, &id.files, opts.device, opts.quiet)?;

    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create run directory {}", dir.display()))?;
    // A forced rerun starts clean: stale metrics or weights must not survive it.
    for stale in ["metrics.csv", "metrics.parquet", "curves.png", "best.safetensors", "skipped.csv", "manifest.csv"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    write_atomic(&dir.join("config.toml"), spec.to_toml().as_bytes())?;
    write_atomic(&dir.join("manifest.csv"), data::manifest_csv(&id.manifest).as_bytes())?;
    let mut summary = Summary {
        run_id: id.run_id.clone(),
        experiment: spec.name.clone(),
        status: Status::Running,
        best_val_acc: None,
        best_epoch: None,
        epochs: 0,
        epochs_planned: spec.total_epochs(),
        wall_s: 0.0,
        runner_version: env!("CARGO_PKG_VERSION").into(),
        backbone: spec.model.backbone.to_string(),
        classes: trainer.data.classes.clone(),
        train_images: trainer.data.train.len(),
        val_images: trainer.data.val.len(),
        skipped_files: trainer.data.skipped.len(),
        test_images: trainer.data.test.len(),
        manifest_sha256: id.manifest_sha256.clone(),
        threads,
        device: format!("{:?}", opts.device).to_lowercase(),
        error: None,
    };
    if !trainer.data.skipped.is_empty() {
        write_skipped(&dir, &trainer.data.skipped)?;
        if !opts.quiet {
            eprintln!(
                "warning: skipped {} unreadable image files (listed in {})",
                trainer.data.skipped.len(),
                dir.join("skipped.csv").display()
            );
        }
    }
    write_summary(&dir, &summary)?;

    let result = train_all(spec, &mut trainer, &dir, &mut summary, opts.quiet, started);
    summary.wall_s = started.elapsed().as_secs_f64();
    match &result {
        Ok(()) => summary.status = Status::Completed,
        Err(e) => {
            let msg = format!("{e:#}");
            summary.status = if msg.contains("diverged") { Status::Diverged } else { Status::Failed };
            summary.error = Some(msg);
        }
    }
    write_summary(&dir, &summary)?;
    result.with_context(|| format!("run {} failed (partial results in {})", summary.run_id, dir.display()))?;
    Ok(RunOutcome { dir, summary, ran: true })
}

fn train_all(
    spec: &Spec,
    trainer: &mut Trainer,
    dir: &Path,
    summary: &mut Summary,
    quiet: bool,
    started: Instant,
) -> Result<()> {
    let total = spec.total_epochs();
    let title = format!("{} ({})", spec.name, summary.run_id);
    let mut rows: Vec<EpochRecord> = vec![];
    // After every epoch: best weights, metrics, curves and summary on disk.
    let mut on_epoch = |r: &EpochRecord, vs: &nn::VarStore| -> Result<()> {
        if !quiet {
            println!(
                "epoch {:>3}/{total} {:<18} lr {:.1e}  train loss {:.4} acc {:.4}  val loss {:.4} acc {:.4}  {:.1}s",
                r.epoch, r.phase, r.lr, r.train_loss, r.train_acc, r.val_loss, r.val_acc, r.seconds
            );
        }
        rows.push(r.clone());
        if r.val_acc.is_finite() && summary.best_val_acc.is_none_or(|best| r.val_acc > best) {
            save_weights(vs, &dir.join("best.safetensors"))?;
            summary.best_val_acc = Some(r.val_acc);
            summary.best_epoch = Some(r.epoch);
        }
        summary.epochs = r.epoch;
        summary.wall_s = started.elapsed().as_secs_f64();
        table::write_metrics(dir, &rows)?;
        plot::write_curves(&dir.join("curves.png"), &title, &rows)?;
        write_summary(dir, summary)
    };
    let mut first_epoch = 1;
    for (phase, lr) in spec.phases.iter().zip(spec.phase_lrs()) {
        trainer.train_phase(phase, lr, first_epoch, total, &mut on_epoch)?;
        first_epoch += phase.epochs;
    }
    Ok(())
}

/// Saves every variable (backbone and head) as safetensors, atomically.
pub fn save_weights(vs: &nn::VarStore, path: &Path) -> Result<()> {
    let mut named: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
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

/// intra-op threads = cores, inter-op = 1; returns the intra-op count.
fn configure_threads() -> i32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as i32;
    let threads = std::env::var("RUNNER_THREADS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(cores);
    tch::set_num_threads(threads);
    threads
}
