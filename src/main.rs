use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use tch::{Device, Tensor};

use runner::backbone::{Backbone, parameter_count};
use runner::experiment::{Experiment, Override, describe_varying, parse_set};
use runner::predict::Predictor;
use runner::run::{self, RunOptions};
use runner::spec::SpecError;
use runner::sweep::{self, Engine, Shard};
use runner::synth::{self, SynthOptions};

/// Declarative transfer learning: TOML experiment specs run on libtorch.
#[derive(Parser)]
#[command(name = "runner", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the runs of an experiment spec (every point of its grid, in order).
    Run {
        /// The experiment spec (TOML).
        spec: PathBuf,
        /// Override a spec key, e.g. --set phases.1.optimizer.lr=1e-5 (repeatable; last wins).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Root of the run directories.
        #[arg(long, default_value = "reports/runs")]
        out: PathBuf,
        /// Run again from the start even when a completed result or a checkpoint exists.
        #[arg(long, conflicts_with = "resume")]
        force: bool,
        /// Continue interrupted runs from their last checkpoint (runs without one start afresh).
        #[arg(long)]
        resume: bool,
        /// No progress bars or per-epoch lines (for CI).
        #[arg(long, short)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
        device: DeviceArg,
    },
    /// Every run of every spec under PATHS: completed runs are skipped, interrupted
    /// ones resume, failed ones do not stop the others; ends with a table and a report.
    Sweep {
        /// Spec files or folders of them.
        #[arg(default_value = "experiments")]
        paths: Vec<PathBuf>,
        /// Override a key in every spec (repeatable; last wins).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Root of the run directories.
        #[arg(long, default_value = "reports/runs")]
        out: PathBuf,
        /// List what would run, resume or be skipped, and run nothing.
        #[arg(long, conflicts_with = "emit")]
        dry_run: bool,
        /// Take only shard I of N (0-based: I/N), for N workers sharing a filesystem.
        #[arg(long, value_name = "I/N", conflicts_with = "emit")]
        shard: Option<Shard>,
        /// Write a cluster job (to stdout) that runs this sweep as --workers shards.
        #[arg(long, value_enum, requires = "workers")]
        emit: Option<Engine>,
        /// With --emit: the number of array tasks / indexed pods.
        #[arg(long, requires = "emit")]
        workers: Option<usize>,
        /// With --emit: GPUs per worker (0 for CPU only).
        #[arg(long, default_value_t = 1)]
        gpus: u32,
        /// With --emit k8s: the container image (runner on its PATH).
        #[arg(long)]
        image: Option<String>,
        /// With --emit k8s: the PersistentVolumeClaim holding this project, mounted at /work.
        #[arg(long, default_value = "runner-work")]
        volume_claim: String,
        /// With --emit: the job's name.
        #[arg(long, default_value = "runner-sweep")]
        job_name: String,
        /// Where the closing report goes.
        #[arg(long, default_value = "reports")]
        report_dir: PathBuf,
        /// No report at the end.
        #[arg(long)]
        no_report: bool,
        #[arg(long, short)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
        device: DeviceArg,
    },
    /// Tables, leaderboards, comparison plots and an HTML page of every run.
    Report {
        /// Root of the run directories.
        #[arg(long, default_value = "reports/runs")]
        runs: PathBuf,
        /// Where summary.csv, summary.parquet, summary.md, plots/ and index.html go.
        #[arg(long, default_value = "reports")]
        out: PathBuf,
    },
    /// Rerun recorded runs from their config and compare the metrics, epoch by epoch.
    Verify {
        /// Run directories (each with config.toml, metrics.csv and summary.json).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Largest absolute difference accepted (0: bit for bit, for the recording machine).
        #[arg(long, default_value_t = 0.0)]
        tolerance: f64,
        /// Rerun on this device instead of the recorded one.
        #[arg(long, value_enum)]
        device: Option<DeviceArg>,
        /// Keep the rerun's folder.
        #[arg(long)]
        keep: bool,
        /// Show the rerun's epochs.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Show the runs of a spec without running anything.
    Plan {
        spec: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Root of the run directories, to tell which runs are already complete.
        #[arg(long, default_value = "reports/runs")]
        out: PathBuf,
    },
    /// Top-k classes of image files, from a finished run or a pretrained backbone.
    Predict {
        /// Image files (JPEG or PNG).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// A run directory (reports/runs/<experiment>/<run-id>): its best weights and class names.
        #[arg(long, conflicts_with = "backbone", required_unless_present = "backbone")]
        run: Option<PathBuf>,
        /// A backbone with its pretrained ImageNet head instead.
        #[arg(long)]
        backbone: Option<String>,
        /// Weights for --backbone: "imagenet", a file or a URL.
        #[arg(long, default_value = "imagenet", requires = "backbone")]
        weights: String,
        /// Input size for --backbone (a run uses its own).
        #[arg(long, default_value_t = 224)]
        image_size: u32,
        #[arg(long, short = 'k', default_value_t = 5)]
        top_k: usize,
        /// Machine-readable output: one JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks (figures go in docs/performance.md).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Per layer: output shape, parameters, and frozen or trainable in each phase.
    Summary {
        /// A spec file (its first run) or a backbone name.
        target: String,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Input size for a backbone name (a spec uses its data.image_size).
        #[arg(long, default_value_t = 224)]
        image_size: i64,
    },
    /// Print a backbone's flat layer list, which `freeze_up_to` indexes.
    Layers {
        /// Backbone name, e.g. efficientnet_lite0.
        backbone: String,
    },
    /// Dataset tools.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Class counts, unusable files and image sizes of a dataset, without training.
    Check {
        /// A folder or a .zip (as `data.source` takes it).
        source: String,
        /// Train/val(/test) fractions for a single tree, e.g. 0.8,0.1,0.1.
        #[arg(long, value_delimiter = ',', default_value = "0.8,0.2")]
        split: Vec<f64>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The crop size the images would be decoded for.
        #[arg(long, default_value_t = 224)]
        image_size: u32,
    },
    /// Generate a synthetic shapes dataset (ImageFolder layout, JPEG) for offline demos.
    Synth {
        #[arg(long, default_value = "datasets/shapes")]
        out: PathBuf,
        /// Number of classes (shapes), 2 to 5.
        #[arg(long, default_value_t = SynthOptions::default().classes)]
        classes: usize,
        #[arg(long, default_value_t = SynthOptions::default().per_class)]
        per_class: usize,
        /// Image side in pixels.
        #[arg(long, default_value_t = SynthOptions::default().size)]
        size: u32,
        #[arg(long, default_value_t = SynthOptions::default().seed)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Decode + resize (shorter side to 256) + center crop (224) of every image under DIR, on one core.
    Decode {
        dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceArg {
    Auto,
    Cpu,
    Cuda,
}

fn device(arg: DeviceArg) -> Result<Device> {
    let device = match arg {
        DeviceArg::Cpu => Device::Cpu,
        DeviceArg::Auto => {
            runner::cuda::load_cuda_backend();
            Device::cuda_if_available()
        }
        DeviceArg::Cuda => {
            let loaded = runner::cuda::load_cuda_backend();
            if !tch::Cuda::is_available() {
                bail!(
                    "--device cuda: no CUDA device is visible to libtorch ({}); run against a CUDA libtorch 2.11, \
                     e.g. LD_LIBRARY_PATH=<torch>/lib",
                    if loaded { "libtorch_cuda.so loaded, but no GPU answered" } else { "libtorch_cuda.so not found" }
                );
            }
            Device::Cuda(0)
        }
    };
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    Ok(device)
}

/// Loads a spec with its `--set` overrides.
fn load(spec: &Path, set: &[String]) -> Result<Experiment> {
    Ok(Experiment::load(spec, &parse_sets(set, spec)?)?)
}

/// `--set` flags as overrides; a malformed one is a spec error naming `file`.
fn parse_sets(set: &[String], file: &Path) -> Result<Vec<Override>, SpecError> {
    set.iter()
        .map(|raw| {
            parse_set(raw).map_err(|msg| SpecError {
                file: file.to_path_buf(),
                key: String::new(),
                line_col: None,
                message: msg,
            })
        })
        .collect()
}

fn report(outcome: &run::RunOutcome) -> Result<()> {
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
        serde_json::to_value(s.status)?.as_str().unwrap_or("?"),
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
    Ok(())
}

/// `runner summary`: what torchsummary prints, plus the freeze plan of each phase.
fn summary(target: &str, set: &[String], image_size: i64) -> Result<()> {
    let (backbone, size, classes, hidden, phases) = match Backbone::from_name(target) {
        Some(b) => (b, image_size, 1000, vec![], vec![]),
        None => {
            let path = Path::new(target);
            if !path.exists() && !target.ends_with(".toml") {
                let names: Vec<_> = Backbone::ALL.iter().map(|b| b.name()).collect();
                bail!("`{target}` is neither a spec file nor a backbone ({})", names.join(", "));
            }
            let exp = load(path, set)?;
            if exp.runs.len() > 1 {
                println!("(showing the first of {} runs of the grid)", exp.runs.len());
            }
            let spec = exp.runs[0].spec.clone();
            let classes = match spec.model.head.classes {
                runner::spec::Classes::Count(n) => n as i64,
                runner::spec::Classes::Auto => match run::data_files(&spec, true) {
                    Ok(files) => files.classes.len() as i64,
                    Err(_) => {
                        println!("(data.source not readable: the head is shown with 2 classes)");
                        2
                    }
                },
            };
            let hidden = spec.model.head.hidden.iter().map(|&h| h as i64).collect();
            (spec.model.backbone, spec.data.image_size as i64, classes, hidden, spec.phases)
        }
    };
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let model = runner::backbone::Classifier::with_hidden(backbone, &vs.root(), classes, 0.0, &hidden);
    let layers = model.backbone.layers();
    let frozen: Vec<usize> = phases
        .iter()
        .map(|p| match p.freeze_up_to {
            runner::spec::FreezeUpTo::All => layers.len(),
            runner::spec::FreezeUpTo::Count(n) => n.min(layers.len()),
        })
        .collect();
    print!("{:>5}  {:<16} {:<20} {:>10}  {:<3}", "index", "layer", "output shape", "params", "bn");
    for p in &phases {
        print!("  {:<12}", truncate(&p.name, 12));
    }
    println!();
    let mut x = Tensor::zeros([1, 3, size, size], (tch::Kind::Float, Device::Cpu));
    let mut total = 0;
    let mut trainable = vec![0i64; phases.len()];
    tch::no_grad(|| {
        for (i, layer) in layers.iter().enumerate() {
            x = model.backbone.forward_layer(i, &x, runner::backbone::Mode::Infer);
            let params = parameter_count(&vs, &layer.prefixes);
            total += params;
            print!(
                "{i:>5}  {:<16} {:<20} {params:>10}  {:<3}",
                truncate(&layer.name, 16),
                format!("{:?}", x.size()),
                if layer.has_batchnorm { "yes" } else { "" }
            );
            for (p, f) in frozen.iter().enumerate() {
                let state = if i < *f { "frozen" } else { "trainable" };
                if i >= *f {
                    trainable[p] += params;
                }
                print!("  {state:<12}");
            }
            println!();
        }
        let pooled =
            if model.backbone.pooled() { x.adaptive_avg_pool2d([1, 1]).flatten(1, -1) } else { x.shallow_clone() };
        let head = model.head(&pooled, false);
        let params = parameter_count(&vs, &[backbone.classifier_prefix().to_string()]);
        total += params;
        print!(
            "{:>5}  {:<16} {:<20} {params:>10}  {:<3}",
            "",
            format!("head {}", backbone.classifier_prefix()),
            format!("{:?}", head.size()),
            ""
        );
        for t in trainable.iter_mut() {
            *t += params;
            print!("  {:<12}", "trainable");
        }
        println!();
    });
    println!("total parameters: {total}");
    for (p, t) in phases.iter().zip(&trainable) {
        println!("phase {}: {t} trainable ({:.1}%)", p.name, 100.0 * *t as f64 / total.max(1) as f64);
    }
    Ok(())
}

/// `runner data check`: what a run would see of a dataset.
fn data_check(source: &str, split: &[f64], seed: u64, image_size: u32) -> Result<()> {
    if !(2..=3).contains(&split.len()) || (split.iter().sum::<f64>() - 1.0).abs() > 1e-6 {
        bail!("--split: expected 2 or 3 fractions that sum to 1, found {split:?}");
    }
    let root = runner::archive::materialize(source, false)?;
    let files = runner::data::discover(&root, split, seed)?;
    let data = runner::data::load(&files, image_size, false, false)?;
    println!("{}: {} classes", root.display(), data.classes.len());
    println!("{:<24} {:>7} {:>7} {:>7}", "class", "train", "val", "test");
    let count = |split: &runner::data::Split, c: usize| {
        Vec::<i64>::try_from(split.labels.eq(c as i64).sum(tch::Kind::Int64).view([1])).map_or(0, |v| v[0])
    };
    for (c, name) in data.classes.iter().enumerate() {
        println!("{:<24} {:>7} {:>7} {:>7}", name, count(&data.train, c), count(&data.val, c), count(&data.test, c));
    }
    println!("{:<24} {:>7} {:>7} {:>7}", "total", data.train.len(), data.val.len(), data.test.len());
    if data.skipped.is_empty() {
        println!("no unusable files");
    } else {
        println!("{} unusable files (skipped by a run, an error with data.strict):", data.skipped.len());
        for s in &data.skipped {
            println!("  {}: {}", s.path, s.reason);
        }
    }
    let mut sizes = data.sizes.clone();
    if !sizes.is_empty() {
        let pick = |v: &mut Vec<u32>| {
            v.sort_unstable();
            (v[0], v[v.len() / 2], v[v.len() - 1])
        };
        let (mut w, mut h): (Vec<u32>, Vec<u32>) = sizes.iter().copied().unzip();
        let (w, h) = (pick(&mut w), pick(&mut h));
        sizes.sort_unstable();
        sizes.dedup();
        println!(
            "image width min/median/max {}/{}/{}, height {}/{}/{}; {} distinct sizes",
            w.0,
            w.1,
            w.2,
            h.0,
            h.1,
            h.2,
            sizes.len()
        );
    }
    Ok(())
}

fn parse_backbone(name: &str) -> Result<Backbone> {
    Backbone::from_name(name).ok_or_else(|| {
        let names: Vec<_> = Backbone::ALL.iter().map(|b| b.name()).collect();
        let hint = runner::spec::suggest(name, &names).map(|s| format!(", did you mean `{s}`?")).unwrap_or_default();
        anyhow::anyhow!("unknown backbone `{name}`{hint} (known: {})", names.join(", "))
    })
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run { spec, set, out, force, resume, quiet, device: dev } => {
            let exp = load(&spec, &set)?;
            run::preflight(&exp)?;
            let refuse_changed_config = exp.runs.len() == 1;
            let opts =
                RunOptions { out, force, resume, refuse_changed_config, quiet, device: device(dev)?, threads: None };
            let total = exp.runs.len();
            let mut failed = vec![];
            for (i, planned) in exp.runs.iter().enumerate() {
                if total > 1 {
                    println!("== run {}/{total}: {}", i + 1, describe_varying(&planned.varying));
                }
                match run::execute(&planned.spec, &opts) {
                    Ok(outcome) => report(&outcome)?,
                    // One failed run of a grid does not stop the others.
                    Err(e) if total > 1 => {
                        eprintln!("error: {e:#}");
                        failed.push(format!("run {}", i + 1));
                    }
                    Err(e) => return Err(e),
                }
            }
            if !failed.is_empty() {
                bail!("{} of {total} runs failed: {}", failed.len(), failed.join(", "));
            }
        }
        Command::Sweep {
            paths,
            set,
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
            device: dev,
        } => {
            let overrides = parse_sets(&set, Path::new("--set"))?;
            let runs = sweep::expand(&paths, &overrides)?;
            if let Some(engine) = emit {
                let args = sweep::SweepArgs {
                    paths,
                    sets: set,
                    out,
                    device: dev.to_possible_value().expect("no skipped variants").get_name().to_string(),
                };
                let opts = sweep::EmitOptions {
                    workers: workers.expect("clap requires --workers"),
                    gpus,
                    job_name,
                    image,
                    volume_claim,
                };
                print!("{}", sweep::emit(engine, &args, &opts)?);
                eprintln!(
                    "{} runs in {} shards of about {} runs each",
                    runs.len(),
                    opts.workers,
                    runs.len().div_ceil(opts.workers)
                );
                return Ok(());
            }
            let total = runs.len();
            let runs = match shard {
                Some(s) => s.select(runs),
                None => runs,
            };
            let of = shard.map_or(String::new(), |s| format!(" (shard {s}: {} of {total})", runs.len()));
            if dry_run {
                println!("{:<4} {:<20} {:<10} {:>6}  {:<31} varying", "#", "experiment", "run id", "epochs", "action");
                let mut counts = std::collections::BTreeMap::new();
                for (k, r) in runs.iter().enumerate() {
                    let (id, action) = sweep::plan(r, &out);
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
            };
            let rows = sweep::execute(&runs, &opts);
            print!("{}", sweep::table(&rows));
            if !no_report && out.is_dir() {
                match runner::report::write(&out, &report_dir) {
                    Ok(w) => println!("{}", runner::report::describe(&w, &report_dir)),
                    Err(e) => eprintln!("warning: no report: {e:#}"),
                }
            }
            let failed = rows.iter().filter(|r| r.outcome.is_failure()).count();
            if failed > 0 {
                bail!("{failed} of {} runs failed", rows.len());
            }
        }
        Command::Report { runs, out } => {
            let written = runner::report::write(&runs, &out)?;
            println!("{}", runner::report::describe(&written, &out));
            for f in &written.files {
                println!("  {}", f.display());
            }
        }
        Command::Verify { dirs, tolerance, device: dev, keep, verbose } => {
            if tolerance.is_nan() || tolerance < 0.0 {
                bail!("--tolerance: expected a difference of 0 or more, found {tolerance}");
            }
            let opts = runner::verify::VerifyOptions {
                tolerance,
                device: dev.map(device).transpose()?,
                keep,
                quiet: !verbose,
            };
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
                        eprintln!("error: {e:#}");
                        failed.push(dir.display().to_string());
                    }
                }
            }
            if !failed.is_empty() {
                bail!("{} of {} runs did not verify: {}", failed.len(), dirs.len(), failed.join(", "));
            }
            println!("verified: {} of {} runs", dirs.len(), dirs.len());
        }
        Command::Plan { spec, set, out } => {
            let exp = load(&spec, &set)?;
            println!("{:<12} {:<10} {:>6}  varying", "run id", "completed", "epochs");
            let mut unreadable = None;
            for planned in &exp.runs {
                if let Some(first) = runner::archive::pending(&planned.spec.data.source) {
                    unreadable.get_or_insert(format!(
                        "`{}` is not there yet: the first run {first}",
                        planned.spec.data.source
                    ));
                }
                let identity = if runner::archive::needs_fetch(&planned.spec.data.source) {
                    Err(anyhow::anyhow!("not downloaded yet"))
                } else {
                    run::identify(&planned.spec, false)
                };
                let (id, done) = match identity {
                    Ok(id) => {
                        let dir = run::run_dir(&out, &planned.spec, &id);
                        let done = run::read_summary(&dir).is_some_and(|s| s.status == run::Status::Completed);
                        (id.run_id, if done { "yes" } else { "no" })
                    }
                    Err(e) => {
                        unreadable.get_or_insert(format!("{e:#}"));
                        ("?".to_string(), "?")
                    }
                };
                println!(
                    "{:<12} {:<10} {:>6}  {}",
                    id,
                    done,
                    planned.spec.total_epochs(),
                    describe_varying(&planned.varying)
                );
            }
            println!("{} runs of {}", exp.runs.len(), exp.runs.first().map_or("", |r| r.spec.name.as_str()));
            if let Some(e) = unreadable {
                println!("? : a run's id covers its data, which cannot be read: {e}");
            }
        }
        Command::Summary { target, set, image_size } => summary(&target, &set, image_size)?,
        Command::Bench { command: BenchCommand::Decode { dir, repeat } } => {
            let files: Vec<PathBuf> = walkdir::WalkDir::new(&dir)
                .sort_by_file_name()
                .into_iter()
                .filter_map(|e| e.ok())
                .map(|e| e.into_path())
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| ["jpg", "jpeg", "png"].contains(&e.to_string_lossy().to_lowercase().as_str()))
                })
                .collect();
            if files.is_empty() {
                bail!("no images under {}", dir.display());
            }
            let mut best = 0.0f64;
            for _ in 0..repeat.max(1) {
                let start = std::time::Instant::now();
                for f in &files {
                    // The stored square is 256 (= 224 / 0.875); the 224 crop is a view at batch time.
                    runner::data::decode(f, runner::data::resize_side(224)).map_err(anyhow::Error::msg)?;
                }
                best = best.max(files.len() as f64 / start.elapsed().as_secs_f64());
            }
            println!("runner: {} images, {best:.1} images/s on one core (best of {repeat})", files.len());
        }
        Command::Predict { images, run, backbone, weights, image_size, top_k, json } => {
            let predictor = match (run, backbone) {
                (Some(dir), _) => Predictor::from_run(&dir)?,
                (None, Some(name)) => Predictor::from_backbone(parse_backbone(&name)?, &weights, image_size)?,
                (None, None) => unreachable!("clap requires one"),
            };
            let results: Vec<_> = images.iter().map(|p| predictor.predict(p, top_k)).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            } else {
                for r in &results {
                    println!("{}", r.path.display());
                    if let Some(e) = &r.error {
                        println!("  error: {e}");
                    }
                    for (i, t) in r.top.iter().enumerate() {
                        let label = t.label.as_deref().map(|l| format!(" {l}")).unwrap_or_default();
                        println!("  {}. {:>4}{label}  {:.4}", i + 1, t.index, t.probability);
                    }
                }
            }
            let failed = results.iter().filter(|r| r.error.is_some()).count();
            if failed > 0 {
                bail!("{failed} of {} images could not be read", results.len());
            }
        }
        Command::Layers { backbone } => {
            let Some(b) = Backbone::from_name(&backbone) else {
                let names: Vec<_> = Backbone::ALL.iter().map(|b| b.name()).collect();
                let hint = runner::spec::suggest(&backbone, &names)
                    .map(|s| format!(", did you mean `{s}`?"))
                    .unwrap_or_default();
                bail!("unknown backbone `{backbone}`{hint} (known: {})", names.join(", "));
            };
            let vs = tch::nn::VarStore::new(Device::Cpu);
            let net = b.build(&vs.root());
            println!("{:>5}  {:<12} {:>10}  batchnorm", "index", "name", "params");
            for (i, layer) in net.layers().iter().enumerate() {
                let params = parameter_count(&vs, &layer.prefixes);
                println!("{i:>5}  {:<12} {params:>10}  {}", layer.name, if layer.has_batchnorm { "yes" } else { "no" });
            }
            println!("freeze_up_to = N freezes layers 0..N-1; \"all\" freezes all {} layers.", net.layers().len());
        }
        Command::Data { command: DataCommand::Check { source, split, seed, image_size } } => {
            data_check(&source, &split, seed, image_size)?
        }
        Command::Data { command: DataCommand::Synth { out, classes, per_class, size, seed } } => {
            let n = synth::generate(&out, &SynthOptions { classes, per_class, size, seed })?;
            println!("wrote {n} images of {classes} classes to {}", out.display());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    if let Err(e) = runner::malloc::tune() {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // A wrong spec is a usage error, like a wrong flag.
            if e.downcast_ref::<SpecError>().is_some() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}
