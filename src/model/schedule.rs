//! A run's schedule over its phases: the one place that answers, for phase `p` and its
//! epoch `e`, which backbone layers train (gradual unfreezing included) and at what
//! learning rate each parameter trains (the phase's rate or `lr_factor` of the previous
//! one, its `schedule`, and the layer-wise `layer_decay` and `head_lr_factor`).

use crate::config::spec::{OptimizerSpec, PhaseSpec, ScheduleKind, ScheduleSpec};
use crate::model::FreezePlan;

/// The schedule of a spec's phases over a backbone of `layers` layers.
#[derive(Debug, Clone)]
pub struct Schedule {
    phases: Vec<PhaseSpec>,
    layers: usize,
    /// Each phase's base learning rate.
    base: Vec<f64>,
}

impl Schedule {
    pub fn new(phases: &[PhaseSpec], layers: usize) -> Schedule {
        let mut base: Vec<f64> = Vec::with_capacity(phases.len());
        for p in phases {
            let lr = match (p.optimizer.lr, p.optimizer.lr_factor) {
                (Some(lr), _) => lr,
                (None, Some(f)) => base.last().copied().unwrap_or(1.0) * f,
                (None, None) => unreachable!("a spec's optimizer has lr or lr_factor (validated)"),
            };
            base.push(lr);
        }
        Schedule { phases: phases.to_vec(), layers, base }
    }

    pub fn phases(&self) -> &[PhaseSpec] {
        &self.phases
    }

    /// The backbone's layer count.
    pub fn layers(&self) -> usize {
        self.layers
    }

    /// Phase `p`'s base learning rate: its `lr`, or `lr_factor` times the previous phase's.
    pub fn base_lr(&self, p: usize) -> f64 {
        self.base[p]
    }

    /// Phase `p`'s learning rate in its epoch `e` (0-based), stepped per epoch as PyTorch's
    /// schedulers are: what a parameter at scale 1 trains at.
    pub fn lr(&self, p: usize, e: usize) -> f64 {
        let phase = &self.phases[p];
        scheduled(&phase.schedule, self.base[p], e, phase.epochs)
    }

    /// The factor on phase `p`'s rate of a parameter of backbone layer `layer` (`None`: the
    /// head): `layer_decay` to the power of its distance from the head (timm's layer-wise
    /// decay), `head_lr_factor` for the head.
    pub fn scale(&self, p: usize, layer: Option<usize>) -> f64 {
        layer_scale(layer, self.layers, &self.phases[p].optimizer)
    }

    /// Whether phase `p` gives its parameters rates of their own (layer-wise rates).
    pub fn layer_wise(&self, p: usize) -> bool {
        let opt = &self.phases[p].optimizer;
        opt.layer_decay.is_some() || opt.head_lr_factor.is_some()
    }

    /// The learning rate of a parameter of `layer` (`None`: the head) in epoch `e` of phase `p`.
    pub(crate) fn param_lr(&self, p: usize, e: usize, layer: Option<usize>) -> f64 {
        self.lr(p, e) * self.scale(p, layer)
    }

    /// The layers frozen in epoch `e` of phase `p`: its `freeze_up_to`, lowered epoch by
    /// epoch by gradual unfreezing.
    pub fn frozen(&self, p: usize, e: usize) -> usize {
        self.phases[p].freeze_up_to.at_epoch(e, self.layers)
    }

    /// The freeze plan of epoch `e` of phase `p`.
    pub fn plan(&self, p: usize, e: usize) -> FreezePlan {
        FreezePlan::new(self.frozen(p, e), self.phases[p].batchnorm, self.layers)
    }

    /// The freeze indices still to come from epoch `e` of phase `p` on (its own, with
    /// gradual unfreezing, and the later phases'): where a cache pass may keep activations.
    pub(crate) fn later_boundaries(&self, p: usize, e: usize) -> Vec<usize> {
        let phase = &self.phases[p];
        let mut out: Vec<usize> = (e..phase.epochs).map(|e| self.frozen(p, e)).collect();
        out.extend(
            (p + 1..self.phases.len())
                .flat_map(|q| (0..self.phases[q].epochs).map(move |e| (q, e)))
                .map(|(q, e)| self.frozen(q, e)),
        );
        out
    }

    /// The lowest backbone layer trained by the time epoch `e` of phase `p` starts (the layer
    /// count when only the head has trained): each earlier phase trained from its last
    /// freeze index.
    pub(crate) fn trained_from(&self, p: usize, e: usize) -> usize {
        let done = (0..p).map(|q| self.frozen(q, self.phases[q].epochs.saturating_sub(1)));
        done.chain([self.frozen(p, e)]).min().unwrap_or(0)
    }

    /// The epochs before which gradual unfreezing unfroze a layer, of the run's epochs so far
    /// (each epoch's number and phase name, in order): the curves mark them.
    pub(crate) fn unfreeze_epochs<'a>(&self, epochs: impl IntoIterator<Item = (usize, &'a str)>) -> Vec<usize> {
        let mut seen: std::collections::BTreeMap<&str, usize> = Default::default();
        let mut out = vec![];
        for (epoch, name) in epochs {
            let e = seen.entry(name).or_insert(0);
            if let Some(p) = self.phases.iter().position(|ph| ph.name == name)
                && *e > 0
                && self.frozen(p, *e) < self.frozen(p, *e - 1)
            {
                out.push(epoch);
            }
            *e += 1;
        }
        out
    }
}

/// The rate of epoch `e` (0-based) of a phase of `epochs` under `schedule`, for base rate `lr`.
fn scheduled(schedule: &ScheduleSpec, lr: f64, e: usize, epochs: usize) -> f64 {
    if e < schedule.warmup {
        return lr * (e + 1) as f64 / (schedule.warmup + 1) as f64;
    }
    let t = (e - schedule.warmup) as f64;
    let span = epochs.saturating_sub(schedule.warmup).max(1) as f64;
    match schedule.kind {
        ScheduleKind::Constant => lr,
        ScheduleKind::Step => {
            let step = schedule.step_size.unwrap_or(1).max(1) as f64;
            lr * schedule.gamma.unwrap_or(0.1).powf((t / step).floor())
        }
        ScheduleKind::Exponential => lr * schedule.gamma.unwrap_or(0.9).powf(t),
        ScheduleKind::Cosine => lr * 0.5 * (1.0 + (std::f64::consts::PI * t / span).cos()),
    }
}

/// The layer-wise factor of a parameter of `layer` of `layers` under `opt`.
pub(crate) fn layer_scale(layer: Option<usize>, layers: usize, opt: &OptimizerSpec) -> f64 {
    match layer {
        Some(i) => opt.layer_decay.map_or(1.0, |d| d.powi(layers.saturating_sub(i) as i32)),
        None => opt.head_lr_factor.unwrap_or(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::spec::{FreezeUpTo, GradualFreeze};

    fn phases(text: &str) -> Vec<PhaseSpec> {
        let spec = crate::config::spec::Spec::from_str_at(text, std::path::Path::new("t.toml")).unwrap();
        spec.phases
    }

    const SPEC: &str = r#"
name = "t"
[data]
source = "d"
[model]
backbone = "resnet18"
[[phases]]
name = "head"
epochs = 2
freeze_up_to = "all"
optimizer = { kind = "adam", lr = 1e-3 }
[[phases]]
name = "fine"
epochs = 3
freeze_up_to = { from = 8, to = 6, every = 1 }
optimizer = { kind = "sgd", lr_factor = 0.1, layer_decay = 0.5, head_lr_factor = 10.0 }
"#;

    #[test]
    fn lr_factor_chains_and_layer_wise_rates_follow_timm() {
        let s = Schedule::new(&phases(SPEC), 8);
        assert_eq!(s.base_lr(0), 1e-3);
        assert!((s.base_lr(1) - 1e-4).abs() < 1e-18);
        assert!(!s.layer_wise(0) && s.layer_wise(1));
        assert_eq!(s.scale(1, Some(7)), 0.5);
        assert_eq!(s.scale(1, Some(0)), 0.5f64.powi(8));
        assert_eq!(s.scale(1, None), 10.0);
        assert_eq!(s.scale(0, Some(0)), 1.0);
        assert!((s.param_lr(1, 0, None) - 1e-3).abs() < 1e-15);
    }

    #[test]
    fn gradual_unfreezing_moves_the_boundary_and_the_curves_mark_it() {
        let s = Schedule::new(&phases(SPEC), 8);
        assert_eq!((0..3).map(|e| s.frozen(1, e)).collect::<Vec<_>>(), [8, 7, 6]);
        assert_eq!(s.later_boundaries(0, 1), [8, 8, 7, 6]);
        assert_eq!(s.trained_from(0, 0), 8);
        assert_eq!(s.trained_from(1, 2), 6);
        let rows = ["head", "head", "fine", "fine", "fine"];
        assert_eq!(s.unfreeze_epochs(rows.into_iter().enumerate().map(|(i, p)| (i + 1, p))), [4, 5]);
        assert_eq!(FreezeUpTo::Gradual(GradualFreeze { from: 30, to: 2, every: 1 }).at_epoch(0, 18), 18);
    }

    #[test]
    fn schedules_step_per_epoch_like_pytorch() {
        let sch = |kind, step_size, gamma, warmup| ScheduleSpec { kind, step_size, gamma, warmup };
        let lrs = |s: &ScheduleSpec, n| (0..n).map(|e| scheduled(s, 1.0, e, n)).collect::<Vec<_>>();
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
}
