//! The training loop: phases of epochs over a model whose lower backbone
//! layers may be frozen.
//!
//! Freezing `freeze_up_to = N` means three things for layers below N: their
//! parameters get no gradient and are not in the phase's optimizer; they run
//! without autograd; and their BatchNorm runs in inference mode (Keras
//! semantics), so their running statistics do not move either. Each phase gets
//! a fresh optimizer over exactly its trainable parameters (`phase.rs`); a phase
//! whose frozen layers compute the same every epoch trains on cached features
//! (`features.rs`).
//!
//! What each epoch leaves in the run directory belongs to `run/` and the record
//! sinks of `record/`; this module does the numerics and reports progress through
//! the installed reporter (`sys::reporter`).

pub(crate) mod autocast;
pub(crate) mod calibration;
pub(crate) mod ema;
mod eval;
mod features;
mod lr_find;
pub(crate) mod foreach;
pub mod loss;
pub mod metrics;
pub(crate) mod mixing;
pub(crate) mod optim;
mod phase;
mod stored;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tch::nn;
use tch::{Device, Kind, Tensor};

pub(crate) use self::eval::{Prediction, tta_logits};
use self::features::view_picks;
pub use self::lr_find::{LrFind, RangeTest};
pub use self::optim::GradScaler;
pub use self::phase::PhaseRun;
use crate::config::spec::{Augment, CacheMode, Monitor, Precision, Spec, TtaView};
use crate::data::{Dataset, Fetched, Transform};
use crate::model::{Classifier, Schedule};
use crate::sys::reporter::{self, Unit};
use crate::train::autocast::Autocast;
use crate::train::metrics::EpochRecord;

/// Whether to train in channels-last memory: on the CPU, where oneDNN's convolutions
/// (depthwise ones above all) run about twice as fast that way; on CUDA for convolutional
/// backbones, whose cuDNN kernels run 2.1x (resnet18) and 2.4x (efficientnet_lite0) as
/// fast that way in fp16 (PyTorch on an H200, docs/performance.md), not for vision
/// transformers. `RUNNER_CHANNELS_LAST=0|1` overrides.
fn use_channels_last(device: Device, convolutional: bool) -> bool {
    match std::env::var(crate::sys::env::CHANNELS_LAST).as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        _ => device == Device::Cpu || convolutional,
    }
}

/// The torch seed of an epoch (SplitMix64 of the run seed and the epoch).
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    let mut z = seed.wrapping_add((epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) >> 1
}

/// Trains a run's model on its data, phase by phase: built in one step from the
/// resolved spec ([`Trainer::from_spec`]); what it holds changes only through its methods.
pub struct Trainer {
    vs: nn::VarStore,
    model: Classifier,
    data: Dataset,
    transform: Transform,
    batch_size: usize,
    device: Device,
    /// Names of the variables that are parameters (not BatchNorm statistics).
    parameters: BTreeSet<String>,
    /// `data.augment`, for phases that do not override it.
    default_augment: Vec<Augment>,
    seed: u64,
    /// The metric the run monitors (the best epoch, early stopping, `reduce_on_plateau`).
    monitor: Monitor,
    /// The phases, their freeze indices and every parameter's learning rate.
    schedule: Schedule,
    /// `data.cache`.
    cache: CacheMode,
    /// `data.cache_views`: augmented views to cache (0: none).
    cache_views: usize,
    /// A folder where plain-image caches are kept for other runs to load (a halving
    /// search's trials share theirs): files named by a hash of everything they depend on.
    feature_store: Option<PathBuf>,
    /// The feature store's size budget in bytes.
    feature_store_budget: u64,
    /// The training loss (validation and test losses stay plain cross-entropy, comparable
    /// across `[loss]` settings).
    criterion: loss::Criterion,
    /// The arithmetic training steps use (fp16 only on CUDA).
    precision: Precision,
    /// fp16 loss scaling; its state is part of a checkpoint.
    scaler: GradScaler,
    /// Weights, inputs and cached activations are in channels-last memory.
    channels_last: bool,
    /// Freeze indices of the phases to come, whose activations a cache pass may keep.
    later_boundaries: Vec<usize>,
    /// Activations (train, val) kept for a later phase, by layer index.
    stash: std::collections::BTreeMap<usize, (Tensor, Tensor)>,
    /// `ema`: the moving average of the weights that evaluation uses.
    ema: Option<ema::Ema>,
    /// The lowest backbone layer trained so far in the run (the layer count when only the
    /// head has trained): below it, the EMA's weights are the model's.
    trained_from: usize,
    /// `eval.tta`: the views whose softmax evaluation averages with the plain image's.
    tta: Vec<TtaView>,
    /// `data.mixup` and `data.cutmix`.
    mixing: mixing::Mixing,
}

/// What a trainer is built from besides its spec: the network with its weights loaded,
/// and the decoded data.
pub struct Parts {
    pub vs: nn::VarStore,
    pub model: Classifier,
    pub data: Dataset,
    /// Where plain feature caches are shared with other runs (`None`: not shared), and its
    /// size budget in bytes.
    pub feature_store: Option<PathBuf>,
    pub feature_store_budget: u64,
}

/// What the loop over a phase's epochs does after the epoch its caller has just recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The phase ends here (its last epoch, early stopping, or a pause).
    Stop,
}

/// An epoch just trained and validated, as the phase loop hands it to its caller.
pub struct EpochDone<'a> {
    pub trainer: &'a Trainer,
    pub phase: &'a PhaseRun,
    pub record: EpochRecord,
    /// What gradual unfreezing changed before this epoch, for the log.
    pub unfroze: Option<String>,
    /// The rate `reduce_on_plateau` lowered to after this epoch, for the log.
    pub lowered: Option<f64>,
}

/// Every variable of `vs` by name, sorted, in standard (contiguous NCHW) memory.
pub(crate) fn sorted_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (n, t.contiguous())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

impl Trainer {
    /// The trainer of `spec`'s run: its settings resolved and checked once, the weights
    /// moved to the memory layout training uses. fp16 asked for on the CPU trains in fp32
    /// (the run's log says so).
    pub fn from_spec(spec: &Spec, parts: Parts) -> anyhow::Result<Trainer> {
        let Parts { vs, model, data, feature_store, feature_store_budget } = parts;
        let device = vs.device();
        let parameters = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).map(|(n, _)| n).collect();
        let backbone = spec.model.backbone;
        let (mean, std) = backbone.normalization();
        let mut transform = Transform::new(spec.data.image_size, &spec.data.augment, mean, std);
        // Normalisation constants live where the batches are: no copy per batch.
        transform.mean = transform.mean.to_device(device);
        transform.std = transform.std.to_device(device);
        let train_labels = Vec::<i64>::try_from(&data.train.labels).context("the train labels")?;
        let criterion = loss::Criterion::new(&spec.loss, &train_labels, data.classes.len())?;
        let channels_last = use_channels_last(device, model.backbone.convolutional());
        if channels_last {
            tch::no_grad(|| {
                for (_, mut var) in vs.variables() {
                    if var.dim() == 4 {
                        let cl = crate::model::channels_last(&var);
                        var.set_data(&cl);
                    }
                }
            });
        }
        let precision = match spec.precision {
            Precision::Fp16 if !device.is_cuda() => Precision::Fp32,
            p => p,
        };
        let ema = spec.ema.as_ref().map(|e| ema::Ema::new(e, &vs));
        Ok(Trainer {
            schedule: Schedule::new(&spec.phases, model.backbone.layers().len()),
            default_augment: transform.augment.clone(),
            vs,
            model,
            data,
            transform,
            batch_size: spec.data.batch_size,
            device,
            parameters,
            seed: spec.seed,
            monitor: spec.monitor(),
            cache: spec.data.cache,
            cache_views: spec.data.cache_views,
            feature_store,
            feature_store_budget,
            criterion,
            precision,
            scaler: GradScaler::default(),
            channels_last,
            later_boundaries: vec![],
            stash: Default::default(),
            ema,
            trained_from: usize::MAX,
            tta: spec.eval.tta.clone(),
            mixing: mixing::Mixing { mixup: spec.data.mixup, cutmix: spec.data.cutmix },
        })
    }

    /// The phases, their freeze indices and every parameter's learning rate.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The model's variables (its weights and BatchNorm statistics).
    pub fn vs(&self) -> &nn::VarStore {
        &self.vs
    }

    pub fn model(&self) -> &Classifier {
        &self.model
    }

    /// The decoded data: classes, splits, skipped files.
    pub fn data(&self) -> &Dataset {
        &self.data
    }

    /// The arithmetic training runs in (fp16 asked for on the CPU runs in fp32).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The weights of `loss.class_weights`, if any.
    pub fn class_weights(&self) -> Option<Vec<f64>> {
        self.criterion.weights.clone()
    }

    /// `ema`'s decay and whether it warms up, when the run averages its weights.
    pub(crate) fn ema_settings(&self) -> Option<(f64, bool)> {
        self.ema.as_ref().map(|e| (e.decay, e.warmup))
    }

    /// Every variable by name, sorted, in standard memory: a checkpoint's model.
    pub fn variables(&self) -> Vec<(String, Tensor)> {
        sorted_variables(&self.vs)
    }

    /// The fp16 loss scaler's state, when training in fp16 (a checkpoint keeps it).
    pub(crate) fn scaler_state(&self) -> Option<GradScaler> {
        (self.precision == Precision::Fp16).then(|| self.scaler.clone())
    }

    /// The weight EMA's state tensors (empty without `ema`).
    pub(crate) fn ema_state(&self) -> Vec<(String, Tensor)> {
        self.ema.as_ref().map_or(vec![], |e| e.state_tensors())
    }

    /// Puts a checkpoint's state back: every variable's values, the fp16 scaler, the EMA.
    pub(crate) fn restore(
        &mut self,
        variables: &[(String, Tensor)],
        scaler: Option<&GradScaler>,
        ema: &[(String, Tensor)],
    ) -> anyhow::Result<()> {
        let vars = self.vs.variables();
        if variables.len() != vars.len() {
            bail!("the checkpoint holds {} variables, the model {}", variables.len(), vars.len());
        }
        tch::no_grad(|| -> anyhow::Result<()> {
            for (name, value) in variables {
                let Some(var) = vars.get(name) else { bail!("the checkpoint's variable {name} is not in the model") };
                if var.size() != value.size() {
                    bail!("checkpoint variable {name} has shape {:?}, the model {:?}", value.size(), var.size());
                }
                var.shallow_clone().copy_(value);
            }
            Ok(())
        })?;
        if let Some(scaler) = scaler {
            self.scaler = scaler.clone();
        }
        match &mut self.ema {
            Some(e) => e.load_state(ema).context("cannot restore the weight EMA from the checkpoint")?,
            None if !ema.is_empty() => bail!("the checkpoint holds a weight EMA, the spec has no `ema`"),
            None => {}
        }
        Ok(())
    }

    /// Loads saved weights (a run's best.safetensors) into the model.
    pub(crate) fn load_weights(&mut self, path: &std::path::Path) -> anyhow::Result<()> {
        tch::no_grad(|| self.vs.read_safetensors(path)).with_context(|| format!("cannot load {}", path.display()))
    }

    /// The weights evaluation uses, sorted by name: the EMA's with `ema`, else the model's.
    pub(crate) fn eval_variables(&self) -> Vec<(String, Tensor)> {
        let mut named = sorted_variables(&self.vs);
        if let Some(ema) = &self.ema {
            let shadow: std::collections::BTreeMap<&str, &Tensor> = ema.shadow().collect();
            for (name, t) in &mut named {
                if let Some(s) = shadow.get(name.as_str()) {
                    *t = s.contiguous();
                }
            }
        }
        named
    }

    /// fp16: the loss is scaled (and the step skipped on overflow), as with PyTorch's GradScaler.
    fn scaled(&self) -> bool {
        self.precision == Precision::Fp16
    }

    /// The forward passes' autocast, if the precision has one.
    fn autocast(&self) -> Option<Autocast> {
        Autocast::new(self.precision, self.device)
    }

    /// An input batch in the memory format the weights are in.
    fn layout(&self, x: Tensor) -> Tensor {
        if self.channels_last { crate::model::channels_last(&x) } else { x }
    }

    /// The one loop over a phase's epochs: from its epoch `from` (0-based; later than 0
    /// when resumed) to its last, numbered `first_epoch` on out of `total`. Each epoch
    /// follows the schedule (gradual unfreezing, the learning rate), trains, validates,
    /// and goes to `after`, which records it and says whether the phase goes on. An epoch
    /// cut short by a signal is not handed on: the run is interrupted.
    pub fn train_phase(
        &mut self,
        run: &mut PhaseRun,
        from: usize,
        first_epoch: usize,
        total: usize,
        mut after: impl FnMut(EpochDone) -> crate::Result<Flow>,
    ) -> crate::Result<()> {
        let p = run.index;
        for e in from..self.schedule.phases()[p].epochs {
            let unfroze = self.follow_schedule(run, e);
            let epoch = first_epoch + (e - from);
            let record = self.run_epoch(run, e, epoch, total);
            if crate::sys::signal::interrupted() {
                let what = format!("the checkpoint after epoch {} is kept; continue with --resume", epoch - 1);
                return Err(crate::Error::Interrupted { what });
            }
            let monitored = record.monitored(self.monitor);
            let lowered = run.plateau.as_mut().and_then(|pl| pl.step(monitored).then_some(pl.lr));
            if after(EpochDone { trainer: self, phase: run, record, unfroze, lowered })? == Flow::Stop {
                break;
            }
        }
        Ok(())
    }

    /// One epoch of training, the phase's epoch `e`, then validation: at the schedule's
    /// rate, or each step's with a per-step schedule (the record's `lr` is then the first
    /// step's). `epoch` is 1-based across phases; it and the seed alone decide the
    /// shuffling, augmentation and dropout.
    fn run_epoch(&mut self, phase: &mut PhaseRun, e: usize, epoch: usize, total_epochs: usize) -> EpochRecord {
        let start = Instant::now();
        let lr = phase.plateau.as_ref().map_or_else(|| self.schedule.lr(phase.index, e), |pl| pl.lr);
        phase.opt.set_lr(lr);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(epoch as u64);
        tch::manual_seed(epoch_seed(self.seed, epoch) as i64);
        let (train_loss, train_acc, images, first_lr) = self.train_epoch(phase, &mut rng, (e, epoch), total_epochs);
        let lr = first_lr.unwrap_or(lr);
        let train_seconds = start.elapsed().as_secs_f64() + phase.pending_seconds;
        let (val_loss, val_acc) = self.with_eval_weights(|t| match &phase.cache {
            Some(c) if t.cached_eval_exact(c.start) => t.evaluate_inputs(&c.val, &t.data.val.labels, c.start),
            _ => t.evaluate(&t.data.val),
        });
        let seconds = start.elapsed().as_secs_f64() + phase.pending_seconds;
        phase.pending_seconds = 0.0;
        EpochRecord {
            epoch,
            phase: phase.name.clone(),
            lr,
            train_loss,
            train_acc,
            val_loss,
            val_acc,
            seconds,
            train_images_per_s: images as f64 / train_seconds.max(1e-9),
        }
    }

    /// Trains the phase's epoch `e` (numbered `epoch` across phases); returns the train
    /// loss, accuracy, images trained and, with a per-step schedule, the first step's rate.
    fn train_epoch(
        &mut self,
        phase: &mut PhaseRun,
        rng: &mut ChaCha8Rng,
        (e, epoch): (usize, usize),
        total_epochs: usize,
    ) -> (f64, f64, usize, Option<f64>) {
        // BatchNorm with batch statistics cannot take a batch of one: such a last batch is left out.
        let drop_single = phase.drops_lone_batches();
        let n = self.data.train.len();
        let mut order: Vec<i64> = (0..n as i64).collect();
        order.shuffle(rng);
        // The permutation goes to the inputs' device once; batches are slices of it.
        let device = phase.cache.as_ref().map_or(Device::Cpu, |c| c.train.device());
        let order_t = Tensor::from_slice(&order).to_device(device);
        let picks_t = phase.cache.as_ref().and_then(|c| view_picks(c, &order, rng)).map(|p| p.to_device(device));
        // Without a cache, the images of the batches to come are read while one trains.
        let mut reads = phase.cache.is_none().then(|| {
            let batches = order.chunks(self.batch_size).map(<[i64]>::to_vec).collect();
            self.data.train.images.prefetch(batches, self.transform.read())
        });
        let labels_t = self.data.train.labels.to_device(self.device);
        let bar = reporter::bar(n as u64, Unit::Images, &format!("epoch {epoch}/{total_epochs}"));
        let mut shown = Instant::now();
        let mut loss_sum = Tensor::zeros([], (Kind::Double, self.device));
        let mut correct = Tensor::zeros([], (Kind::Int64, self.device));
        let mut seen = 0usize;
        // Batches trained this epoch (a lone last one may be left out), for accumulation's steps.
        let batches = n.div_ceil(self.batch_size) - usize::from(drop_single && n % self.batch_size == 1);
        let steps = batches.div_ceil(phase.accumulate);
        let total_steps = steps * self.schedule.phases()[phase.index].epochs;
        let mut first_lr = None;
        let mut trained = 0;
        for (b, chunk) in order.chunks(self.batch_size).enumerate() {
            if crate::sys::signal::interrupted() {
                break;
            }
            let pixels = reads.as_mut().map(|r| r.next().expect("a read per batch"));
            if chunk.len() == 1 && drop_single {
                continue;
            }
            let (from, len) = ((b * self.batch_size) as i64, chunk.len() as i64);
            let idx = order_t.narrow(0, from, len);
            let labels = labels_t.index_select(0, &idx.to_device(self.device));
            let rows = picks_t.as_ref().map(|p| p.narrow(0, from, len));
            let (x, targets) = self.batch_inputs(phase, pixels, &idx, rows, &labels, rng);
            let step = accumulation_step(trained, batches, phase.accumulate);
            // A per-step schedule's rate is a function of the step's place alone: a resumed run has it too.
            if step.first
                && let Some((lr, momentum)) =
                    self.schedule.at_step(phase.index, e * steps + trained / phase.accumulate, total_steps)
            {
                phase.opt.set_lr(lr);
                if let Some(m) = momentum {
                    phase.opt.set_momentum(m);
                }
                first_lr.get_or_insert(lr);
            }
            trained += 1;
            let (logits, loss) = self.train_step(phase, &x, &labels, targets.as_ref(), step);
            tch::no_grad(|| {
                loss_sum += loss.to_kind(Kind::Double) * chunk.len() as f64;
                correct += logits.argmax(-1, false).eq_tensor(&labels).sum(Kind::Int64);
            });
            seen += chunk.len();
            bar.inc(chunk.len() as u64);
            // Reading the running loss waits for the device: only for a visible bar, a few times a second.
            if !bar.is_hidden() && shown.elapsed().as_millis() >= 250 {
                bar.set_message(format!(
                    "epoch {epoch}/{total_epochs} loss {:.4}",
                    loss_sum.double_value(&[]) / seen as f64
                ));
                shown = Instant::now();
            }
            crate::sys::failpoint::hit(|| format!("epoch-{epoch}-batch-{}", b + 1));
        }
        bar.finish_and_clear();
        let mean = seen.max(1) as f64;
        (loss_sum.double_value(&[]) / mean, correct.int64_value(&[]) as f64 / mean, seen, first_lr)
    }

    /// A training batch's inputs, in the weights' memory format: the images `idx` (read as
    /// `pixels`) augmented, or their cached features (`rows` of the cache, when it holds
    /// several views); then MixUp / CutMix, which also gives the soft targets.
    fn batch_inputs(
        &self,
        phase: &PhaseRun,
        pixels: Option<Fetched>,
        idx: &Tensor,
        rows: Option<Tensor>,
        labels: &Tensor,
        rng: &mut ChaCha8Rng,
    ) -> (Tensor, Option<Tensor>) {
        let x = match &phase.cache {
            // index_select returns standard layout: `self.layout` below puts it back.
            Some(c) => c.train.select(&rows.unwrap_or_else(|| idx.shallow_clone())).to_device(self.device),
            None => self.transform.train(pixels.expect("read without a cache"), rng, self.device),
        };
        let (x, targets) = if self.mixing.is_on() {
            let (x, soft) = self.mixing.apply(&x, labels, self.data.classes.len() as i64, rng);
            (x, Some(soft))
        } else {
            (x, None)
        };
        (self.layout(x), targets)
    }

    /// One batch's forward and backward, and the optimizer step when `step.last`; returns
    /// its logits and loss. The forward runs under autocast, the backward and the update
    /// outside it, as PyTorch's AMP recipe.
    fn train_step(
        &mut self,
        phase: &mut PhaseRun,
        x: &Tensor,
        labels: &Tensor,
        soft: Option<&Tensor>,
        step: Step,
    ) -> (Tensor, Tensor) {
        let plan = phase.plan;
        let (logits, loss) = Autocast::run(self.autocast(), || {
            let logits = match &phase.cache {
                Some(c) => self.model.forward_cached(x, c.start, plan.frozen(), plan.batchnorm(), true),
                None => self.model.forward(x, plan.frozen(), plan.batchnorm(), true),
            };
            let loss = match soft {
                Some(targets) => self.criterion.loss_soft(&logits, targets),
                None => self.criterion.loss(&logits, labels),
            };
            (logits, loss)
        });
        if step.first {
            phase.opt.zero_grad();
        }
        // Accumulated losses are means over their group of batches, as gradient accumulation in PyTorch.
        let scaled = if phase.accumulate > 1 { &loss / phase.accumulate as f64 } else { loss.shallow_clone() };
        if self.scaled() {
            (&scaled * self.scaler.scale).backward();
            if step.last {
                self.scaler.step(&mut phase.opt, phase.clip);
            }
        } else {
            scaled.backward();
            if step.last {
                if let Some(max_norm) = phase.clip {
                    let _ = phase.opt.clip_grad_norm(max_norm);
                }
                phase.opt.step();
            }
        }
        if step.last
            && let Some(ema) = &mut self.ema
        {
            // Frozen parameters have not moved: their shadow stays equal to them.
            let frozen = |name: &str| self.parameters.contains(name) && !phase.trainable.contains(name);
            ema.update(&self.vs, frozen);
        }
        (logits, loss)
    }
}

/// Where a batch stands in gradient accumulation: the first of a group zeroes the
/// gradients, the last of a group (or of the epoch) steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    first: bool,
    last: bool,
}

/// The place of trained batch `t` (0-based) of `batches` in groups of `k`.
fn accumulation_step(t: usize, batches: usize, k: usize) -> Step {
    Step { first: t.is_multiple_of(k), last: (t + 1).is_multiple_of(k) || t + 1 == batches }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{floats, toolkit_fixture};
    use crate::train::eval::average_views;

    #[test]
    fn channels_last_on_the_cpu_and_for_convolutional_backbones_on_cuda() {
        if std::env::var_os(crate::sys::env::CHANNELS_LAST).is_some() {
            return; // overridden for this process: the default is not what runs
        }
        assert!(use_channels_last(Device::Cpu, true) && use_channels_last(Device::Cpu, false));
        assert!(use_channels_last(Device::Cuda(0), true));
        assert!(!use_channels_last(Device::Cuda(0), false), "a ViT stays NCHW on CUDA");
        let vs = nn::VarStore::new(Device::Cpu);
        let vit = crate::model::Backbone::VitB16.build(&vs.root());
        let resnet = crate::model::Backbone::Resnet18.build(&(vs.root() / "r"));
        assert!(!vit.convolutional() && resnet.convolutional());
    }

    #[test]
    fn accumulation_and_test_time_views_match_pytorch_on_the_committed_fixture() {
        let fixture = toolkit_fixture();
        // Accumulation as train_step does it: zero at a group's first batch, each loss over k, step at its last.
        let case = &fixture["accumulation"];
        let k = case["k"].as_u64().unwrap() as usize;
        let w: Vec<f64> = (0..2).flat_map(|i| (0..3).map(move |j| 0.1 * ((i + 2 * j) as f64).sin())).collect();
        let w = Tensor::from_slice(&w).view([2, 3]).set_requires_grad(true);
        let spec = crate::config::spec::OptimizerSpec {
            kind: crate::config::spec::OptimizerKind::Sgd,
            lr: Some(0.1.into()),
            lr_factor: None,
            momentum: 0.9,
            nesterov: false,
            weight_decay: None,
            decay_norm_and_bias: false,
            layer_decay: None,
            head_lr_factor: None,
        };
        let mut opt = optim::Optimizer::new(&spec, 0.1, vec![("w".into(), w.shallow_clone())]);
        for b in 0..5 {
            let x: Vec<f64> =
                (0..2).flat_map(|kk| (0..3).map(move |j| (b as f64 + 0.5 * kk as f64 + j as f64).cos())).collect();
            let x = Tensor::from_slice(&x).view([2, 3]);
            let y = Tensor::from_slice(&[(b % 2) as i64, ((b + 1) % 2) as i64]);
            let step = accumulation_step(b, 5, k);
            if step.first {
                opt.zero_grad();
            }
            (x.matmul(&w.tr()).cross_entropy_for_logits(&y) / k as f64).backward();
            if step.last {
                opt.step();
            }
        }
        let got = Vec::<f64>::try_from(&w.detach().flatten(0, -1)).unwrap();
        for (a, b) in got.iter().zip(floats(&case["after"])) {
            // tch's cross_entropy_for_logits takes the log-softmax in float32 (as runner trains).
            assert!((a - b).abs() < 1e-7, "accumulated SGD: {a} vs PyTorch {b}");
        }
        // Test-time views: the log of the averaged softmax.
        let a: Vec<f64> = (0..3).flat_map(|i| (0..4).map(move |j| ((i + j) as f64).sin())).collect();
        let b: Vec<f64> = (0..3).flat_map(|i| (0..4).map(move |j| ((2 * i - j) as f64).cos())).collect();
        let views = [Tensor::from_slice(&a).view([3, 4]), Tensor::from_slice(&b).view([3, 4])];
        let got = Vec::<f64>::try_from(&average_views(&views).flatten(0, -1)).unwrap();
        for (a, b) in got.iter().zip(floats(&fixture["tta"]["log_mean_softmax"])) {
            // float64 softmax, mean and log: a few 1e-16 on any processor.
            assert!((a - b).abs() < 1e-12, "TTA average: {a} vs PyTorch {b}");
        }
    }

    #[test]
    fn accumulation_groups_batches_and_the_epochs_last_batch_steps() {
        let steps: Vec<(bool, bool)> = (0..5)
            .map(|t| {
                let s = accumulation_step(t, 5, 2);
                (s.first, s.last)
            })
            .collect();
        assert_eq!(steps, [(true, false), (false, true), (true, false), (false, true), (true, true)]);
        assert!((0..3).all(|t| accumulation_step(t, 3, 1) == Step { first: true, last: true }));
    }
}
