//! Experiment specs: the TOML contract users write, layered and validated.
//!
//! A spec is read in layers (figment): serde defaults, then the spec file, then
//! `RUNNER_SPEC__*` environment variables (`RUNNER_SPEC__DATA__BATCH_SIZE=16`). Every error
//! names the file, the dotted key, and the line and column of that key in the
//! file where it has one, so users can jump straight to their mistake.
//!
//! The key layout is a contract: later versions add keys, never rename them.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::config::catalog::Backbone;
use crate::error::SpecError;

/// A fully resolved experiment: defaults filled in, ready to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Experiment name; runs are written under `<out>/<name>/<run-id>/`.
    pub name: String,
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
    #[serde(default, skip_serializing_if = "LossSpec::is_plain")]
    pub loss: LossSpec,
    /// Arithmetic of training steps: "fp32"; "fp16" (autocast with a loss scaler, CUDA only);
    /// "bf16" (autocast to bfloat16, no scaler; CUDA or CPU).
    #[serde(default, skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
    /// `ema = { decay = 0.999, warmup = true }`: an exponential moving average of the
    /// weights, which evaluation and the best weights use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<EmaSpec>,
    /// `[eval]`: how validation, test and prediction see each image.
    #[serde(default, skip_serializing_if = "EvalSpec::is_plain")]
    pub eval: EvalSpec,
    /// Where runs are also logged (MLflow); not part of the run's identity.
    #[serde(default, skip_serializing_if = "TrackingSpec::is_off")]
    pub tracking: TrackingSpec,
    /// Which machines give the same bits: "machine" (the same machine and threads; libtorch's
    /// fastest paths for this processor) or "portable" (any x86_64 processor with AVX2, Intel
    /// or AMD: the instruction paths of libtorch, oneDNN and MKL pinned; sys/numerics.rs).
    #[serde(default, skip_serializing_if = "Reproducibility::is_machine")]
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
    fn is_machine(&self) -> bool {
        *self == Reproducibility::Machine
    }

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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tta: Vec<TtaView>,
}

impl EvalSpec {
    pub fn is_plain(&self) -> bool {
        self.tta.is_empty()
    }
}

/// A test-time augmentation view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TtaView {
    /// The image mirrored left to right.
    Hflip,
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
    fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }

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
    /// Train/val (or train/val/test) fractions for a tree without `train/` and `val/`.
    #[serde(default = "default_split")]
    pub split: Vec<f64>,
    /// Fail on a file that cannot be decoded instead of skipping it.
    #[serde(default)]
    pub strict: bool,
    /// Compute a frozen prefix once per phase instead of every epoch, where that is exact.
    #[serde(default, skip_serializing_if = "CacheMode::is_auto")]
    pub cache: CacheMode,
    /// With augmentation: cache this many augmented views of every train image through
    /// the frozen layers, and train each epoch on one view per image. 0: no augmented
    /// caching (full forward every epoch). With `augment = ["hflip"]` alone, 2 views (the
    /// image and its mirror) are exact.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_views: usize,
    /// MixUp's Beta(alpha, alpha) parameter: training batches mixed with their roll by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixup: Option<f64>,
    /// CutMix's Beta(alpha, alpha) parameter; with `mixup` too, each batch takes one of the two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutmix: Option<f64>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
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

impl CacheMode {
    fn is_auto(&self) -> bool {
        *self == CacheMode::Auto
    }
}

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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden: Vec<usize>,
    /// Dropout before each new linear layer; the backbone's own when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// How the new linear layers start.
    #[serde(default, skip_serializing_if = "HeadInit::is_default")]
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

impl HeadInit {
    fn is_default(&self) -> bool {
        *self == HeadInit::default()
    }
}

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

/// `schedule = { kind = "step", step_size = 7, gamma = 0.1, warmup = 0 }`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    #[serde(default)]
    pub kind: ScheduleKind,
    /// Epochs between decays (`step`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_size: Option<usize>,
    /// Decay factor (`step`, `exponential`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// Epochs of linear warm-up at the start of the phase.
    #[serde(default)]
    pub warmup: usize,
}

impl Default for ScheduleSpec {
    fn default() -> Self {
        ScheduleSpec { kind: ScheduleKind::Constant, step_size: None, gamma: None, warmup: 0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    #[default]
    Constant,
    Step,
    Cosine,
    Exponential,
}

impl ScheduleSpec {
    /// Learning rate of epoch `e` (0-based within a phase of `epochs`) for base rate `lr`,
    /// stepped per epoch as PyTorch's schedulers are.
    pub(crate) fn lr_at(&self, lr: f64, e: usize, epochs: usize) -> f64 {
        if e < self.warmup {
            return lr * (e + 1) as f64 / (self.warmup + 1) as f64;
        }
        let t = (e - self.warmup) as f64;
        let span = epochs.saturating_sub(self.warmup).max(1) as f64;
        match self.kind {
            ScheduleKind::Constant => lr,
            ScheduleKind::Step => {
                let step = self.step_size.unwrap_or(1).max(1) as f64;
                lr * self.gamma.unwrap_or(0.1).powf((t / step).floor())
            }
            ScheduleKind::Exponential => lr * self.gamma.unwrap_or(0.9).powf(t),
            ScheduleKind::Cosine => lr * 0.5 * (1.0 + (std::f64::consts::PI * t / span).cos()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSpec {
    pub kind: OptimizerKind,
    /// Absolute learning rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Learning rate relative to the previous phase's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_factor: Option<f64>,
    #[serde(default)]
    pub momentum: f64,
    /// Nesterov momentum (`sgd` only).
    #[serde(default)]
    pub nesterov: bool,
    /// L2 penalty; when not given, the optimizer's own default (0, or 0.01 for adamw).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
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
    #[serde(default, skip_serializing_if = "is_zero_f64")]
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

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

/// `loss.class_weights`.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassWeights {
    Balanced,
    Given(Vec<f64>),
}

impl Serialize for ClassWeights {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ClassWeights::Balanced => s.serialize_str("balanced"),
            ClassWeights::Given(w) => w.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ClassWeights {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ClassWeights;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"balanced\" or a list of weights, one per class")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ClassWeights, E> {
                if v == "balanced" {
                    Ok(ClassWeights::Balanced)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<ClassWeights, A::Error> {
                let mut w = vec![];
                while let Some(x) = seq.next_element::<f64>()? {
                    w.push(x);
                }
                Ok(ClassWeights::Given(w))
            }
        }
        d.deserialize_any(V)
    }
}

macro_rules! count_or_keyword {
    ($name:ident, $keyword:literal, $all:ident, $expecting:literal) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub enum $name {
            #[default]
            $all,
            Count(usize),
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $name::$all => s.serialize_str($keyword),
                    $name::Count(n) => s.serialize_u64(*n as u64),
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        if v == $keyword {
                            Ok($name::$all)
                        } else {
                            Err(E::invalid_value(de::Unexpected::Str(v), &self))
                        }
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$name, E> {
                        usize::try_from(v)
                            .map($name::Count)
                            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$name, E> {
                        match u64::try_from(v) {
                            Ok(v) => self.visit_u64(v),
                            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                        }
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

count_or_keyword!(Classes, "auto", Auto, "\"auto\" or a number of classes");
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

impl Serialize for FreezeUpTo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FreezeUpTo::All => s.serialize_str("all"),
            FreezeUpTo::Count(n) => s.serialize_u64(*n as u64),
            FreezeUpTo::Gradual(g) => g.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for FreezeUpTo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FreezeUpTo;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"all\", a backbone layer index, or { from = A, to = B, every = E }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FreezeUpTo, E> {
                if v == "all" { Ok(FreezeUpTo::All) } else { Err(E::invalid_value(de::Unexpected::Str(v), &self)) }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FreezeUpTo, E> {
                usize::try_from(v)
                    .map(FreezeUpTo::Count)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FreezeUpTo, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<FreezeUpTo, A::Error> {
                GradualFreeze::deserialize(de::value::MapAccessDeserializer::new(map)).map(FreezeUpTo::Gradual)
            }
        }
        d.deserialize_any(V)
    }
}

/// A value that its type accepts and the spec does not: the dotted key and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub(crate) struct Invalid {
    pub key: String,
    pub message: String,
}

fn invalid(key: &str, message: impl Into<String>) -> Invalid {
    Invalid { key: key.to_string(), message: message.into() }
}

/// What is wrong with the parameters of an augmentation list, if anything.
fn augment_problem(list: &[Augment]) -> Option<String> {
    list.iter().find_map(|a| match *a {
        Augment::RandAugment { n, m } if n == 0 || n > 14 || m > 30 => {
            Some(format!("rand_augment: expected 1 <= n <= 14 and 0 <= m <= 30, found n = {n}, m = {m}"))
        }
        Augment::ColorJitter { brightness, contrast, saturation, hue } => {
            let ok = [brightness, contrast, saturation].iter().all(|v| (0.0..=10.0).contains(v))
                && (0.0..=0.5).contains(&hue);
            (!ok).then(|| {
                format!(
                    "color_jitter: expected brightness, contrast, saturation in [0, 10] and hue in [0, 0.5], found \
                     {brightness}, {contrast}, {saturation}, {hue}"
                )
            })
        }
        Augment::RandomErasing { p } if !(0.0..=1.0).contains(&p) => {
            Some(format!("random_erasing: expected a probability p in [0, 1], found {p}"))
        }
        _ => None,
    })
}

impl DataSpec {
    fn validate(&self) -> Result<(), Invalid> {
        if !(32..=MAX_IMAGE_SIZE).contains(&self.image_size) {
            return Err(invalid(
                "data.image_size",
                format!("expected 32 to {MAX_IMAGE_SIZE} pixels, found {}", self.image_size),
            ));
        }
        if self.batch_size == 0 {
            return Err(invalid("data.batch_size", "expected at least 1, found 0"));
        }
        if let Some(msg) = augment_problem(&self.augment) {
            return Err(invalid("data.augment", msg));
        }
        for (key, alpha) in [("data.mixup", self.mixup), ("data.cutmix", self.cutmix)] {
            if let Some(a) = alpha
                && !(a > 0.0 && a.is_finite())
            {
                return Err(invalid(key, format!("expected a Beta parameter alpha > 0, found {a}")));
            }
        }
        if self.cache_views > MAX_CACHE_VIEWS {
            return Err(invalid(
                "data.cache_views",
                format!("expected 0 to {MAX_CACHE_VIEWS} views, found {}", self.cache_views),
            ));
        }
        let split_ok = (2..=3).contains(&self.split.len())
            && self.split.iter().all(|f| *f > 0.0 && *f < 1.0)
            && (self.split.iter().sum::<f64>() - 1.0).abs() < 1e-6;
        if !split_ok {
            return Err(invalid(
                "data.split",
                format!(
                    "expected [train, val] or [train, val, test] fractions in (0, 1) that sum to 1, found {:?}",
                    self.split
                ),
            ));
        }
        Ok(())
    }
}

impl ModelSpec {
    fn validate(&self) -> Result<(), Invalid> {
        if let Classes::Count(n) = self.head.classes
            && n < 2
        {
            return Err(invalid("model.head.classes", format!("expected at least 2 classes, found {n}")));
        }
        if self.head.hidden.contains(&0) {
            return Err(invalid("model.head.hidden", "hidden layer widths must be at least 1"));
        }
        if let Some(h) = &self.sha256
            && !(h.len() >= 8 && h.len() <= 64 && h.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)))
        {
            return Err(invalid("model.sha256", format!("expected 8 to 64 lowercase hex digits, found {h:?}")));
        }
        if let Some(p) = self.head.dropout
            && !(0.0..1.0).contains(&p)
        {
            return Err(invalid("model.head.dropout", format!("expected a probability in [0, 1), found {p}")));
        }
        if self.pool.is_some() && self.backbone.patch_size().is_none() {
            return Err(invalid(
                "model.pool",
                format!(
                    "{} pools its last feature map by global average; `pool` chooses a Vision Transformer's \
                     tokens (vit_b_16, dinov2_vits14, dinov2_vitb14)",
                    self.backbone
                ),
            ));
        }
        Ok(())
    }
}

impl PhaseSpec {
    /// Checks phase `i`; the key is relative to the phase (`optimizer.lr`).
    fn validate(&self, i: usize, backbone: Backbone) -> Result<(), Invalid> {
        if self.epochs == 0 {
            return Err(invalid("epochs", "expected at least 1 epoch, found 0"));
        }
        let layers = backbone.layer_count();
        if let FreezeUpTo::Gradual(g) = self.freeze_up_to {
            if g.every == 0 {
                return Err(invalid("freeze_up_to.every", "expected at least 1 epoch, found 0"));
            }
            if g.from > layers {
                return Err(invalid(
                    "freeze_up_to.from",
                    format!("{backbone} has {layers} layers, so `from` must be at most {layers}, found {}", g.from),
                ));
            }
            if g.to >= g.from {
                return Err(invalid(
                    "freeze_up_to.to",
                    format!("expected `to` below `from` ({}), found {}: layers unfreeze downwards", g.from, g.to),
                ));
            }
        }
        if let FreezeUpTo::Count(n) = self.freeze_up_to
            && n > layers
        {
            return Err(invalid(
                "freeze_up_to",
                format!(
                    "{backbone} has {layers} layers (0..{}), so freeze_up_to must be at most {layers} or \"all\", found {n}",
                    layers - 1
                ),
            ));
        }
        if let Some(msg) = self.augment.as_deref().and_then(augment_problem) {
            return Err(invalid("augment", msg));
        }
        if self.gradient_accumulation == Some(0) {
            return Err(invalid("gradient_accumulation", "expected at least 1 batch, found 0"));
        }
        if let Some(c) = self.clip_grad_norm
            && !(c > 0.0 && c.is_finite())
        {
            return Err(invalid("clip_grad_norm", format!("expected a positive norm, found {c}")));
        }
        self.optimizer.validate(i)?;
        self.schedule.validate(self.epochs)
    }
}

impl OptimizerSpec {
    fn validate(&self, phase: usize) -> Result<(), Invalid> {
        match (self.lr, self.lr_factor) {
            (Some(_), Some(_)) => return Err(invalid("optimizer", "expected one of `lr` or `lr_factor`, found both")),
            (None, None) => {
                return Err(invalid("optimizer", "expected `lr` (or `lr_factor` after the first phase)"));
            }
            (None, Some(_)) if phase == 0 => {
                return Err(invalid("optimizer.lr_factor", "the first phase has no previous learning rate: give `lr`"));
            }
            (Some(lr), None) if !(lr > 0.0 && lr.is_finite()) => {
                return Err(invalid("optimizer.lr", format!("expected a positive learning rate, found {lr}")));
            }
            (None, Some(f)) if !(f > 0.0 && f.is_finite()) => {
                return Err(invalid("optimizer.lr_factor", format!("expected a positive factor, found {f}")));
            }
            _ => {}
        }
        let finite_non_negative = |v: f64| v >= 0.0 && v.is_finite();
        if !finite_non_negative(self.momentum) {
            return Err(invalid(
                "optimizer.momentum",
                format!("expected a finite value >= 0, found {}", self.momentum),
            ));
        }
        if let Some(w) = self.weight_decay
            && !finite_non_negative(w)
        {
            return Err(invalid("optimizer.weight_decay", format!("expected a finite value >= 0, found {w}")));
        }
        if let Some(d) = self.layer_decay
            && !(d > 0.0 && d <= 1.0)
        {
            return Err(invalid("optimizer.layer_decay", format!("expected 0 < decay <= 1, found {d}")));
        }
        if let Some(f) = self.head_lr_factor
            && !(f > 0.0 && f.is_finite())
        {
            return Err(invalid("optimizer.head_lr_factor", format!("expected a positive factor, found {f}")));
        }
        if self.nesterov && (self.kind != OptimizerKind::Sgd || self.momentum <= 0.0) {
            return Err(invalid("optimizer.nesterov", "nesterov needs kind = \"sgd\" and a positive momentum"));
        }
        Ok(())
    }
}

impl ScheduleSpec {
    fn validate(&self, epochs: usize) -> Result<(), Invalid> {
        match self.kind {
            ScheduleKind::Step if self.step_size.is_none_or(|s| s == 0) => {
                return Err(invalid("schedule.step_size", "a step schedule needs step_size >= 1"));
            }
            ScheduleKind::Step | ScheduleKind::Exponential if self.gamma.is_none_or(|g| !(g > 0.0 && g <= 1.0)) => {
                return Err(invalid("schedule.gamma", format!("expected gamma in (0, 1], found {:?}", self.gamma)));
            }
            ScheduleKind::Constant | ScheduleKind::Cosine if self.step_size.is_some() || self.gamma.is_some() => {
                return Err(invalid("schedule", "step_size and gamma apply only to step and exponential schedules"));
            }
            _ => {}
        }
        if self.warmup >= epochs && self.warmup > 0 {
            return Err(invalid(
                "schedule.warmup",
                format!("expected fewer warm-up epochs than the phase's {epochs}, found {}", self.warmup),
            ));
        }
        Ok(())
    }
}

/// A spec file's text, kept to point errors at lines.
pub struct SpecSource {
    pub path: PathBuf,
    pub text: String,
    doc: toml_edit::Document<String>,
}

impl SpecSource {
    pub fn read(path: &Path) -> Result<SpecSource, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let msg = if e.kind() == std::io::ErrorKind::NotFound {
                "spec file not found".to_string()
            } else {
                format!("cannot read spec file: {e}")
            };
            SpecError::new(path, "", msg)
        })?;
        Self::new(path, text)
    }

    /// `path` only names the file in errors.
    pub fn new(path: &Path, text: String) -> Result<SpecSource, SpecError> {
        // Syntax first: toml reports the exact position.
        let doc = toml_edit::Document::parse(text.clone()).map_err(|e| {
            let mut err = SpecError::new(path, "", format!("invalid TOML: {}", e.message().trim()));
            err.line_col = e.span().map(|s| line_col(&text, s.start));
            err
        })?;
        Ok(SpecSource { path: path.to_path_buf(), text, doc })
    }

    pub fn table(&self) -> Result<toml::Table, SpecError> {
        toml::from_str(&self.text).map_err(|e| SpecError::new(&self.path, "", format!("invalid TOML: {}", e.message())))
    }

    /// An error about the key at `at` (path segments), located in the file when it is written there.
    pub fn error(&self, at: &[impl AsRef<str>], message: String) -> SpecError {
        let segments: Vec<&str> = at.iter().map(|s| s.as_ref()).collect();
        let key = segments
            .iter()
            .map(|s| if s.contains('.') { format!("\"{s}\"") } else { s.to_string() })
            .collect::<Vec<_>>()
            .join(".");
        let mut err = SpecError::new(&self.path, key, message);
        err.line_col = locate(&self.doc, &self.text, &segments);
        err
    }

    /// Turns a figment extraction error into a located spec error. `grid` maps
    /// dotted keys set by the grid to where their axis is written.
    pub(crate) fn figment_error(&self, err: figment::Error, grid: &[(String, Vec<String>)]) -> SpecError {
        use figment::error::Kind;
        let mut key_path = err.path.clone();
        let message = match &err.kind {
            Kind::UnknownField(field, expected) => {
                if key_path.last() != Some(field) {
                    key_path.push(field.clone());
                }
                let mut msg = format!("unknown key `{field}`");
                if let Some(best) = suggest(field, expected) {
                    msg.push_str(&format!(", did you mean `{best}`?"));
                } else if !expected.is_empty() {
                    msg.push_str(&format!(", expected one of {}", quote_list(expected)));
                }
                msg
            }
            Kind::MissingField(field) => {
                if key_path.last().map(String::as_str) == Some(field.as_ref()) {
                    key_path.pop();
                }
                let parent = key_path.join(".");
                key_path.push(field.to_string());
                if parent.is_empty() {
                    format!("missing required key `{field}`")
                } else {
                    format!("missing required key `{field}` in `{parent}`")
                }
            }
            Kind::UnknownVariant(found, expected) => match suggest(found, expected) {
                Some(best) => format!("unknown value {found:?}, did you mean {best:?}?"),
                None => format!("unknown value {found:?}, expected one of {}", quote_list(expected)),
            },
            Kind::InvalidType(actual, expected) => format!("expected {expected}, found {actual}"),
            Kind::InvalidValue(actual, expected) => format!("expected {expected}, found {actual}"),
            Kind::InvalidLength(len, expected) => format!("expected {expected}, found {len} elements"),
            other => other.to_string(),
        };
        let key = key_path.join(".");
        let layer = err.metadata.as_ref().map(|m| m.name.to_string()).unwrap_or_default();
        if let Some((_, location)) = grid.iter().find(|(k, _)| *k == key || key.starts_with(&format!("{k}."))) {
            let mut e = self.error(location, message);
            e.key = key;
            return e;
        }
        if layer.starts_with("--set") || layer.starts_with("environment") {
            let mut e = SpecError::new(&self.path, key, format!("{message} (from {layer})"));
            e.line_col = None;
            return e;
        }
        let segments: Vec<&str> = key_path.iter().map(String::as_str).collect();
        let mut e = self.error(&segments, message);
        e.key = key;
        e
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

    /// Checks what types alone cannot, naming the offending dotted key.
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        let name = &self.name;
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') || name.chars().any(char::is_control)
        {
            return Err(invalid("name", format!("expected a plain name usable as a folder, found {name:?}")));
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(invalid("name", format!("expected at most {MAX_NAME_BYTES} bytes, found {}", name.len())));
        }
        if let Some(uri) = &self.tracking.mlflow
            && !(uri.starts_with("http://") || uri.starts_with("https://"))
        {
            return Err(invalid(
                "tracking.mlflow",
                format!("expected an http(s) URL of a tracking server, found {uri:?}"),
            ));
        }
        self.data.validate()?;
        self.model.validate()?;
        if let Some(patch) = self.model.backbone.patch_size()
            && !self.data.image_size.is_multiple_of(patch)
        {
            return Err(invalid(
                "data.image_size",
                format!(
                    "{} cuts images into {patch}x{patch} patches: expected a multiple of {patch}, found {}",
                    self.model.backbone, self.data.image_size
                ),
            ));
        }
        if self.phases.is_empty() {
            return Err(invalid("phases", "expected at least one [[phases]] entry"));
        }
        for (i, p) in self.phases.iter().enumerate() {
            p.validate(i, self.model.backbone).map_err(|e| Invalid { key: format!("phases.{i}.{}", e.key), ..e })?;
        }
        let l = &self.loss;
        if !(0.0..1.0).contains(&l.label_smoothing) {
            return Err(invalid("loss.label_smoothing", format!("expected 0 <= x < 1, found {}", l.label_smoothing)));
        }
        // At most 1e6: the loss sums weights times losses in float32, which 1e308 overflows.
        if let Some(ClassWeights::Given(w)) = &l.class_weights
            && (w.is_empty() || w.iter().any(|x| !(0.0..=1e6).contains(x)) || w.iter().all(|x| *x == 0.0))
        {
            return Err(invalid(
                "loss.class_weights",
                format!("expected \"balanced\" or weights from 0 to 1e6, not all 0, found {w:?}"),
            ));
        }
        if let Some(ema) = &self.ema
            && !(ema.decay > 0.0 && ema.decay < 1.0)
        {
            return Err(invalid("ema.decay", format!("expected 0 < decay < 1, found {}", ema.decay)));
        }
        if let Some(v) = self.eval.tta.iter().enumerate().find_map(|(i, v)| self.eval.tta[..i].contains(v).then_some(v))
        {
            return Err(invalid("eval.tta", format!("{v:?} is listed twice")));
        }
        if let Some(f) = self.divergence_factor
            && !(f > 1.0 && f.is_finite())
        {
            return Err(invalid("divergence_factor", format!("expected a finite factor above 1, found {f}")));
        }
        if let Some(es) = &self.early_stopping {
            if es.patience == 0 {
                return Err(invalid("early_stopping.patience", "expected at least 1 epoch, found 0"));
            }
            if !(es.min_delta >= 0.0 && es.min_delta.is_finite()) {
                return Err(invalid(
                    "early_stopping.min_delta",
                    format!("expected a finite value >= 0, found {}", es.min_delta),
                ));
            }
        }
        Ok(())
    }

    /// The metric that picks the best epoch: `early_stopping.monitor`, or val_acc.
    pub fn monitor(&self) -> Monitor {
        self.early_stopping.as_ref().map_or(Monitor::ValAcc, |e| e.monitor)
    }

    /// Absolute learning rate of each phase (`lr_factor` resolved against the previous phase).
    pub fn phase_lrs(&self) -> Vec<f64> {
        let mut lrs: Vec<f64> = Vec::with_capacity(self.phases.len());
        for p in &self.phases {
            let lr = match (p.optimizer.lr, p.optimizer.lr_factor) {
                (Some(lr), _) => lr,
                (None, Some(f)) => lrs.last().copied().unwrap_or(1.0) * f,
                (None, None) => unreachable!("validated"),
            };
            lrs.push(lr);
        }
        lrs
    }

    pub fn total_epochs(&self) -> usize {
        self.phases.iter().map(|p| p.epochs).sum()
    }

    /// The resolved spec as TOML, written next to the results.
    pub(crate) fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a spec always serializes")
    }

    /// The resolved spec in canonical form: JSON with sorted keys and every default
    /// written out, so reordering keys or spelling out a default changes nothing.
    pub(crate) fn canonical(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(self).expect("a spec always serializes");
        // Where a run is also logged does not change what it computes.
        if let Some(map) = value.as_object_mut() {
            map.remove("tracking");
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

/// Line and column (1-based) of the dotted `key` in the TOML document, or of
/// its nearest ancestor that is written there.
pub(crate) fn locate(doc: &toml_edit::Document<String>, text: &str, key: &[&str]) -> Option<(usize, usize)> {
    use toml_edit::{Item, Value};
    enum Node<'a> {
        Item(&'a Item),
        Table(&'a toml_edit::Table),
        Value(&'a Value),
    }
    let mut best: Option<std::ops::Range<usize>> = None;
    let mut node = Node::Item(doc.as_item());
    for &part in key {
        let index = part.parse::<usize>().ok();
        let step = match (node, index) {
            (Node::Item(Item::ArrayOfTables(a)), Some(i)) => a.get(i).map(|t| (t.span(), Node::Table(t))),
            (Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)), Some(i)) => {
                a.get(i).map(|v| (v.span(), Node::Value(v)))
            }
            (Node::Item(item), _) => {
                item.as_table_like().and_then(|t| t.get_key_value(part)).map(|(k, v)| (k.span(), Node::Item(v)))
            }
            (Node::Table(t), _) => t.get_key_value(part).map(|(k, v)| (k.span(), Node::Item(v))),
            (Node::Value(Value::InlineTable(t)), _) => t.get_key_value(part).map(|(k, v)| (k.span(), Node::Item(v))),
            (Node::Value(_), _) => None,
        };
        let Some((span, next)) = step else { break };
        best = span.or(best);
        node = next;
    }
    best.map(|r| line_col(text, r.start))
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn quote_list(items: &[&str]) -> String {
    items.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
}

/// The field names of a struct that derives `Deserialize`: serde hands them to
/// `deserialize_struct`, which this deserializer records instead of reading anything.
pub(crate) fn struct_fields<T: de::DeserializeOwned>() -> &'static [&'static str] {
    struct Fields<'a>(&'a mut &'static [&'static str]);
    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("fields recorded")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> Deserializer<'de> for Fields<'_> {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Fields(&mut fields));
    fields
}

/// The closest known name to a misspelt one, if it is close enough to be a typo.
pub fn suggest<'a>(found: &str, known: &[&'a str]) -> Option<&'a str> {
    // A truncated name (`batch` for `batch_size`) is a typo too.
    if found.len() >= 3
        && let Some(k) = known.iter().find(|k| k.starts_with(found))
    {
        return Some(k);
    }
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(found, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
name = "t"
[data]
source = "d"
[model]
backbone = "efficientnet_lite0"
[[phases]]
name = "a"
epochs = 2
freeze_up_to = "all"
optimizer = { kind = "rmsprop", lr = 1e-3 }
[[phases]]
name = "b"
epochs = 1
freeze_up_to = 10
optimizer = { kind = "rmsprop", lr_factor = 0.1 }
"#;

    fn parse(text: &str) -> Result<Spec, SpecError> {
        Spec::from_str_at(text, Path::new("t.toml"))
    }

    #[test]
    fn defaults_fill_in_and_lr_factor_resolves() {
        let s = parse(SPEC).unwrap();
        assert_eq!(s.data.image_size, 224);
        assert_eq!(s.data.batch_size, 32);
        assert_eq!(s.model.weights, "imagenet");
        assert_eq!(s.model.head.classes, Classes::Auto);
        assert_eq!(s.phases[1].freeze_up_to, FreezeUpTo::Count(10));
        let lrs = s.phase_lrs();
        assert!((lrs[1] - 1e-4).abs() < 1e-12);
        assert_eq!(s.total_epochs(), 3);
    }

    #[test]
    fn schedules_step_per_epoch_like_pytorch() {
        let sch = |kind, step_size, gamma, warmup| ScheduleSpec { kind, step_size, gamma, warmup };
        let lrs = |s: &ScheduleSpec, n| (0..n).map(|e| s.lr_at(1.0, e, n)).collect::<Vec<_>>();
        assert_eq!(lrs(&ScheduleSpec::default(), 3), [1.0, 1.0, 1.0]);
        // StepLR(step_size=2, gamma=0.1)
        let step = lrs(&sch(ScheduleKind::Step, Some(2), Some(0.1), 0), 5);
        assert_eq!(step[..2], [1.0, 1.0]);
        assert!((step[2] - 0.1).abs() < 1e-12 && (step[4] - 0.01).abs() < 1e-12);
        // ExponentialLR(gamma=0.5)
        assert_eq!(lrs(&sch(ScheduleKind::Exponential, None, Some(0.5), 0), 3), [1.0, 0.5, 0.25]);
        // CosineAnnealingLR(T_max=4) after one warm-up epoch at half the rate.
        let cos = lrs(&sch(ScheduleKind::Cosine, None, None, 1), 5);
        assert_eq!(cos[0], 0.5);
        assert_eq!(cos[1], 1.0);
        assert!((cos[3] - 0.5).abs() < 1e-12, "{cos:?}");
    }

    #[test]
    fn schedule_keys_are_checked() {
        let e = parse(&SPEC.replace("freeze_up_to = 10\n", "freeze_up_to = 10\nschedule = { kind = \"step\" }\n"))
            .unwrap_err();
        assert_eq!(e.key, "phases.1.schedule.step_size");
        let e = parse(&SPEC.replace("freeze_up_to = 10\n", "freeze_up_to = 10\nbatchnorm = \"froze\"\n")).unwrap_err();
        assert_eq!(e.message, "unknown value \"froze\", did you mean \"frozen\"?");
    }

    #[test]
    fn run_id_ignores_key_order_and_explicit_defaults() {
        let id = parse(SPEC).unwrap().config_id();
        assert_eq!(id.len(), 10);
        let reordered = SPEC.replace(
            "name = \"t\"\n[data]\nsource = \"d\"",
            "name = \"t\"\n[data]\nbatch_size = 32\nsource = \"d\"\nimage_size = 224",
        );
        assert_eq!(parse(&reordered).unwrap().config_id(), id);
        let changed = SPEC.replace("epochs = 2", "epochs = 3");
        assert_ne!(parse(&changed).unwrap().config_id(), id);
        // The resolved TOML parses back to the same spec.
        let s = parse(SPEC).unwrap();
        assert_eq!(parse(&s.to_toml()).unwrap(), s);
    }

    #[test]
    fn errors_name_the_key_and_its_line() {
        let e = parse(&SPEC.replace("lr_factor = 0.1", "lr_factr = 0.1")).unwrap_err();
        assert_eq!(e.key, "phases.1.optimizer.lr_factr");
        assert_eq!(e.line_col, Some((16, 33)));
        assert_eq!(e.message, "unknown key `lr_factr`, did you mean `lr_factor`?");

        let e = parse(&SPEC.replace("lr = 1e-3", "lr_factor = 0.5")).unwrap_err();
        assert_eq!(e.key, "phases.0.optimizer.lr_factor");
        assert!(e.message.contains("first phase"), "{}", e.message);

        let e = parse(&SPEC.replace("kind = \"rmsprop\", lr = 1e-3", "kind = \"rmsprob\", lr = 1e-3")).unwrap_err();
        assert_eq!(e.key, "phases.0.optimizer.kind");
        assert_eq!(e.message, "unknown value \"rmsprob\", did you mean \"rmsprop\"?");

        let e = parse("name = \"t\"\n[data\n").unwrap_err();
        assert_eq!(e.line_col, Some((2, 6)));
        assert!(e.message.starts_with("invalid TOML"), "{}", e.message);

        let e = parse(&SPEC.replace("backbone = \"efficientnet_lite0\"", "backbone = \"resnet19\"")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.toml:6:1: `model.backbone`: unknown value \"resnet19\", did you mean \"resnet18\"?"
        );
    }
}
