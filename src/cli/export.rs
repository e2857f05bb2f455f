//! `runner export`: a finished run's model, for use without runner.

use std::path::PathBuf;

use runner::Result;
use runner::predict::{ExportOptions, Predictor};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The weights under the reference implementation's names (`model.safetensors`).
    Safetensors,
    /// A TorchScript module (`model.pt`) that `torch.jit.load` runs.
    Torchscript,
    /// An ONNX graph (`model.onnx`, opset 17, input "images", output "logits"), converted
    /// from the TorchScript module by PyTorch's exporter in the Python of --python.
    Onnx,
}

#[derive(clap::Args)]
pub struct Args {
    /// A run directory (reports/runs/<experiment>/<run-id>): its best weights.
    pub run: PathBuf,
    /// What to write (several: repeat the flag).
    #[arg(long, value_enum, required = true)]
    pub format: Vec<Format>,
    /// The folder to write into (with model.json, which describes the model and its inputs).
    #[arg(long)]
    pub out: PathBuf,
    /// TorchScript and ONNX: the module takes 0-255 pixels (already resized and cropped) and
    /// normalises them itself.
    #[arg(long)]
    pub with_preprocessing: bool,
    /// TorchScript and ONNX: the batch size the module is traced for.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..=1024))]
    pub batch_size: i64,
    /// ONNX: a Python with torch and onnx installed, whose exporter converts the module.
    #[arg(long, env = "RUNNER_PYTHON", default_value = "python3")]
    pub python: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let predictor = Predictor::from_run(&args.run)?;
    let options = ExportOptions {
        safetensors: args.format.contains(&Format::Safetensors),
        torchscript: args.format.contains(&Format::Torchscript),
        onnx: args.format.contains(&Format::Onnx).then_some(args.python),
        preprocessing: args.with_preprocessing,
        batch: args.batch_size,
    };
    let card = predictor.export(&args.out, &options)?;
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
