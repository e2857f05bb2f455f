//! `runner cache`: what the feature store keeps (`RUNNER_FEATURE_STORE`, default
//! `~/.cache/runner/features`), and pruning it.

use anyhow::anyhow;
use runner::Result;
use runner::sys::filestore;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Every stored file, least recently used first, with its size and last use.
    List,
    /// Remove the least recently used files until the store holds at most --max-mb
    /// (default: its budget, RUNNER_FEATURE_STORE_MB), or everything with --all.
    Prune {
        #[arg(long, conflicts_with = "all")]
        max_mb: Option<u64>,
        #[arg(long)]
        all: bool,
    },
}

pub fn run(command: Command) -> Result<()> {
    let Some(dir) = runner::run::default_feature_store() else {
        return Err(anyhow!("RUNNER_FEATURE_STORE=off: there is no feature store").into());
    };
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let budget = runner::run::feature_store_budget();
    match command {
        Command::List => {
            let entries = filestore::entries(&dir);
            println!("{:>10}  {:<20}  file", "MiB", "last used");
            for e in &entries {
                let used = humantime::format_rfc3339_seconds(e.used);
                println!(
                    "{:>10.1}  {used:<20}  {}",
                    mib(e.bytes),
                    e.path.file_name().unwrap_or_default().to_string_lossy()
                );
            }
            let total: u64 = entries.iter().map(|e| e.bytes).sum();
            println!(
                "{} files, {:.1} MiB of a {:.0} MiB budget in {}",
                entries.len(),
                mib(total),
                mib(budget),
                dir.display()
            );
        }
        Command::Prune { max_mb, all } => {
            let keep = if all { 0 } else { max_mb.map_or(budget, |mb| mb.saturating_mul(1 << 20)) };
            let removed = filestore::evict(&dir, keep, None);
            let freed: u64 = removed.iter().map(|e| e.bytes).sum();
            let left = filestore::entries(&dir);
            println!(
                "removed {} files ({:.1} MiB); {} left ({:.1} MiB) in {}",
                removed.len(),
                mib(freed),
                left.len(),
                mib(left.iter().map(|e| e.bytes).sum()),
                dir.display()
            );
        }
    }
    Ok(())
}
