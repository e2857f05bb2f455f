//! `runner verify`: rerunning recorded runs and comparing them.

use std::path::PathBuf;

use anyhow::anyhow;
use runner::Result;

use super::{DeviceArg, device, pin_numerics};

#[derive(clap::Args)]
pub struct Args {
    /// Run directories (each with config.toml, metrics.csv and summary.json).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Largest absolute difference accepted (0: bit for bit, for the recording machine).
    #[arg(long, default_value_t = 0.0)]
    pub tolerance: f64,
    /// Rerun on this device instead of the recorded one.
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
    /// Keep the rerun's folder.
    #[arg(long)]
    pub keep: bool,
    /// Compute everything: no frozen features from the feature store (by default a rerun
    /// loads those an earlier run of the same bits kept, as any run does).
    #[arg(long)]
    pub fresh: bool,
    /// Show the rerun's epochs.
    #[arg(long, short)]
    pub verbose: bool,
}

pub fn run(args: Args) -> Result<()> {
    let Args { dirs, tolerance, device: dev, keep, fresh, verbose: _ } = args;
    if tolerance.is_nan() || tolerance < 0.0 {
        return Err(anyhow!("--tolerance: expected a difference of 0 or more, found {tolerance}").into());
    }
    pin_numerics(dirs.iter().map(|d| runner::verify::reproducibility_of(d)))?;
    let feature_store = if fresh { None } else { runner::run::default_feature_store() };
    let opts = runner::verify::VerifyOptions { tolerance, device: dev.map(device).transpose()?, keep, feature_store };
    let mut failed = vec![];
    for dir in &dirs {
        match runner::verify::verify(dir, &opts) {
            Ok(v) => {
                for line in &v.lines {
                    println!("{line}");
                }
                if !v.passed {
                    failed.push(dir.display().to_string());
                }
            }
            Err(e) => {
                eprintln!("error: {}", runner::sys::redact::credentials(&format!("{e:#}")));
                failed.push(dir.display().to_string());
            }
        }
    }
    if !failed.is_empty() {
        return Err(anyhow!("{} of {} runs did not verify: {}", failed.len(), dirs.len(), failed.join(", ")).into());
    }
    println!("verified: {} of {} runs", dirs.len(), dirs.len());
    Ok(())
}
