//! The freeze plan of a phase: the one place where `freeze_up_to` and `batchnorm`
//! become which layers run without gradients, which parameters train, and which
//! BatchNorm layers use batch statistics.

use crate::config::spec::BatchNormPolicy;
#[cfg(test)]
use crate::config::spec::FreezeUpTo;
use crate::model::{LayerInfo, Mode, has_prefix};

/// Layers `0..frozen` of a backbone with `layers` layers are frozen: no gradients,
/// parameters not trained. `bn` decides which BatchNorm layers use batch statistics
/// in a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreezePlan {
    frozen: usize,
    layers: usize,
    bn: BatchNormPolicy,
}

impl FreezePlan {
    /// The first `frozen` of `layers` layers frozen (at most all of them).
    pub fn new(frozen: usize, bn: BatchNormPolicy, layers: usize) -> FreezePlan {
        FreezePlan { frozen: frozen.min(layers), layers, bn }
    }

    /// What `freeze_up_to` freezes of a backbone with `layers` layers at a phase's start
    /// (the plan of each epoch is [`crate::model::Schedule::plan`]'s).
    #[cfg(test)]
    fn from_spec(freeze: FreezeUpTo, bn: BatchNormPolicy, layers: usize) -> FreezePlan {
        FreezePlan::new(freeze.at_epoch(0, layers), bn, layers)
    }

    /// Every layer frozen, every BatchNorm in inference: evaluation and prediction.
    pub fn inference(layers: usize) -> FreezePlan {
        FreezePlan::new(layers, BatchNormPolicy::AllFrozen, layers)
    }

    /// The number of frozen layers: the first trainable layer's index.
    pub fn frozen(&self) -> usize {
        self.frozen
    }

    pub fn batchnorm(&self) -> BatchNormPolicy {
        self.bn
    }

    pub fn is_frozen(&self, layer: usize) -> bool {
        layer < self.frozen
    }

    /// Whether layer `layer` normalises with batch statistics (and updates its
    /// running statistics) in a forward pass with `train` set.
    pub(crate) fn batch_statistics(&self, layer: usize, train: bool) -> bool {
        train
            && match self.bn {
                BatchNormPolicy::Frozen => !self.is_frozen(layer),
                BatchNormPolicy::Train => true,
                BatchNormPolicy::AllFrozen => false,
            }
    }

    /// Whether any layer uses batch statistics in a training step.
    pub(crate) fn any_batch_statistics(&self) -> bool {
        (0..self.layers).any(|i| self.batch_statistics(i, true))
    }

    /// How layer `layer` runs in a forward pass with `train` set: frozen layers
    /// without autograd (inference), the others in evaluation or training mode.
    pub fn mode(&self, layer: usize, train: bool) -> Mode {
        if self.batch_statistics(layer, train) {
            Mode::Train
        } else if self.is_frozen(layer) {
            Mode::Infer
        } else {
            Mode::Eval
        }
    }

    /// Whether the parameter `name` belongs to a frozen layer of `layers`.
    pub fn freezes(&self, name: &str, layers: &[LayerInfo]) -> bool {
        layers[..self.frozen].iter().flat_map(|l| &l.prefixes).any(|p| has_prefix(name, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeze_up_to_counts_layers_and_batchnorm_follows_the_policy() {
        let plan = FreezePlan::from_spec(FreezeUpTo::Count(3), BatchNormPolicy::Frozen, 5);
        assert_eq!(plan.frozen(), 3);
        assert_eq!((0..5).map(|i| plan.mode(i, true)).collect::<Vec<_>>(), {
            use Mode::*;
            [Infer, Infer, Infer, Train, Train]
        });
        assert_eq!(plan.mode(4, false), Mode::Eval);
        assert!(plan.any_batch_statistics());
        assert_eq!(FreezePlan::from_spec(FreezeUpTo::All, BatchNormPolicy::Frozen, 5).frozen(), 5);
        assert_eq!(FreezePlan::from_spec(FreezeUpTo::Count(9), BatchNormPolicy::Frozen, 5).frozen(), 5);
        assert!(!FreezePlan::from_spec(FreezeUpTo::All, BatchNormPolicy::Frozen, 5).any_batch_statistics());
        let train_bn = FreezePlan::from_spec(FreezeUpTo::Count(3), BatchNormPolicy::Train, 5);
        assert_eq!(train_bn.mode(0, true), Mode::Train);
        assert!(!FreezePlan::inference(5).any_batch_statistics());
        let layers: Vec<LayerInfo> = (0..5)
            .map(|i| LayerInfo { name: format!("l{i}"), prefixes: vec![format!("features.{i}")], has_batchnorm: true })
            .collect();
        assert!(plan.freezes("features.2.weight", &layers));
        assert!(!plan.freezes("features.3.weight", &layers));
        assert!(!plan.freezes("features.20.weight", &layers));
    }

    #[test]
    fn gradual_unfreezing_moves_down_one_layer_every_few_epochs() {
        use crate::config::spec::GradualFreeze;
        let g = FreezeUpTo::Gradual(GradualFreeze { from: 14, to: 11, every: 2 });
        let schedule: Vec<usize> = (0..9).map(|e| g.at_epoch(e, 18)).collect();
        assert_eq!(schedule, [14, 14, 13, 13, 12, 12, 11, 11, 11]);
        assert_eq!(FreezePlan::from_spec(g, BatchNormPolicy::Frozen, 18).frozen(), 14);
        // Clamped to the backbone's layers.
        assert_eq!(FreezeUpTo::Gradual(GradualFreeze { from: 30, to: 2, every: 1 }).at_epoch(0, 18), 18);
    }
}
