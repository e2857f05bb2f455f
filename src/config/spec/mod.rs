//! Experiment specs: the TOML contract users write, layered and validated.
//!
//! A spec is read in layers (figment): serde defaults, then the spec file, then
//! `RUNNER_SPEC__*` environment variables (`RUNNER_SPEC__DATA__BATCH_SIZE=16`). Every error
//! names the file, the dotted key, and the line and column of that key in the
//! file where it has one, so users can jump straight to their mistake.
//!
//! The key layout is a contract: later versions add keys, never rename them.
//!
//! This module holds the spec's types; beside it, `serde_impls.rs` reads and writes
//! the keys that take several forms, `validate.rs` checks what types alone cannot,
//! `source.rs` keeps the file's text to point an error at its line, and `suggest.rs`
//! offers the did-you-mean of an unknown key or value.

mod schedule;
mod serde_impls;
mod source;
mod suggest;
#[cfg(test)]
mod tests;
mod validate;

pub use self::schedule::{Lr, ScheduleKind, ScheduleSpec, ThresholdMode};
pub use self::serde_impls::Classes;
pub use self::source::SpecSource;
pub(crate) use self::suggest::struct_fields;
pub use self::suggest::suggest;
pub(crate) use self::validate::Invalid;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::config::catalog::Backbone;
use crate::error::SpecError;

std::thread_local! {
    /// Set while [`Spec::to_toml`] writes config.toml, which spells out every default.
    static WRITE_DEFAULTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a key at its default value is left out when a spec is serialized: it is in the
/// canonical form (so that a key added later leaves the ids of earlier runs as they were),
/// not in config.toml.
fn omit_default<T: PartialEq + Default>(value: &T) -> bool {
    !WRITE_DEFAULTS.get() && *value == T::default()
}

/// The most folds of `data.folds`.
pub(crate) const MAX_FOLDS: usize = 100;

/// A fully resolved experiment: defaults filled in, ready to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Experiment name; runs are written under `<out>/<name>/<run-id>/`.
    pub name: String,
    /// The run's readable name: the values its grid point (or search trial, or fold) sets,
    /// `lr=0.001,seed=0`; empty for a spec of one run. Set when an experiment is expanded;
    /// not a key of the spec, nor part of the run's identity.
    #[serde(skip)]
    pub label: String,
    /// The keys that other runs of its grid set and this one leaves unset (`ema.decay` where
    /// another point has an `ema`): the trackers record them as "unset", so that every run
    /// of a grid has every key. Set when an experiment is expanded, like `label`.
    #[serde(skip)]
    pub unset_keys: Vec<String>,
    /// Seed for weight init of new layers, data split, shuffling and augmentation.
    #[serde(default)]
    pub seed: u64,
    pub data: DataSpec,
    pub model: ModelSpec,
    pub phases: Vec<PhaseSpec>,
    /// Stop when the monitored metric stops improving; also picks what "best" means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStoppingSpec>,
    /// A run whose train loss rises above this many times its first epoch's (or ln of the
    /// class count, where smaller) ends as diverged, as one whose loss is not a number does
    /// (default [`DIVERGENCE_FACTOR`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergence_factor: Option<f64>,
    /// `[loss]`: label smoothing and class weights of the training criterion.
    #[serde(default, skip_serializing_if = "omit_default")]
    pub loss: LossSpec,
    /// Arithmetic of training steps: "fp32"; "fp16" (autocast with a loss scaler, CUDA only);
    /// "bf16" (autocast to bfloat16, no scaler; CUDA or CPU).
    #[serde(default, skip_serializing_if = "omit_default")]
    pub precision: Precision,
    /// `ema = { decay = 0.999, warmup = true }`: an exponential moving average of the
    /// weights, which evaluation and the best weights use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<EmaSpec>,
    /// `[eval]`: how validation, test and prediction see each image.
    #[serde(default, skip_serializing_if = "omit_default")]
    pub eval: EvalSpec,
    /// Where runs are also logged (MLflow); not part of the run's identity.
    #[serde(default, skip_serializing_if = "TrackingSpec::is_off")]
    pub tracking: TrackingSpec,
    /// Which machines give the same bits: "machine" (the same machine and threads; libtorch's
    /// fastest paths for this processor) or "portable" (any x86_64 processor with AVX2, Intel
    /// or AMD: the instruction paths of libtorch, oneDNN and MKL pinned; sys/numerics.rs).
    #[serde(default, skip_serializing_if = "omit_default")]
    pub reproducibility: Reproducibility,
}

/// `reproducibility`: see [`Spec::reproducibility`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reproducibility {
    #[default]
    Machine,
    Portable,
}

impl Reproducibility {
    pub fn name(self) -> &'static str {
        match self {
            Reproducibility::Machine => "machine",
            Reproducibility::Portable => "portable",
        }
    }
}

/// `[tracking]`: where runs are logged besides their run directory.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingSpec {
    /// An MLflow tracking server's URL (`RUNNER_MLFLOW_URI` gives one when this is unset).
    /// Written out (config.toml, hyperparameters) without its credentials.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::sys::redact::serialize_redacted"
    )]
    pub mlflow: Option<String>,
}

impl TrackingSpec {
    pub fn is_off(&self) -> bool {
        self.mlflow.is_none()
    }

    /// The MLflow server to log to: the spec's, else `RUNNER_MLFLOW_URI`'s.
    pub fn mlflow_uri(&self) -> Option<String> {
        self.mlflow.clone().or_else(|| std::env::var(crate::sys::env::MLFLOW_URI).ok().filter(|u| !u.is_empty()))
    }
}

/// `ema`: timm's `ModelEmaV2` (a shadow copy w <- decay * w + (1 - decay) * weights after
/// every optimizer step), with `ModelEmaV3`'s warm-up when `warmup` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmaSpec {
    pub decay: f64,
    /// Start with a smaller decay, 1 - (1 + t)^(-2/3) at update t (at most `decay`).
    #[serde(default)]
    pub warmup: bool,
}

/// `[eval]`: test-time augmentation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// Extra views whose softmax is averaged with the plain image's: `["hflip"]`.
    #[serde(default, skip_serializing_if = "omit_default")]
    pub tta: Vec<TtaView>,
    /// `"temperature"`: a temperature fitted on the best weights' validation outputs divides
    /// the logits of `predict` and of the exports (Guo et al. 2017); `"none"` by default.
    #[serde(default, skip_serializing_if = "omit_default")]
    pub calibrate: Calibrate,
}

/// `eval.calibrate`: how predicted probabilities are calibrated after training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Calibrate {
    #[default]
    None,
    Temperature,
}

impl EvalSpec {
    pub fn is_plain(&self) -> bool {
        self.tta.is_empty() && self.calibrate == Calibrate::None
    }
}

/// A test-time augmentation view.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TtaView {
    /// The image mirrored left to right.
    Hflip,
    /// The four corner crops of the stored square (shorter side image_size / 0.875, center
    /// square), beside the center crop: torchvision's `FiveCrop` after `Resize` and
    /// `CenterCrop` to that side.
    FiveCrop,
    /// The five crops and their mirrors (`TenCrop`): hflip included.
    TenCrop,
    /// `{ scale = 1.15 }`: the stored square resized by this factor (bilinear, antialiased),
    /// its center crop: the image seen at a shorter side of scale x image_size / 0.875.
    Scale(f64),
}

/// The range of `{ scale = s }`: from the whole stored square (0.875, its side a crop's /
/// 0.875) to twice it.
pub const TTA_SCALES: std::ops::RangeInclusive<f64> = 0.875..=2.0;

impl TtaView {
    /// Whether the views need the stored square rather than the center crop.
    pub fn multi_crop(views: &[TtaView]) -> bool {
        views.iter().any(|v| matches!(v, TtaView::FiveCrop | TtaView::TenCrop | TtaView::Scale(_)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    Fp32,
    Fp16,
    Bf16,
}

impl Precision {
    /// As the spec spells it.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
        }
    }
}

/// `early_stopping = { monitor = "val_acc", patience = 3, min_delta = 0.0, scope = "run" }`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStoppingSpec {
    #[serde(default)]
    pub monitor: Monitor,
    /// Epochs without an improvement of more than `min_delta` before stopping.
    pub patience: usize,
    #[serde(default)]
    pub min_delta: f64,
    #[serde(default)]
    pub scope: StopScope,
}

/// A per-epoch metric; accuracies improve upwards, losses downwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    #[default]
    ValAcc,
    ValLoss,
    TrainAcc,
    TrainLoss,
}

impl Monitor {
    pub fn name(self) -> &'static str {
        match self {
            Monitor::ValAcc => "val_acc",
            Monitor::ValLoss => "val_loss",
            Monitor::TrainAcc => "train_acc",
            Monitor::TrainLoss => "train_loss",
        }
    }

    pub(crate) fn higher_is_better(self) -> bool {
        matches!(self, Monitor::ValAcc | Monitor::TrainAcc)
    }

    /// Whether `value` beats `reference` by more than `min_delta`.
    pub(crate) fn improves(self, value: f64, reference: Option<f64>, min_delta: f64) -> bool {
        if !value.is_finite() {
            return false;
        }
        match reference {
            None => true,
            Some(r) if self.higher_is_better() => value - min_delta > r,
            Some(r) => value + min_delta < r,
        }
    }
}

/// What patience running out stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopScope {
    /// The whole run; the count carries across phases.
    #[default]
    Run,
    /// The current phase; each phase starts with fresh patience.
    Phase,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// An ImageFolder tree: `train/` and `val/` subfolders, or one tree of class folders.
    pub source: String,
    /// Side of the square crop fed to the network, in pixels.
    #[serde(default = "default_image_size")]
    pub image_size: u32,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Train-time augmentations, applied in order.
    #[serde(default)]
    pub augment: Vec<Augment>,
    /// A CSV table of the images and their labels (columns `path`, `label`, optionally
    /// `split`), in the data folder unless absolute; without it, the class folders are the labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
    /// Train/val (or train/val/test) fractions for a tree without `train/` and `val/`.
    #[serde(default = "default_split")]
    pub split: Vec<f64>,
    /// Seed of the train/val/test split and of the folds: fixed (0) unless set, so that runs
    /// of different `seed`s validate on the same images. `split_seed = <seed>` for each run
    /// gives the split that varied with the seed (before version 0.9).
    #[serde(default, skip_serializing_if = "omit_default")]
    pub split_seed: u64,
    /// k-fold cross-validation: the train and val images pooled and cut into `folds` parts,
    /// stratified per class; a run validates on part `fold` and trains on the rest (the
    /// test split, if any, is left as it is). A spec that sets `folds` without `fold` runs
    /// every fold, as a grid axis `data.fold = [0, ..., folds - 1]` would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folds: Option<usize>,
    /// The fold this run validates on, 0 to `folds - 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fold: Option<usize>,
    /// Fail on a file that cannot be decoded instead of skipping it.
    #[serde(default)]
    pub strict: bool,
    /// Compute a frozen prefix once per phase instead of every epoch, where that is exact.
    #[serde(default, skip_serializing_if = "omit_default")]
    pub cache: CacheMode,
    /// With augmentation: cache this many augmented views of every train image through
    /// the frozen layers, and train each epoch on one view per image. 0: no augmented
    /// caching (full forward every epoch). With `augment = ["hflip"]` alone, 2 views (the
    /// image and its mirror) are exact.
    #[serde(default, skip_serializing_if = "omit_default")]
    pub cache_views: usize,
    /// MixUp's Beta(alpha, alpha) parameter: training batches mixed with their roll by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixup: Option<f64>,
    /// CutMix's Beta(alpha, alpha) parameter; with `mixup` too, each batch takes one of the two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutmix: Option<f64>,
    /// Where the decoded images are kept: the image store on disk, read per batch, or memory.
    /// It changes no number a run computes (and so not its id).
    #[serde(default, skip_serializing_if = "omit_default")]
    pub store: StoreMode,
}

/// `data.store`: "auto" reads the decoded-image store on disk (memory where there is none:
/// `RUNNER_IMAGE_STORE=off`, or a cache folder that cannot be written); "disk" insists on
/// the store; "memory" holds the decoded images in memory (read from the store when it has
/// them, decoded otherwise) and writes no store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreMode {
    #[default]
    Auto,
    Memory,
    Disk,
}

impl StoreMode {
    pub fn name(self) -> &'static str {
        match self {
            StoreMode::Auto => "auto",
            StoreMode::Memory => "memory",
            StoreMode::Disk => "disk",
        }
    }
}

/// `divergence_factor`'s default: a loss a hundred times its first epoch's has exploded.
pub const DIVERGENCE_FACTOR: f64 = 100.0;

/// The longest experiment name, in bytes: it names a folder (file systems allow 255).
pub(crate) const MAX_NAME_BYTES: usize = 100;

/// The largest `data.image_size`: above it the decoded images of even a small dataset
/// outgrow memory (each image is kept as a square of about 1.14 x this side).
pub const MAX_IMAGE_SIZE: u32 = 1024;

/// The most augmented views a cache may hold (each one is a copy of the cache).
pub(crate) const MAX_CACHE_VIEWS: usize = 32;

/// `data.cache`: "auto" caches the frozen part's output when a phase allows it; "off" never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    #[default]
    Auto,
    Off,
}

impl CacheMode {}

/// A train-time augmentation: `"random_resized_crop"`, `"hflip"`, `"trivial_augment"`, or a
/// table for those with parameters (`{ rand_augment = { n = 2, m = 9 } }`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Augment {
    RandomResizedCrop,
    Hflip,
    /// torchvision's `TrivialAugmentWide`.
    TrivialAugment,
    /// torchvision's `RandAugment(num_ops = n, magnitude = m)` (31 magnitude bins).
    RandAugment {
        n: usize,
        m: usize,
    },
    /// torchvision's `ColorJitter`; each 0 leaves its property alone.
    ColorJitter {
        #[serde(default)]
        brightness: f64,
        #[serde(default)]
        contrast: f64,
        #[serde(default)]
        saturation: f64,
        #[serde(default)]
        hue: f64,
    },
    /// torchvision's `RandomErasing(p)` on the normalised image (scale 0.02-0.33, ratio 0.3-3.3, value 0).
    RandomErasing {
        p: f64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub backbone: Backbone,
    /// "imagenet" (the backbone's default pretrained weights), a file path, or "none".
    #[serde(default = "default_weights")]
    pub weights: String,
    /// sha256 (or its leading hex digits, at least 8) that the weights file must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default)]
    pub head: HeadSpec,
    /// How a Vision Transformer pools its tokens into the feature the head sees: the class
    /// token (the default), or the class token and the mean patch token concatenated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<Pool>,
}

/// `model.pool`: a Vision Transformer's pooled feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    /// The class token's output after the final norm.
    #[default]
    Cls,
    /// That, concatenated with the mean of the patch tokens' outputs (twice as wide), as
    /// DINOv2's linear evaluation does.
    ClsMean,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadSpec {
    /// Number of outputs, or "auto" for the number of class folders.
    #[serde(default)]
    pub classes: Classes,
    /// Widths of hidden layers (Linear + ReLU) before the output layer; none by default.
    #[serde(default, skip_serializing_if = "omit_default")]
    pub hidden: Vec<usize>,
    /// Dropout before each new linear layer; the backbone's own when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// How the new linear layers start.
    #[serde(default, skip_serializing_if = "omit_default")]
    pub init: HeadInit,
}

impl Default for HeadSpec {
    fn default() -> Self {
        HeadSpec { classes: Classes::Auto, hidden: vec![], dropout: None, init: HeadInit::default() }
    }
}

/// `model.head.init`: the initial weights of the new head's linear layers (biases
/// start uniform in ±1/sqrt(fan_in) either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadInit {
    /// `torch.nn.Linear`'s: weights uniform in ±1/sqrt(fan_in) (Kaiming-uniform with a = sqrt(5)).
    #[default]
    Pytorch,
    /// Kaiming-uniform for ReLU, ±sqrt(6/fan_in): 2.45x wider (tch's default; runner's before numerics 4).
    Kaiming,
}

impl HeadInit {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSpec {
    pub name: String,
    pub epochs: usize,
    /// Backbone layers with an index below this are frozen; "all" freezes the whole backbone.
    pub freeze_up_to: FreezeUpTo,
    pub optimizer: OptimizerSpec,
    /// Learning-rate schedule within the phase.
    #[serde(default)]
    pub schedule: ScheduleSpec,
    /// Train-time augmentations for this phase; resolved to `data.augment` when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<Vec<Augment>>,
    /// Which BatchNorm layers use batch statistics while training.
    #[serde(default)]
    pub batchnorm: BatchNormPolicy,
    /// Batches whose gradients add up (each loss divided by this) before one optimizer step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_accumulation: Option<usize>,
    /// The largest total L2 norm of the gradients at a step (torch's `clip_grad_norm_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_grad_norm: Option<f64>,
}

/// BatchNorm behaviour while training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchNormPolicy {
    /// Frozen layers run BatchNorm in inference mode; trainable layers use batch statistics.
    #[default]
    Frozen,
    /// Every BatchNorm uses batch statistics and updates its running averages (PyTorch's `model.train()`).
    Train,
    /// Every BatchNorm stays in inference mode (Keras' `base_model(x, training=False)`).
    AllFrozen,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSpec {
    pub kind: OptimizerKind,
    /// Absolute learning rate, or "find": the range test picks it when the phase starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<Lr>,
    /// Learning rate relative to the previous phase's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_factor: Option<f64>,
    #[serde(default)]
    pub momentum: f64,
    /// Nesterov momentum (`sgd` only).
    #[serde(default)]
    pub nesterov: bool,
    /// L2 penalty; when not given, the optimizer's own default (0, or 0.01 for adamw and lamb).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// Whether the weight decay also applies to biases and normalisation weights (every
    /// parameter of one dimension). No by default, as timm (`filter_bias_and_bn`) and fastai
    /// (`wd_bn_bias=False`) do; `true` decays every parameter, as a bare PyTorch optimizer does.
    #[serde(default, skip_serializing_if = "omit_default")]
    pub decay_norm_and_bias: bool,
    /// Layer-wise learning-rate decay (timm's `--layer-decay`): backbone layer i of L trains
    /// at lr x decay^(L - i), the head at lr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_decay: Option<f64>,
    /// The head's learning rate as a multiple of the phase's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_lr_factor: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd,
    Adam,
    Adamw,
    Rmsprop,
    /// Lion (Chen et al. 2023): the sign of an interpolated momentum, betas (0.9, 0.99),
    /// decoupled weight decay; it wants a rate 3-10x below AdamW's.
    Lion,
    /// LAMB (You et al. 2019): Adam's step with L2 decay, scaled per parameter by the trust
    /// ratio ||w|| / ||step||; betas (0.9, 0.999), eps 1e-6.
    Lamb,
}

fn default_image_size() -> u32 {
    224
}
fn default_batch_size() -> usize {
    32
}
fn default_split() -> Vec<f64> {
    vec![0.8, 0.2]
}
fn default_weights() -> String {
    "imagenet".into()
}

/// A count, or a keyword standing for "as many as there are".
/// `[loss]`: the options of PyTorch's `CrossEntropyLoss` that fine-tuning recipes use.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossSpec {
    /// The probability mass spread evenly over all classes (torch's `label_smoothing`).
    #[serde(default, skip_serializing_if = "omit_default")]
    pub label_smoothing: f64,
    /// A weight per class: "balanced" (n / (classes x count of the class) on the train
    /// split, as scikit-learn's), or one number per class in class order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_weights: Option<ClassWeights>,
}

impl LossSpec {
    /// Plain cross-entropy: what a spec without `[loss]` trains with.
    pub fn is_plain(&self) -> bool {
        self.label_smoothing == 0.0 && self.class_weights.is_none()
    }
}

/// `loss.class_weights`.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassWeights {
    Balanced,
    Given(Vec<f64>),
}

/// `freeze_up_to`: "all", a layer index, or `{ from = A, to = B, every = E }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FreezeUpTo {
    #[default]
    All,
    Count(usize),
    /// Gradual unfreezing (ULMFiT): layers below `from` frozen at first, one more layer
    /// unfrozen every `every` epochs, down to `to`.
    Gradual(GradualFreeze),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradualFreeze {
    pub from: usize,
    pub to: usize,
    pub every: usize,
}

impl FreezeUpTo {
    /// The freeze index in epoch `e` (0-based) of a phase, for a backbone of `layers` layers.
    pub fn at_epoch(&self, e: usize, layers: usize) -> usize {
        match *self {
            FreezeUpTo::All => layers,
            FreezeUpTo::Count(k) => k.min(layers),
            FreezeUpTo::Gradual(g) => g.from.saturating_sub(e / g.every.max(1)).max(g.to).min(layers),
        }
    }
}

impl Spec {
    /// Fills in what defaults to other keys, so that the resolved spec says it explicitly.
    pub(crate) fn resolve(&mut self) {
        if self.model.head.dropout.is_none() {
            self.model.head.dropout = Some(self.model.backbone.default_dropout());
        }
        for p in &mut self.phases {
            if p.augment.is_none() {
                p.augment = Some(self.data.augment.clone());
            }
        }
    }

    /// The metric that picks the best epoch: `early_stopping.monitor`, or val_acc.
    pub fn monitor(&self) -> Monitor {
        self.early_stopping.as_ref().map_or(Monitor::ValAcc, |e| e.monitor)
    }

    /// Epochs over all phases.
    pub fn total_epochs(&self) -> usize {
        self.phases.iter().map(|p| p.epochs).sum()
    }

    /// The resolved spec as TOML, written next to the results: every key with a value, its
    /// defaults included (only keys that are unset, such as `ema`, are absent).
    pub(crate) fn to_toml(&self) -> String {
        WRITE_DEFAULTS.set(true);
        let text = toml::to_string_pretty(self);
        WRITE_DEFAULTS.set(false);
        text.expect("a spec always serializes")
    }

    /// The resolved spec in canonical form: JSON with sorted keys and every default
    /// written out, so reordering keys or spelling out a default changes nothing.
    pub(crate) fn canonical(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(self).expect("a spec always serializes");
        // Where a run is also logged, or where its decoded images are kept, does not change
        // what it computes.
        if let Some(map) = value.as_object_mut() {
            map.remove("tracking");
            if let Some(data) = map.get_mut("data").and_then(|d| d.as_object_mut()) {
                data.remove("store");
            }
        }
        serde_json::to_vec(&value).expect("json values serialize")
    }

    /// Short hash of the canonical spec alone. A run's id also covers its data
    /// (`run::run_id`); this one tells specs apart before any data is read.
    #[cfg(test)]
    fn config_id(&self) -> String {
        use sha2::{Digest, Sha256};
        Sha256::digest(self.canonical()).iter().take(5).map(|b| format!("{b:02x}")).collect()
    }
}
