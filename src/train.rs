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

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, OptimizerConfig};
use tch::{COptimizer, Device, Kind, Tensor};

use crate::backbone::{Classifier, has_prefix};
use crate::data::{Dataset, Split, Transform};
use crate::spec::{Augment, BatchNormPolicy, FreezeUpTo, OptimizerKind, PhaseSpec};

/// How a training step runs: layers below `frozen` are frozen; `bn` picks BatchNorm modes.
#[derive(Debug, Clone, Copy)]
struct Step {
    frozen: usize,
    bn: BatchNormPolicy,
}
use crate::table::EpochRecord;

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
    rng: ChaCha8Rng,
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
        Trainer {
            vs,
            model,
            data,
            transform,
            batch_size,
            device,
            quiet,
            parameters,
            default_augment,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
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
    /// as trainable; returns the trainable ones.
    fn apply_freeze(&self, frozen: usize) -> Vec<Tensor> {
        let prefixes: Vec<&String> =
            self.model.backbone.layers()[..frozen].iter().flat_map(|l| l.prefixes.iter()).collect();
        let vars = self.vs.variables();
        let mut trainable = vec![];
        for name in &self.parameters {
            let mut t = vars[name].shallow_clone();
            let is_frozen = prefixes.iter().any(|p| has_prefix(name, p));
            t = t.set_requires_grad(!is_frozen);
            if !is_frozen {
                trainable.push(t);
            }
        }
        trainable
    }

    fn optimizer(&self, phase: &PhaseSpec, lr: f64, params: &[Tensor]) -> Result<COptimizer> {
        let o = &phase.optimizer;
        let wd = o.weight_decay.unwrap_or(0.0);
        let mut opt = match o.kind {
            OptimizerKind::Sgd => {
                nn::Sgd { momentum: o.momentum, dampening: 0.0, wd, nesterov: o.nesterov }.build_copt(lr)?
            }
            OptimizerKind::Adam => nn::Adam { wd, ..Default::default() }.build_copt(lr)?,
            OptimizerKind::Adamw => {
                let default = nn::AdamW::default();
                nn::AdamW { wd: o.weight_decay.unwrap_or(default.wd), ..default }.build_copt(lr)?
            }
            OptimizerKind::Rmsprop => nn::RmsProp { momentum: o.momentum, wd, ..Default::default() }.build_copt(lr)?,
        };
        for p in params {
            opt.add_parameters(p, 0)?;
        }
        Ok(opt)
    }

    /// Trains one phase. Epochs are numbered from `first_epoch` (1-based, across phases).
    pub fn train_phase(
        &mut self,
        phase: &PhaseSpec,
        lr: f64,
        first_epoch: usize,
        total_epochs: usize,
        on_epoch: &mut dyn FnMut(&EpochRecord, &nn::VarStore) -> Result<()>,
    ) -> Result<()> {
        let frozen = self.frozen_layers(phase.freeze_up_to);
        let params = self.apply_freeze(frozen);
        let mut opt = self.optimizer(phase, lr, &params)?;
        let augment = phase.augment.clone().unwrap_or_else(|| self.default_augment.clone());
        self.transform.augment = augment;
        let step = Step { frozen, bn: phase.batchnorm };
        for e in 0..phase.epochs {
            let epoch = first_epoch + e;
            let start = Instant::now();
            let epoch_lr = phase.schedule.lr_at(lr, e, phase.epochs);
            opt.set_learning_rate(epoch_lr)?;
            let (train_loss, train_acc) = self.train_epoch(&opt, step, epoch, total_epochs)?;
            let (val_loss, val_acc) = self.evaluate(&self.data.val);
            let record = EpochRecord {
                epoch,
                phase: phase.name.clone(),
                lr: epoch_lr,
                train_loss,
                train_acc,
                val_loss,
                val_acc,
                seconds: start.elapsed().as_secs_f64(),
            };
            on_epoch(&record, &self.vs)?;
            if !train_loss.is_finite() {
                bail!("training diverged in epoch {epoch}: the loss is {train_loss}");
            }
        }
        Ok(())
    }

    fn train_epoch(&mut self, opt: &COptimizer, step: Step, epoch: usize, total_epochs: usize) -> Result<(f64, f64)> {
        // BatchNorm with batch statistics cannot take a batch of one: such a last batch is left out.
        let drop_single = self.model.batch_statistics(step.frozen, step.bn);
        let n = self.data.train.len();
        let mut order: Vec<i64> = (0..n as i64).collect();
        order.shuffle(&mut self.rng);
        let bar = self.progress(n, epoch, total_epochs);
        let mut loss_sum = Tensor::zeros([], (Kind::Double, self.device));
        let mut correct = Tensor::zeros([], (Kind::Int64, self.device));
        let mut seen = 0usize;
        for chunk in order.chunks(self.batch_size) {
            if chunk.len() == 1 && drop_single {
                continue;
            }
            let idx = Tensor::from_slice(chunk);
            let images = self.data.train.images.index_select(0, &idx);
            let labels = self.data.train.labels.index_select(0, &idx).to_device(self.device);
            let x = self.transform.train(&images, &mut self.rng, self.device);
            let logits = self.model.forward(&x, step.frozen, step.bn, true);
            let loss = logits.cross_entropy_for_logits(&labels);
            opt.zero_grad()?;
            loss.backward();
            opt.step()?;
            tch::no_grad(|| {
                loss_sum += loss.to_kind(Kind::Double) * chunk.len() as f64;
                correct += logits.argmax(-1, false).eq_tensor(&labels).sum(Kind::Int64);
            });
            seen += chunk.len();
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        let seen = seen.max(1) as f64;
        Ok((loss_sum.double_value(&[]) / seen, correct.int64_value(&[]) as f64 / seen))
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
