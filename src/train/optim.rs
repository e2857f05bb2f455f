//! SGD, Adam, AdamW and RMSprop over named tch tensors, step for step as
//! PyTorch's `torch.optim` computes them (single-tensor path, default betas,
//! eps and alpha), with state that can be saved and restored exactly.
//!
//! libtorch's own C++ optimizers (tch's `COptimizer`) cannot export their
//! momentum and moment buffers, and exact resume needs them.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use tch::Tensor;

use crate::config::spec::{OptimizerKind, OptimizerSpec};

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;
const RMS_ALPHA: f64 = 0.99;
const RMS_EPS: f64 = 1e-8;
/// AdamW's weight decay when the spec gives none (PyTorch's default).
pub(crate) const ADAMW_DEFAULT_WD: f64 = 0.01;

pub(crate) struct Optimizer {
    kind: OptimizerKind,
    lr: f64,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
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
    pub fn new(spec: &OptimizerSpec, lr: f64, params: Vec<(String, Tensor)>) -> Self {
        let default_wd = if spec.kind == OptimizerKind::Adamw { ADAMW_DEFAULT_WD } else { 0.0 };
        Optimizer {
            kind: spec.kind,
            lr,
            momentum: spec.momentum,
            nesterov: spec.nesterov,
            weight_decay: spec.weight_decay.unwrap_or(default_wd),
            scales: vec![1.0; params.len()],
            params,
            state: BTreeMap::new(),
            steps: 0,
            param_steps: BTreeMap::new(),
        }
    }

    /// Adds parameters (layers unfrozen during a phase) at these learning-rate scales, with
    /// fresh state, as a new param group joins a PyTorch optimizer.
    pub(crate) fn add_params(&mut self, params: Vec<(String, Tensor)>, scales: Vec<f64>) {
        assert_eq!(scales.len(), params.len(), "one scale per parameter");
        self.params.extend(params);
        self.scales.extend(scales);
    }

    /// Each parameter's learning rate as a multiple of the phase's, in parameter order.
    pub(crate) fn set_lr_scales(&mut self, scales: Vec<f64>) {
        assert_eq!(scales.len(), self.params.len(), "one scale per parameter");
        self.scales = scales;
    }

    pub(crate) fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    #[cfg(test)]
    fn steps(&self) -> i64 {
        self.steps
    }

    pub(crate) fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// Scales the gradients so that their total L2 norm is at most `max_norm`, as
    /// `torch.nn.utils.clip_grad_norm_` does (coefficient max_norm / (norm + 1e-6), at
    /// most 1); returns the norm before clipping.
    pub(crate) fn clip_grad_norm(&self, max_norm: f64) -> f64 {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self.params.iter().map(|(_, p)| p.grad()).filter(Tensor::defined).collect();
            if grads.is_empty() {
                return 0.0;
            }
            let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
            let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
            let coef = (max_norm / (total + 1e-6)).min(1.0);
            if coef < 1.0 {
                for mut g in grads {
                    let _ = g.g_mul_scalar_(coef);
                }
            }
            total
        })
    }

    /// One update of every parameter that has a gradient.
    pub(crate) fn step(&mut self) {
        self.steps += 1;
        tch::no_grad(|| {
            for ((name, p), scale) in self.params.iter().zip(&self.scales) {
                // Layer-wise learning rates: this parameter's share of the phase's rate.
                let lr = self.lr * scale;
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let t = {
                    let steps = self.param_steps.entry(name.clone()).or_insert(0);
                    *steps += 1;
                    *steps
                };
                let state = self.state.entry(name.clone()).or_default();
                let mut p = p.shallow_clone();
                // L2 penalty added to the gradient (out of place); AdamW decays the weights instead.
                let coupled = self.weight_decay != 0.0 && self.kind != OptimizerKind::Adamw;
                let g = if coupled { &grad + &p * self.weight_decay } else { grad };
                match self.kind {
                    OptimizerKind::Sgd => {
                        let mut g = g;
                        if self.momentum != 0.0 {
                            let buf = match state.get_mut("momentum_buffer") {
                                Some(buf) => {
                                    let _ = buf.g_mul_scalar_(self.momentum).g_add_(&g);
                                    buf.shallow_clone()
                                }
                                None => {
                                    let buf = g.detach().copy();
                                    state.insert("momentum_buffer", buf.shallow_clone());
                                    buf
                                }
                            };
                            g = if self.nesterov { g + buf * self.momentum } else { buf };
                        }
                        let _ = p.g_sub_(&(g * lr));
                    }
                    OptimizerKind::Adam | OptimizerKind::Adamw => {
                        if self.kind == OptimizerKind::Adamw {
                            let _ = p.g_mul_scalar_(1.0 - lr * self.weight_decay);
                        }
                        let m = state.entry("exp_avg").or_insert_with(|| p.zeros_like());
                        let _ = m.lerp_(&g, 1.0 - BETA1);
                        let m = m.shallow_clone();
                        let v = state.entry("exp_avg_sq").or_insert_with(|| p.zeros_like());
                        let _ = v.g_mul_scalar_(BETA2).g_add_(&(&g * &g * (1.0 - BETA2)));
                        let bias1 = 1.0 - BETA1.powi(t as i32);
                        let bias2_sqrt = (1.0 - BETA2.powi(t as i32)).sqrt();
                        let denom = (v.sqrt() / bias2_sqrt) + ADAM_EPS;
                        let _ = p.addcdiv_(&(m * (-lr / bias1)), &denom);
                    }
                    OptimizerKind::Rmsprop => {
                        let sq = state.entry("square_avg").or_insert_with(|| p.zeros_like());
                        // Fused multiply-adds: fewer kernels per parameter (each is a dispatch).
                        let _ = sq.g_mul_scalar_(RMS_ALPHA).addcmul_(&(&g * (1.0 - RMS_ALPHA)), &g);
                        let mut avg = sq.sqrt();
                        let _ = avg.g_add_scalar_(RMS_EPS);
                        if self.momentum > 0.0 {
                            let buf = state.entry("momentum_buffer").or_insert_with(|| p.zeros_like());
                            let _ = buf.g_mul_scalar_(self.momentum).addcdiv_(&g, &avg);
                            let _ = p.g_sub_(&(&*buf * lr));
                        } else {
                            let _ = p.addcdiv_(&(g * -lr), &avg);
                        }
                    }
                }
            }
        });
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

/// Dynamic loss scaling for fp16 training, as `torch.amp.GradScaler` does it:
/// scale the loss, unscale the gradients, skip the step when any is not finite
/// (and halve the scale), double the scale after 2000 good steps in a row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GradScaler {
    pub scale: f64,
    /// Good steps since the scale last changed.
    pub growth_tracker: u32,
    /// Steps skipped because of overflow, for the log.
    #[serde(default)]
    pub skipped: u64,
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
            let mut grads = Vec::with_capacity(opt.params.len());
            for (_, p) in &opt.params {
                let mut g = p.grad();
                if g.defined() {
                    let _ = g.g_mul_scalar_(inv);
                    grads.push(g.flatten(0, -1));
                }
            }
            // One check over all gradients, and one wait for the device per step, as GradScaler's found_inf.
            grads.is_empty() || Tensor::cat(&grads, 0).isfinite().all().int64_value(&[]) == 1
        });
        if finite {
            if let Some(max_norm) = clip {
                opt.clip_grad_norm(max_norm);
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
            lr: Some(0.1),
            lr_factor: None,
            momentum,
            nesterov,
            weight_decay: wd,
            layer_decay: None,
            head_lr_factor: None,
        }
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
        assert!((opt.clip_grad_norm(100.0) - 13.0).abs() < 1e-6);
        assert_eq!(Vec::<f32>::try_from(&a.grad()).unwrap(), [3.0, 4.0]);
        assert!((opt.clip_grad_norm(1.0) - 13.0).abs() < 1e-6);
        let coef = 1.0 / (13.0 + 1e-6);
        let got = Vec::<f32>::try_from(&a.grad()).unwrap();
        assert!((got[0] as f64 - 3.0 * coef).abs() < 1e-6 && (got[1] as f64 - 4.0 * coef).abs() < 1e-6, "{got:?}");
        assert!((opt.clip_grad_norm(1.0) - 1.0).abs() < 1e-5);
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
        let fixture = crate::train::toolkit_fixture();
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
        let total = opt.clip_grad_norm(clip["max_norm"].as_f64().unwrap());
        assert!((total - clip["total_norm"].as_f64().unwrap()).abs() < 1e-12, "{total} {clip}");
        for ((_, p), want) in opt.params.iter().zip(clip["clipped"].as_array().unwrap()) {
            let got = Vec::<f64>::try_from(&p.grad()).unwrap();
            for (a, b) in got.iter().zip(crate::train::floats(want)) {
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
            (0..=layers).map(|i| crate::model::lr_scale((i < layers).then_some(i), layers, &s)).collect();
        assert_eq!(scales, crate::train::floats(&case["scales"]));
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
            for (a, b) in got.iter().zip(crate::train::floats(want)) {
                assert!((a - b).abs() < 1e-12, "weight {a} vs PyTorch {b}");
            }
        }
    }

    #[test]
    fn a_parameter_joining_mid_phase_starts_fresh_as_in_pytorch() {
        let fixture = crate::train::toolkit_fixture();
        let case = &fixture["gradual"];
        let w0 = Tensor::from_slice(&[1.0f64, -0.5, 0.25]).set_requires_grad(true);
        // Frozen (no gradient) until it joins, as runner freezes a layer.
        let w1 = Tensor::from_slice(&[0.3f64, 0.8, -1.2]);
        let c = [Tensor::from_slice(&[1.0f64, 2.0, 0.5]), Tensor::from_slice(&[0.5f64, 1.5, 3.0])];
        let mut s = spec(OptimizerKind::Adam, 0.0, false, None);
        s.lr = case["lr"].as_f64();
        let mut opt = Optimizer::new(&s, s.lr.unwrap(), vec![("w0".into(), w0.shallow_clone())]);
        let mut w1 = w1;
        for step in 1..=4 {
            if step == case["joins_before_step"].as_i64().unwrap() {
                w1 = w1.set_requires_grad(true);
                opt.add_params(vec![("w1".into(), w1.shallow_clone())], vec![1.0]);
                // Its own step count goes into a checkpoint, and comes back from one.
                let mut restored = Optimizer::new(&s, 0.1, vec![("w0".into(), w0.shallow_clone())]);
                restored.add_params(vec![("w1".into(), w1.shallow_clone())], vec![1.0]);
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
            for (a, b) in got.iter().zip(crate::train::floats(want)) {
                assert!((a - b).abs() < 1e-12, "weight {a} vs PyTorch {b}");
            }
        }
    }
}
