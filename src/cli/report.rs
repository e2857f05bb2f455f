//! `runner report`: the report over every run.

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
}

pub fn run(args: Args) -> Result<()> {
    let Args { runs, out } = args;
    let written = runner::report::write(&runs, &out)?;
    println!("{}", runner::report::describe(&written, &out));
    for f in &written.files {
        println!("  {}", f.display());
    }
    Ok(())
}
