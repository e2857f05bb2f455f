//! `runner predict`: top-k classes for image files, from a finished run (its
//! best weights and class names) or from a pretrained backbone with its
//! original ImageNet head.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tch::{Device, Kind, Tensor, nn};

use crate::config::spec::{Spec, TtaView};
use crate::data::{Transform, decode, resize_side};
use crate::model::weights;
use crate::model::{Backbone, Classifier};
use crate::record::run_dir::RunDir;
use crate::record::summary::Summary;

mod export;
pub use export::ExportOptions;

/// `model.json`: what an exported model is and how its inputs are prepared, so that it can
/// be used without runner (or by `runner predict --model DIR`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ModelCard {
    pub backbone: Backbone,
    /// Class names in output order.
    pub classes: Vec<String>,
    /// The model's input side (a center crop of the image resized to `resize`).
    pub image_size: u32,
    /// The shorter side images are resized to before the crop.
    pub resize: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Hidden layers of the head, and a ViT's pooling (as the spec had them).
    #[serde(default)]
    pub hidden: Vec<i64>,
    #[serde(default)]
    pub pool: crate::config::spec::Pool,
    pub runner_version: String,
    /// The files beside it: `model.safetensors` (torchvision's names), `model.pt`
    /// (TorchScript) and `model.onnx` (ONNX), the last two taking float NCHW input,
    /// normalised unless `torchscript_preprocessing`.
    pub files: Vec<String>,
    /// `model.pt` and `model.onnx` take 0-255 pixels (resized and cropped) and normalise them.
    #[serde(default)]
    pub torchscript_preprocessing: bool,
    /// The batch size `model.pt` and `model.onnx` were traced for (their input's first dimension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traced_batch_size: Option<i64>,
    /// The run's calibration temperature (`eval.calibrate`): the logits are divided by it
    /// before the softmax. `runner predict` applies it, and `model.pt` and `model.onnx` output
    /// the divided logits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
}

impl ModelCard {
    /// What makes this card unusable (an edited or foreign model.json), naming the key.
    fn problem(&self) -> std::result::Result<(), String> {
        use crate::config::spec::MAX_IMAGE_SIZE;
        if self.classes.is_empty() {
            return Err("`classes`: expected at least one class name".into());
        }
        if !(32..=MAX_IMAGE_SIZE).contains(&self.image_size) {
            return Err(format!("`image_size`: expected 32 to {MAX_IMAGE_SIZE} pixels, found {}", self.image_size));
        }
        if let Some(p) = self.backbone.patch_size().filter(|p| !self.image_size.is_multiple_of(*p)) {
            return Err(format!("`image_size`: {} needs a multiple of {p}, found {}", self.backbone, self.image_size));
        }
        if !(self.image_size..=2 * MAX_IMAGE_SIZE).contains(&self.resize) {
            return Err(format!(
                "`resize`: expected the image size ({}) to {} pixels, found {}",
                self.image_size,
                2 * MAX_IMAGE_SIZE,
                self.resize
            ));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err(format!("`mean`: expected finite numbers, found {:?}", self.mean));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!("`std`: expected finite numbers above 0, found {:?}", self.std));
        }
        if let Some(h) = self.hidden.iter().find(|h| !(1..=MAX_HIDDEN_WIDTH).contains(*h)) {
            return Err(format!("`hidden`: expected layer widths of 1 to {MAX_HIDDEN_WIDTH}, found {h}"));
        }
        if let Some(t) = self.temperature.filter(|t| !(t.is_finite() && *t > 0.0)) {
            return Err(format!("`temperature`: expected a finite number above 0, found {t}"));
        }
        if let Some(b) = self.traced_batch_size.filter(|b| !(1..=1024).contains(b)) {
            return Err(format!("`traced_batch_size`: expected 1 to 1024, found {b}"));
        }
        // The head's weights: no backbone's features are wider than 4096 (VGG16's).
        let widths: Vec<u128> = [4096]
            .into_iter()
            .chain(self.hidden.iter().map(|&h| h as u128))
            .chain([self.classes.len() as u128])
            .collect();
        let weights: u128 = widths.windows(2).map(|w| w[0] * w[1]).sum();
        if weights > MAX_HEAD_WEIGHTS {
            return Err(format!(
                "`hidden` and `classes`: a head of {weights} weights, more than {MAX_HEAD_WEIGHTS} (hidden {:?}, {} classes)",
                self.hidden,
                self.classes.len()
            ));
        }
        Ok(())
    }

    /// Fuzzing: a model.json's bytes read and checked as `predict --model` does, and, when
    /// they pass, an image prepared as the card says. A value or an error, never a panic.
    #[cfg(test)]
    pub(crate) fn fuzz(bytes: &[u8]) {
        let Ok(card) = serde_json::from_slice::<ModelCard>(bytes) else { return };
        if card.problem().is_ok() {
            let transform = Transform::new(card.image_size, &[], card.mean, card.std);
            let image = Tensor::zeros([1, 3, card.resize as i64, card.resize as i64], (tch::Kind::Uint8, Device::Cpu));
            let _ = transform.eval(&image, Device::Cpu);
        }
    }
}

/// The most weights a model.json's head may have (1 GiB of float32).
const MAX_HEAD_WEIGHTS: u128 = 1 << 28;

/// The widest hidden layer a model.json may ask for.
const MAX_HIDDEN_WIDTH: i64 = 1 << 20;

/// A model ready to classify: weights loaded, class names where known.
pub struct Predictor {
    vs: nn::VarStore,
    card: Option<ModelCard>,
    model: Classifier,
    labels: Option<Vec<String>>,
    image_size: u32,
    transform: Transform,
    /// Test-time views averaged with the plain image (a run's `eval.tta`).
    pub tta: Vec<TtaView>,
    /// Whether each prediction carries the model's raw output (`Prediction::logits`).
    pub keep_logits: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ranked {
    pub index: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub probability: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub path: PathBuf,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<Ranked>,
    /// Every class's logit in output order (with test-time views, the log of the averaged
    /// softmax), when the predictor keeps them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logits: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Predictor {
    /// The best weights of the run in `dir` (its config.toml, summary.json and best.safetensors).
    pub fn from_run(dir: &Path) -> crate::Result<Predictor> {
        let dir = RunDir::at(dir);
        let spec = Spec::load(&dir.config())?;
        Ok(Self::from_run_spec(&dir, spec)?)
    }

    fn from_run_spec(dir: &RunDir, spec: Spec) -> Result<Predictor> {
        let summary = Summary::read(dir).with_context(|| format!("{} has no readable summary.json", dir.display()))?;
        let best = dir.best();
        if !best.is_file() {
            bail!("{} has no best.safetensors (did the run finish an epoch?)", dir.display());
        }
        let b = spec.model.backbone;
        let hidden: Vec<i64> = spec.model.head.hidden.iter().map(|&h| h as i64).collect();
        let mut vs = nn::VarStore::new(Device::Cpu);
        let classes = summary.classes.len() as i64;
        let pool = spec.model.pool.unwrap_or_default();
        let model = Classifier::with_hidden(b, &vs.root(), classes, 0.0, &hidden, Default::default(), pool);
        weights::load_into(&mut vs, weights::read(&best)?, None, &best)?;
        let (mean, std) = b.normalization();
        let card = ModelCard {
            backbone: b,
            classes: summary.classes.clone(),
            image_size: spec.data.image_size,
            resize: resize_side(spec.data.image_size),
            mean,
            std,
            hidden,
            pool,
            runner_version: env!("CARGO_PKG_VERSION").into(),
            files: vec![],
            torchscript_preprocessing: false,
            traced_batch_size: None,
            temperature: summary.calibration.as_ref().map(|c| c.temperature),
        };
        let mut predictor = Self::new(vs, model, Some(summary.classes), spec.data.image_size, b);
        predictor.tta = spec.eval.tta;
        predictor.card = Some(card);
        Ok(predictor)
    }

    /// A model exported by `runner export --format safetensors`: `dir/model.json` and
    /// `dir/model.safetensors`.
    pub fn from_model_dir(dir: &Path) -> Result<Predictor> {
        let text = std::fs::read_to_string(dir.join("model.json"))
            .with_context(|| format!("{} has no readable model.json (runner export writes one)", dir.display()))?;
        let card: ModelCard = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a runner model.json", dir.join("model.json").display()))?;
        if let Err(why) = card.problem() {
            bail!("{}: {why}", dir.join("model.json").display());
        }
        let weights_file = dir.join("model.safetensors");
        if !weights_file.is_file() {
            bail!("{} has no model.safetensors (export with --format safetensors)", dir.display());
        }
        let mut vs = nn::VarStore::new(Device::Cpu);
        let classes = card.classes.len() as i64;
        let model = Classifier::with_hidden(
            card.backbone,
            &vs.root(),
            classes,
            0.0,
            &card.hidden,
            Default::default(),
            card.pool,
        );
        weights::load_into(&mut vs, weights::read(&weights_file)?, None, &weights_file)?;
        let mut predictor = Self::new(vs, model, Some(card.classes.clone()), card.image_size, card.backbone);
        predictor.transform = Transform::new(card.image_size, &[], card.mean, card.std);
        predictor.card = Some(card);
        Ok(predictor)
    }

    /// The logits of already prepared (normalised NCHW) inputs.
    pub fn logits(&self, x: &Tensor) -> Tensor {
        self.model.infer(x)
    }

    /// The normalised model input for image files, as `predict` prepares it.
    pub fn inputs(&self, paths: &[PathBuf]) -> Result<Tensor> {
        let (decoded, images) = self.decode_batch(paths);
        if let Some((p, Err(e))) = paths.iter().zip(&decoded).find(|(_, d)| d.is_err()) {
            bail!("{}: {e}", p.display());
        }
        Ok(self.transform.eval(&images, Device::Cpu))
    }

    /// Each file decoded (in parallel) at the resize side, and the readable ones stacked as
    /// one uint8 NCHW batch (of none when no file could be read).
    fn decode_batch(&self, paths: &[PathBuf]) -> (Vec<Result<(), String>>, Tensor) {
        use rayon::prelude::*;
        let side = resize_side(self.image_size);
        let decoded: Vec<Result<Vec<u8>, String>> =
            paths.par_iter().map(|p| decode(p, side).map_err(|e| e.to_string())).collect();
        let pixels: Vec<u8> = decoded.iter().filter_map(|d| d.as_ref().ok()).flatten().copied().collect();
        let n = decoded.iter().filter(|d| d.is_ok()).count() as i64;
        let images = Tensor::from_slice(&pixels).view([n, 3, side as i64, side as i64]);
        (decoded.into_iter().map(|d| d.map(|_| ())).collect(), images)
    }

    /// A pretrained backbone with its own 1000-class ImageNet head, its classes named.
    pub fn from_backbone(b: Backbone, weights_spec: &str, image_size: u32) -> Result<Predictor> {
        if matches!(b, Backbone::Dinov2Vits14 | Backbone::Dinov2Vitb14) {
            bail!("{b}'s checkpoints are self-supervised features with no classifier: train a head first (runner run)");
        }
        let mut vs = nn::VarStore::new(Device::Cpu);
        let model = Classifier::new(b, &vs.root(), 1000, 0.0);
        match weights::resolve(b, weights_spec, None)? {
            weights::WeightsSource::File(path) => weights::load_into(&mut vs, weights::read(&path)?, None, &path)?,
            weights::WeightsSource::None => bail!("predicting needs trained weights, not \"none\""),
        }
        Ok(Self::new(vs, model, Some(imagenet_classes()), image_size, b))
    }

    fn new(vs: nn::VarStore, model: Classifier, labels: Option<Vec<String>>, image_size: u32, b: Backbone) -> Self {
        let (mean, std) = b.normalization();
        let transform = Transform::new(image_size, &[], mean, std);
        // Inference only: no parameter needs a gradient (and TorchScript tracing can then
        // keep the weights as the module's constants).
        let mut vs = vs;
        vs.freeze();
        Predictor { vs, card: None, model, labels, image_size, transform, tta: vec![], keep_logits: false }
    }

    /// Top-`k` classes of one image; decoding problems are reported in the result.
    pub fn predict(&self, path: &Path, k: usize) -> Prediction {
        self.predict_batch(&[path.to_path_buf()], k).pop().expect("one result per path")
    }

    /// Top-`k` classes of each image, decoded in parallel and classified in one batch;
    /// an image that cannot be decoded gets its reason and no classes.
    pub fn predict_batch(&self, paths: &[PathBuf], k: usize) -> Vec<Prediction> {
        let (decoded, images) = self.decode_batch(paths);
        let mut ranked = vec![].into_iter();
        if images.size()[0] > 0 {
            let logits = tch::no_grad(|| {
                // Multi-crop views are cut from the decoded squares (the stored side, as in training).
                let x = if TtaView::multi_crop(&self.tta) {
                    self.transform.eval_whole(&images, Device::Cpu)
                } else {
                    self.transform.eval(&images, Device::Cpu)
                };
                crate::train::tta_logits(&self.model, &x, &self.tta, self.image_size as i64)
            });
            ranked = self.rank(&logits, k).into_iter();
        }
        paths
            .iter()
            .zip(decoded)
            .map(|(path, d)| match d {
                Ok(()) => {
                    let (top, logits) = ranked.next().unwrap_or_default();
                    Prediction { path: path.clone(), top, logits, error: None }
                }
                Err(reason) => Prediction { path: path.clone(), top: vec![], logits: None, error: Some(reason) },
            })
            .collect()
    }

    /// The calibration temperature the model's logits are divided by (1 without one).
    pub fn temperature(&self) -> f64 {
        self.card.as_ref().and_then(|c| c.temperature).unwrap_or(1.0)
    }

    /// Each row's top-`k` classes by softmax probability (of the logits divided by the
    /// calibration temperature), and those logits if they are kept.
    fn rank(&self, logits: &Tensor, k: usize) -> Vec<(Vec<Ranked>, Option<Vec<f32>>)> {
        let logits = &(logits.to_kind(Kind::Double) / self.temperature());
        let (n, classes) = (logits.size()[0], logits.size()[1]);
        let k = k.min(classes as usize) as i64;
        let (values, indices) = logits.softmax(-1, Kind::Double).topk(k, 1, true, true);
        let values = Vec::<f64>::try_from(values.flatten(0, -1)).unwrap_or_default();
        let indices = Vec::<i64>::try_from(indices.flatten(0, -1)).unwrap_or_default();
        let raw = if self.keep_logits {
            Vec::<f32>::try_from(logits.to_kind(Kind::Float).flatten(0, -1)).unwrap_or_default()
        } else {
            vec![]
        };
        (0..n as usize)
            .map(|row| {
                let span = row * k as usize..(row + 1) * k as usize;
                let top = indices[span.clone()]
                    .iter()
                    .zip(&values[span])
                    .map(|(&index, &probability)| Ranked {
                        index,
                        label: self.labels.as_ref().and_then(|l| l.get(index as usize).cloned()),
                        probability,
                    })
                    .collect();
                let kept = self.keep_logits.then(|| raw[row * classes as usize..(row + 1) * classes as usize].to_vec());
                (top, kept)
            })
            .collect()
    }
}

/// ImageNet-1k's class names in index order (src/predict/imagenet_classes.txt, written by
/// scripts/make_imagenet_classes.py from torchvision's list).
pub fn imagenet_classes() -> Vec<String> {
    include_str!("imagenet_classes.txt").lines().map(str::to_string).collect()
}

/// The image files `inputs` name: a file as it is, a folder's image files (JPEG, PNG;
/// recursively, in name order), a glob pattern's matches (`photos/*.jpg`, for shells that
/// pass it quoted). A folder without images or a pattern that matches nothing is an error.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let is_image = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| ["jpg", "jpeg", "png"].contains(&e.to_ascii_lowercase().as_str()))
    };
    let mut out = vec![];
    for input in inputs {
        let text = input.to_string_lossy();
        if input.is_dir() {
            let before = out.len();
            for entry in walkdir::WalkDir::new(input).sort_by_file_name() {
                let entry = entry.with_context(|| format!("cannot list {}", input.display()))?;
                // A link to an image counts as the image (a dangling one is reported with its
                // prediction, as an unreadable file is); links are not followed into folders.
                let image = entry.file_type().is_file() || (entry.path_is_symlink() && !entry.path().is_dir());
                if image && is_image(entry.path()) {
                    out.push(entry.into_path());
                }
            }
            if out.len() == before {
                bail!("{}: no image files (.jpg, .jpeg, .png) in this folder", input.display());
            }
        } else if !input.exists() && text.contains(['*', '?', '[']) {
            let before = out.len();
            for m in glob::glob(&text).with_context(|| format!("{text}: not a valid glob pattern"))? {
                let path = m.with_context(|| format!("cannot read a match of {text}"))?;
                if path.is_file() {
                    out.push(path);
                }
            }
            if out.len() == before {
                bail!("{text}: the pattern matches no file");
            }
        } else {
            // A missing file is reported with its prediction, as an unreadable one is.
            out.push(input.clone());
        }
    }
    Ok(out)
}

/// The predictions as CSV: path, then class and probability for each of the top `k`, then
/// every class's logit (`logit_0`, ...) where the predictions carry them, then the error
/// (empty when the image was read).
pub fn predictions_csv(predictions: &[Prediction], k: usize) -> String {
    let field =
        |s: &str| if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() };
    let classes = predictions.iter().find_map(|p| p.logits.as_ref().map(Vec::len)).unwrap_or(0);
    let mut out = String::from("path");
    for i in 1..=k {
        out.push_str(&format!(",class_{i},probability_{i}"));
    }
    for i in 0..classes {
        out.push_str(&format!(",logit_{i}"));
    }
    out.push_str(",error\n");
    for p in predictions {
        out.push_str(&field(&p.path.to_string_lossy()));
        for i in 0..k {
            match p.top.get(i) {
                Some(r) => {
                    let class = r.label.clone().unwrap_or_else(|| r.index.to_string());
                    out.push_str(&format!(",{},{:.6}", field(&class), r.probability));
                }
                None => out.push_str(",,"),
            }
        }
        for i in 0..classes {
            match p.logits.as_ref().and_then(|l| l.get(i)) {
                Some(v) => out.push_str(&format!(",{v}")),
                None => out.push(','),
            }
        }
        out.push_str(&format!(",{}\n", field(p.error.as_deref().unwrap_or(""))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranked(index: i64, label: &str, probability: f64) -> Ranked {
        Ranked { index, label: Some(label.into()), probability }
    }

    #[test]
    fn csv_quotes_fields_and_gives_logit_columns_when_kept() {
        let predictions = vec![
            Prediction {
                path: "a,b.jpg".into(),
                top: vec![ranked(1, "say \"hi\"", 0.75), ranked(0, "cat", 0.25)],
                logits: Some(vec![-0.5, 0.598_612_3]),
                error: None,
            },
            Prediction { path: "bad.jpg".into(), top: vec![], logits: None, error: Some("not a JPEG".into()) },
        ];
        let csv = predictions_csv(&predictions, 2);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "path,class_1,probability_1,class_2,probability_2,logit_0,logit_1,error");
        assert_eq!(lines[1], "\"a,b.jpg\",\"say \"\"hi\"\"\",0.750000,cat,0.250000,-0.5,0.5986123,");
        assert_eq!(lines[2], "bad.jpg,,,,,,,not a JPEG");
        // Without logits, no such columns.
        let plain: Vec<Prediction> = predictions.into_iter().map(|p| Prediction { logits: None, ..p }).collect();
        assert!(predictions_csv(&plain, 2).starts_with("path,class_1,probability_1,class_2,probability_2,error\n"));
    }
}
