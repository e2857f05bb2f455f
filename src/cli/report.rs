//! `runner report`, `runner ls` and `runner compare`: what the recorded runs say.

use std::path::PathBuf;

use runner::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Root of the run directories.
    #[arg(long, default_value = "reports/runs")]
    pub runs: PathBuf,
    /// Where summary.csv, summary.parquet, summary.md, plots/ and index.html go.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    /// What ranks the runs and configurations: best_val_acc, final_val_acc, test_acc,
    /// best_value / final_value (the monitored metric), PHASE.best_val_acc, PHASE.final_val_acc.
    #[arg(long, default_value = "best_val_acc")]
    pub by: runner::report::Measure,
}

pub fn run(args: Args) -> Result<()> {
    let Args { runs, out, by } = args;
    let written = runner::report::write(&runs, &out, &by)?;
    println!("{}", runner::report::describe(&written, &out));
    for f in &written.files {
        println!("  {}", f.display());
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct LsArgs {
    /// Run folders, experiments' folders or runs roots.
    #[arg(default_value = "reports/runs")]
    pub runs: Vec<PathBuf>,
    /// Keep the runs whose config key (dotted, or its last part) has this value; also
    /// status=, experiment=, name= (repeatable: all must hold).
    #[arg(long = "where", value_name = "KEY=VALUE")]
    pub filters: Vec<runner::report::Filter>,
    /// What ranks the runs (as `runner report --by`).
    #[arg(long, default_value = "best_val_acc")]
    pub by: runner::report::Measure,
}

pub fn ls(args: LsArgs) -> Result<()> {
    let LsArgs { runs, filters, by } = args;
    let (entries, unreadable) = runner::report::collect_paths(&runs)?;
    let total = entries.len();
    let kept = runner::report::select(entries, &filters)?;
    for u in &unreadable {
        eprintln!("warning: skipped {u}");
    }
    if kept.is_empty() {
        println!("no runs match ({total} run(s) read)");
        return Ok(());
    }
    print!("{}", runner::report::ls(&kept, &by));
    Ok(())
}

#[derive(clap::Args)]
pub struct CompareArgs {
    /// The first run's folder (A).
    pub a: PathBuf,
    /// The second run's folder (B).
    pub b: PathBuf,
}

pub fn compare(args: CompareArgs) -> Result<()> {
    print!("{}", runner::report::compare(&args.a, &args.b)?);
    Ok(())
}
