//! `runner run`: training the runs of a spec.

use std::path::PathBuf;

use anyhow::anyhow;
use runner::Result;

use runner::run::RunOptions;
use runner::sweep::Event;

use super::{DeviceFlags, SetFlags, device, load, pin_numerics};

#[derive(clap::Args)]
pub struct Args {
    /// The experiment spec (TOML).
    pub spec: PathBuf,
    #[command(flatten)]
    pub set: SetFlags,
    /// Root of the run directories.
    #[arg(long, default_value = "reports/runs")]
    pub out: PathBuf,
    /// Run again from the start even when a completed result or a checkpoint exists.
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Continue interrupted runs from their last checkpoint (runs without one start afresh).
    #[arg(long)]
    pub resume: bool,
    /// No progress bars or per-epoch lines (for CI).
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub device: DeviceFlags,
}

pub fn run(args: Args) -> Result<()> {
    let Args { spec, set: SetFlags { set }, out, force, resume, quiet: _, device: DeviceFlags { device: dev } } = args;
    let exp = load(&spec, &set)?;
    pin_numerics(exp.runs.iter().map(|r| r.spec.reproducibility))?;
    runner::run::preflight(&exp)?;
    let refuse_changed_config = exp.runs.len() == 1;
    let opts = RunOptions {
        out,
        force,
        resume,
        refuse_changed_config,
        device: device(dev)?,
        feature_store: runner::run::default_feature_store(),
        ..RunOptions::default()
    };
    // A `[search] method = "halving"` runs as `runner sweep` runs it: trials stop at their rung.
    let runs = runner::sweep::runs_of(&spec, exp);
    let total = runs.len();
    let mut only_error = None;
    let rows = runner::sweep::execute(&runs, &opts, |event| match event {
        Event::Starts { k, total, run } if total > 1 => println!("== run {}/{total}: {}", k + 1, run.varying()),
        Event::Ended { result: Ok(outcome), .. } => report(&outcome),
        // One failed run of a grid does not stop the others.
        Event::Ended { result: Err(e), .. } if total > 1 => error(&e),
        Event::Ended { result: Err(e), .. } => only_error = Some(e),
        Event::SearchFailed(e) => error(&e),
        Event::Interrupted { left, total } => eprintln!("interrupted: {left} of {total} runs not started"),
        _ => {}
    });
    if let Some(e) = only_error {
        return Err(e);
    }
    if total > 1 {
        // The grid's (or search's) closing table, as `runner sweep` prints it.
        print!("{}", runner::sweep::table(&rows));
    }
    if rows.iter().any(|r| r.outcome == runner::sweep::Outcome::Interrupted) {
        let what = "run the spec again with --resume to go on".to_string();
        return Err(runner::Error::Interrupted { what });
    }
    let failed = rows.iter().filter(|r| r.outcome.is_failure()).count();
    if failed > 0 {
        return Err(anyhow!("{failed} of {total} runs failed (the table above says which)").into());
    }
    Ok(())
}

fn error(e: &runner::Error) {
    eprintln!("error: {}", runner::sys::redact::credentials(&format!("{e:#}")));
}

/// Prints where a run's results are.
fn report(outcome: &runner::run::RunOutcome) {
    let s = &outcome.summary;
    if !outcome.ran {
        println!("run {} already completed (use --force to rerun)", s.run_id);
    }
    let best = s.best_value.map_or("n/a".to_string(), |a| format!("{a:.4}"));
    let stopped = match &s.early_stopping {
        Some(es) if !es.stopped_after.is_empty() && s.epochs < s.epochs_planned => {
            format!(", stopped early after {} of {} epochs", s.epochs, s.epochs_planned)
        }
        _ => String::new(),
    };
    println!(
        "run {} {}: best {} {best} at epoch {} of {}{stopped} ({:.1}s)",
        s.run_id,
        s.status.name(),
        s.monitor.name(),
        s.best_epoch.unwrap_or(0),
        s.epochs_planned,
        s.wall_s
    );
    if let Some(acc) = s.test_acc {
        println!("test:    acc {acc:.4} on {} images", s.test_images);
    }
    let dir = outcome.dir.display();
    println!("metrics: {dir}/metrics.csv");
    println!("curves:  {dir}/curves.png");
    println!("weights: {dir}/best.safetensors");
    if s.test_acc.is_some() {
        println!("test:    {dir}/test_metrics.csv, {dir}/confusion.png");
    }
}
