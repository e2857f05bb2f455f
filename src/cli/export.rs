//! `runner export`: a finished run's model, for use without runner.

use std::path::PathBuf;

use runner::Result;
use runner::predict::Predictor;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The weights under the reference implementation's names (`model.safetensors`).
    Safetensors,
    /// A TorchScript module (`model.pt`) that `torch.jit.load` runs.
    Torchscript,
}

#[derive(clap::Args)]
pub struct Args {
    /// A run directory (reports/runs/<experiment>/<run-id>): its best weights.
    pub run: PathBuf,
    /// What to write (both: repeat the flag).
    #[arg(long, value_enum, required = true)]
    pub format: Vec<Format>,
    /// The folder to write into (with model.json, which describes the model and its inputs).
    #[arg(long)]
    pub out: PathBuf,
    /// TorchScript: the module takes 0-255 pixels (already resized and cropped) and
    /// normalises them itself.
    #[arg(long)]
    pub with_preprocessing: bool,
    /// TorchScript: the batch size the module is traced for.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..=1024))]
    pub batch_size: i64,
}

pub fn run(args: Args) -> Result<()> {
    let predictor = Predictor::from_run(&args.run)?;
    let safetensors = args.format.contains(&Format::Safetensors);
    let torchscript = args.format.contains(&Format::Torchscript);
    let card = predictor.export(&args.out, safetensors, torchscript, args.with_preprocessing, args.batch_size)?;
    println!(
        "exported {} ({} classes, {} px) to {}: {} and model.json",
        card.backbone,
        card.classes.len(),
        card.image_size,
        args.out.display(),
        card.files.join(", ")
    );
    Ok(())
}
