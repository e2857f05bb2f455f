//! Weight EMA (`ema = { decay, warmup }`): a shadow copy of the model's weights that
//! follows them as an exponential moving average, updated after every optimizer step.
//!
//! The update is timm's `ModelEmaV2` (every floating-point variable, BatchNorm running
//! statistics included: `shadow.lerp_(weights, 1 - decay)`); with `warmup` the decay
//! of update t (1-based) is `ModelEmaV3`'s: 0 for the first update, then
//! min(decay, 1 - (1 + (t - 1))^(-2/3)). Evaluation swaps the shadow in and back out,
//! so the best weights and every validation figure are the average's.

use tch::{Tensor, nn};

use crate::config::spec::EmaSpec;

pub(crate) struct Ema {
    pub(crate) decay: f64,
    pub(crate) warmup: bool,
    /// Updates so far.
    pub(crate) updates: i64,
    /// The shadow of every floating-point variable, by name, sorted.
    shadow: Vec<(String, Tensor)>,
}

impl Ema {
    /// A shadow equal to the current weights of `vs`.
    pub(crate) fn new(spec: &EmaSpec, vs: &nn::VarStore) -> Ema {
        let mut shadow: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.is_floating_point())
            .map(|(n, t)| (n, t.detach().copy()))
            .collect();
        shadow.sort_by(|a, b| a.0.cmp(&b.0));
        Ema { decay: spec.decay, warmup: spec.warmup, updates: 0, shadow }
    }

    /// The decay of update `t` (1-based).
    pub(crate) fn decay_at(&self, t: i64) -> f64 {
        if !self.warmup {
            return self.decay;
        }
        let t = t - 1;
        if t <= 0 {
            return 0.0;
        }
        (1.0 - (1.0 + t as f64).powf(-2.0 / 3.0)).min(self.decay)
    }

    /// One update towards the current weights of `vs`; `skip(name)` names variables that
    /// cannot have moved since the last update (frozen parameters), left as they are.
    pub(crate) fn update(&mut self, vs: &nn::VarStore, skip: impl Fn(&str) -> bool) {
        self.updates += 1;
        let weight = 1.0 - self.decay_at(self.updates);
        let vars = vs.variables();
        tch::no_grad(|| {
            for (name, shadow) in &mut self.shadow {
                if skip(name) {
                    continue;
                }
                let _ = shadow.lerp_(&vars[name.as_str()], weight);
            }
        });
    }

    /// The shadow tensors by variable name.
    pub(crate) fn shadow(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.shadow.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Exchanges the shadow and the weights of `vs`: call once to evaluate the average,
    /// and again to go back to training.
    pub(crate) fn swap(&mut self, vs: &nn::VarStore) {
        let vars = vs.variables();
        tch::no_grad(|| {
            for (name, shadow) in &mut self.shadow {
                let mut var = vars[name.as_str()].shallow_clone();
                let live = var.copy();
                var.copy_(shadow);
                shadow.copy_(&live);
            }
        });
    }

    /// The shadow tensors as `ema/<variable>`, and the update count as `ema/updates`,
    /// for a checkpoint (in standard memory layout).
    pub(crate) fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("ema/updates".to_string(), Tensor::from(self.updates))];
        out.extend(self.shadow.iter().map(|(n, t)| (format!("ema/{n}"), t.contiguous())));
        out
    }

    /// Restores what [`Ema::state_tensors`] wrote (the `ema/` entries of `named`).
    pub(crate) fn load_state(&mut self, named: &[(String, Tensor)]) -> anyhow::Result<()> {
        let mut found = 0;
        for (key, t) in named {
            let Some(rest) = key.strip_prefix("ema/") else { continue };
            if rest == "updates" {
                self.updates = t.int64_value(&[]);
                continue;
            }
            let Some((_, shadow)) = self.shadow.iter_mut().find(|(n, _)| n == rest) else {
                anyhow::bail!("EMA state: {rest} is not a variable of this model")
            };
            if t.size() != shadow.size() {
                anyhow::bail!("EMA state: {rest} has shape {:?}, the model's {:?}", t.size(), shadow.size());
            }
            tch::no_grad(|| shadow.copy_(&t.to_kind(shadow.kind())));
            found += 1;
        }
        if found != self.shadow.len() {
            anyhow::bail!("EMA state: {found} of {} variables in the checkpoint", self.shadow.len());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_starts_at_zero_and_rises_to_the_decay() {
        let ema = |warmup| Ema { decay: 0.999, warmup, updates: 0, shadow: vec![] };
        assert_eq!(ema(false).decay_at(1), 0.999);
        let w = ema(true);
        assert_eq!(w.decay_at(1), 0.0);
        assert!((w.decay_at(2) - (1.0 - 2f64.powf(-2.0 / 3.0))).abs() < 1e-15);
        assert_eq!(w.decay_at(10_000_000), 0.999);
    }

    #[test]
    fn swapping_twice_restores_the_weights() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let lin = nn::linear(vs.root() / "fc", 3, 2, Default::default());
        let before = lin.ws.copy();
        let mut ema = Ema::new(&EmaSpec { decay: 0.5, warmup: false }, &vs);
        tch::no_grad(|| {
            let _ = lin.ws.shallow_clone().g_add_scalar_(1.0);
        });
        ema.update(&vs, |_| false);
        ema.swap(&vs);
        // The average of the old and the new weights, at decay 0.5.
        assert!(lin.ws.allclose(&(&before + 0.5), 1e-6, 1e-6, false));
        ema.swap(&vs);
        assert!(lin.ws.allclose(&(&before + 1.0), 1e-6, 1e-6, false));
    }

    #[test]
    fn the_average_matches_timms_update_on_the_committed_fixture() {
        let fixture = crate::testing::toolkit_fixture();
        let case = &fixture["ema"];
        let weights: Vec<Vec<f64>> = case["weights"].as_array().unwrap().iter().map(crate::testing::floats).collect();
        for (warmup, key) in [(false, "plain"), (true, "warmup")] {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let mut w = vs.root().var_copy("w", &Tensor::from_slice(&weights[0]));
            let spec = EmaSpec { decay: case["decay"].as_f64().unwrap(), warmup };
            let mut ema = Ema::new(&spec, &vs);
            for (t, want) in case[key].as_array().unwrap().iter().enumerate() {
                tch::no_grad(|| w.copy_(&Tensor::from_slice(&weights[t + 1])));
                ema.update(&vs, |_| false);
                let got = Vec::<f64>::try_from(&ema.shadow[0].1).unwrap();
                for (a, b) in got.iter().zip(crate::testing::floats(want)) {
                    // The variable store keeps float32, as the model's weights are.
                    assert!((a - b).abs() < 1e-6, "{key} update {}: {a} vs PyTorch {b}", t + 1);
                }
            }
        }
    }
}
