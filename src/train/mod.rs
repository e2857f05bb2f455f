//! The training loop: phases of epochs over a model whose lower backbone
//! layers may be frozen.
//!
//! Freezing `freeze_up_to = N` means three things for layers below N: their
//! parameters get no gradient and are not in the phase's optimizer; they run
//! without autograd; and their BatchNorm runs in inference mode (Keras
//! semantics), so their running statistics do not move either. Each phase gets
//! a fresh optimizer over exactly its trainable parameters.
//!
//! Feature caching: when the frozen layers of a phase run in inference mode
//! and its inputs are not augmented, what they compute for an image is the
//! same every epoch. The phase then computes it once (pooled features when
//! the whole backbone is frozen, the activations at the freeze boundary
//! otherwise), for the train and val images, and trains the rest on it.
//!
//! Checkpoints, files and display belong to `run.rs`; this module does the numerics.

pub(crate) mod autocast;
pub(crate) mod ema;
pub(crate) mod foreach;
pub mod loss;
pub mod metrics;
pub(crate) mod mixing;
pub(crate) mod optim;

use std::collections::BTreeSet;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::nn;
use tch::{Device, Kind, Tensor};

use crate::config::spec::{Augment, BatchNormPolicy, CacheMode, PhaseSpec, Precision, TtaView};
use crate::data::{Dataset, Split, Transform};
use crate::model::{Classifier, FreezePlan};
use crate::train::autocast::Autocast;
use crate::train::metrics::EpochRecord;
use crate::train::optim::{GradScaler, Optimizer};

impl PhaseRun {
    /// Whether a batch of one image is left out of training: BatchNorm layers train in this
    /// phase, on batch statistics that one image does not have.
    pub(crate) fn drops_lone_batches(&self) -> bool {
        self.batchnorm && self.plan.any_batch_statistics()
    }
}

/// A phase in progress: its optimizer and how its steps run.
pub(crate) struct PhaseRun {
    /// The phase's name, as its epochs' records give it.
    pub name: String,
    pub opt: Optimizer,
    /// How its training steps run: which layers are frozen, which BatchNorms use batch statistics.
    plan: FreezePlan,
    /// Whether the model has BatchNorm layers at all (running statistics among its variables).
    batchnorm: bool,
    /// Batches per optimizer step (`gradient_accumulation`).
    accumulate: usize,
    /// `clip_grad_norm`.
    clip: Option<f64>,
    /// The names of the parameters this phase trains.
    trainable: BTreeSet<String>,
    cache: Option<FeatureCache>,
    /// Why the phase does or does not use the feature cache, for the log.
    pub cache_note: String,
    /// Seconds spent building the cache, counted in the phase's first epoch.
    pending_seconds: f64,
}

/// The output of a phase's frozen prefix for every train and val image.
struct FeatureCache {
    /// The first layer not covered: the phase's freeze index.
    start: usize,
    /// `views` x train images: view `v` of image `i` at row `v * n + i`.
    train: Tensor,
    val: Tensor,
    views: Views,
}

/// Which inputs a cache holds for the train images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Views {
    /// The unaugmented images (no augmentation): exact.
    Plain,
    /// `augment = ["hflip"]`: each image and its mirror; an epoch picks one per image
    /// with the very draws the full forward would make, so the cache is exact.
    Mirrored,
    /// This many augmented views drawn once; an epoch picks one per image at random.
    Sampled(usize),
}

impl Views {
    fn count(self) -> usize {
        match self {
            Views::Plain => 1,
            Views::Mirrored => 2,
            Views::Sampled(k) => k,
        }
    }
}

/// Writes `cache` into the feature store at `path` (atomically: a reader sees all of it or nothing).
fn keep_stored(path: &std::path::Path, cache: &FeatureCache) -> anyhow::Result<()> {
    std::fs::create_dir_all(path.parent().expect("in the store"))?;
    crate::sys::atomic::with_temp_path(path, |tmp| {
        let (train, val) = (cache.train.contiguous(), cache.val.contiguous());
        Tensor::write_safetensors(&[("train", &train), ("val", &val)], tmp)?;
        Ok(())
    })
}

/// The random stream that draws cached view `v` (far from the epochs' streams).
fn view_rng(seed: u64, v: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(u64::MAX - v as u64);
    rng
}

/// Default memory for a feature cache: 4 GiB (`RUNNER_FEATURE_CACHE_MB` overrides it),
/// and on the CPU at most half the memory available.
fn cache_budget_bytes(device: Device) -> u64 {
    if let Some(mb) = std::env::var(crate::sys::env::FEATURE_CACHE_MB).ok().and_then(|v| v.parse::<u64>().ok()) {
        return mb << 20;
    }
    let budget = 4u64 << 30;
    if device.is_cuda() {
        return budget;
    }
    crate::sys::memory::available_bytes().map_or(budget, |bytes| budget.min(bytes / 2))
}

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

pub struct Trainer {
    /// A folder where plain-image caches are kept for other runs to load (a halving
    /// search's trials share theirs): files named by a hash of everything they depend on.
    pub feature_store: Option<std::path::PathBuf>,
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
    /// `data.cache`.
    pub cache: CacheMode,
    /// `data.cache_views`: augmented views to cache (0: none).
    pub cache_views: usize,
    /// The arithmetic training steps use (fp16 only on CUDA).
    /// The training loss (validation and test losses stay plain cross-entropy, comparable
    /// across `[loss]` settings).
    pub criterion: loss::Criterion,
    pub precision: Precision,
    /// fp16 loss scaling; its state is part of a checkpoint.
    pub scaler: GradScaler,
    /// Weights, inputs and cached activations are in channels-last memory.
    pub channels_last: bool,
    /// Freeze indices of the phases to come, whose activations a cache pass may keep.
    pub later_boundaries: Vec<usize>,
    /// Activations (train, val) kept for a later phase, by layer index.
    stash: std::collections::BTreeMap<usize, (Tensor, Tensor)>,
    /// `ema`: the moving average of the weights that evaluation uses.
    pub(crate) ema: Option<ema::Ema>,
    /// The lowest backbone layer trained so far in the run (the layer count when only the
    /// head has trained): below it, the EMA's weights are the model's.
    pub trained_from: usize,
    /// `eval.tta`: the views whose softmax evaluation averages with the plain image's.
    pub tta: Vec<TtaView>,
    /// `data.mixup` and `data.cutmix`.
    pub(crate) mixing: mixing::Mixing,
}

/// Every variable of `vs` by name, sorted, in standard (contiguous NCHW) memory.
pub(crate) fn sorted_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (n, t.contiguous())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
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
        // Normalisation constants live where the batches are: no copy per batch.
        let mut transform = transform;
        transform.mean = transform.mean.to_device(device);
        transform.std = transform.std.to_device(device);
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
        Trainer {
            feature_store: None,
            vs,
            model,
            data,
            transform,
            batch_size,
            device,
            quiet,
            parameters,
            default_augment,
            seed,
            cache: CacheMode::Auto,
            cache_views: 0,
            precision: Precision::Fp32,
            scaler: GradScaler::default(),
            channels_last,
            later_boundaries: vec![],
            criterion: loss::Criterion::default(),
            stash: Default::default(),
            ema: None,
            trained_from: usize::MAX,
            tta: vec![],
            mixing: Default::default(),
        }
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

    /// On CUDA, moves the decoded images (uint8) and labels to the GPU when they fit
    /// the cache budget, so that batches never cross the bus. Returns what it did.
    pub(crate) fn place_data(&mut self) -> Option<String> {
        if !self.device.is_cuda() {
            return None;
        }
        let splits = [&self.data.train, &self.data.val, &self.data.test];
        let bytes: u64 = splits.iter().map(|s| s.images.numel() as u64).sum();
        let budget = cache_budget_bytes(self.device);
        if bytes > budget {
            return Some(format!(
                "the decoded images ({} MiB) stay in host memory: over the budget of {} MiB (RUNNER_FEATURE_CACHE_MB)",
                bytes >> 20,
                budget >> 20
            ));
        }
        for split in [&mut self.data.train, &mut self.data.val, &mut self.data.test] {
            split.images = split.images.to_device(self.device);
            split.labels = split.labels.to_device(self.device);
        }
        Some(format!("the decoded images ({} MiB) are kept on {:?}", bytes >> 20, self.device))
    }

    /// The freeze plan of a phase of this trainer's model.
    pub fn plan(&self, phase: &PhaseSpec) -> FreezePlan {
        FreezePlan::of_phase(phase, self.model.backbone.layers().len())
    }

    /// Marks the parameters of the plan's frozen layers as frozen and all others
    /// as trainable; returns the trainable ones by name.
    fn apply_freeze(&self, plan: &FreezePlan) -> Vec<(String, Tensor)> {
        let layers = self.model.backbone.layers();
        let vars = self.vs.variables();
        let mut trainable = vec![];
        for name in &self.parameters {
            let mut t = vars[name].shallow_clone();
            let is_frozen = plan.freezes(name, layers);
            t = t.set_requires_grad(!is_frozen);
            if !is_frozen {
                trainable.push((name.clone(), t));
            }
        }
        trainable
    }

    /// Freezes the layers below the phase's index (in its epoch `phase_epoch`, for gradual
    /// unfreezing) and sets up its optimizer and augmentation.
    pub(crate) fn start_phase(&mut self, phase: &PhaseSpec, lr: f64, phase_epoch: usize) -> PhaseRun {
        let plan = FreezePlan::of_phase_epoch(phase, phase_epoch, self.model.backbone.layers().len());
        let frozen = plan.frozen();
        let params = self.apply_freeze(&plan);
        self.transform.augment = phase.augment.clone().unwrap_or_else(|| self.default_augment.clone());
        let started = Instant::now();
        // Kept activations stay valid while every layer below them stays frozen, BatchNorm included.
        let keep = phase.batchnorm != BatchNormPolicy::Train;
        self.stash.retain(|&k, _| keep && k <= frozen);
        let (cache, cache_note) = match self.cache_blocker(frozen, phase.batchnorm) {
            Some(reason) => (None, format!("full forward every epoch ({reason})")),
            None => self.build_cache(frozen),
        };
        let layers = self.model.backbone.layers().len();
        let scales: Vec<f64> = params
            .iter()
            .map(|(name, _)| crate::model::lr_scale(self.model.layer_of(name), layers, &phase.optimizer))
            .collect();
        let trainable = params.iter().map(|(name, _)| name.clone()).collect();
        let mut opt = Optimizer::new(&phase.optimizer, lr, params);
        opt.set_lr_scales(scales);
        let mut cache_note = cache_note;
        if cache.is_some() && !self.cached_eval_exact(frozen) {
            let why = if self.tta.is_empty() { "the EMA's lower layers differ" } else { "eval.tta" };
            cache_note.push_str(&format!("; validation runs the full forward ({why})"));
        }
        PhaseRun {
            trainable,
            name: phase.name.clone(),
            opt,
            plan,
            batchnorm: self.vs.variables().keys().any(|k| k.ends_with(".running_mean")),
            accumulate: phase.gradient_accumulation.unwrap_or(1),
            clip: phase.clip_grad_norm,
            pending_seconds: if cache.is_some() { started.elapsed().as_secs_f64() } else { 0.0 },
            cache,
            cache_note,
        }
    }

    /// Gradual unfreezing: before epoch `e` (0-based) of `phase`, unfreezes the layers its
    /// schedule unfreezes by then. The new parameters join the optimizer with fresh state
    /// (at their layer-wise rates), and the cache moves down to the new boundary. Returns
    /// what changed, for the log.
    pub(crate) fn follow_schedule(&mut self, run: &mut PhaseRun, phase: &PhaseSpec, e: usize) -> Option<String> {
        let layers = self.model.backbone.layers().len();
        let plan = FreezePlan::of_phase_epoch(phase, e, layers);
        if plan.frozen() == run.plan.frozen() {
            return None;
        }
        let was = run.plan.frozen();
        let params = self.apply_freeze(&plan);
        let new: Vec<(String, Tensor)> = params.into_iter().filter(|(n, _)| !run.trainable.contains(n)).collect();
        let scales =
            new.iter().map(|(n, _)| crate::model::lr_scale(self.model.layer_of(n), layers, &phase.optimizer)).collect();
        run.trainable.extend(new.iter().map(|(n, _)| n.clone()));
        let joined = new.len();
        run.opt.add_params(new, scales);
        run.plan = plan;
        self.trained_from = self.trained_from.min(plan.frozen());
        let started = Instant::now();
        if run.cache.is_some() {
            let (cache, note) = match self.cache_blocker(plan.frozen(), phase.batchnorm) {
                Some(reason) => (None, format!("full forward every epoch ({reason})")),
                None => self.build_cache(plan.frozen()),
            };
            run.cache = cache;
            run.cache_note = note;
            run.pending_seconds += started.elapsed().as_secs_f64();
        }
        let names = self.model.backbone.layers();
        let unfrozen: Vec<String> = (plan.frozen()..was).map(|i| format!("{i} ({})", names[i].name)).collect();
        Some(format!(
            "unfroze layer {}: {joined} parameters join the optimizer with fresh state; {}",
            unfrozen.join(", "),
            run.cache_note
        ))
    }

    /// Why a phase freezing `frozen` layers cannot train on cached activations, if it cannot.
    fn cache_blocker(&self, frozen: usize, bn: BatchNormPolicy) -> Option<&'static str> {
        if self.cache == CacheMode::Off {
            Some("data.cache = \"off\"")
        } else if frozen == 0 {
            Some("nothing is frozen")
        } else if self.mixing.is_on() {
            Some("the batches are mixed (data.mixup, data.cutmix): the frozen layers see new images every epoch")
        } else if !self.transform.augment.is_empty() && self.cache_views == 0 {
            Some("the inputs are augmented; data.cache_views = K would cache K augmented views")
        } else if bn == BatchNormPolicy::Train {
            Some("batchnorm = \"train\" updates the frozen layers' statistics")
        } else {
            None
        }
    }

    /// Runs the frozen prefix over every train and val image once, if it fits the budget.
    /// In the same pass it keeps the activations at the freeze indices of later phases
    /// that lie below this one (`later_boundaries`), so the next phase need not recompute them.
    fn build_cache(&mut self, frozen: usize) -> (Option<FeatureCache>, String) {
        let what = self.cached_what(frozen);
        let views = self.views();
        if views != Views::Plain {
            return self.build_view_cache(frozen, views, &what);
        }
        if let Some((train, val)) = self.stash.remove(&frozen) {
            let note = format!("trains on the {} cached by an earlier pass", what);
            return (Some(FeatureCache { start: frozen, train, val, views }), note);
        }
        let stored =
            self.feature_store.as_ref().map(|dir| dir.join(format!("{}.safetensors", self.feature_key(frozen))));
        if let Some(path) = &stored
            && let Some((train, val)) = self.load_stored(path)
        {
            let note = format!("trains on the {what} of the search's feature store ({})", path.display());
            return (Some(FeatureCache { start: frozen, train, val, views }), note);
        }
        let images = self.data.train.len() + self.data.val.len();
        if self.data.train.is_empty() {
            return (None, "full forward every epoch (no train images)".into());
        }
        let mut ks: Vec<usize> = self.later_boundaries.iter().copied().filter(|&k| k > 0 && k < frozen).collect();
        ks.push(frozen);
        ks.sort_unstable();
        ks.dedup();
        let probe = {
            let x = self.layout(self.transform.eval(&self.data.train.images.narrow(0, 0, 1), self.device));
            self.model.frozen_prefixes(&x, &ks)
        };
        let per_image: Vec<u64> = probe.iter().map(|t| (t.numel() * 4) as u64).collect();
        let budget = cache_budget_bytes(self.device);
        let bytes = per_image[ks.len() - 1] * images as u64;
        if bytes > budget {
            return (
                None,
                format!(
                    "full forward every epoch: the {} of {images} images need {} MiB, over the cache budget of \
                     {} MiB (RUNNER_FEATURE_CACHE_MB)",
                    what,
                    bytes >> 20,
                    budget >> 20
                ),
            );
        }
        if per_image.iter().sum::<u64>() * images as u64 > budget {
            ks = vec![frozen];
        }
        let bar = self.progress(images, 0, 0);
        bar.set_message(format!("caching {}", what));
        let run = |split: &Split| self.prefix_outputs(split, &ks, &probe, &bar);
        let (mut train, mut val) = Autocast::run(self.autocast(), || (run(&self.data.train), run(&self.data.val)));
        bar.finish_and_clear();
        let cache =
            FeatureCache { start: frozen, train: train.pop().expect("one"), val: val.pop().expect("one"), views };
        let kept = stored.as_ref().map_or(String::new(), |path| match keep_stored(path, &cache) {
            Ok(()) => "; kept in the search's feature store".into(),
            Err(e) => format!("; not kept in the search's feature store: {e:#}"),
        });
        for ((k, t), v) in ks.iter().zip(train).zip(val) {
            self.stash.insert(*k, (t, v));
        }
        let note =
            format!("trains on cached {} of {images} images ({:.1} MiB){kept}", what, bytes as f64 / (1 << 20) as f64);
        (Some(cache), note)
    }

    /// A stored cache's train and val tensors, on the device in the trainer's layout.
    fn load_stored(&self, path: &std::path::Path) -> Option<(Tensor, Tensor)> {
        let tensors = Tensor::read_safetensors(path).ok()?;
        let get =
            |name: &str| tensors.iter().find(|(n, _)| n == name).map(|(_, t)| self.layout(t.to_device(self.device)));
        Some((get("train")?, get("val")?))
    }

    /// What a plain cache at layer `k` depends on, hashed: the train and val images and
    /// their transform, every variable of layers below `k` (so the weights as they are
    /// now, whatever trained them), the precision, layout, device and thread count (so a
    /// stored cache has the bits this run would compute), and runner's version.
    fn feature_key(&self, k: usize) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let mut add = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        add(b"runner feature cache");
        add(env!("CARGO_PKG_VERSION").as_bytes());
        // fp32 and fp16 as the key said them before bf16 existed ("false", "true"), so older caches stay valid.
        let precision = match self.precision {
            Precision::Fp32 => "false",
            Precision::Fp16 => "true",
            Precision::Bf16 => "bf16",
        };
        add(format!("{k} {precision} {} {:?} {}", self.channels_last, self.device, tch::get_num_threads()).as_bytes());
        let floats = |t: &Tensor| Vec::<f32>::try_from(t.to_device(Device::Cpu).flatten(0, -1)).unwrap_or_default();
        add(format!("{} {:?} {:?}", self.transform.size, floats(&self.transform.mean), floats(&self.transform.std))
            .as_bytes());
        for split in [&self.data.train, &self.data.val] {
            add(&Vec::<u8>::try_from(split.images.flatten(0, -1)).unwrap_or_default());
        }
        let layers = self.model.backbone.layers();
        let vars = self.vs.variables();
        let mut names: Vec<&String> = vars
            .keys()
            .filter(|n| {
                layers[..k.min(layers.len())].iter().any(|l| l.prefixes.iter().any(|p| crate::model::has_prefix(n, p)))
            })
            .collect();
        names.sort();
        for name in names {
            let t = vars[name].to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
            add(name.as_bytes());
            add(&Vec::<f32>::try_from(t.flatten(0, -1))
                .unwrap_or_default()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>());
        }
        h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    /// What a cache at layer `k` holds, for the log.
    fn cached_what(&self, k: usize) -> String {
        let layers = self.model.backbone.layers();
        if k >= layers.len() {
            "pooled features".to_string()
        } else {
            format!("activations at layer {k} ({})", layers[k].name)
        }
    }

    /// The frozen prefix's outputs at depths `ks` for every image of `split` (fp32,
    /// in the trainer's layout); `probe` gives the shapes for an empty split.
    fn prefix_outputs(&self, split: &Split, ks: &[usize], probe: &[Tensor], bar: &ProgressBar) -> Vec<Tensor> {
        let n = split.len() as i64;
        let mut parts: Vec<Vec<Tensor>> = ks.iter().map(|_| vec![]).collect();
        let mut start = 0;
        while start < n {
            let len = (self.batch_size as i64).min(n - start);
            let x = self.layout(self.transform.eval(&split.images.narrow(0, start, len), self.device));
            let outs = self.model.frozen_prefixes(&x, ks);
            for (part, out) in parts.iter_mut().zip(outs) {
                part.push(out.to_kind(Kind::Float));
            }
            bar.inc(len as u64);
            start += len;
        }
        parts
            .into_iter()
            .zip(probe)
            .map(|(p, pr)| self.layout(if p.is_empty() { pr.narrow(0, 0, 0) } else { Tensor::cat(&p, 0) }))
            .collect()
    }

    /// What a cache of the current phase holds for the train images.
    fn views(&self) -> Views {
        match self.transform.augment.as_slice() {
            [] => Views::Plain,
            [Augment::Hflip] if self.cache_views >= 2 => Views::Mirrored,
            _ => Views::Sampled(self.cache_views.max(1)),
        }
    }

    /// A cache of `views` of every train image (and the plain val images) at layer `frozen`.
    /// Sampled views are drawn from their own random streams, apart from the epochs'.
    fn build_view_cache(&mut self, frozen: usize, views: Views, what: &str) -> (Option<FeatureCache>, String) {
        let (n_train, n_val) = (self.data.train.len(), self.data.val.len());
        if n_train == 0 {
            return (None, "full forward every epoch (no train images)".into());
        }
        let probe = {
            let x = self.layout(self.transform.eval(&self.data.train.images.narrow(0, 0, 1), self.device));
            self.model.frozen_prefix(&x, frozen)
        };
        let per_image = (probe.numel() * 4) as u64;
        let k = views.count();
        let bytes = per_image * (k * n_train + n_val) as u64;
        let budget = cache_budget_bytes(self.device);
        if bytes > budget {
            return (
                None,
                format!(
                    "full forward every epoch: {k} views of the {what} of {n_train} train images need {} MiB, over \
                     the cache budget of {} MiB (RUNNER_FEATURE_CACHE_MB)",
                    bytes >> 20,
                    budget >> 20
                ),
            );
        }
        let bar = self.progress(k * n_train + n_val, 0, 0);
        bar.set_message(format!("caching {k} views of the {what}"));
        let prefix = |x: Tensor| self.model.frozen_prefix(&self.layout(x), frozen);
        let pass = |split: &Split, input: &dyn Fn(&Tensor) -> Tensor| -> Tensor {
            let n = split.len() as i64;
            let mut parts = vec![];
            let mut start = 0;
            while start < n {
                let len = (self.batch_size as i64).min(n - start);
                parts.push(prefix(input(&split.images.narrow(0, start, len))).to_kind(Kind::Float));
                bar.inc(len as u64);
                start += len;
            }
            if parts.is_empty() { probe.narrow(0, 0, 0) } else { Tensor::cat(&parts, 0) }
        };
        let (train, val) = Autocast::run(self.autocast(), || {
            let mut train = vec![];
            for v in 0..k {
                let rng = std::cell::RefCell::new(view_rng(self.seed, v));
                train.push(pass(&self.data.train, &|images| match views {
                    Views::Mirrored if v == 1 => self.transform.eval(images, self.device).flip([3]),
                    Views::Mirrored => self.transform.eval(images, self.device),
                    _ => self.transform.train(images, &mut rng.borrow_mut(), self.device),
                }));
            }
            let val = pass(&self.data.val, &|images| self.transform.eval(images, self.device));
            (self.layout(Tensor::cat(&train, 0)), self.layout(val))
        });
        bar.finish_and_clear();
        let kind = match views {
            Views::Mirrored => "2 exact views (as is and mirrored)".to_string(),
            _ => format!("{k} augmented views drawn once"),
        };
        let note = format!(
            "trains on cached {what} of {kind} of {n_train} train images ({:.1} MiB)",
            bytes as f64 / (1 << 20) as f64
        );
        (Some(FeatureCache { start: frozen, train, val, views }), note)
    }

    /// Every epoch of a phase, numbered from `first_epoch`, without checkpoints
    /// (the run loop in `run.rs` is the one that can resume).
    pub fn train_phase(&mut self, phase: &PhaseSpec, lr: f64, first_epoch: usize, total: usize) -> Vec<EpochRecord> {
        let mut run = self.start_phase(phase, lr, 0);
        (0..phase.epochs)
            .map(|e| {
                self.follow_schedule(&mut run, phase, e);
                self.run_epoch(&mut run, phase.schedule.lr_at(lr, e, phase.epochs), first_epoch + e, total)
            })
            .collect()
    }

    /// One epoch of training at learning rate `lr`, then validation. `epoch` is 1-based
    /// across phases; it and the seed alone decide the shuffling, augmentation and dropout.
    pub(crate) fn run_epoch(
        &mut self,
        phase: &mut PhaseRun,
        lr: f64,
        epoch: usize,
        total_epochs: usize,
    ) -> EpochRecord {
        let start = Instant::now();
        phase.opt.set_lr(lr);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(epoch as u64);
        tch::manual_seed(epoch_seed(self.seed, epoch) as i64);
        let (train_loss, train_acc, images) = self.train_epoch(phase, &mut rng, epoch, total_epochs);
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

    fn train_epoch(
        &mut self,
        phase: &mut PhaseRun,
        rng: &mut ChaCha8Rng,
        epoch: usize,
        total_epochs: usize,
    ) -> (f64, f64, usize) {
        // BatchNorm with batch statistics cannot take a batch of one: such a last batch is left out.
        let drop_single = phase.drops_lone_batches();
        let n = self.data.train.len();
        let mut order: Vec<i64> = (0..n as i64).collect();
        order.shuffle(rng);
        // The permutation goes to the data's device once; batches are slices of it.
        let source = phase.cache.as_ref().map_or(&self.data.train.images, |c| &c.train);
        let order_t = Tensor::from_slice(&order).to_device(source.device());
        let picks_t =
            phase.cache.as_ref().and_then(|c| view_picks(c, &order, rng)).map(|p| p.to_device(source.device()));
        let labels_t = self.data.train.labels.to_device(self.device);
        let bar = self.progress(n, epoch, total_epochs);
        let mut shown = Instant::now();
        let mut loss_sum = Tensor::zeros([], (Kind::Double, self.device));
        let mut correct = Tensor::zeros([], (Kind::Int64, self.device));
        let mut seen = 0usize;
        // Batches trained this epoch (a lone last one may be left out), for accumulation's steps.
        let batches = n.div_ceil(self.batch_size) - usize::from(drop_single && n % self.batch_size == 1);
        let mut trained = 0;
        for (b, chunk) in order.chunks(self.batch_size).enumerate() {
            if chunk.len() == 1 && drop_single {
                continue;
            }
            if crate::sys::signal::interrupted() {
                break;
            }
            let (from, len) = ((b * self.batch_size) as i64, chunk.len() as i64);
            let idx = order_t.narrow(0, from, len);
            let labels = labels_t.index_select(0, &idx.to_device(self.device));
            let x = match &phase.cache {
                // index_select returns standard layout: `self.layout` below puts it back.
                Some(c) => {
                    let rows = picks_t.as_ref().map_or(idx.shallow_clone(), |p| p.narrow(0, from, len));
                    c.train.index_select(0, &rows)
                }
                None => {
                    let images = self.data.train.images.index_select(0, &idx);
                    self.transform.train(&images, rng, self.device)
                }
            };
            let (x, targets) = if self.mixing.is_on() {
                let (x, soft) = self.mixing.apply(&x, &labels, self.data.classes.len() as i64, rng);
                (x, Some(soft))
            } else {
                (x, None)
            };
            let x = self.layout(x);
            let step = accumulation_step(trained, batches, phase.accumulate);
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
        (loss_sum.double_value(&[]) / mean, correct.int64_value(&[]) as f64 / mean, seen)
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

    /// Runs `f` with the weights evaluation uses in the model (the EMA's with `ema`).
    pub(crate) fn with_eval_weights<T>(&mut self, f: impl FnOnce(&Self) -> T) -> T {
        if let Some(ema) = &mut self.ema {
            ema.swap(&self.vs);
        }
        let out = f(self);
        if let Some(ema) = &mut self.ema {
            ema.swap(&self.vs);
        }
        out
    }

    /// Whether cached val activations at layer `start` are what the evaluation weights
    /// compute: not with test-time views (the cache holds the plain images only), nor with
    /// an EMA whose layers below `start` have trained (then they differ from the model's).
    fn cached_eval_exact(&self, start: usize) -> bool {
        self.tta.is_empty() && (self.ema.is_none() || self.trained_from >= start)
    }

    /// Mean loss and accuracy on `split`, everything in inference mode.
    pub(crate) fn evaluate(&self, split: &Split) -> (f64, f64) {
        let (loss, acc, _) = self.evaluate_split(split, false);
        (loss, acc)
    }

    /// [`Trainer::evaluate`], and the predicted class of every image, in one pass.
    pub(crate) fn evaluate_and_predict(&self, split: &Split) -> (f64, f64, Vec<i64>) {
        self.evaluate_split(split, true)
    }

    fn evaluate_split(&self, split: &Split, predict: bool) -> (f64, f64, Vec<i64>) {
        self.mean_loss_acc(split.len() as i64, &split.labels, predict, |first, len| {
            let x = self.layout(self.transform.eval(&split.images.narrow(0, first, len), self.device));
            tta_logits(&self.model, &x, &self.tta)
        })
    }

    /// Mean loss and accuracy of cached inputs (the output of the first `start` layers).
    fn evaluate_inputs(&self, inputs: &Tensor, labels: &Tensor, start: usize) -> (f64, f64) {
        let (loss, acc, _) = self.mean_loss_acc(inputs.size()[0], labels, false, |first, len| {
            self.model.infer_from(&inputs.narrow(0, first, len), start)
        });
        (loss, acc)
    }

    /// Batches of `n` examples through `logits(first, len)`, summed on the device: one sync
    /// at the end. With `predict`, also every example's predicted class (else empty).
    fn mean_loss_acc(
        &self,
        n: i64,
        labels: &Tensor,
        predict: bool,
        logits: impl Fn(i64, i64) -> Tensor,
    ) -> (f64, f64, Vec<i64>) {
        Autocast::run(self.autocast(), || {
            tch::no_grad(|| {
                let mut loss_sum = Tensor::zeros([], (Kind::Double, self.device));
                let mut correct = Tensor::zeros([], (Kind::Int64, self.device));
                let mut predicted = vec![];
                let mut first = 0;
                while first < n {
                    let len = (self.batch_size as i64).min(n - first);
                    let y = labels.narrow(0, first, len).to_device(self.device);
                    let out = logits(first, len).to_kind(Kind::Float);
                    loss_sum += out.cross_entropy_for_logits(&y).to_kind(Kind::Double) * len as f64;
                    let classes = out.argmax(-1, false);
                    correct += classes.eq_tensor(&y).sum(Kind::Int64);
                    if predict {
                        predicted.push(classes);
                    }
                    first += len;
                }
                let predicted = if predicted.is_empty() {
                    vec![]
                } else {
                    Vec::<i64>::try_from(&Tensor::cat(&predicted, 0).to_device(Device::Cpu)).unwrap_or_default()
                };
                let n = n.max(1) as f64;
                (loss_sum.double_value(&[]) / n, correct.int64_value(&[]) as f64 / n, predicted)
            })
        })
    }

    fn progress(&self, n: usize, epoch: usize, total: usize) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(n as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} images {per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(format!("epoch {epoch}/{total}"));
        bar
    }
}
/// The model's logits for the batch `x`, in inference mode; with test-time views, the log of
/// the softmax averaged over the plain image and each view (so argmax and cross-entropy
/// read it as they read logits).
pub(crate) fn tta_logits(model: &Classifier, x: &Tensor, views: &[TtaView]) -> Tensor {
    let plain = model.infer(x);
    if views.is_empty() {
        return plain;
    }
    let mut logits = vec![plain];
    for view in views {
        let seen = match view {
            TtaView::Hflip => x.flip([3]),
        };
        logits.push(model.infer(&seen));
    }
    average_views(&logits)
}

/// The log of the softmax averaged over the views' logits (fp32 at least).
fn average_views(logits: &[Tensor]) -> Tensor {
    tch::no_grad(|| {
        let kind = if logits[0].kind() == Kind::Double { Kind::Double } else { Kind::Float };
        let probs: Vec<Tensor> = logits.iter().map(|l| l.to_kind(kind).softmax(-1, kind)).collect();
        Tensor::stack(&probs, 0).mean_dim(0, false, kind).log()
    })
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

/// With a cache of several views: the row of the view each image of `order` trains
/// on this epoch (None for a plain cache). Mirrored views take the draws the full
/// forward's hflip takes, in the same order.
fn view_picks(cache: &FeatureCache, order: &[i64], rng: &mut ChaCha8Rng) -> Option<Tensor> {
    if cache.views == Views::Plain {
        return None;
    }
    let n = order.len() as i64;
    let picks: Vec<i64> = order
        .iter()
        .map(|&i| {
            let v = match cache.views {
                Views::Mirrored => rng.random_bool(0.5) as i64,
                _ => rng.random_range(0..cache.views.count() as i64),
            };
            v * n + i
        })
        .collect();
    Some(Tensor::from_slice(&picks))
}

/// PyTorch's numbers for the toolkit's keys (scripts/make_toolkit_fixtures.py).
#[cfg(test)]
pub(crate) fn toolkit_fixture() -> serde_json::Value {
    serde_json::from_str(include_str!("../../tests/fixtures/toolkit.json")).expect("toolkit.json is JSON")
}

/// A JSON array of numbers.
#[cfg(test)]
pub(crate) fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().expect("an array").iter().map(|x| x.as_f64().expect("a number")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
            lr: Some(0.1),
            lr_factor: None,
            momentum: 0.9,
            nesterov: false,
            weight_decay: None,
            layer_decay: None,
            head_lr_factor: None,
        };
        let mut opt = Optimizer::new(&spec, 0.1, vec![("w".into(), w.shallow_clone())]);
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
