//! `runner sweep`: every run of every spec, skipping, resuming, or emitting a cluster job.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::ValueEnum;
use runner::Result;

use runner::run::RunOptions;
use runner::sweep::{EmitOptions, Engine, Shard, SweepArgs, SweepRun};

use super::{DeviceFlags, SetFlags, device, parse_sets};

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
        force: false,
        resume: true,
        refuse_changed_config: false,
        quiet,
        device: device(dev)?,
        threads: None,
        stop_after: None,
        feature_store: None,
    };
    let rows = runner::sweep::execute(&runs, &opts);
    print!("{}", runner::sweep::table(&rows));
    if !no_report && out.is_dir() {
        match runner::report::write(&out, &report_dir) {
            Ok(w) => println!("{}", runner::report::describe(&w, &report_dir)),
            Err(e) => eprintln!("warning: no report: {e:#}"),
        }
    }
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
        let (id, action) = runner::sweep::plan(&r.planned.spec, out, true);
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
