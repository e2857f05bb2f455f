//! A phase of training in progress: which layers it freezes (moving down epoch by epoch
//! with gradual unfreezing), its optimizer over exactly its trainable parameters at their
//! learning rates, and whether it trains on cached features.

use std::collections::BTreeSet;
use std::time::Instant;

use tch::Tensor;

use super::Trainer;
use super::features::FeatureCache;
use super::optim::Optimizer;
use crate::config::spec::BatchNormPolicy;
use crate::model::FreezePlan;
use crate::model::schedule::Plateau;

/// A phase in progress: its optimizer and how its steps run.
pub struct PhaseRun {
    /// The phase's index among the spec's phases.
    pub(super) index: usize,
    /// The phase's name, as its epochs' records give it.
    pub(super) name: String,
    pub(super) opt: Optimizer,
    /// How its training steps run: which layers are frozen, which BatchNorms use batch statistics.
    pub(super) plan: FreezePlan,
    /// Whether the model has BatchNorm layers at all (running statistics among its variables).
    batchnorm: bool,
    /// Batches per optimizer step (`gradient_accumulation`).
    pub(super) accumulate: usize,
    /// `clip_grad_norm`.
    pub(super) clip: Option<f64>,
    /// The names of the parameters this phase trains.
    pub(super) trainable: BTreeSet<String>,
    pub(super) cache: Option<FeatureCache>,
    /// Why the phase does or does not use the feature cache, for the log.
    cache_note: String,
    /// Seconds spent building the cache, counted in the phase's next epoch.
    pub(super) pending_seconds: f64,
    /// `reduce_on_plateau`'s state, when the phase's schedule is one.
    pub(super) plateau: Option<Plateau>,
}

impl PhaseRun {
    /// Whether a batch of one image is left out of training: BatchNorm layers train in this
    /// phase, on batch statistics that one image does not have.
    pub(crate) fn drops_lone_batches(&self) -> bool {
        self.batchnorm && self.plan.any_batch_statistics()
    }

    /// The phase's index among the spec's phases.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Why the phase does or does not train on cached features, for the log.
    pub fn cache_note(&self) -> &str {
        &self.cache_note
    }

    /// The optimizer's state (a checkpoint's), by name.
    pub fn optimizer_state(&self) -> Vec<(String, Tensor)> {
        self.opt.state_tensors()
    }

    /// A resumed phase's `reduce_on_plateau` state: the monitored values of its epochs so
    /// far, replayed.
    pub(crate) fn replay_plateau(&mut self, values: impl IntoIterator<Item = f64>) {
        if let Some(pl) = &mut self.plateau {
            for v in values {
                pl.step(v);
            }
        }
    }

    /// Restores the optimizer's state from a checkpoint of this phase.
    pub(crate) fn load_optimizer_state(&mut self, state: &[(String, Tensor)]) -> anyhow::Result<()> {
        self.opt.load_state(state)
    }
}

impl Trainer {
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

    /// The learning-rate factors of these parameters in phase `p` (layer-wise rates).
    fn lr_scales(&self, p: usize, params: &[(String, Tensor)]) -> Vec<f64> {
        params.iter().map(|(name, _)| self.schedule.scale(p, self.model.layer_of(name))).collect()
    }

    /// Starts phase `p` at its epoch `phase_epoch` (0 unless resumed): freezes the layers
    /// below its index for that epoch, sets up its optimizer and augmentation, and builds
    /// its feature cache where it can.
    pub fn start_phase(&mut self, p: usize, phase_epoch: usize) -> PhaseRun {
        let phase = self.schedule.phases()[p].clone();
        let plan = self.schedule.plan(p, phase_epoch);
        let frozen = plan.frozen();
        self.later_boundaries = self.schedule.later_boundaries(p, phase_epoch);
        self.trained_from = self.schedule.trained_from(p, phase_epoch);
        let params = self.apply_freeze(&plan);
        self.transform.augment = phase.augment.clone().unwrap_or_else(|| self.default_augment.clone());
        let started = Instant::now();
        // Kept activations stay valid while every layer below them stays frozen, BatchNorm included.
        let keep = phase.batchnorm != BatchNormPolicy::Train;
        self.stash.retain(|&k, _| keep && k <= frozen);
        let (cache, mut cache_note) = self.cache_for(frozen, phase.batchnorm);
        let scales = self.lr_scales(p, &params);
        let trainable = params.iter().map(|(name, _)| name.clone()).collect();
        let mut opt = Optimizer::new(&phase.optimizer, self.schedule.base_lr(p), params);
        opt.set_lr_scales(scales);
        if cache.is_some() && !self.cached_eval_exact(frozen) {
            let why = if self.tta.is_empty() { "the EMA's lower layers differ" } else { "eval.tta" };
            cache_note.push_str(&format!("; validation runs the full forward ({why})"));
        }
        PhaseRun {
            index: p,
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
            plateau: self.schedule.plateau(p, self.monitor),
        }
    }

    /// Gradual unfreezing: before epoch `e` (0-based) of the phase, unfreezes the layers its
    /// schedule unfreezes by then. The new parameters join the optimizer with fresh state
    /// (at their layer-wise rates), and the cache moves down to the new boundary. Returns
    /// what changed, for the log.
    pub(super) fn follow_schedule(&mut self, run: &mut PhaseRun, e: usize) -> Option<String> {
        let p = run.index;
        let plan = self.schedule.plan(p, e);
        if plan.frozen() == run.plan.frozen() {
            return None;
        }
        let was = run.plan.frozen();
        let params = self.apply_freeze(&plan);
        let joined = params.iter().filter(|(n, _)| !run.trainable.contains(n)).count();
        let scales = self.lr_scales(p, &params);
        run.trainable = params.iter().map(|(n, _)| n.clone()).collect();
        run.opt.set_params(params, scales);
        run.plan = plan;
        self.trained_from = self.trained_from.min(plan.frozen());
        let started = Instant::now();
        if run.cache.is_some() {
            let (cache, note) = self.cache_for(plan.frozen(), self.schedule.phases()[p].batchnorm);
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
}
