//! SGD, Adam, AdamW and RMSprop over named tch tensors, step for step as
//! PyTorch's `torch.optim` computes them (single-tensor path, default betas,
//! eps and alpha), with state that can be saved and restored exactly. Each step
//! runs as multi-tensor (`_foreach_*`) operations over every parameter at once
//! (train/foreach.rs), PyTorch's default on CUDA, in the single-tensor path's order
//! of operations: the same numbers.
//!
//! libtorch's own C++ optimizers (tch's `COptimizer`) cannot export their
//! momentum and moment buffers, and exact resume needs them.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use tch::Tensor;

use crate::config::spec::{OptimizerKind, OptimizerSpec};
use crate::train::foreach;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;
const RMS_ALPHA: f64 = 0.99;
const RMS_EPS: f64 = 1e-8;
/// AdamW's weight decay when the spec gives none (PyTorch's default).
pub(crate) const ADAMW_DEFAULT_WD: f64 = 0.01;
const LION_BETA2: f64 = 0.99;
const LAMB_EPS: f64 = 1e-6;

pub(crate) struct Optimizer {
    kind: OptimizerKind,
    lr: f64,
    momentum: f64,
    /// Adam's, AdamW's, LAMB's and Lion's first beta (0.9; one-cycle moves it).
    beta1: f64,
    nesterov: bool,
    weight_decay: f64,
    /// `decay_norm_and_bias`: whether parameters of one dimension are decayed too.
    decay_norm_and_bias: bool,
    /// Trainable parameters by variable name.
    params: Vec<(String, Tensor)>,
    /// Each parameter's learning rate as a multiple of the phase's (1 without layer-wise rates).
    scales: Vec<f64>,
    /// Per parameter: its buffers by name (`momentum_buffer`, `exp_avg`, ...), created on first step.
    state: BTreeMap<String, BTreeMap<&'static str, Tensor>>,
    /// Steps taken.
    steps: i64,
    /// Steps each parameter has taken (Adam's bias correction, PyTorch's per-parameter
    /// `state["step"]`): parameters that join mid-phase start from 0.
    param_steps: BTreeMap<String, i64>,
}

impl Optimizer {
    pub(crate) fn new(spec: &OptimizerSpec, lr: f64, params: Vec<(String, Tensor)>) -> Self {
        let default_wd =
            if matches!(spec.kind, OptimizerKind::Adamw | OptimizerKind::Lamb) { ADAMW_DEFAULT_WD } else { 0.0 };
        Optimizer {
            kind: spec.kind,
            lr,
            momentum: spec.momentum,
            beta1: BETA1,
            nesterov: spec.nesterov,
            weight_decay: spec.weight_decay.unwrap_or(default_wd),
            decay_norm_and_bias: spec.decay_norm_and_bias,
            scales: vec![1.0; params.len()],
            params,
            state: BTreeMap::new(),
            steps: 0,
            param_steps: BTreeMap::new(),
        }
    }

    /// The parameters it trains, in the model's order, at these learning-rate scales: those
    /// it did not train before (layers unfrozen during a phase) join with fresh state, as a
    /// new param group joins a PyTorch optimizer. In the model's order, not the order they
    /// joined in, so that the total gradient norm (`clip_grad_norm`) is summed alike whether
    /// the phase ran through or was resumed with them all at once, and as
    /// `clip_grad_norm_(model.parameters(), ...)` sums it.
    pub(crate) fn set_params(&mut self, params: Vec<(String, Tensor)>, scales: Vec<f64>) {
        assert_eq!(scales.len(), params.len(), "one scale per parameter");
        debug_assert!(self.params.iter().all(|(n, _)| params.iter().any(|(m, _)| m == n)), "no parameter leaves");
        self.params = params;
        self.scales = scales;
    }

    /// The same optimizer over the same parameters at the same rates, with no state: a
    /// range test trains with it and leaves this one as it was.
    pub(crate) fn fresh(&self) -> Optimizer {
        Optimizer {
            params: self.params.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect(),
            scales: self.scales.clone(),
            state: BTreeMap::new(),
            steps: 0,
            param_steps: BTreeMap::new(),
            ..*self
        }
    }

    /// Each parameter's learning rate as a multiple of the phase's, in parameter order.
    pub(crate) fn set_lr_scales(&mut self, scales: Vec<f64>) {
        assert_eq!(scales.len(), self.params.len(), "one scale per parameter");
        self.scales = scales;
    }

    pub(crate) fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// The momentum from now on, as PyTorch's `OneCycleLR` sets a param group's: SGD's and
    /// RMSprop's `momentum`, or the first beta of the Adam family and Lion.
    pub(crate) fn set_momentum(&mut self, m: f64) {
        match self.kind {
            OptimizerKind::Sgd | OptimizerKind::Rmsprop => self.momentum = m,
            _ => self.beta1 = m,
        }
    }

    #[cfg(test)]
    fn steps(&self) -> i64 {
        self.steps
    }

    pub(crate) fn zero_grad(&mut self) {
        foreach::zero_(&self.grads().1);
    }

    /// The parameters that have a gradient (their indices) and those gradients.
    fn grads(&self) -> (Vec<usize>, Vec<Tensor>) {
        self.params.iter().enumerate().map(|(i, (_, p))| (i, p.grad())).filter(|(_, g)| g.defined()).unzip()
    }

    /// Scales the gradients so that their total L2 norm is at most `max_norm`, as
    /// `torch.nn.utils.clip_grad_norm_` does (coefficient max_norm / (norm + 1e-6), at
    /// most 1); returns the norm before clipping. All on the device: the host does not wait.
    pub(crate) fn clip_grad_norm(&self, max_norm: f64) -> Tensor {
        tch::no_grad(|| {
            let (_, grads) = self.grads();
            if grads.is_empty() {
                return Tensor::from(0f32);
            }
            let total = Tensor::stack(&foreach::norm(&grads), 0).norm();
            // In float64, as a number on the host would be; the gradients see it in their own type.
            let max = Tensor::full([], max_norm, (tch::Kind::Double, total.device()));
            let coef = max / (total.to_kind(tch::Kind::Double) + 1e-6);
            foreach::mul_tensor_(&grads, &coef.clamp_max(1.0));
            total
        })
    }

    /// One update of every parameter that has a gradient.
    pub(crate) fn step(&mut self) {
        self.steps += 1;
        tch::no_grad(|| {
            let (which, grads) = self.grads();
            if which.is_empty() {
                return;
            }
            let params: Vec<Tensor> = which.iter().map(|&i| self.params[i].1.shallow_clone()).collect();
            // Layer-wise learning rates: each parameter's share of the phase's rate.
            let lrs: Vec<f64> = which.iter().map(|&i| self.lr * self.scales[i]).collect();
            let steps: Vec<i64> = which
                .iter()
                .map(|&i| {
                    let steps = self.param_steps.entry(self.params[i].0.clone()).or_insert(0);
                    *steps += 1;
                    *steps
                })
                .collect();
            // Each parameter's decay: none for biases and normalisation weights unless asked.
            let decays: Vec<f64> = params.iter().map(|p| self.decay_of(p)).collect();
            // L2 penalty added to the gradient (out of place); AdamW, Lion and LAMB decay the
            // weights their own way instead.
            let coupled = decays.iter().any(|d| *d != 0.0)
                && matches!(self.kind, OptimizerKind::Sgd | OptimizerKind::Adam | OptimizerKind::Rmsprop);
            let grads =
                if coupled { foreach::add_list(&grads, &foreach::mul_scalars(&params, &decays)) } else { grads };
            let step = Step { which: &which, params: &params, grads: &grads, lrs: &lrs };
            match self.kind {
                OptimizerKind::Sgd => self.sgd(&step),
                OptimizerKind::Adam | OptimizerKind::Adamw => self.adam(&step, &steps, &decays),
                OptimizerKind::Rmsprop => self.rmsprop(&step),
                OptimizerKind::Lion => self.lion(&step, &decays),
                OptimizerKind::Lamb => self.lamb(&step, &steps, &decays),
            }
        });
    }

    /// SGD with momentum (the buffer starts as the first gradient) and Nesterov's variant.
    fn sgd(&mut self, step: &Step) {
        let Step { which, params, grads, lrs } = *step;
        let mut direction = grads.iter().map(Tensor::shallow_clone).collect::<Vec<_>>();
        if self.momentum != 0.0 {
            // A parameter's first buffer is its gradient; the others decay and add it.
            let had: Vec<bool> = which.iter().map(|i| self.has_buffer(*i, "momentum_buffer")).collect();
            let bufs = self.buffers(which, "momentum_buffer", |k| grads[k].detach().copy());
            let (old, old_grads): (Vec<Tensor>, Vec<Tensor>) = bufs
                .iter()
                .zip(grads)
                .zip(had)
                .filter(|(_, had)| *had)
                .map(|((b, g), _)| (b.shallow_clone(), g.shallow_clone()))
                .unzip();
            foreach::mul_scalar_(&old, self.momentum);
            foreach::add_list_(&old, &old_grads, 1.0);
            direction =
                if self.nesterov { foreach::add_list(grads, &foreach::mul_scalar(&bufs, self.momentum)) } else { bufs };
        }
        foreach::add_list_(params, &foreach::mul_scalars(&direction, lrs), -1.0);
    }

    /// The weight decay of parameter `p`: none for one of one dimension (a bias or a
    /// normalisation weight) unless `decay_norm_and_bias`.
    fn decay_of(&self, p: &Tensor) -> f64 {
        if self.decay_norm_and_bias || p.dim() > 1 { self.weight_decay } else { 0.0 }
    }

    /// Adam, and AdamW's decoupled weight decay, with each parameter's own bias correction.
    fn adam(&mut self, step: &Step, steps: &[i64], decays: &[f64]) {
        let Step { which, params, grads, lrs } = *step;
        if self.kind == OptimizerKind::Adamw {
            let decay: Vec<f64> = lrs.iter().zip(decays).map(|(lr, d)| 1.0 - lr * d).collect();
            foreach::mul_scalars_(params, &decay);
        }
        let m = self.buffers(which, "exp_avg", |i| params[i].zeros_like());
        foreach::lerp_scalar_(&m, grads, 1.0 - self.beta1);
        let v = self.buffers(which, "exp_avg_sq", |i| params[i].zeros_like());
        let squares = foreach::mul_list(grads, grads);
        foreach::mul_scalar_(&squares, 1.0 - BETA2);
        foreach::mul_scalar_(&v, BETA2);
        foreach::add_list_(&v, &squares, 1.0);
        let bias2_sqrt: Vec<f64> = steps.iter().map(|&t| (1.0 - BETA2.powi(t as i32)).sqrt()).collect();
        let step_sizes: Vec<f64> =
            steps.iter().zip(lrs).map(|(&t, lr)| -lr / (1.0 - self.beta1.powi(t as i32))).collect();
        let denom = foreach::sqrt(&v);
        foreach::div_scalars_(&denom, &bias2_sqrt);
        foreach::add_scalar_(&denom, ADAM_EPS);
        foreach::addcdiv_(params, &foreach::mul_scalars(&m, &step_sizes), &denom);
    }

    /// Lion (Chen et al. 2023, Algorithm 2): w <- w (1 - lr wd) - lr sign(b1 m + (1 - b1) g),
    /// then m <- b2 m + (1 - b2) g.
    fn lion(&mut self, step: &Step, decays: &[f64]) {
        let Step { which, params, grads, lrs } = *step;
        let m = self.buffers(which, "exp_avg", |i| params[i].zeros_like());
        for (k, (p, g)) in params.iter().zip(grads).enumerate() {
            let mut p = p.shallow_clone();
            let direction = (&m[k] * self.beta1 + g * (1.0 - self.beta1)).sign();
            let _ = p.g_mul_scalar_(1.0 - lrs[k] * decays[k]);
            let _ = p.g_add_(&(direction * -lrs[k]));
        }
        foreach::lerp_scalar_(&m, grads, 1.0 - LION_BETA2);
    }

    /// LAMB (You et al. 2019, Algorithm 2) with Adam's bias correction: the step
    /// u = m^ / (sqrt(v^) + eps) + wd w, scaled by the trust ratio ||w|| / ||u|| (1 when either
    /// is 0) of each parameter.
    fn lamb(&mut self, step: &Step, steps: &[i64], decays: &[f64]) {
        let Step { which, params, grads, lrs } = *step;
        let m = self.buffers(which, "exp_avg", |i| params[i].zeros_like());
        foreach::lerp_scalar_(&m, grads, 1.0 - self.beta1);
        let v = self.buffers(which, "exp_avg_sq", |i| params[i].zeros_like());
        foreach::mul_scalar_(&v, BETA2);
        foreach::addcmul_(&v, &foreach::mul_scalar(grads, 1.0 - BETA2), grads);
        for (k, p) in params.iter().enumerate() {
            let t = steps[k] as i32;
            let m_hat = &m[k] / (1.0 - self.beta1.powi(t));
            let v_hat = &v[k] / (1.0 - BETA2.powi(t));
            let update = m_hat / (v_hat.sqrt() + LAMB_EPS) + p * decays[k];
            let (w_norm, u_norm) = (p.norm(), update.norm());
            let positive = w_norm.gt(0.0).logical_and(&u_norm.gt(0.0));
            let trust = (&w_norm / &u_norm).where_self(&positive, &w_norm.ones_like());
            let mut p = p.shallow_clone();
            let _ = p.g_add_(&(update * trust * -lrs[k]));
        }
    }

    /// RMSprop (not centered), with momentum when it has one.
    fn rmsprop(&mut self, step: &Step) {
        let Step { which, params, grads, lrs } = *step;
        let square_avg = self.buffers(which, "square_avg", |i| params[i].zeros_like());
        foreach::mul_scalar_(&square_avg, RMS_ALPHA);
        foreach::addcmul_(&square_avg, &foreach::mul_scalar(grads, 1.0 - RMS_ALPHA), grads);
        let avg = foreach::sqrt(&square_avg);
        foreach::add_scalar_(&avg, RMS_EPS);
        if self.momentum > 0.0 {
            let bufs = self.buffers(which, "momentum_buffer", |i| params[i].zeros_like());
            foreach::mul_scalar_(&bufs, self.momentum);
            foreach::addcdiv_(&bufs, grads, &avg);
            foreach::add_list_(params, &foreach::mul_scalars(&bufs, lrs), -1.0);
        } else {
            let negative: Vec<f64> = lrs.iter().map(|lr| -lr).collect();
            foreach::addcdiv_(params, &foreach::mul_scalars(grads, &negative), &avg);
        }
    }

    /// Whether parameter `i` has its buffer `name` yet.
    fn has_buffer(&self, i: usize, name: &str) -> bool {
        self.state.get(&self.params[i].0).is_some_and(|s| s.contains_key(name))
    }

    /// The buffers `name` of the parameters `which`, made by `init(position in which)` where missing.
    fn buffers(&mut self, which: &[usize], name: &'static str, init: impl Fn(usize) -> Tensor) -> Vec<Tensor> {
        which
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let state = self.state.entry(self.params[i].0.clone()).or_default();
                state.entry(name).or_insert_with(|| init(k)).shallow_clone()
            })
            .collect()
    }

    /// Every buffer as `<parameter>/<buffer>`, plus the step count as `steps` and each
    /// parameter's where it differs from that (a parameter that joined mid-phase) as `<parameter>/step`.
    pub(crate) fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("steps".to_string(), Tensor::from(self.steps))];
        for (param, &n) in &self.param_steps {
            if n != self.steps {
                out.push((format!("{param}/step"), Tensor::from(n)));
            }
        }
        for (param, buffers) in &self.state {
            for (buf, t) in buffers {
                out.push((format!("{param}/{buf}"), t.shallow_clone()));
            }
        }
        out
    }

    /// Restores what [`Optimizer::state_tensors`] returned, onto this optimizer's parameters.
    pub(crate) fn load_state(&mut self, named: &[(String, Tensor)]) -> Result<()> {
        const BUFFERS: [&str; 4] = ["momentum_buffer", "exp_avg", "exp_avg_sq", "square_avg"];
        self.state.clear();
        self.steps = 0;
        self.param_steps.clear();
        let mut own_steps = BTreeMap::new();
        let devices: BTreeMap<&str, &Tensor> = self.params.iter().map(|(n, t)| (n.as_str(), t)).collect();
        for (key, t) in named {
            if key == "steps" {
                self.steps = t.int64_value(&[]);
                continue;
            }
            let Some((param, buf)) = key.rsplit_once('/') else { bail!("optimizer state: unexpected entry {key}") };
            if buf == "step" {
                let Some(_) = devices.get(param) else {
                    bail!("optimizer state: {param} is not trained in this phase")
                };
                own_steps.insert(param.to_string(), t.int64_value(&[]));
                continue;
            }
            let Some(buf) = BUFFERS.iter().find(|b| **b == buf) else {
                bail!("optimizer state: unknown buffer {buf} of {param}")
            };
            let Some(p) = devices.get(param) else { bail!("optimizer state: {param} is not trained in this phase") };
            if t.size() != p.size() {
                bail!("optimizer state: {key} has shape {:?}, the parameter {:?}", t.size(), p.size());
            }
            let buffer = t.to_device(p.device()).to_kind(p.kind());
            self.state.entry(param.to_string()).or_default().insert(buf, buffer);
        }
        // A parameter with state took every step but those recorded as its own.
        for param in self.state.keys() {
            let n = own_steps.get(param).copied().unwrap_or(self.steps);
            self.param_steps.insert(param.clone(), n);
        }
        for (param, n) in own_steps {
            self.param_steps.insert(param, n);
        }
        Ok(())
    }
}

/// One step's parameters that have gradients: their indices, themselves, their gradients
/// (with a coupled weight decay's penalty) and their learning rates.
#[derive(Clone, Copy)]
struct Step<'a> {
    which: &'a [usize],
    params: &'a [Tensor],
    grads: &'a [Tensor],
    lrs: &'a [f64],
}

/// Dynamic loss scaling for fp16 training, as `torch.amp.GradScaler` does it:
/// scale the loss, unscale the gradients, skip the step when any is not finite
/// (and halve the scale), double the scale after 2000 good steps in a row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GradScaler {
    pub(crate) scale: f64,
    /// Good steps since the scale last changed.
    pub(crate) growth_tracker: u32,
    /// Steps skipped because of overflow, for the log.
    #[serde(default)]
    pub(crate) skipped: u64,
}

impl Default for GradScaler {
    fn default() -> Self {
        GradScaler { scale: 65536.0, growth_tracker: 0, skipped: 0 }
    }
}

impl GradScaler {
    const GROWTH_INTERVAL: u32 = 2000;

    /// Unscales the gradients of `opt`'s parameters and steps unless one overflowed.
    /// Returns whether the step was taken.
    pub(crate) fn step(&mut self, opt: &mut Optimizer, clip: Option<f64>) -> bool {
        let inv = 1.0 / self.scale;
        let finite = tch::no_grad(|| {
            let (_, grads) = opt.grads();
            foreach::mul_scalar_(&grads, inv);
            let flat: Vec<Tensor> = grads.iter().map(|g| g.flatten(0, -1)).collect();
            // One check over all gradients, and one wait for the device per step, as GradScaler's found_inf.
            flat.is_empty() || Tensor::cat(&flat, 0).isfinite().all().int64_value(&[]) == 1
        });
        if finite {
            if let Some(max_norm) = clip {
                let _ = opt.clip_grad_norm(max_norm);
            }
            opt.step();
            self.growth_tracker += 1;
            if self.growth_tracker == Self::GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.growth_tracker = 0;
            }
        } else {
            self.scale *= 0.5;
            self.growth_tracker = 0;
            self.skipped += 1;
        }
        finite
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn spec(kind: OptimizerKind, momentum: f64, nesterov: bool, wd: Option<f64>) -> OptimizerSpec {
        OptimizerSpec {
            kind,
            lr: Some(0.1.into()),
            lr_factor: None,
            momentum,
            nesterov,
            weight_decay: wd,
            // These cases decay every parameter, as the bare PyTorch optimizers they are checked against do.
            decay_norm_and_bias: true,
            layer_decay: None,
            head_lr_factor: None,
        }
    }

    /// tests/fixtures/optimizers.json (scripts/make_optimizer_fixtures.py): five steps of
    /// `kind` on its weight matrix and bias vector, compared with the reference's (1e-12:
    /// float64 throughout; a formula error moves them by 1e-4 or more).
    fn check_optimizer_case(kind: OptimizerKind, lr: f64, wd: f64, decay_norm_and_bias: bool, case: &str) {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/optimizers.json")).unwrap();
        let want = &fixture[case];
        let w: Vec<f64> = (0..3).flat_map(|i| (0..4).map(move |j| (i as f64 + 0.5 * j as f64).sin())).collect();
        let w = Tensor::from_slice(&w).view([3, 4]).set_requires_grad(true);
        let b = Tensor::from_slice(&(0..4).map(|j| (0.7 * j as f64).cos()).collect::<Vec<_>>()).set_requires_grad(true);
        let c: Vec<f64> = (0..3).flat_map(|i| (0..4).map(move |j| 1.0 + 0.1 * (i + j) as f64)).collect();
        let c = Tensor::from_slice(&c).view([3, 4]);
        let d = Tensor::from_slice(&(0..4).map(|j| 0.5 + 0.25 * j as f64).collect::<Vec<_>>());
        let mut s = spec(kind, if kind == OptimizerKind::Sgd { 0.9 } else { 0.0 }, false, Some(wd));
        s.lr = Some(lr.into());
        s.decay_norm_and_bias = decay_norm_and_bias;
        let mut opt = Optimizer::new(&s, lr, vec![("w".into(), w.shallow_clone()), ("b".into(), b.shallow_clone())]);
        for _ in 0..fixture["steps"].as_u64().unwrap() {
            opt.zero_grad();
            ((&c * &w * &w).sum(Kind::Double) + (&d * b.pow_tensor_scalar(3) / 3.0).sum(Kind::Double)).backward();
            opt.step();
        }
        let got = |t: &Tensor| Vec::<f64>::try_from(t.detach().flatten(0, -1)).unwrap();
        let flat = |v: &serde_json::Value| -> Vec<f64> {
            match v.as_array().unwrap().first().map(|x| x.is_array()) {
                Some(true) => v.as_array().unwrap().iter().flat_map(crate::testing::floats).collect(),
                _ => crate::testing::floats(v),
            }
        };
        for (name, t, key) in [("weight", &w, "weight"), ("bias", &b, "bias")] {
            for (a, r) in got(t).iter().zip(flat(&want[key])) {
                assert!((a - r).abs() < 1e-12, "{case} {name}: {a} vs reference {r}");
            }
        }
    }

    #[test]
    fn biases_and_norm_weights_are_not_decayed_unless_asked_as_in_timm() {
        // AdamW and SGD against PyTorch with the bias in a param group of weight_decay 0.
        check_optimizer_case(OptimizerKind::Adamw, 0.05, 0.1, false, "adamw_exclusion");
        check_optimizer_case(OptimizerKind::Sgd, 0.05, 0.1, false, "sgd_exclusion");
        // decay_norm_and_bias = true: every parameter, as a bare torch.optim.AdamW.
        check_optimizer_case(OptimizerKind::Adamw, 0.05, 0.1, true, "adamw_everything");
    }

    #[test]
    fn lion_and_lamb_follow_their_papers_on_the_committed_fixture() {
        check_optimizer_case(OptimizerKind::Lion, 0.01, 0.1, false, "lion");
        check_optimizer_case(OptimizerKind::Lamb, 0.05, 0.01, false, "lamb");
    }

    /// Three steps on f(w) = sum(w^2 * c) from w0, by the optimizer under test.
    fn run(s: &OptimizerSpec, steps: usize) -> Vec<f64> {
        let w = Tensor::from_slice(&[1.0f64, -2.0, 0.5]).set_requires_grad(true);
        let c = Tensor::from_slice(&[1.0f64, 3.0, -0.5]);
        let mut opt = Optimizer::new(s, 0.1, vec![("w".into(), w.shallow_clone())]);
        for _ in 0..steps {
            opt.zero_grad();
            (&w * &w * &c).sum(Kind::Double).backward();
            opt.step();
        }
        Vec::<f64>::try_from(&w.detach()).unwrap()
    }

    /// The same updates written out by hand from PyTorch's documented formulas.
    fn reference(s: &OptimizerSpec, steps: usize) -> Vec<f64> {
        let c = [1.0, 3.0, -0.5];
        let mut w: Vec<f64> = vec![1.0, -2.0, 0.5];
        let (lr, mu) = (0.1, s.momentum);
        let mut buf: Vec<Option<f64>> = vec![None; 3];
        let (mut m, mut v, mut sq) = (vec![0.0; 3], vec![0.0; 3], vec![0.0; 3]);
        for t in 1..=steps as i32 {
            for i in 0..3 {
                let mut g = 2.0 * w[i] * c[i];
                let wd = s.weight_decay.unwrap_or(if s.kind == OptimizerKind::Adamw { 0.01 } else { 0.0 });
                match s.kind {
                    OptimizerKind::Sgd => {
                        g += wd * w[i];
                        if mu != 0.0 {
                            let b = buf[i].map_or(g, |b| b * mu + g);
                            buf[i] = Some(b);
                            g = if s.nesterov { g + mu * b } else { b };
                        }
                        w[i] -= lr * g;
                    }
                    OptimizerKind::Adam | OptimizerKind::Adamw => {
                        if s.kind == OptimizerKind::Adamw {
                            w[i] *= 1.0 - lr * wd;
                        } else {
                            g += wd * w[i];
                        }
                        m[i] = BETA1 * m[i] + (1.0 - BETA1) * g;
                        v[i] = BETA2 * v[i] + (1.0 - BETA2) * g * g;
                        let mhat = m[i] / (1.0 - BETA1.powi(t));
                        let vhat = v[i] / (1.0 - BETA2.powi(t));
                        w[i] -= lr * mhat / (vhat.sqrt() + ADAM_EPS);
                    }
                    OptimizerKind::Rmsprop => {
                        g += wd * w[i];
                        sq[i] = RMS_ALPHA * sq[i] + (1.0 - RMS_ALPHA) * g * g;
                        let avg = sq[i].sqrt() + RMS_EPS;
                        if mu > 0.0 {
                            let b = buf[i].unwrap_or(0.0) * mu + g / avg;
                            buf[i] = Some(b);
                            w[i] -= lr * b;
                        } else {
                            w[i] -= lr * g / avg;
                        }
                    }
                    // Checked against their papers' updates on the committed fixture instead.
                    OptimizerKind::Lion | OptimizerKind::Lamb => unreachable!("not a PyTorch optimizer"),
                }
            }
        }
        w
    }

    #[test]
    fn updates_follow_pytorch_formulas() {
        for s in [
            spec(OptimizerKind::Sgd, 0.0, false, None),
            spec(OptimizerKind::Sgd, 0.9, false, Some(1e-2)),
            spec(OptimizerKind::Sgd, 0.9, true, None),
            spec(OptimizerKind::Adam, 0.0, false, None),
            spec(OptimizerKind::Adam, 0.0, false, Some(0.1)),
            spec(OptimizerKind::Adamw, 0.0, false, None),
            spec(OptimizerKind::Rmsprop, 0.0, false, None),
            spec(OptimizerKind::Rmsprop, 0.9, false, Some(1e-2)),
        ] {
            let got = run(&s, 3);
            let want = reference(&s, 3);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-12, "{s:?}: {got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn grad_scaler_skips_overflowing_steps_and_backs_off() {
        let s = spec(OptimizerKind::Sgd, 0.0, false, None);
        let w = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let mut opt = Optimizer::new(&s, 0.1, vec![("w".into(), w.shallow_clone())]);
        let mut scaler = GradScaler::default();
        // d(sum(w) * scale)/dw = scale; unscaled, a plain SGD step of 0.1.
        (w.sum(Kind::Float) * scaler.scale).backward();
        assert!(scaler.step(&mut opt, None));
        assert_eq!(Vec::<f32>::try_from(&w.detach()).unwrap(), [0.9, 1.9]);
        opt.zero_grad();
        (w.sum(Kind::Float) * f64::INFINITY).backward();
        assert!(!scaler.step(&mut opt, None));
        assert_eq!(Vec::<f32>::try_from(&w.detach()).unwrap(), [0.9, 1.9], "an overflowing step is skipped");
        assert_eq!((scaler.scale, scaler.skipped), (32768.0, 1));
    }

    #[test]
    fn saved_state_resumes_exactly() {
        for kind in [OptimizerKind::Sgd, OptimizerKind::Adam, OptimizerKind::Rmsprop] {
            let s = spec(kind, 0.9 * (kind != OptimizerKind::Adam) as u8 as f64, false, None);
            let c = Tensor::from_slice(&[1.0f64, 3.0, -0.5]);
            let step = |opt: &mut Optimizer, w: &Tensor| {
                opt.zero_grad();
                (w * w * &c).sum(Kind::Double).backward();
                opt.step();
            };
            let w = Tensor::from_slice(&[1.0f64, -2.0, 0.5]).set_requires_grad(true);
            let mut opt = Optimizer::new(&s, 0.1, vec![("w".into(), w.shallow_clone())]);
            step(&mut opt, &w);
            step(&mut opt, &w);
            let saved: Vec<(String, Tensor)> = opt.state_tensors().into_iter().map(|(n, t)| (n, t.copy())).collect();
            let w_saved = w.detach().copy();
            step(&mut opt, &w);
            // A fresh optimizer on a fresh parameter, loaded from the saved state, takes the same step.
            let w2 = w_saved.set_requires_grad(true);
            let mut opt2 = Optimizer::new(&s, 0.1, vec![("w".into(), w2.shallow_clone())]);
            opt2.load_state(&saved).unwrap();
            assert_eq!(opt2.steps(), 2);
            step(&mut opt2, &w2);
            assert!(w.detach().equal(&w2.detach()), "{kind:?}");
        }
    }

    #[test]
    fn clipping_scales_the_total_norm_as_torch_does() {
        let a = Tensor::from_slice(&[0.0f32, 0.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[0.0f32]).set_requires_grad(true);
        // Gradients (3, 4) and (12): total norm 13.
        (&a * Tensor::from_slice(&[3.0f32, 4.0])).sum(tch::Kind::Float).backward();
        (&b * 12.0).sum(tch::Kind::Float).backward();
        let opt = Optimizer::new(
            &spec(OptimizerKind::Sgd, 0.0, false, None),
            0.1,
            vec![("a".into(), a.shallow_clone()), ("b".into(), b.shallow_clone())],
        );
        assert!((opt.clip_grad_norm(100.0).double_value(&[]) - 13.0).abs() < 1e-6);
        assert_eq!(Vec::<f32>::try_from(&a.grad()).unwrap(), [3.0, 4.0]);
        assert!((opt.clip_grad_norm(1.0).double_value(&[]) - 13.0).abs() < 1e-6);
        let coef = 1.0 / (13.0 + 1e-6);
        let got = Vec::<f32>::try_from(&a.grad()).unwrap();
        assert!((got[0] as f64 - 3.0 * coef).abs() < 1e-6 && (got[1] as f64 - 4.0 * coef).abs() < 1e-6, "{got:?}");
        assert!((opt.clip_grad_norm(1.0).double_value(&[]) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn a_parameter_trains_at_its_share_of_the_rate() {
        let a = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let b = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        (&a * 2.0 + &b * 2.0).sum(tch::Kind::Float).backward();
        let mut opt = Optimizer::new(
            &spec(OptimizerKind::Sgd, 0.0, false, None),
            0.1,
            vec![("a".into(), a.shallow_clone()), ("b".into(), b.shallow_clone())],
        );
        opt.set_lr_scales(vec![1.0, 0.25]);
        opt.step();
        // p -= lr x scale x grad: 1 - 0.1 x 2 and 1 - 0.025 x 2.
        assert!((a.double_value(&[0]) - 0.8).abs() < 1e-7 && (b.double_value(&[0]) - 0.95).abs() < 1e-7);
    }

    #[test]
    fn clipping_and_layer_wise_rates_match_pytorchs_on_the_committed_fixture() {
        let fixture = crate::testing::toolkit_fixture();
        let clip = &fixture["clip"];
        let params: Vec<(String, Tensor)> = (0..2)
            .map(|k| {
                let p = Tensor::zeros([5], (Kind::Double, tch::Device::Cpu)).set_requires_grad(true);
                let g: Vec<f64> = (0..5).map(|j| (0.9 * j as f64 + k as f64).cos()).collect();
                (Tensor::from_slice(&g) * &p).sum(Kind::Double).backward();
                (format!("p{k}"), p)
            })
            .collect();
        let opt = Optimizer::new(&spec(OptimizerKind::Sgd, 0.0, false, None), 0.1, params);
        let total = opt.clip_grad_norm(clip["max_norm"].as_f64().unwrap()).double_value(&[]);
        assert!((total - clip["total_norm"].as_f64().unwrap()).abs() < 1e-12, "{total} {clip}");
        for ((_, p), want) in opt.params.iter().zip(clip["clipped"].as_array().unwrap()) {
            let got = Vec::<f64>::try_from(&p.grad()).unwrap();
            for (a, b) in got.iter().zip(crate::testing::floats(want)) {
                // float64 from start to end: another processor's rounding moves these values
                // (about 1) by a few 1e-16; a formula error moves them by 1e-4 or more.
                assert!((a - b).abs() < 1e-12, "clipped gradient {a} vs PyTorch {b}");
            }
        }

        let case = &fixture["layer_lr"];
        let layers = case["layers"].as_u64().unwrap() as usize;
        let mut s = spec(OptimizerKind::Rmsprop, 0.0, false, None);
        s.layer_decay = case["layer_decay"].as_f64();
        s.head_lr_factor = case["head_lr_factor"].as_f64();
        let lr = case["lr"].as_f64().unwrap();
        let scales: Vec<f64> =
            (0..=layers).map(|i| crate::model::schedule::layer_scale((i < layers).then_some(i), layers, &s)).collect();
        assert_eq!(scales, crate::testing::floats(&case["scales"]));
        let w: Vec<Tensor> = (0..4)
            .map(|k| Tensor::from_slice(&[1.0 + 0.1 * k as f64, -0.5, 0.25 * k as f64]).set_requires_grad(true))
            .collect();
        let c: Vec<Tensor> = (0..4).map(|k| Tensor::from_slice(&[1.0, 2.0 + k as f64, 0.5])).collect();
        let mut opt =
            Optimizer::new(&s, lr, w.iter().enumerate().map(|(k, t)| (format!("w{k}"), t.shallow_clone())).collect());
        opt.set_lr_scales(scales);
        for _ in 0..3 {
            opt.zero_grad();
            let f = w
                .iter()
                .zip(&c)
                .map(|(wk, ck)| (ck * wk * wk).sum(Kind::Double))
                .fold(Tensor::from(0.0f64), |a, b| a + b);
            f.backward();
            opt.step();
        }
        for (wk, want) in w.iter().zip(case["after_3_steps"].as_array().unwrap()) {
            let got = Vec::<f64>::try_from(&wk.detach()).unwrap();
            for (a, b) in got.iter().zip(crate::testing::floats(want)) {
                // float64 from start to end: another processor's rounding moves these values
                // (about 1) by a few 1e-16; a formula error moves them by 1e-4 or more.
                assert!((a - b).abs() < 1e-12, "weight {a} vs PyTorch {b}");
            }
        }
    }

    #[test]
    fn a_parameter_joining_mid_phase_starts_fresh_as_in_pytorch() {
        let fixture = crate::testing::toolkit_fixture();
        let case = &fixture["gradual"];
        let w0 = Tensor::from_slice(&[1.0f64, -0.5, 0.25]).set_requires_grad(true);
        // Frozen (no gradient) until it joins, as runner freezes a layer.
        let w1 = Tensor::from_slice(&[0.3f64, 0.8, -1.2]);
        let c = [Tensor::from_slice(&[1.0f64, 2.0, 0.5]), Tensor::from_slice(&[0.5f64, 1.5, 3.0])];
        let mut s = spec(OptimizerKind::Adam, 0.0, false, None);
        s.lr = case["lr"].as_f64().map(Into::into);
        let mut opt = Optimizer::new(
            &s,
            s.lr.and_then(crate::config::spec::Lr::value).unwrap(),
            vec![("w0".into(), w0.shallow_clone())],
        );
        let mut w1 = w1;
        for step in 1..=4 {
            if step == case["joins_before_step"].as_i64().unwrap() {
                w1 = w1.set_requires_grad(true);
                let both = || vec![("w0".into(), w0.shallow_clone()), ("w1".into(), w1.shallow_clone())];
                opt.set_params(both(), vec![1.0, 1.0]);
                // Its own step count goes into a checkpoint, and comes back from one.
                let mut restored = Optimizer::new(&s, 0.1, both());
                restored.set_lr_scales(vec![1.0, 1.0]);
                restored.load_state(&opt.state_tensors()).unwrap();
                assert_eq!(restored.param_steps, opt.param_steps);
            }
            opt.zero_grad();
            ((&c[0] * &w0 * &w0).sum(Kind::Double) + (&c[1] * &w1 * &w1).sum(Kind::Double)).backward();
            opt.step();
        }
        assert_eq!(opt.param_steps.get("w1"), Some(&2));
        let saved = opt.state_tensors();
        assert!(saved.iter().any(|(n, t)| n == "w1/step" && t.int64_value(&[]) == 2));
        for (w, want) in [&w0, &w1].iter().zip(case["after_4_steps"].as_array().unwrap()) {
            let got = Vec::<f64>::try_from(&w.detach()).unwrap();
            for (a, b) in got.iter().zip(crate::testing::floats(want)) {
                // float64 from start to end: another processor's rounding moves these values
                // (about 1) by a few 1e-16; a formula error moves them by 1e-4 or more.
                assert!((a - b).abs() < 1e-12, "weight {a} vs PyTorch {b}");
            }
        }
    }
}
