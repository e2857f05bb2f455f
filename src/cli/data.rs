//! `runner data ...`

use std::path::PathBuf;

use anyhow::anyhow;
use clap::Subcommand;
use runner::Result;

use runner::data::synth::{self, SynthOptions};

#[derive(Subcommand)]
pub enum Command {
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

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Check { source, split, seed, image_size } => data_check(&source, &split, seed, image_size)?,
        Command::Synth { out, classes, per_class, size, seed } => {
            let n = synth::generate(&out, &SynthOptions { classes, per_class, size, seed })?;
            println!("wrote {n} images of {classes} classes to {}", out.display());
        }
    }
    Ok(())
}

/// `runner data check`: what a run would see of a dataset.
fn data_check(source: &str, split: &[f64], seed: u64, image_size: u32) -> Result<()> {
    if !(2..=3).contains(&split.len()) || (split.iter().sum::<f64>() - 1.0).abs() > 1e-6 {
        return Err(anyhow!("--split: expected 2 or 3 fractions that sum to 1, found {split:?}").into());
    }
    let root = runner::data::archive::materialize(source)?;
    let files = runner::data::discover(&root, split, seed)?;
    let manifest = runner::data::manifest(&files)?;
    let data = runner::data::load(&files, &manifest, image_size, false, runner::data::StoreMode::Auto)?;
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
