//! A phase's `schedule` table: how its learning rate moves (model/schedule.rs computes it).

use serde::{Deserialize, Serialize};

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
