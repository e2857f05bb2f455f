//! `runner sweep`: every run of every spec under some paths, in one go.
//!
//! A sweep is idempotent: a run whose completed result exists (same run id) is
//! skipped, an interrupted one resumes from its checkpoint, the rest run. One
//! failed run does not stop the others. Any number of workers can share a sweep
//! on one filesystem with no coordinator: `--shard i/n` gives each a fixed
//! subset, and the run lock (`lock.rs`) makes sure no run is executed twice even
//! when their subsets overlap.

pub mod halving;
mod tpe;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, bail};

use crate::Error;
use crate::config::experiment::{Experiment, Override, PlannedRun, describe_varying};
use crate::config::spec::Spec;
use crate::record::summary::{Status, Summary};
use crate::run::lock;
use crate::run::{self, RunOptions};

/// One run of a sweep, where it comes from.
#[derive(Debug, Clone)]
pub struct SweepRun {
    pub spec_path: PathBuf,
    /// 1-based position in its spec's grid, and the grid's size.
    pub point: usize,
    pub points: usize,
    pub planned: PlannedRun,
    /// Its spec's `[search] method = "halving"`: the spec's runs are trials run together.
    pub halving: Option<crate::config::search::Halving>,
    /// Its spec's `[search] method = "tpe"`: the spec's runs are the search's startup
    /// trials; the search runs them and proposes the rest.
    pub tpe: Option<std::sync::Arc<crate::config::experiment::TpeTrials>>,
}

impl SweepRun {
    pub fn experiment(&self) -> &str {
        &self.planned.spec.name
    }

    pub fn varying(&self) -> String {
        describe_varying(&self.planned.varying)
    }
}

/// The spec files under `paths`: a file is taken as it is, a folder for every
/// `*.toml` below it, in file-name order, so that every worker sees the same list.
pub(crate) fn spec_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = vec![];
    for path in paths {
        if path.is_file() {
            files.push(path.clone());
            continue;
        }
        if !path.is_dir() {
            bail!("{}: no such spec file or folder", path.display());
        }
        let before = files.len();
        for entry in walkdir::WalkDir::new(path)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'))
        {
            let entry = entry.with_context(|| format!("cannot list {}", path.display()))?;
            if entry.file_type().is_file() && entry.path().extension().is_some_and(|e| e == "toml") {
                files.push(entry.into_path());
            }
        }
        if files.len() == before {
            bail!("{}: no spec files (*.toml) in this folder", path.display());
        }
    }
    Ok(files)
}

/// Loads every spec (all of them, before anything runs: a mistake in the tenth
/// spec is reported now, not hours later) and lists their runs in order.
pub fn expand(paths: &[PathBuf], overrides: &[Override]) -> crate::Result<Vec<SweepRun>> {
    let mut runs = vec![];
    for file in spec_files(paths)? {
        let exp = Experiment::load(&file, overrides)?;
        run::preflight(&exp)?;
        runs.extend(runs_of(&file, exp));
    }
    Ok(runs)
}

/// The runs of the experiment loaded from `file`, in grid order.
pub fn runs_of(file: &Path, exp: Experiment) -> Vec<SweepRun> {
    let points = exp.runs.len();
    let (halving, tpe) = (exp.halving, exp.tpe);
    exp.runs
        .into_iter()
        .enumerate()
        .map(|(i, planned)| SweepRun {
            spec_path: file.to_path_buf(),
            point: i + 1,
            points,
            planned,
            halving,
            tpe: tpe.clone(),
        })
        .collect()
}

/// `--shard i/n`: worker `i` (0-based) of `n` takes the runs at positions
/// `i, i + n, i + 2n, ...` of the sweep's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// A `--shard` value that is not `i/n` with `0 <= i < n`.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ShardError {
    #[error("shard index {index} is out of range: with {count} shards it is 0 to {}", count - 1)]
    OutOfRange { index: usize, count: usize },
    #[error("expected i/n with 0 <= i < n (e.g. 0/4, as $SLURM_ARRAY_TASK_ID counts), found `{0}`")]
    Malformed(String),
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Shard, ShardError> {
        let parsed = s.split_once('/').and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if count > 0 && index < count => Ok(Shard { index, count }),
            Some((index, count)) if count > 0 => Err(ShardError::OutOfRange { index, count }),
            _ => Err(ShardError::Malformed(s.to_string())),
        }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// This shard's runs. A halving search's trials go to every shard: its workers share
    /// them through the search's journal. A TPE search runs its trials one after another,
    /// each from the results before it: it goes to the first shard.
    pub fn select(self, runs: Vec<SweepRun>) -> Vec<SweepRun> {
        let (search, plain): (Vec<SweepRun>, Vec<SweepRun>) = runs.into_iter().partition(|r| r.halving.is_some());
        let (tpe, plain): (Vec<SweepRun>, Vec<SweepRun>) = plain.into_iter().partition(|r| r.tpe.is_some());
        let mut mine: Vec<SweepRun> =
            plain.into_iter().enumerate().filter(|(k, _)| k % self.count == self.index).map(|(_, r)| r).collect();
        mine.extend(search);
        if self.index == 0 {
            mine.extend(tpe);
        }
        mine
    }
}

/// What a sweep would do with a run now.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Run,
    /// An interrupted run with a checkpoint after this epoch.
    Resume(usize),
    /// Its completed result exists.
    Skip,
    /// Another process holds its lock.
    Busy(String),
    /// Its data cannot be read (the run will fail and say why).
    Unreadable(String),
    /// Its data is downloaded or generated first (the plan does neither, so has no run id);
    /// what is done first.
    Fetch(&'static str),
}

impl Action {
    /// What the sweep does, in one word: run, resume, skip or fail.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Run | Action::Fetch(_) => "run",
            Action::Resume(_) => "resume",
            Action::Skip | Action::Busy(_) => "skip",
            Action::Unreadable(_) => "fail",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Action::Run => "run".into(),
            Action::Resume(epoch) => format!("resume after epoch {epoch}"),
            Action::Skip => "skip (completed)".into(),
            Action::Busy(holder) => format!("skip (running: {holder})"),
            Action::Unreadable(e) => format!("fail ({e})"),
            Action::Fetch(first) => format!("run ({first})"),
        }
    }
}

/// The run id and what a sweep would do; reads the run's files, writes nothing.
pub fn plan(spec: &Spec, out: &Path) -> (Option<String>, Action) {
    if let Some(first) = crate::data::archive::pending(&spec.data.source) {
        return (None, Action::Fetch(first));
    }
    let id = match run::identify(spec) {
        Ok(id) => id,
        Err(e) => return (None, Action::Unreadable(format!("{e:#}"))),
    };
    let dir = run::run_dir(out, spec, &id);
    let summary = Summary::read(&dir);
    let action = if let Some(holder) = lock::holder_of(&lock::path(out, &spec.name, &id.run_id)) {
        Action::Busy(holder)
    } else if summary.as_ref().is_some_and(|s| s.status == Status::Completed) {
        Action::Skip
    } else if dir.checkpoint().exists() {
        Action::Resume(summary.map_or(0, |s| s.epochs))
    } else {
        Action::Run
    };
    (Some(id.run_id), action)
}

/// How a run of a sweep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Ran (or resumed) to completion now.
    Completed,
    /// Already completed before.
    Skipped,
    /// Another process was running it.
    Busy,
    Failed,
    Diverged,
    /// Stopped by a signal (the sweep stops with it).
    Interrupted,
    /// A halving search's trial that stopped at a lower rung (its checkpoint is kept).
    Pruned,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Skipped => "skipped",
            Outcome::Busy => "running elsewhere",
            Outcome::Failed => "failed",
            Outcome::Diverged => "diverged",
            Outcome::Interrupted => "interrupted",
            Outcome::Pruned => "pruned",
        }
    }

    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::Diverged | Outcome::Interrupted)
    }
}

/// One line of the sweep's closing table.
#[derive(Debug, Clone)]
pub struct Row {
    pub experiment: String,
    pub run_id: Option<String>,
    pub outcome: Outcome,
    pub best_val_acc: Option<f64>,
    pub best_epoch: Option<usize>,
    pub wall_s: Option<f64>,
    pub varying: String,
    /// Why it failed, or who runs it.
    pub note: Option<String>,
}

/// What the grid loop tells its caller as it goes: the binary prints it.
// One event per run, handed over at once: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Event<'a> {
    /// Run `k` (0-based) of the `total` in the list starts.
    Starts { k: usize, total: usize, run: &'a SweepRun },
    /// It ended: its row of the closing table, and what the run returned.
    Ended { run: &'a SweepRun, row: &'a Row, result: crate::Result<run::RunOutcome> },
    /// A halving search ended with an error of its own (its row says so too).
    SearchFailed(Error),
    /// A signal ended the loop with `left` runs not started.
    Interrupted { left: usize, total: usize },
}

/// The one loop over the runs of grids, for `runner run` and `runner sweep`: runs (or
/// skips, or resumes) each in order, a halving search's trials together as one search;
/// never stops at a failure, only at a signal. Every event goes to `observe`.
pub fn execute(runs: &[SweepRun], opts: &RunOptions, mut observe: impl FnMut(Event)) -> Vec<Row> {
    let total = runs.len();
    let mut rows = vec![];
    let mut searched: Vec<&Path> = vec![];
    for (k, run) in runs.iter().enumerate() {
        if crate::sys::signal::interrupted() {
            observe(Event::Interrupted { left: total - k, total });
            break;
        }
        if run.halving.is_some() || run.tpe.is_some() {
            if searched.contains(&run.spec_path.as_path()) {
                continue;
            }
            searched.push(&run.spec_path);
            let Some(h) = run.halving else {
                let tpe = run.tpe.as_ref().expect("a TPE search");
                rows.extend(tpe::execute(run, tpe, opts, &mut observe));
                continue;
            };
            let trials: Vec<SweepRun> = runs.iter().filter(|r| r.spec_path == run.spec_path).cloned().collect();
            match halving::execute(&trials, h, run.tpe.clone(), opts) {
                Ok(done) => rows.extend(done.rows),
                Err(error) => {
                    rows.push(search_failed(&trials, "halving search", &error));
                    observe(Event::SearchFailed(error));
                }
            }
            continue;
        }
        observe(Event::Starts { k, total, run });
        let spec = &run.planned.spec;
        let mut run_id = None;
        let result = run::identify(spec).map_err(Error::from).and_then(|id| {
            run_id = Some(id.run_id.clone());
            run::execute_identified(spec, &id, opts)
        });
        let row = Row::of(run, run_id, &result);
        observe(Event::Ended { run, row: &row, result });
        rows.push(row);
    }
    rows
}

impl Row {
    /// The closing table's row of a run that ended with `result`.
    fn of(run: &SweepRun, run_id: Option<String>, result: &crate::Result<run::RunOutcome>) -> Row {
        let mut row = Row {
            experiment: run.planned.spec.name.clone(),
            run_id,
            outcome: Outcome::Failed,
            best_val_acc: None,
            best_epoch: None,
            wall_s: None,
            varying: run.varying(),
            note: None,
        };
        match result {
            Ok(outcome) => {
                let s = &outcome.summary;
                row.outcome = if outcome.ran { Outcome::Completed } else { Outcome::Skipped };
                row.best_val_acc = s.best_val_acc;
                row.best_epoch = s.best_epoch;
                row.wall_s = Some(s.wall_s);
            }
            Err(e) => {
                row.outcome = match e.cause() {
                    Error::Busy { .. } => Outcome::Busy,
                    Error::Diverged { .. } => Outcome::Diverged,
                    Error::Interrupted { .. } => Outcome::Interrupted,
                    _ => Outcome::Failed,
                };
                row.note = Some(match e.cause() {
                    Error::Busy { holder, .. } => holder.clone(),
                    _ => format!("{e:#}"),
                });
            }
        }
        row
    }
}

/// The row of a search that failed as a whole (`what`: which kind of search).
fn search_failed(trials: &[SweepRun], what: &str, e: &Error) -> Row {
    let outcome = if matches!(e.cause(), Error::Interrupted { .. }) { Outcome::Interrupted } else { Outcome::Failed };
    Row {
        experiment: trials[0].planned.spec.name.clone(),
        run_id: None,
        outcome,
        best_val_acc: None,
        best_epoch: None,
        wall_s: None,
        varying: format!("{what} of {}", trials[0].spec_path.display()),
        note: Some(format!("{e:#}")),
    }
}

/// The closing table and its totals.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<20} {:<10} {:<17} {:>12} {:>5} {:>8}  varying\n",
        "experiment", "run id", "status", "best val_acc", "epoch", "wall"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<20} {:<10} {:<17} {:>12} {:>5} {:>8}  {}\n",
            r.experiment,
            r.run_id.as_deref().unwrap_or("?"),
            r.outcome.name(),
            r.best_val_acc.map_or("".into(), |a| format!("{a:.4}")),
            r.best_epoch.map_or("".into(), |e| e.to_string()),
            r.wall_s.map_or("".into(), |w| format!("{w:.1}s")),
            r.varying
        ));
    }
    let count = |o: Outcome| rows.iter().filter(|r| r.outcome == o).count();
    let pruned = match count(Outcome::Pruned) {
        0 => String::new(),
        n => format!(", {n} pruned by halving"),
    };
    out.push_str(&format!(
        "{} runs: {} completed, {} skipped (already completed), {} running elsewhere, {} failed, {} diverged{pruned}\n",
        rows.len(),
        count(Outcome::Completed),
        count(Outcome::Skipped),
        count(Outcome::Busy),
        count(Outcome::Failed),
        count(Outcome::Diverged)
    ));
    for r in rows.iter().filter(|r| r.outcome.is_failure()) {
        out.push_str(&format!(
            "  {} {} {}: {}\n",
            r.outcome.name(),
            r.experiment,
            r.run_id.as_deref().unwrap_or("?"),
            r.note.as_deref().unwrap_or("")
        ));
    }
    out
}

/// The cluster engines `--emit` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// A Slurm job-array script (sbatch).
    Slurm,
    /// A Kubernetes Indexed Job manifest (kubectl apply -f).
    K8s,
}

/// What `--emit` needs besides the sweep's own arguments.
#[derive(Debug, Clone)]
pub struct EmitOptions {
    /// Array tasks / indexed pods: the sweep is split into this many shards.
    pub workers: usize,
    /// GPUs per worker (0: CPU only).
    pub gpus: u32,
    pub job_name: String,
    /// Kubernetes: the container image, with runner on its PATH.
    pub image: Option<String>,
    /// Kubernetes: the PersistentVolumeClaim holding the project, mounted at /work.
    pub volume_claim: String,
}

/// The sweep's own arguments, as each worker is to repeat them.
#[derive(Debug, Clone)]
pub struct SweepArgs {
    pub paths: Vec<PathBuf>,
    pub sets: Vec<String>,
    pub out: PathBuf,
    pub device: String,
}

impl SweepArgs {
    /// `sweep ...` for one worker, paths relative to `cwd` where they lie under it.
    fn argv(&self, cwd: &Path, shard: &str) -> Vec<String> {
        let rel = |p: &Path| {
            let abs = if p.is_absolute() { p.to_path_buf() } else { cwd.join(p) };
            abs.strip_prefix(cwd).map_or(abs.clone(), Path::to_path_buf).to_string_lossy().into_owned()
        };
        let mut argv = vec!["sweep".to_string()];
        argv.extend(self.paths.iter().map(|p| rel(p)));
        for s in &self.sets {
            argv.extend(["--set".to_string(), s.clone()]);
        }
        argv.extend(["--out".into(), rel(&self.out), "--device".into(), self.device.clone()]);
        argv.extend(["--quiet".into(), "--shard".into(), shard.to_string()]);
        argv
    }
}

/// A job script or manifest that runs the sweep as `workers` shards, one per task.
pub fn emit(engine: Engine, args: &SweepArgs, opts: &EmitOptions) -> Result<String> {
    if opts.workers == 0 {
        bail!("--workers: expected at least 1");
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut args = args.clone();
    if args.device == "auto" {
        args.device = if opts.gpus > 0 { "cuda" } else { "cpu" }.into();
    }
    match engine {
        Engine::Slurm => slurm_array(&args, opts, &cwd),
        Engine::K8s => k8s_indexed_job(&args, opts, &cwd),
    }
}

/// A Slurm batch script whose array task i runs shard i of `opts.workers`.
fn slurm_array(args: &SweepArgs, opts: &EmitOptions, cwd: &Path) -> Result<String> {
    let n = opts.workers;
    let exe = std::env::current_exe().context("cannot find runner's own path")?;
    let mut argv = vec![exe.to_string_lossy().into_owned()];
    argv.extend(args.argv(cwd, "@SHARD@"));
    let quoted = shlex::try_join(argv.iter().map(String::as_str))
        .context("an argument holds a NUL byte")?
        .replace("@SHARD@", &format!("\"${{SLURM_ARRAY_TASK_ID}}/{n}\""));
    let gres = if opts.gpus > 0 { format!("#SBATCH --gres=gpu:{}\n", opts.gpus) } else { String::new() };
    let cwd = shlex::try_quote(&cwd.to_string_lossy()).context("the directory holds a NUL byte")?.into_owned();
    Ok(format!(
        "#!/bin/bash\n\
         # runner sweep as a Slurm job array: task i of {n} runs shard i/{n}.\n\
         # Submit with `sbatch <this file>`. Every task needs this directory on a shared\n\
         # filesystem with working file locks: the specs, the datasets, and {out}, where\n\
         # the run directories and their locks live. A task that is preempted or killed can\n\
         # be resubmitted: completed runs are skipped and interrupted ones resume.\n\
         #SBATCH --job-name={name}\n\
         #SBATCH --array=0-{last}\n\
         {gres}\
         #SBATCH --output={name}-%A_%a.log\n\
         set -euo pipefail\n\
         cd {cwd}\n\
         exec {quoted}\n",
        out = args.out.display(),
        name = opts.job_name,
        last = n - 1,
    ))
}

/// A Kubernetes Indexed Job whose pod i runs shard i of `opts.workers`.
fn k8s_indexed_job(args: &SweepArgs, opts: &EmitOptions, cwd: &Path) -> Result<String> {
    let n = opts.workers;
    let Some(image) = &opts.image else {
        bail!("--emit k8s needs --image: a container image with runner (and libtorch) in it");
    };
    let mut argv = vec!["runner".to_string()];
    argv.extend(args.argv(Path::new("/work"), &format!("$(SHARD_INDEX)/{n}")).into_iter().map(|a| {
        // Inside the pod the project is at /work: keep relative paths relative.
        a.strip_prefix(&format!("{}/", cwd.display())).map_or(a.clone(), str::to_string)
    }));
    let q = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let command = argv.iter().map(|a| q(a)).collect::<Vec<_>>().join(", ");
    let limits = if opts.gpus > 0 {
        format!("          resources:\n            limits:\n              nvidia.com/gpu: {}\n", opts.gpus)
    } else {
        String::new()
    };
    Ok(format!(
        "# runner sweep as a Kubernetes Indexed Job: pod i of {n} runs shard i/{n}.\n\
         # `kubectl apply -f <this file>`. The image needs runner on its PATH (and a CUDA\n\
         # libtorch 2.11 for GPUs). The claim holds the project (specs, datasets, reports)\n\
         # and must be mounted read-write by every pod (ReadWriteMany) with working file\n\
         # locks. A pod that fails is replaced with the same index: completed runs are\n\
         # skipped, interrupted ones resume.\n\
         apiVersion: batch/v1\n\
         kind: Job\n\
         metadata:\n  name: {name}\n\
         spec:\n  completionMode: Indexed\n  completions: {n}\n  parallelism: {n}\n  backoffLimit: {n}\n\
         \x20 template:\n    spec:\n      restartPolicy: Never\n      containers:\n\
         \x20       - name: runner\n          image: {image}\n          workingDir: \"/work\"\n\
         \x20         env:\n            - name: SHARD_INDEX\n              valueFrom:\n\
         \x20               fieldRef:\n\
         \x20                 fieldPath: \"metadata.annotations['batch.kubernetes.io/job-completion-index']\"\n\
         \x20         command: [{command}]\n\
         {limits}\
         \x20         volumeMounts:\n            - name: work\n              mountPath: \"/work\"\n\
         \x20     volumes:\n        - name: work\n          persistentVolumeClaim:\n\
         \x20           claimName: {claim}\n",
        name = q(&opts.job_name),
        image = q(image),
        claim = q(&opts.volume_claim),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition_in_turn() {
        assert_eq!("1/3".parse::<Shard>(), Ok(Shard { index: 1, count: 3 }));
        assert!("3/3".parse::<Shard>().unwrap_err().to_string().contains("0 to 2"));
        assert!("1-3".parse::<Shard>().is_err());
        assert!("0/0".parse::<Shard>().is_err());
        let runs = |n: usize| -> Vec<SweepRun> { (1..=n).map(dummy).collect() };
        let points = |s: Shard| -> Vec<usize> { s.select(runs(8)).iter().map(|r| r.point).collect() };
        assert_eq!(points(Shard { index: 0, count: 3 }), vec![1, 4, 7]);
        assert_eq!(points(Shard { index: 1, count: 3 }), vec![2, 5, 8]);
        assert_eq!(points(Shard { index: 2, count: 3 }), vec![3, 6]);
        assert_eq!(points(Shard { index: 0, count: 1 }), (1..=8).collect::<Vec<_>>());
    }

    fn dummy(point: usize) -> SweepRun {
        let spec = crate::config::spec::Spec::from_str_at(
            "name = \"t\"\n[data]\nsource = \"d\"\n[model]\nbackbone = \"resnet18\"\n[[phases]]\nname = \"a\"\n\
             epochs = 1\nfreeze_up_to = \"all\"\noptimizer = { kind = \"sgd\", lr = 0.1 }\n",
            Path::new("t.toml"),
        )
        .unwrap();
        SweepRun {
            spec_path: "t.toml".into(),
            point,
            points: 8,
            planned: PlannedRun { spec, varying: vec![] },
            halving: None,
            tpe: None,
        }
    }
}
