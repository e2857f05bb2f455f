//! A phase's `schedule` table: how its learning rate moves (model/schedule.rs computes it).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `schedule = { kind = "step", step_size = 7, gamma = 0.1, warmup = 0 }`: the phase's
/// learning rate over its epochs, or over its optimizer steps (`one_cycle`, and `cosine` with
/// `warmup_steps`), or as the monitored metric goes (`reduce_on_plateau`). Each kind's own
/// keys are errors on another kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    #[serde(default)]
    pub kind: ScheduleKind,
    /// Epochs between decays (`step`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_size: Option<usize>,
    /// Decay factor (`step`, `exponential`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// Epochs of linear warm-up at the start of the phase.
    #[serde(default)]
    pub warmup: usize,
    /// `cosine` per optimizer step, after this many steps of linear warm-up (0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<usize>,
    /// `one_cycle`: the peak rate as a multiple of the phase's rate (1: the phase's rate is the peak).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lr_factor: Option<f64>,
    /// `one_cycle`: the share of the steps spent rising to the peak (0.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pct_start: Option<f64>,
    /// `one_cycle`: the first rate is the peak / `div_factor` (25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub div_factor: Option<f64>,
    /// `one_cycle`: the last rate is the first / `final_div_factor` (1e4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_div_factor: Option<f64>,
    /// `one_cycle`: the momentum (Adam's beta1) moves against the rate, from
    /// `max_momentum` to `base_momentum` and back (true, 0.85, 0.95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle_momentum: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_momentum: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_momentum: Option<f64>,
    /// `reduce_on_plateau`: the rate is multiplied by `factor` (0.1) when the monitored
    /// metric has not improved by `threshold` (1e-4, relative or absolute by
    /// `threshold_mode`) for more than `patience` (10) epochs, then waits `cooldown` (0)
    /// epochs; never below `min_lr` (0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patience: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_mode: Option<ThresholdMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_lr: Option<f64>,
}

impl Default for ScheduleSpec {
    fn default() -> Self {
        ScheduleSpec {
            kind: ScheduleKind::Constant,
            step_size: None,
            gamma: None,
            warmup: 0,
            warmup_steps: None,
            max_lr_factor: None,
            pct_start: None,
            div_factor: None,
            final_div_factor: None,
            cycle_momentum: None,
            base_momentum: None,
            max_momentum: None,
            factor: None,
            patience: None,
            threshold: None,
            threshold_mode: None,
            cooldown: None,
            min_lr: None,
        }
    }
}

impl ScheduleSpec {
    /// Whether the rate moves with every optimizer step rather than every epoch.
    pub fn per_step(&self) -> bool {
        self.kind == ScheduleKind::OneCycle || self.warmup_steps.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    #[default]
    Constant,
    Step,
    Cosine,
    Exponential,
    /// Smith's one-cycle policy, per step (PyTorch's `OneCycleLR`, fastai's `fit_one_cycle`).
    OneCycle,
    /// Lower the rate when the monitored metric stops improving (`ReduceLROnPlateau`).
    ReduceOnPlateau,
}

/// How `reduce_on_plateau` measures an improvement: relative to the best value, or absolute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdMode {
    #[default]
    Rel,
    Abs,
}

/// `optimizer.lr`: a rate, or `"find"`: the learning-rate range test (`runner lr-find`) run
/// when the phase starts picks it (train/lr_find.rs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lr {
    Value(f64),
    Find,
}

impl Lr {
    /// The rate, when the spec gives one.
    pub fn value(self) -> Option<f64> {
        match self {
            Lr::Value(v) => Some(v),
            Lr::Find => None,
        }
    }
}

impl From<f64> for Lr {
    fn from(v: f64) -> Lr {
        Lr::Value(v)
    }
}

impl Serialize for Lr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Lr::Value(v) => s.serialize_f64(*v),
            Lr::Find => s.serialize_str("find"),
        }
    }
}

impl<'de> Deserialize<'de> for Lr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Lr, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Lr;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a learning rate or \"find\"")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Lr, E> {
                Ok(Lr::Value(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Lr, E> {
                Ok(Lr::Value(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Lr, E> {
                Ok(Lr::Value(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Lr, E> {
                match v {
                    "find" => Ok(Lr::Find),
                    _ => Err(E::custom(format!("expected a learning rate or \"find\", found \"{v}\""))),
                }
            }
        }
        d.deserialize_any(V)
    }
}
