//! `runner cache`: what runner's stores keep for later runs — the frozen features
//! (`RUNNER_FEATURE_STORE`, default `~/.cache/runner/features`) and the decoded images
//! (`RUNNER_IMAGE_STORE`, default `~/.cache/runner/images`) — and pruning them.

use std::path::PathBuf;

use anyhow::anyhow;
use runner::Result;
use runner::sys::filestore;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Every stored file, least recently used first, with its size and last use.
    List,
    /// Remove the least recently used files of each store until it holds at most --max-mb
    /// (default: its budget, RUNNER_FEATURE_STORE_MB and RUNNER_IMAGE_STORE_MB), or
    /// everything with --all.
    Prune {
        #[arg(long, conflicts_with = "all")]
        max_mb: Option<u64>,
        #[arg(long)]
        all: bool,
    },
}

/// A store: its name, folder and budget in bytes.
struct Store {
    name: &'static str,
    dir: PathBuf,
    budget: u64,
}

fn stores() -> Vec<Store> {
    let features = runner::run::default_feature_store().map(|dir| Store {
        name: "features",
        dir,
        budget: runner::run::feature_store_budget(),
    });
    let images = runner::data::store::default_dir().map(|dir| Store {
        name: "images",
        dir,
        budget: runner::data::store::budget(),
    });
    features.into_iter().chain(images).collect()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

pub fn run(command: Command) -> Result<()> {
    let stores = stores();
    if stores.is_empty() {
        return Err(anyhow!("RUNNER_FEATURE_STORE=off and RUNNER_IMAGE_STORE=off: there is no store").into());
    }
    match command {
        Command::List => {
            println!("{:<9} {:>10}  {:<20}  file", "store", "MiB", "last used");
            for store in &stores {
                let entries = filestore::entries(&store.dir);
                for e in &entries {
                    let used = humantime::format_rfc3339_seconds(e.used);
                    let name = e.path.file_name().unwrap_or_default().to_string_lossy();
                    println!("{:<9} {:>10.1}  {used:<20}  {name}", store.name, mib(e.bytes));
                }
            }
            for store in &stores {
                let entries = filestore::entries(&store.dir);
                let total: u64 = entries.iter().map(|e| e.bytes).sum();
                println!(
                    "{}: {} files, {:.1} MiB of a {:.0} MiB budget in {}",
                    store.name,
                    entries.len(),
                    mib(total),
                    mib(store.budget),
                    store.dir.display()
                );
            }
        }
        Command::Prune { max_mb, all } => {
            for store in &stores {
                let keep = if all { 0 } else { max_mb.map_or(store.budget, |mb| mb.saturating_mul(1 << 20)) };
                let removed = filestore::evict(&store.dir, keep, None);
                let freed: u64 = removed.iter().map(|e| e.bytes).sum();
                let left = filestore::entries(&store.dir);
                println!(
                    "{}: removed {} files ({:.1} MiB); {} left ({:.1} MiB) in {}",
                    store.name,
                    removed.len(),
                    mib(freed),
                    left.len(),
                    mib(left.iter().map(|e| e.bytes).sum()),
                    store.dir.display()
                );
            }
        }
    }
    Ok(())
}
