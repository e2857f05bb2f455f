//! `runner predict`: top-k classes of image files, folders and glob patterns, in batches,
//! printed, as JSON, or written to a CSV file.

use std::path::PathBuf;

use anyhow::anyhow;
use runner::Result;

use runner::config::spec::TtaView;
use runner::predict::Predictor;

use super::parse_backbone;

#[derive(clap::Args)]
pub struct Args {
    /// Image files (JPEG or PNG), folders (every image below them) or quoted glob patterns.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Write the predictions to this CSV file (path, class_i and probability_i for the top
    /// k, error) instead of printing them; `-` writes the CSV to standard output.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Images classified at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub batch_size: u64,
    /// A run directory (reports/runs/<experiment>/<run-id>): its best weights and class names.
    #[arg(long, conflicts_with_all = ["backbone", "model"], required_unless_present_any = ["backbone", "model"])]
    pub run: Option<PathBuf>,
    /// A model exported by `runner export --format safetensors` (its folder, with model.json).
    #[arg(long, conflicts_with = "backbone")]
    pub model: Option<PathBuf>,
    /// A backbone with its pretrained ImageNet head instead.
    #[arg(long)]
    pub backbone: Option<String>,
    /// Weights for --backbone: "imagenet", a file or a URL.
    #[arg(long, default_value = "imagenet", requires = "backbone")]
    pub weights: String,
    /// Input size for --backbone (a run uses its own).
    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(32..=runner::config::spec::MAX_IMAGE_SIZE as i64))]
    pub image_size: u32,
    /// How many classes to list per image, best first.
    #[arg(long, short = 'k', default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub top_k: u64,
    /// Machine-readable output: one JSON array.
    #[arg(long)]
    pub json: bool,
    /// Test-time augmentation: average the softmax over the image and these views
    /// ("hflip", "five_crop", "ten_crop", "scale=1.15"; "none" for the image alone). A run's
    /// `[eval] tta` by default.
    #[arg(long, value_delimiter = ',', value_parser = parse_tta)]
    pub tta: Option<Vec<Option<TtaView>>>,
    /// Also give every class's raw logit (JSON: "logits"; CSV: logit_0, logit_1, ...), e.g.
    /// to check an exported model against runner.
    #[arg(long)]
    pub logits: bool,
}

/// Every image's prediction, a batch at a time, with a progress bar and the rate at the end
/// (on stderr, apart from the predictions).
fn predict_all(predictor: &Predictor, images: &[PathBuf], k: usize, batch: usize) -> Vec<runner::predict::Prediction> {
    let started = std::time::Instant::now();
    let bar = if images.len() > batch {
        runner::sys::reporter::bar(images.len() as u64, runner::sys::reporter::Unit::Images, "predict")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut results = Vec::with_capacity(images.len());
    for chunk in images.chunks(batch) {
        results.extend(predictor.predict_batch(chunk, k));
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "predicted {} images in {secs:.2} s ({:.1} images/s)",
        images.len(),
        images.len() as f64 / secs.max(1e-9)
    );
    results
}

/// Text for a terminal: control characters (escape sequences in a file or class name could
/// rewrite the screen) shown escaped.
fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

fn parse_tta(s: &str) -> std::result::Result<Option<TtaView>, String> {
    match s {
        "hflip" => Ok(Some(TtaView::Hflip)),
        "five_crop" => Ok(Some(TtaView::FiveCrop)),
        "ten_crop" => Ok(Some(TtaView::TenCrop)),
        "none" => Ok(None),
        _ if s.starts_with("scale=") => match s["scale=".len()..].parse::<f64>() {
            Ok(x) if runner::config::spec::TTA_SCALES.contains(&x) => Ok(Some(TtaView::Scale(x))),
            _ => Err(format!("expected scale=S with S from 0.875 to 2, found {s:?}")),
        },
        _ => Err(format!("expected \"hflip\", \"five_crop\", \"ten_crop\", \"scale=S\" or \"none\", found {s:?}")),
    }
}

pub fn run(args: Args) -> Result<()> {
    let Args { images, csv, batch_size, run, model, backbone, weights, image_size, top_k, json, tta, logits } = args;
    let top_k = top_k as usize;
    if let Some(path) = csv.as_ref().filter(|p| p.as_os_str() != "-") {
        // Found before any image is classified, not after.
        let parent = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        if path.is_dir() || !parent.is_dir() {
            return Err(anyhow!("--csv {}: not a file in an existing folder", path.display()).into());
        }
    }
    let images = runner::predict::expand_inputs(&images)?;
    let mut predictor = match (run, backbone) {
        (Some(dir), _) => Predictor::from_run(&dir)?,
        (None, _) if model.is_some() => Predictor::from_model_dir(model.as_deref().expect("checked"))?,
        (None, Some(name)) => {
            let b = parse_backbone(&name)?;
            super::check_patch_size(b, image_size)?;
            Predictor::from_backbone(b, &weights, image_size)?
        }
        (None, None) => unreachable!("clap requires one"),
    };
    if let Some(views) = tta {
        predictor.tta = views.into_iter().flatten().collect();
    }
    predictor.keep_logits = logits;
    let results = predict_all(&predictor, &images, top_k, batch_size as usize);
    // No more columns than the model has classes.
    let k = results.iter().map(|r| r.top.len()).max().unwrap_or(top_k).min(top_k);
    if let Some(path) = &csv {
        let table = runner::predict::predictions_csv(&results, k);
        if path.as_os_str() == "-" {
            print!("{table}");
        } else {
            runner::sys::atomic::write_atomic(path, table.as_bytes())?;
            eprintln!("predictions: {}", path.display());
        }
    } else if json {
        println!("{}", serde_json::to_string_pretty(&results).map_err(anyhow::Error::from)?);
    } else {
        for r in &results {
            println!("{}", printable(&r.path.display().to_string()));
            if let Some(e) = &r.error {
                println!("  error: {}", printable(e));
            }
            for (i, t) in r.top.iter().enumerate() {
                let label = t.label.as_deref().map(|l| format!(" {}", printable(l))).unwrap_or_default();
                println!("  {}. {:>4}{label}  {:.4}", i + 1, t.index, t.probability);
            }
            if let Some(l) = &r.logits {
                println!("  logits: {}", l.iter().map(f32::to_string).collect::<Vec<_>>().join(" "));
            }
        }
    }
    let failed = results.iter().filter(|r| r.error.is_some()).count();
    if failed > 0 {
        return Err(anyhow!("{failed} of {} images could not be read", results.len()).into());
    }
    Ok(())
}
