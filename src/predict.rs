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

/// A model ready to classify: weights loaded, class names where known.
pub struct Predictor {
    _vs: nn::VarStore,
    model: Classifier,
    labels: Option<Vec<String>>,
    image_size: u32,
    transform: Transform,
    /// Test-time views averaged with the plain image (a run's `eval.tta`).
    pub tta: Vec<TtaView>,
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
        let mut predictor = Self::new(vs, model, Some(summary.classes), spec.data.image_size, b);
        predictor.tta = spec.eval.tta;
        Ok(predictor)
    }

    /// A pretrained backbone with its own 1000-class ImageNet head.
    pub fn from_backbone(b: Backbone, weights_spec: &str, image_size: u32) -> Result<Predictor> {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let model = Classifier::new(b, &vs.root(), 1000, 0.0);
        match weights::resolve(b, weights_spec, None, false)? {
            weights::WeightsSource::File(path) => weights::load_into(&mut vs, weights::read(&path)?, None, &path)?,
            weights::WeightsSource::None => bail!("predicting needs trained weights, not \"none\""),
        }
        Ok(Self::new(vs, model, None, image_size, b))
    }

    fn new(vs: nn::VarStore, model: Classifier, labels: Option<Vec<String>>, image_size: u32, b: Backbone) -> Self {
        let (mean, std) = b.normalization();
        let transform = Transform::new(image_size, &[], mean, std);
        Predictor { _vs: vs, model, labels, image_size, transform, tta: vec![] }
    }

    /// Top-`k` classes of one image; decoding problems are reported in the result.
    pub fn predict(&self, path: &Path, k: usize) -> Prediction {
        let side = resize_side(self.image_size) as i64;
        let chw = match decode(path, side as u32) {
            Ok(chw) => chw,
            Err(reason) => {
                return Prediction { path: path.to_path_buf(), top: vec![], error: Some(reason.to_string()) };
            }
        };
        let images = Tensor::from_slice(&chw).view([1, 3, side, side]);
        let probs = tch::no_grad(|| {
            let x = self.transform.eval(&images, Device::Cpu);
            crate::train::tta_logits(&self.model, &x, &self.tta).softmax(-1, Kind::Double)
        });
        let k = k.min(probs.size()[1] as usize) as i64;
        let (values, indices) = probs.topk(k, 1, true, true);
        let values = Vec::<f64>::try_from(values.flatten(0, -1)).unwrap_or_default();
        let indices = Vec::<i64>::try_from(indices.flatten(0, -1)).unwrap_or_default();
        let top = indices
            .into_iter()
            .zip(values)
            .map(|(index, probability)| Ranked {
                index,
                label: self.labels.as_ref().and_then(|l| l.get(index as usize).cloned()),
                probability,
            })
            .collect();
        Prediction { path: path.to_path_buf(), top, error: None }
    }
}
