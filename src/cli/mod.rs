//! The command line: one module per subcommand, each holding its flags (`Args`) and
//! what it does (`run`). Flags that several subcommands share are defined here, once.

mod bench;
mod cache;
mod console;
mod data;
mod export;
mod layers;
mod lr_find;
mod plan;
mod predict;
mod report;
mod run;
mod summary;
mod sweep;
mod verify;

use std::path::Path;

use anyhow::anyhow;
use clap::{Parser, Subcommand, ValueEnum};
use runner::Result;
use tch::Device;

use runner::config::experiment::{Experiment, Override, parse_set};
use runner::config::spec::Reproducibility;
use runner::error::SpecError;
use runner::model::Backbone;

/// Declarative transfer learning: TOML experiment specs run on libtorch.
#[derive(Parser)]
#[command(name = "runner", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the runs of an experiment spec (every point of its grid, in order).
    Run(run::Args),
    /// Every run of every spec under PATHS: completed runs are skipped, interrupted
    /// ones resume, failed ones do not stop the others; ends with a table and a report.
    Sweep(sweep::Args),
    /// Tables, leaderboards, comparison plots and an HTML page of every run.
    Report(report::Args),
    /// The runs under some folders, filtered (--where key=value) and ranked (--by), with the
    /// paired differences of configurations measured on the same seeds or folds.
    Ls(report::LsArgs),
    /// Two runs side by side: config and data, metrics per epoch, changed val predictions.
    Compare(report::CompareArgs),
    /// Rerun recorded runs from their config and compare the metrics, epoch by epoch.
    Verify(verify::Args),
    /// The learning-rate range test of a spec's phase: a plot, a CSV and the suggested rate; no run.
    LrFind(lr_find::Args),
    /// Show the runs of a spec without running anything.
    Plan(plan::Args),
    /// Top-k classes of image files, from a finished run or a pretrained backbone.
    Predict(predict::Args),
    /// Write a finished run's model as safetensors (with model.json) or TorchScript.
    Export(export::Args),
    /// Benchmarks (figures go in docs/performance.md).
    Bench {
        #[command(subcommand)]
        command: bench::Command,
    },
    /// Per layer: output shape, parameters, and frozen or trainable in each phase.
    Summary(summary::Args),
    /// Print a backbone's flat layer list, which `freeze_up_to` indexes.
    Layers(layers::Args),
    /// Dataset tools.
    Data {
        #[command(subcommand)]
        command: data::Command,
    },
    /// The feature store: list what it keeps, prune it.
    Cache {
        #[command(subcommand)]
        command: cache::Command,
    },
}

impl Cli {
    /// Runs the subcommand, its messages and progress through the console it installs.
    pub fn run(self) -> Result<()> {
        console::Console::install(self.command.quiet());
        for (old, new) in runner::config::experiment::deprecated_env_vars() {
            eprintln!(
                "warning: {old} sets a spec key under the old prefix: use {new} (plain RUNNER_* names clash with \
                 CI services' own variables, such as GitHub Actions' RUNNER_NAME)"
            );
        }
        match self.command {
            Command::Run(args) => run::run(args),
            Command::Sweep(args) => sweep::run(args),
            Command::Report(args) => report::run(args),
            Command::Ls(args) => report::ls(args),
            Command::Compare(args) => report::compare(args),
            Command::Verify(args) => verify::run(args),
            Command::LrFind(args) => lr_find::run(args),
            Command::Plan(args) => plan::run(args),
            Command::Predict(args) => predict::run(args),
            Command::Export(args) => export::run(args),
            Command::Summary(args) => summary::run(args),
            Command::Layers(args) => layers::run(args),
            Command::Bench { command } => bench::run(command),
            Command::Data { command } => data::run(command),
            Command::Cache { command } => cache::run(command),
        }
    }
}

impl Command {
    /// Whether the subcommand keeps what its runs do to itself: `--quiet`, a dry run (its
    /// table is the output), and `verify` without `--verbose` (its verdict is).
    fn quiet(&self) -> bool {
        match self {
            Command::Run(args) => args.quiet,
            Command::Sweep(args) => args.quiet || args.dry_run,
            Command::Verify(args) => !args.verbose,
            _ => false,
        }
    }
}

/// `--set KEY=VALUE`: the subcommands that read specs.
#[derive(clap::Args)]
pub struct SetFlags {
    /// Override a spec key, e.g. --set phases.1.optimizer.lr=1e-5 (repeatable; last wins).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// `--device`: the subcommands that train.
#[derive(clap::Args)]
pub struct DeviceFlags {
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

/// Where training runs: `auto` takes the GPU when libtorch sees one.
#[derive(Clone, Copy, ValueEnum)]
pub enum DeviceArg {
    Auto,
    Cpu,
    Cuda,
}

fn device(arg: DeviceArg) -> Result<Device> {
    let device = match arg {
        DeviceArg::Cpu => Device::Cpu,
        DeviceArg::Auto => {
            runner::sys::cuda::load_cuda_backend();
            Device::cuda_if_available()
        }
        DeviceArg::Cuda => {
            let loaded = runner::sys::cuda::load_cuda_backend();
            if !tch::Cuda::is_available() {
                return Err(anyhow!(
                    "--device cuda: no CUDA device is visible to libtorch ({}); run against a CUDA libtorch 2.11, \
                     e.g. LD_LIBRARY_PATH=<torch>/lib",
                    if loaded { "libtorch_cuda.so loaded, but no GPU answered" } else { "libtorch_cuda.so not found" }
                )
                .into());
            }
            Device::Cuda(0)
        }
    };
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    Ok(device)
}

/// Restarts runner with libtorch's paths pinned when these runs are portable
/// (sys/numerics.rs); before libtorch computes anything. The paths are set once per
/// process, so one command cannot mix portable runs with others.
fn pin_numerics(modes: impl IntoIterator<Item = Reproducibility>) -> Result<()> {
    let modes: std::collections::BTreeSet<&str> = modes.into_iter().map(Reproducibility::name).collect();
    if modes.len() > 1 {
        return Err(anyhow!(
            "these runs mix reproducibility = \"portable\" with \"machine\": libtorch's instruction paths are \
             chosen once per process, so run the portable ones in a command of their own"
        )
        .into());
    }
    Ok(runner::sys::numerics::pin_process(modes.contains(Reproducibility::Portable.name()))?)
}

/// Loads a spec with its `--set` overrides.
fn load(spec: &Path, set: &[String]) -> Result<Experiment> {
    Ok(Experiment::load(spec, &parse_sets(set, spec)?)?)
}

/// `--set` flags as overrides; a malformed one is a spec error naming `file`.
fn parse_sets(set: &[String], file: &Path) -> Result<Vec<Override>, SpecError> {
    set.iter().map(|raw| parse_set(raw, file)).collect()
}

fn parse_backbone(name: &str) -> Result<Backbone> {
    Backbone::from_name(name).ok_or_else(|| {
        let names: Vec<_> = Backbone::ALL.iter().map(|b| b.name()).collect();
        let hint =
            runner::config::spec::suggest(name, &names).map(|s| format!(", did you mean `{s}`?")).unwrap_or_default();
        anyhow!("unknown backbone `{name}`{hint} (known: {})", names.join(", ")).into()
    })
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// `--image-size` for a backbone that cuts images into patches must be a multiple of the patch.
pub(crate) fn check_patch_size(b: Backbone, image_size: u32) -> Result<()> {
    match b.patch_size() {
        Some(p) if !image_size.is_multiple_of(p) => Err(anyhow!(
            "--image-size {image_size}: {b} cuts images into {p}x{p} patches, so the size must be a multiple of {p}"
        )
        .into()),
        _ => Ok(()),
    }
}
