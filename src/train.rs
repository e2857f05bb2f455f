//! The training loop: phases of epochs over a model whose lower backbone
//! layers may be frozen.
//!
//! Freezing `freeze_up_to = N` means three things for layers below N: their
//! parameters get no gradient and are not in the phase's optimizer; they run
//! without autograd; and their BatchNorm runs in inference mode (Keras
//! semantics), so their running statistics do not move either. Each phase gets
//! a fresh optimizer over exactly its trainable parameters.
//!
//! The loop emits one [`EpochRecord`] per epoch to a callback; display and
//! files are the caller's business.

use std::collections::BTreeSet;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tch::nn;
use tch::{Device, Kind, Tensor};

use crate::backbone::{Classifier, has_prefix};
use crate::data::{Dataset, Split, Transform};
use crate::optim::Optimizer;
use crate::spec::{Augment, BatchNormPolicy, FreezeUpTo, PhaseSpec};

/// How a training step runs: layers below `frozen` are frozen; `bn` picks BatchNorm modes.
#[derive(Debug, Clone, Copy)]
struct Step {
    frozen: usize,
    bn: BatchNormPolicy,
}

/// A phase in progress: its optimizer and how its steps run.
pub struct PhaseRun {
    pub opt: Optimizer,
    step: Step,
}

/// What one epoch measured.
#[derive(Debug, Clone, Copy)]
pub struct EpochStats {
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub seconds: f64,
    pub train_images_per_s: f64,
}

/// The torch seed of an epoch (SplitMix64 of the run seed and the epoch).
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    let mut z = seed.wrapping_add((epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) >> 1
}

pub struct Trainer {
    pub vs: nn::VarStore,
    pub model: Classifier,
    pub data: Dataset,
    pub transform: Transform,
    pub batch_size: usize,
    pub device: Device,
    pub quiet: bool,
    /// Names of the variables that are parameters (not BatchNorm statistics).
    parameters: BTreeSet<String>,
    /// `data.augment`, for phases that do not override it.
    default_augment: Vec<Augment>,
    seed: u64,
}

impl Trainer {
    pub fn new(
        vs: nn::VarStore,
        model: Classifier,
        data: Dataset,
        transform: Transform,
        batch_size: usize,
        seed: u64,
        quiet: bool,
    ) -> Self {
        let parameters = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).map(|(n, _)| n).collect();
        let device = vs.device();
        let default_augment = transform.augment.clone();
        Trainer { vs, model, data, transform, batch_size, device, quiet, parameters, default_augment, seed }
    }

    /// Number of backbone layers frozen by `freeze_up_to`.
    pub fn frozen_layers(&self, freeze: FreezeUpTo) -> usize {
        let n = self.model.backbone.layers().len();
        match freeze {
            FreezeUpTo::All => n,
            FreezeUpTo::Count(k) => k.min(n),
        }
    }

    /// Marks the parameters of the first `frozen` layers as frozen and all others
    /// as trainable; returns the trainable ones by name.
    fn apply_freeze(&self, frozen: usize) -> Vec<(String, Tensor)> {
        let prefixes: Vec<&String> =
            self.model.backbone.layers()[..frozen].iter().flat_map(|l| l.prefixes.iter()).collect();
        let vars = self.vs.variables();
        let mut trainable = vec![];
        for name in &self.parameters {
            let mut t = vars[name].shallow_clone();
            let is_frozen = prefixes.iter().any(|p| has_prefix(name, p));
            t = t.set_requires_grad(!is_frozen);
            if !is_frozen {
                trainable.push((name.clone(), t));
            }
        }
        trainable
    }

    /// Freezes the layers below the phase's index and sets up its optimizer and augmentation.
    pub fn start_phase(&mut self, phase: &PhaseSpec, lr: f64) -> PhaseRun {
        let frozen = self.frozen_layers(phase.freeze_up_to);
        let params = self.apply_freeze(frozen);
        self.transform.augment = phase.augment.clone().unwrap_or_else(|| self.default_augment.clone());
        PhaseRun { opt: Optimizer::new(&phase.optimizer, lr, params), step: Step { frozen, bn: phase.batchnorm } }
    }

    /// Every epoch of a phase, numbered from `first_epoch`, without checkpoints
    /// (the run loop in `run.rs` is the one that can resume).
    pub fn train_phase(&mut self, phase: &PhaseSpec, lr: f64, first_epoch: usize, total: usize) -> Vec<EpochStats> {
        let mut run = self.start_phase(phase, lr);
        (0..phase.epochs)
            .map(|e| self.run_epoch(&mut run, phase.schedule.lr_at(lr, e, phase.epochs), first_epoch + e, total))
            .collect()
    }

    /// One epoch of training at learning rate `lr`, then validation. `epoch` is 1-based
    /// across phases; it and the seed alone decide the shuffling, augmentation and dropout.
    pub fn run_epoch(&mut self, phase: &mut PhaseRun, lr: f64, epoch: usize, total_epochs: usize) -> EpochStats {
        let start = Instant::now();
        phase.opt.set_lr(lr);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(epoch as u64);
        tch::manual_seed(epoch_seed(self.seed, epoch) as i64);
        let (train_loss, train_acc, images) = self.train_epoch(phase, &mut rng, epoch, total_epochs);
        let train_seconds = start.elapsed().as_secs_f64();
        let (val_loss, val_acc) = self.evaluate(&self.data.val);
        EpochStats {
            train_loss,
            train_acc,
            val_loss,
            val_acc,
            seconds: start.elapsed().as_secs_f64(),
            train_images_per_s: images as f64 / train_seconds.max(1e-9),
        }
    }

    fn train_epoch(
        &mut self,
        phase: &mut PhaseRun,
        rng: &mut ChaCha8Rng,
        epoch: usize,
        total_epochs: usize,
    ) -> (f64, f64, usize) {
        let step = phase.step;
        // BatchNorm with batch statistics cannot take a batch of one: such a last batch is left out.
        let drop_single = self.model.batch_statistics(step.frozen, step.bn);
        let n = self.data.train.len();
        let mut order: Vec<i64> = (0..n as i64).collect();
        order.shuffle(rng);
        let bar = self.progress(n, epoch, total_epochs);
        let mut shown = Instant::now();
        let mut loss_sum = Tensor::zeros([], (Kind::Double, self.device));
        let mut correct = Tensor::zeros([], (Kind::Int64, self.device));
        let mut seen = 0usize;
        for (b, chunk) in order.chunks(self.batch_size).enumerate() {
            if chunk.len() == 1 && drop_single {
                continue;
            }
            let idx = Tensor::from_slice(chunk);
            let images = self.data.train.images.index_select(0, &idx);
            let labels = self.data.train.labels.index_select(0, &idx).to_device(self.device);
            let x = self.transform.train(&images, rng, self.device);
            let logits = self.model.forward(&x, step.frozen, step.bn, true);
            let loss = logits.cross_entropy_for_logits(&labels);
            phase.opt.zero_grad();
            loss.backward();
            phase.opt.step();
            tch::no_grad(|| {
                loss_sum += loss.to_kind(Kind::Double) * chunk.len() as f64;
                correct += logits.argmax(-1, false).eq_tensor(&labels).sum(Kind::Int64);
            });
            seen += chunk.len();
            bar.inc(chunk.len() as u64);
            // Reading the running loss waits for the device: only for a visible bar, a few times a second.
            if !bar.is_hidden() && shown.elapsed().as_millis() >= 250 {
                bar.set_message(format!("{epoch}/{total_epochs} loss {:.4}", loss_sum.double_value(&[]) / seen as f64));
                shown = Instant::now();
            }
            crate::failpoint::hit(|| format!("epoch-{epoch}-batch-{}", b + 1));
        }
        bar.finish_and_clear();
        let mean = seen.max(1) as f64;
        (loss_sum.double_value(&[]) / mean, correct.int64_value(&[]) as f64 / mean, seen)
    }

    /// Predicted class of every image of `split`, in inference mode.
    pub fn predict(&self, split: &Split) -> Vec<i64> {
        tch::no_grad(|| {
            let n = split.len() as i64;
            let mut out = Vec::with_capacity(n as usize);
            let mut start = 0;
            while start < n {
                let len = (self.batch_size as i64).min(n - start);
                let x = self.transform.eval(&split.images.narrow(0, start, len), self.device);
                let logits = self.model.forward(&x, 0, BatchNormPolicy::AllFrozen, false);
                out.extend(Vec::<i64>::try_from(&logits.argmax(-1, false).to_device(Device::Cpu)).unwrap_or_default());
                start += len;
            }
            out
        })
    }

    /// Mean loss and accuracy on `split`, everything in inference mode.
    pub fn evaluate(&self, split: &Split) -> (f64, f64) {
        tch::no_grad(|| {
            let n = split.len() as i64;
            let mut loss_sum = 0.0;
            let mut correct = 0i64;
            let mut start = 0;
            while start < n {
                let len = (self.batch_size as i64).min(n - start);
                let images = split.images.narrow(0, start, len);
                let labels = split.labels.narrow(0, start, len).to_device(self.device);
                let x = self.transform.eval(&images, self.device);
                let logits = self.model.forward(&x, 0, BatchNormPolicy::AllFrozen, false);
                loss_sum += logits.cross_entropy_for_logits(&labels).double_value(&[]) * len as f64;
                correct += logits.argmax(-1, false).eq_tensor(&labels).sum(Kind::Int64).int64_value(&[]);
                start += len;
            }
            (loss_sum / n.max(1) as f64, correct as f64 / n.max(1) as f64)
        })
    }

    fn progress(&self, n: usize, epoch: usize, total: usize) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(n as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {msg} [{bar:30}] {pos}/{len} images {per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(format!("{epoch}/{total}"));
        bar
    }
}
