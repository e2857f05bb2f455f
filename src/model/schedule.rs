//! A run's schedule over its phases: the one place that answers, for phase `p` and its
//! epoch `e`, which backbone layers train (gradual unfreezing included) and at what
//! learning rate each parameter trains (the phase's rate or `lr_factor` of the previous
//! one, its `schedule`, and the layer-wise `layer_decay` and `head_lr_factor`).

use crate::config::spec::{Lr, Monitor, OptimizerSpec, PhaseSpec, ScheduleKind, ScheduleSpec, ThresholdMode};
use crate::model::FreezePlan;

/// The schedule of a spec's phases over a backbone of `layers` layers.
#[derive(Debug, Clone)]
pub struct Schedule {
    phases: Vec<PhaseSpec>,
    layers: usize,
    /// Each phase's base learning rate (NaN while a `lr = "find"` it depends on is not found).
    base: Vec<f64>,
    /// The rates the range test found for the phases with `lr = "find"`.
    found: Vec<Option<f64>>,
}

impl Schedule {
    pub fn new(phases: &[PhaseSpec], layers: usize) -> Schedule {
        let mut s = Schedule { phases: phases.to_vec(), layers, base: vec![], found: vec![None; phases.len()] };
        s.chain();
        s
    }

    /// Each phase's base rate: its `lr` (or the one found), or `lr_factor` times the previous phase's.
    fn chain(&mut self) {
        let mut base: Vec<f64> = Vec::with_capacity(self.phases.len());
        for (p, phase) in self.phases.iter().enumerate() {
            let lr = match (phase.optimizer.lr, phase.optimizer.lr_factor) {
                (Some(Lr::Value(lr)), _) => lr,
                (Some(Lr::Find), _) => self.found[p].unwrap_or(f64::NAN),
                (None, Some(f)) => base.last().copied().unwrap_or(1.0) * f,
                (None, None) => unreachable!("a spec's optimizer has lr or lr_factor (validated)"),
            };
            base.push(lr);
        }
        self.base = base;
    }

    /// Phase `p`'s rate as the range test found it (`lr = "find"`); later phases' `lr_factor` follow.
    pub fn set_found(&mut self, p: usize, lr: f64) {
        self.found[p] = Some(lr);
        self.chain();
    }

    /// Whether phase `p` has `lr = "find"` and no rate found yet.
    pub fn to_find(&self, p: usize) -> bool {
        self.phases[p].optimizer.lr == Some(Lr::Find) && self.found[p].is_none()
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
    /// schedulers are: what a parameter at scale 1 trains at. A per-step schedule gives the
    /// rate of the epoch's first step, `reduce_on_plateau` the phase's rate (the
    /// [`Plateau`] lowers it).
    pub fn lr(&self, p: usize, e: usize) -> f64 {
        let phase = &self.phases[p];
        scheduled(&phase.schedule, self.base[p], e, phase.epochs)
    }

    /// Phase `p`'s rate and momentum at its optimizer step `k` (0-based) of `total`, for
    /// the per-step schedules (None for the others): PyTorch's `OneCycleLR`, and
    /// `CosineAnnealingLR` after a `LinearLR` warm-up, stepped after every optimizer step.
    pub fn at_step(&self, p: usize, k: usize, total: usize) -> Option<(f64, Option<f64>)> {
        let s = &self.phases[p].schedule;
        let lr = self.base[p];
        match (s.kind, s.warmup_steps) {
            (ScheduleKind::OneCycle, _) => Some(one_cycle(s, lr, k, total)),
            (ScheduleKind::Cosine, Some(w)) => Some((warm_cosine(lr, w, k, total), None)),
            _ => None,
        }
    }

    /// Phase `p`'s `reduce_on_plateau`, at its base rate; None for other schedules.
    pub fn plateau(&self, p: usize, monitor: Monitor) -> Option<Plateau> {
        let s = &self.phases[p].schedule;
        (s.kind == ScheduleKind::ReduceOnPlateau).then(|| Plateau::new(s, self.base[p], monitor))
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
        // Per step (train/mod.rs sets each step's rate) or on the plateau's own state.
        ScheduleKind::Constant | ScheduleKind::OneCycle | ScheduleKind::ReduceOnPlateau => lr,
        ScheduleKind::Step => {
            let step = schedule.step_size.unwrap_or(1).max(1) as f64;
            lr * schedule.gamma.unwrap_or(0.1).powf((t / step).floor())
        }
        ScheduleKind::Exponential => lr * schedule.gamma.unwrap_or(0.9).powf(t),
        ScheduleKind::Cosine => lr * 0.5 * (1.0 + (std::f64::consts::PI * t / span).cos()),
    }
}

/// PyTorch's `_annealing_cos`: from `start` (pct 0) to `end` (pct 1) along half a cosine.
fn anneal_cos(start: f64, end: f64, pct: f64) -> f64 {
    let cos_out = (std::f64::consts::PI * pct).cos() + 1.0;
    end + (start - end) / 2.0 * cos_out
}

/// `OneCycleLR(max_lr = lr x max_lr_factor, total_steps, pct_start, div_factor,
/// final_div_factor, anneal_strategy = "cos", cycle_momentum, base_momentum,
/// max_momentum)` at step `k`, term for term as torch computes it (two phases).
fn one_cycle(s: &ScheduleSpec, lr: f64, k: usize, total: usize) -> (f64, Option<f64>) {
    let max_lr = lr * s.max_lr_factor.unwrap_or(1.0);
    let initial = max_lr / s.div_factor.unwrap_or(25.0);
    let min_lr = initial / s.final_div_factor.unwrap_or(1e4);
    let (base_m, max_m) = (s.base_momentum.unwrap_or(0.85), s.max_momentum.unwrap_or(0.95));
    let rise_end = s.pct_start.unwrap_or(0.3) * total as f64 - 1.0;
    let k = k as f64;
    let ((start, end), (m_start, m_end), pct) = if k <= rise_end {
        ((initial, max_lr), (max_m, base_m), k / rise_end)
    } else {
        ((max_lr, min_lr), (base_m, max_m), (k - rise_end) / (total as f64 - 1.0 - rise_end))
    };
    let momentum = s.cycle_momentum.unwrap_or(true).then(|| anneal_cos(m_start, m_end, pct));
    (anneal_cos(start, end, pct), momentum)
}

/// Linear warm-up over `warmup` steps from `lr / (warmup + 1)` (PyTorch's `LinearLR` with
/// `start_factor = 1 / (warmup + 1)`, as the epoch warm-up), then cosine annealing to 0
/// over the remaining steps (`CosineAnnealingLR(T_max = total - warmup)`), at step `k`.
fn warm_cosine(lr: f64, warmup: usize, k: usize, total: usize) -> f64 {
    if k < warmup {
        let start = 1.0 / (warmup + 1) as f64;
        return lr * (start + (1.0 - start) * k as f64 / warmup as f64);
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    lr * 0.5 * (1.0 + (std::f64::consts::PI * (k - warmup) as f64 / span).cos())
}

/// `reduce_on_plateau` in progress, as PyTorch's `ReduceLROnPlateau` steps once per epoch
/// on the monitored metric: after more than `patience` epochs without an improvement of
/// `threshold`, the rate is multiplied by `factor` (not below `min_lr`; a change under 1e-8
/// is not made) and `cooldown` epochs pass before bad epochs count again. Its state follows
/// from the phase's monitored values alone: a resumed run replays them.
#[derive(Debug, Clone, PartialEq)]
pub struct Plateau {
    pub lr: f64,
    factor: f64,
    patience: usize,
    threshold: f64,
    mode: ThresholdMode,
    cooldown: usize,
    min_lr: f64,
    higher_is_better: bool,
    best: f64,
    bad_epochs: usize,
    cooldown_left: usize,
}

impl Plateau {
    fn new(s: &ScheduleSpec, lr: f64, monitor: Monitor) -> Plateau {
        let higher_is_better = monitor.higher_is_better();
        Plateau {
            lr,
            factor: s.factor.unwrap_or(0.1),
            patience: s.patience.unwrap_or(10),
            threshold: s.threshold.unwrap_or(1e-4),
            mode: s.threshold_mode.unwrap_or_default(),
            cooldown: s.cooldown.unwrap_or(0),
            min_lr: s.min_lr.unwrap_or(0.0),
            higher_is_better,
            best: if higher_is_better { f64::NEG_INFINITY } else { f64::INFINITY },
            bad_epochs: 0,
            cooldown_left: 0,
        }
    }

    fn is_better(&self, value: f64) -> bool {
        match (self.mode, self.higher_is_better) {
            (ThresholdMode::Rel, false) => value < self.best * (1.0 - self.threshold),
            (ThresholdMode::Rel, true) => value > self.best * (self.threshold + 1.0),
            (ThresholdMode::Abs, false) => value < self.best - self.threshold,
            (ThresholdMode::Abs, true) => value > self.best + self.threshold,
        }
    }

    /// Takes an epoch's monitored value; returns whether the rate was lowered.
    pub fn step(&mut self, value: f64) -> bool {
        if self.is_better(value) {
            self.best = value;
            self.bad_epochs = 0;
        } else {
            self.bad_epochs += 1;
        }
        if self.cooldown_left > 0 {
            self.cooldown_left -= 1;
            self.bad_epochs = 0;
        }
        if self.bad_epochs <= self.patience {
            return false;
        }
        self.cooldown_left = self.cooldown;
        self.bad_epochs = 0;
        let lower = (self.lr * self.factor).max(self.min_lr);
        let lowered = self.lr - lower > 1e-8;
        if lowered {
            self.lr = lower;
        }
        lowered
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
    use crate::testing::floats;

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
        assert!((s.lr(1, 0) * s.scale(1, None) - 1e-3).abs() < 1e-15);
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
        let sch =
            |kind, step_size, gamma, warmup| ScheduleSpec { kind, step_size, gamma, warmup, ..Default::default() };
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

    fn fixture() -> serde_json::Value {
        serde_json::from_str(include_str!("../../tests/fixtures/schedules.json")).expect("schedules.json is JSON")
    }

    /// A one-phase schedule of `epochs` over 8 layers with this optimizer and schedule table.
    fn one_phase(optimizer: &str, schedule: &str) -> Schedule {
        let text = format!(
            "name = \"t\"\n[data]\nsource = \"d\"\n[model]\nbackbone = \"resnet18\"\n[[phases]]\nname = \"p\"\n\
             epochs = 2\nfreeze_up_to = \"all\"\noptimizer = {optimizer}\nschedule = {schedule}\n"
        );
        Schedule::new(&phases(&text), 8)
    }

    /// Relative agreement within 1e-12 (PyTorch's recursive forms round differently).
    fn close(ours: &[f64], torch: &[f64], what: &str) {
        assert_eq!(ours.len(), torch.len(), "{what}");
        for (k, (a, b)) in ours.iter().zip(torch).enumerate() {
            assert!((a - b).abs() <= 1e-12 * b.abs().max(1e-300), "{what} step {k}: ours {a}, torch {b}");
        }
    }

    #[test]
    fn per_step_schedules_match_pytorchs_on_the_committed_fixture() {
        let f = fixture();
        let cases = [
            ("one_cycle_sgd", "{ kind = \"sgd\", lr = 0.1, momentum = 0.9 }", "{ kind = \"one_cycle\" }"),
            (
                "one_cycle_adam",
                "{ kind = \"adam\", lr = 0.01 }",
                "{ kind = \"one_cycle\", max_lr_factor = 2.0, pct_start = 0.25, div_factor = 10.0, \
                 final_div_factor = 100.0, base_momentum = 0.8, max_momentum = 0.9 }",
            ),
            (
                "one_cycle_fixed_momentum",
                "{ kind = \"sgd\", lr = 0.05, momentum = 0.9 }",
                "{ kind = \"one_cycle\", cycle_momentum = false }",
            ),
        ];
        for (case, optimizer, schedule) in cases {
            let c = &f[case];
            let total = c["total"].as_u64().unwrap() as usize;
            let s = one_phase(optimizer, schedule);
            let steps: Vec<(f64, Option<f64>)> = (0..total).map(|k| s.at_step(0, k, total).unwrap()).collect();
            close(&steps.iter().map(|x| x.0).collect::<Vec<_>>(), &floats(&c["lr"]), case);
            match c.get("momentum") {
                Some(m) => close(&steps.iter().map(|x| x.1.unwrap()).collect::<Vec<_>>(), &floats(m), case),
                None => assert!(steps.iter().all(|x| x.1.is_none()), "{case}: momentum left alone"),
            }
        }
        for case in ["warm_cosine_5_of_20", "warm_cosine_0_of_7"] {
            let c = &f[case];
            let (total, warmup) = (c["total"].as_u64().unwrap() as usize, c["warmup_steps"].as_u64().unwrap());
            let opt = format!("{{ kind = \"sgd\", lr = {} }}", c["lr"]);
            let s = one_phase(&opt, &format!("{{ kind = \"cosine\", warmup_steps = {warmup} }}"));
            let ours: Vec<f64> = (0..total).map(|k| s.at_step(0, k, total).unwrap().0).collect();
            close(&ours, &floats(&c["lrs"]), case);
        }
        // Epoch schedules have no per-step rate.
        assert!(one_phase("{ kind = \"sgd\", lr = 0.1 }", "{ kind = \"cosine\" }").at_step(0, 0, 4).is_none());
    }

    #[test]
    fn reduce_on_plateau_matches_pytorchs_on_the_committed_fixture() {
        let f = fixture();
        let cases = [
            (
                "plateau_min_rel",
                Monitor::ValLoss,
                "{ kind = \"reduce_on_plateau\", factor = 0.5, patience = 2, threshold = 1e-2, cooldown = 1, \
                 min_lr = 0.02 }",
            ),
            (
                "plateau_max_abs",
                Monitor::ValAcc,
                "{ kind = \"reduce_on_plateau\", factor = 0.1, patience = 1, threshold = 0.004, \
                 threshold_mode = \"abs\" }",
            ),
        ];
        for (case, monitor, schedule) in cases {
            let c = &f[case];
            let s = one_phase(&format!("{{ kind = \"sgd\", lr = {} }}", c["lr"]), schedule);
            let mut plateau = s.plateau(0, monitor).expect("a plateau schedule");
            let values = c["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap_or(f64::NAN));
            let ours: Vec<f64> = values.map(|v| (plateau.step(v), plateau.lr).1).collect();
            close(&ours, &floats(&c["lrs_after"]), case);
        }
        assert!(
            one_phase("{ kind = \"sgd\", lr = 0.1 }", "{ kind = \"cosine\" }").plateau(0, Monitor::ValAcc).is_none()
        );
    }

    #[test]
    fn a_schedules_keys_belong_to_its_kind() {
        let err = |schedule: &str| {
            let text = format!(
                "name = \"t\"\n[data]\nsource = \"d\"\n[model]\nbackbone = \"resnet18\"\n[[phases]]\nname = \"p\"\n\
                 epochs = 2\nfreeze_up_to = \"all\"\noptimizer = {{ kind = \"sgd\", lr = 0.1 }}\nschedule = {schedule}\n"
            );
            format!("{:#}", crate::config::spec::Spec::from_str_at(&text, std::path::Path::new("t.toml")).unwrap_err())
        };
        let e = err("{ kind = \"cosine\", pct_start = 0.3 }");
        assert!(e.contains("phases.0.schedule.pct_start") && e.contains("one_cycle"), "{e}");
        let e = err("{ kind = \"one_cycle\", warmup_steps = 3 }");
        assert!(e.contains("schedule.warmup_steps") && e.contains("applies to cosine"), "{e}");
        let e = err("{ kind = \"reduce_on_plateau\", factor = 1.5 }");
        assert!(e.contains("schedule.factor") && e.contains("(0, 1)"), "{e}");
        let e = err("{ kind = \"one_cycle\", warmup = 1 }");
        assert!(e.contains("schedule.warmup"), "{e}");
    }
}
