//! `runner sweep`: every run of every spec, skipping, resuming, or emitting a cluster job.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::ValueEnum;
use runner::Result;

use runner::run::RunOptions;
use runner::sweep::{EmitOptions, Engine, Event, Outcome, Shard, SweepArgs, SweepRun};

use super::{DeviceFlags, SetFlags, device, parse_sets, pin_numerics};

#[derive(clap::Args)]
pub struct Args {
    /// Spec files or folders of them.
    #[arg(default_value = "experiments")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub set: SetFlags,
    /// Root of the run directories.
    #[arg(long, default_value = "reports/runs")]
    pub out: PathBuf,
    /// List what would run, resume or be skipped, and run nothing.
    #[arg(long, conflicts_with = "emit")]
    pub dry_run: bool,
    /// Take only shard I of N (0-based: I/N), for N workers sharing a filesystem.
    #[arg(long, value_name = "I/N", conflicts_with = "emit")]
    pub shard: Option<Shard>,
    /// One worker per device, all sharing the sweep through the run locks: GPU indices
    /// (`0,1,2,3`), `all` (every GPU libtorch sees), or `cpu` entries (`cpu,cpu`: two CPU workers).
    #[arg(long, value_name = "LIST", conflicts_with_all = ["emit", "shard", "dry_run"])]
    pub devices: Option<String>,
    /// Write a cluster job (to stdout) that runs this sweep as --workers shards.
    #[arg(long, value_enum, requires = "workers")]
    pub emit: Option<Engine>,
    /// With --emit: the number of array tasks / indexed pods.
    #[arg(long, requires = "emit")]
    pub workers: Option<usize>,
    /// With --emit: GPUs per worker (0 for CPU only).
    #[arg(long, default_value_t = 1)]
    pub gpus: u32,
    /// With --emit k8s: the container image (runner on its PATH).
    #[arg(long)]
    pub image: Option<String>,
    /// With --emit k8s: the PersistentVolumeClaim holding this project, mounted at /work.
    #[arg(long, default_value = "runner-work")]
    pub volume_claim: String,
    /// With --emit: the job's name.
    #[arg(long, default_value = "runner-sweep")]
    pub job_name: String,
    /// Where the closing report goes.
    #[arg(long, default_value = "reports")]
    pub report_dir: PathBuf,
    /// No report at the end.
    #[arg(long)]
    pub no_report: bool,
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub device: DeviceFlags,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        paths,
        set: SetFlags { set },
        out,
        dry_run,
        shard,
        devices,
        emit,
        workers,
        gpus,
        image,
        volume_claim,
        job_name,
        report_dir,
        no_report,
        quiet,
        device: DeviceFlags { device: dev },
    } = args;
    let overrides = parse_sets(&set, Path::new("--set"))?;
    let runs = runner::sweep::expand(&paths, &overrides)?;
    pin_numerics(runs.iter().map(|r| r.planned.spec.reproducibility))?;
    if let Some(list) = devices {
        run_workers(&parse_devices(&list)?, &paths, &set, &out, quiet)?;
        if !no_report && out.is_dir() {
            closing_report(&out, &report_dir);
        }
        return Ok(());
    }
    if let Some(engine) = emit {
        let args = runner::sweep::SweepArgs {
            paths,
            sets: set,
            out,
            device: dev.to_possible_value().expect("no skipped variants").get_name().to_string(),
        };
        let opts = runner::sweep::EmitOptions {
            workers: workers.expect("clap requires --workers"),
            gpus,
            job_name,
            image,
            volume_claim,
        };
        return emit_jobs(engine, &args, &opts, runs.len());
    }
    let total = runs.len();
    let runs = match shard {
        Some(s) => s.select(runs),
        None => runs,
    };
    let of = shard.map_or(String::new(), |s| format!(" (shard {s}: {} of {total})", runs.len()));
    if dry_run {
        dry_run_table(&runs, &out, &of);
        return Ok(());
    }
    println!("sweep: {} runs{of}", runs.len());
    let opts = RunOptions {
        out: out.clone(),
        resume: true,
        device: device(dev)?,
        feature_store: runner::run::default_feature_store(),
        ..RunOptions::default()
    };
    let rows = runner::sweep::execute(&runs, &opts, show);
    print!("{}", runner::sweep::table(&rows));
    if !no_report && out.is_dir() {
        closing_report(&out, &report_dir);
    }
    sweep_status(&rows)
}

/// The sweep's exit: interrupted when a run was, failed when any run failed.
fn sweep_status(rows: &[runner::sweep::Row]) -> Result<()> {
    if rows.iter().any(|r| r.outcome == runner::sweep::Outcome::Interrupted) {
        let what = "rerun the sweep to go on (completed runs are skipped, interrupted ones resume)".to_string();
        return Err(runner::Error::Interrupted { what });
    }
    let failed = rows.iter().filter(|r| r.outcome.is_failure()).count();
    if failed > 0 {
        return Err(anyhow!("{failed} of {} runs failed", rows.len()).into());
    }
    Ok(())
}

/// What the sweep says as it goes: each run's header and how it ended (stdout, even with
/// --quiet), failures on stderr.
fn show(event: Event) {
    let error = |e: &runner::Error| eprintln!("error: {}", runner::sys::redact::credentials(&format!("{e:#}")));
    match event {
        Event::Starts { k, total, run } => println!(
            "== [{}/{total}] {} (run {} of {} in {}) {}",
            k + 1,
            run.experiment(),
            run.point,
            run.points,
            run.spec_path.display(),
            run.varying()
        ),
        Event::Ended { result: Ok(outcome), row, .. } => {
            let s = &outcome.summary;
            println!(
                "   {} {}: best val_acc {} at epoch {} ({:.1}s)",
                row.outcome.name(),
                s.run_id,
                s.best_val_acc.map_or("n/a".into(), |a| format!("{a:.4}")),
                s.best_epoch.unwrap_or(0),
                s.wall_s
            );
        }
        Event::Ended { result: Err(e), row, .. } if row.outcome == Outcome::Busy => println!("   skipped: {e}"),
        Event::Ended { result: Err(e), .. } | Event::SearchFailed(e) => error(&e),
        Event::Interrupted { left, total } => eprintln!("sweep interrupted: {left} of {total} runs not started"),
    }
}

/// `--emit`: the cluster's job description on stdout, a line about the shards on stderr.
fn emit_jobs(engine: Engine, args: &SweepArgs, opts: &EmitOptions, runs: usize) -> Result<()> {
    print!("{}", runner::sweep::emit(engine, args, opts)?);
    eprintln!("{runs} runs in {} shards of about {} runs each", opts.workers, runs.div_ceil(opts.workers));
    Ok(())
}

/// `--dry-run`: what each run would do, and the totals.
fn dry_run_table(runs: &[SweepRun], out: &Path, of: &str) {
    println!("{:<4} {:<20} {:<10} {:>6}  {:<31} varying", "#", "experiment", "run id", "epochs", "action");
    let mut counts = std::collections::BTreeMap::new();
    for (k, r) in runs.iter().enumerate() {
        let (id, action) = runner::sweep::plan(&r.planned.spec, out);
        *counts.entry(action.verb()).or_insert(0) += 1;
        println!(
            "{:<4} {:<20} {:<10} {:>6}  {:<31} {}",
            k + 1,
            r.experiment(),
            id.as_deref().unwrap_or("?"),
            r.planned.spec.total_epochs(),
            action.describe(),
            r.varying()
        );
    }
    let counts: Vec<String> = counts.iter().map(|(a, n)| format!("{n} {a}")).collect();
    println!("{} runs{of}: {}; nothing was run", runs.len(), counts.join(", "));
}

/// A worker's device for `--devices`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Worker {
    Cpu,
    Gpu(usize),
}

/// `--devices`: `all`, or a comma-separated list of GPU indices and `cpu`s.
fn parse_devices(list: &str) -> Result<Vec<Worker>> {
    let gpus = || {
        runner::sys::cuda::load_cuda_backend();
        tch::Cuda::device_count() as usize
    };
    if list.trim() == "all" {
        let n = gpus();
        if n == 0 {
            return Err(anyhow!("--devices all: no CUDA device is visible to libtorch").into());
        }
        return Ok((0..n).map(Worker::Gpu).collect());
    }
    let mut workers = vec![];
    for item in list.split(',').map(str::trim) {
        let worker = match item {
            "cpu" => Worker::Cpu,
            i => Worker::Gpu(
                i.strip_prefix("cuda:")
                    .unwrap_or(i)
                    .parse()
                    .map_err(|_| anyhow!("--devices {list}: `{item}` is neither a GPU index (0, 1, ...) nor `cpu`"))?,
            ),
        };
        if matches!(worker, Worker::Gpu(_)) && workers.contains(&worker) {
            return Err(anyhow!("--devices {list}: `{item}` is listed twice").into());
        }
        workers.push(worker);
    }
    let visible = if workers.iter().any(|w| matches!(w, Worker::Gpu(_))) { gpus() } else { 0 };
    if let Some(Worker::Gpu(i)) = workers.iter().find(|w| matches!(w, Worker::Gpu(i) if *i >= visible)) {
        return Err(anyhow!("--devices {list}: GPU {i} does not exist (libtorch sees {visible} CUDA devices)").into());
    }
    Ok(workers)
}

/// Runs one `runner sweep` per device, each over the whole sweep (the run locks make every
/// run execute once), a GPU worker seeing only its GPU; waits for all of them.
fn run_workers(workers: &[Worker], paths: &[PathBuf], sets: &[String], out: &Path, quiet: bool) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| anyhow!("cannot find runner's own path: {e}"))?;
    println!(
        "sweep: {} workers ({})",
        workers.len(),
        workers.iter().map(|w| format!("{w:?}")).collect::<Vec<_>>().join(", ")
    );
    let mut children = vec![];
    for (i, w) in workers.iter().enumerate() {
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("sweep").args(paths).arg("--out").arg(out).arg("--no-report");
        for s in sets {
            cmd.args(["--set", s]);
        }
        if quiet {
            cmd.arg("--quiet");
        }
        match w {
            Worker::Cpu => {
                cmd.args(["--device", "cpu"]);
            }
            Worker::Gpu(g) => {
                cmd.args(["--device", "cuda"]).env("CUDA_VISIBLE_DEVICES", g.to_string());
            }
        }
        let child = cmd.spawn().map_err(|e| anyhow!("cannot start worker {i}: {e}"))?;
        children.push((i, *w, child));
    }
    let mut failed = vec![];
    for (i, w, mut child) in children {
        let status = child.wait().map_err(|e| anyhow!("worker {i}: {e}"))?;
        if !status.success() {
            failed.push(format!("worker {i} ({w:?}): {status}"));
        }
    }
    if !failed.is_empty() {
        return Err(anyhow!("{} of {} workers failed: {}", failed.len(), workers.len(), failed.join("; ")).into());
    }
    println!("sweep: all {} workers done", workers.len());
    Ok(())
}

/// The report at the end of a sweep; a failure to write it is a warning, not the sweep's.
fn closing_report(out: &Path, report_dir: &Path) {
    match runner::report::write(out, report_dir, &runner::report::Measure::BestValAcc) {
        Ok(w) => println!("{}", runner::report::describe(&w, report_dir)),
        Err(e) => eprintln!("warning: no report: {e:#}"),
    }
}
