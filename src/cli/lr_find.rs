//! `runner lr-find`: the learning-rate range test of a spec's phase, from the state that
//! phase starts from; it writes a plot and a CSV and prints the suggestion, and no run.

use std::path::PathBuf;

use anyhow::anyhow;
use runner::Result;
use runner::train::{Flow, RangeTest, Trainer};

use super::{DeviceFlags, SetFlags, device, load, pin_numerics};

#[derive(clap::Args)]
pub struct Args {
    /// The experiment spec (its first run when it has a grid).
    pub spec: PathBuf,
    /// The phase, by number (1 is the first) or name. The phases before it are trained
    /// first, in full and without early stopping, to reach the state it starts from.
    #[arg(long, default_value = "1")]
    pub phase: String,
    /// The first rate of the sweep.
    #[arg(long, default_value_t = 1e-7)]
    pub start: f64,
    /// The last rate of the sweep.
    #[arg(long, default_value_t = 10.0)]
    pub end: f64,
    /// Steps (one batch each) from the first rate to the last.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub steps: u32,
    /// Where the plot and the CSV go [default: reports/lr_find/<experiment>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub set: SetFlags,
    #[command(flatten)]
    pub device: DeviceFlags,
}

pub fn run(args: Args) -> Result<()> {
    let test = RangeTest { start: args.start, end: args.end, steps: args.steps as usize };
    if !(test.start > 0.0 && test.end > test.start && test.end.is_finite()) {
        return Err(
            anyhow!("--start and --end: expected 0 < start < end, found {} and {}", test.start, test.end).into()
        );
    }
    let exp = load(&args.spec, &args.set.set)?;
    pin_numerics(exp.runs.iter().map(|r| r.spec.reproducibility))?;
    if exp.runs.len() > 1 {
        println!("(the first of the {} runs of the grid)", exp.runs.len());
    }
    let spec = &exp.runs[0].spec;
    let p = phase_index(&args.phase, spec.phases.iter().map(|ph| ph.name.as_str()).collect())?;
    let mut trainer = runner::run::prepare(spec, device(args.device.device)?)?;
    reach_phase(&mut trainer, p)?;
    let mut run = trainer.start_phase(p, 0);
    let name = &spec.phases[p].name;
    println!("phase {} ({name}): {}", p + 1, run.cache_note());
    let found = trainer.lr_range_test(&mut run, &test);
    println!("phase {} ({name}): {}", p + 1, found.describe(&test));
    let out = args.out.unwrap_or_else(|| PathBuf::from("reports/lr_find").join(&spec.name));
    std::fs::create_dir_all(&out).map_err(|e| anyhow!("cannot create {}: {e}", out.display()))?;
    let stem = runner::record::lr_find_stem(p, name);
    runner::record::write_lr_find(&out, &stem, &format!("{}, phase {name}", spec.name), &found)?;
    println!("wrote {} and {}", out.join(format!("{stem}.png")).display(), out.join(format!("{stem}.csv")).display());
    if !(found.suggestion.is_finite() && found.suggestion > 0.0) {
        return Err(anyhow!("the range test found no learning rate: no step's loss was finite").into());
    }
    println!("suggested lr: {:e}", found.suggestion);
    Ok(())
}

/// The phase `arg` names: its number (1-based) or its name.
fn phase_index(arg: &str, names: Vec<&str>) -> Result<usize> {
    if let Some(p) = names.iter().position(|n| *n == arg) {
        return Ok(p);
    }
    match arg.parse::<usize>() {
        Ok(n) if (1..=names.len()).contains(&n) => Ok(n - 1),
        _ => Err(anyhow!(
            "--phase {arg}: expected a number from 1 to {} or a phase name ({})",
            names.len(),
            names.join(", ")
        )
        .into()),
    }
}

/// Trains the phases before `p` as a run would (a phase with `lr = "find"` after its own
/// range test), without records and without early stopping.
fn reach_phase(trainer: &mut Trainer, p: usize) -> Result<()> {
    let total: usize = trainer.schedule().phases().iter().map(|ph| ph.epochs).sum();
    let mut first = 1;
    for q in 0..p {
        let mut run = trainer.start_phase(q, 0);
        if trainer.schedule().to_find(q) {
            let found = trainer.lr_range_test(&mut run, &RangeTest::default());
            println!("phase {}: {}", q + 1, found.describe(&RangeTest::default()));
            trainer.use_found_lr(q, found.suggestion, Some(&mut run));
        }
        trainer.train_phase(&mut run, 0, first, total, |_| Ok(Flow::Continue))?;
        first += trainer.schedule().phases()[q].epochs;
    }
    Ok(())
}
