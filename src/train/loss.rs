//! The training criterion: cross-entropy, with PyTorch's `CrossEntropyLoss` options
//! (`label_smoothing`, per-class `weight`) when the spec's `[loss]` asks for them.

use anyhow::{Result, bail};
use tch::Tensor;

use crate::config::spec::{ClassWeights, LossSpec};

#[derive(Debug, Default)]
pub(crate) struct Criterion {
    pub(crate) label_smoothing: f64,
    /// One weight per class, as numbers (summary.json records them) and as a tensor.
    pub(crate) weights: Option<Vec<f64>>,
    class_weights: Option<Tensor>,
}

impl Criterion {
    /// The criterion of `spec` for a train split with these labels and `classes` classes.
    pub fn new(spec: &LossSpec, train_labels: &[i64], classes: usize) -> Result<Criterion> {
        let weights = match &spec.class_weights {
            None => None,
            Some(ClassWeights::Given(w)) if w.len() != classes => {
                bail!("loss.class_weights: expected {classes} weights, one per class, found {}", w.len())
            }
            Some(ClassWeights::Given(w)) => Some(w.clone()),
            Some(ClassWeights::Balanced) => Some(balanced(train_labels, classes)),
        };
        let tensor = weights.as_ref().map(|w| Tensor::from_slice(&w.iter().map(|&x| x as f32).collect::<Vec<_>>()));
        Ok(Criterion { label_smoothing: spec.label_smoothing, weights, class_weights: tensor })
    }

    /// [`Criterion::loss`] for soft targets (probabilities [N, classes], from batch mixing):
    /// PyTorch's cross-entropy with class probabilities, the same smoothing and weights.
    pub(crate) fn loss_soft(&self, logits: &Tensor, targets: &Tensor) -> Tensor {
        let weights = self.class_weights.as_ref().map(|w| w.to_device(logits.device()));
        logits.cross_entropy_loss(targets, weights.as_ref(), tch::Reduction::Mean, -100, self.label_smoothing)
    }

    /// The mean loss of a batch, as `torch.nn.CrossEntropyLoss(weight, label_smoothing)` computes it.
    pub fn loss(&self, logits: &Tensor, labels: &Tensor) -> Tensor {
        match &self.class_weights {
            // Plain cross-entropy, the same computation as before `[loss]` existed.
            None if self.label_smoothing == 0.0 => logits.cross_entropy_for_logits(labels),
            weights => {
                let weights = weights.as_ref().map(|w| w.to_device(logits.device()));
                logits.cross_entropy_loss(labels, weights.as_ref(), tch::Reduction::Mean, -100, self.label_smoothing)
            }
        }
    }
}

/// scikit-learn's "balanced" weights: n / (classes x count of the class); 0 for a class
/// with no training image.
fn balanced(labels: &[i64], classes: usize) -> Vec<f64> {
    let mut counts = vec![0usize; classes];
    for &l in labels {
        if let Some(c) = counts.get_mut(l as usize) {
            *c += 1;
        }
    }
    let n = labels.len() as f64;
    counts.iter().map(|&c| if c == 0 { 0.0 } else { n / (classes as f64 * c as f64) }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn logits() -> (Tensor, Tensor) {
        let x = Tensor::from_slice(&[2.0f32, -1.0, 0.5, 0.1, 0.3, -2.0, -0.7, 1.2, 0.0, 1.5, 1.5, -0.5]).view([4, 3]);
        (x, Tensor::from_slice(&[0i64, 2, 1, 1]))
    }

    /// torch's documented formula, in f64: per sample (1 - e) w_y (-log p_y) + e/C sum_c w_c (-log p_c),
    /// summed and divided by the sum of w_y.
    fn by_hand(x: &Tensor, y: &Tensor, e: f64, w: &[f64]) -> f64 {
        let logp: Vec<Vec<f64>> = (0..4)
            .map(|i| {
                let row: Vec<f64> = (0..3).map(|c| x.double_value(&[i, c])).collect();
                let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
                row.iter().map(|v| v - lse).collect()
            })
            .collect();
        let (mut num, mut den) = (0.0, 0.0);
        for (i, lp) in logp.iter().enumerate() {
            let t = y.int64_value(&[i as i64]) as usize;
            let smooth: f64 = (0..3).map(|c| w[c] * -lp[c]).sum();
            num += (1.0 - e) * w[t] * -lp[t] + e / 3.0 * smooth;
            den += w[t];
        }
        num / den
    }

    #[test]
    fn cross_entropy_with_smoothing_and_weights_is_torchs() {
        let (x, y) = logits();
        let plain = Criterion::default();
        assert!(plain.loss(&x, &y).equal(&x.cross_entropy_for_logits(&y)));
        for (e, w) in [(0.1, vec![1.0, 1.0, 1.0]), (0.0, vec![0.5, 2.0, 1.0]), (0.2, vec![0.5, 2.0, 1.0])] {
            let spec = LossSpec { label_smoothing: e, class_weights: Some(ClassWeights::Given(w.clone())) };
            let c = Criterion::new(&spec, &[0, 1, 2], 3).unwrap();
            assert_eq!(c.weights.as_deref(), Some(&w[..]));
            let got = c.loss(&x, &y).to_kind(Kind::Double).double_value(&[]);
            let want = by_hand(&x, &y, e, &w);
            assert!((got - want).abs() < 1e-6, "e {e} w {w:?}: {got} vs {want}");
        }
    }

    #[test]
    fn balanced_weights_are_scikit_learns_and_a_wrong_count_is_refused() {
        assert_eq!(balanced(&[0, 0, 0, 1], 2), [4.0 / 6.0, 2.0]);
        assert_eq!(balanced(&[0, 1], 3), [2.0 / 3.0, 2.0 / 3.0, 0.0]);
        let spec = LossSpec { label_smoothing: 0.0, class_weights: Some(ClassWeights::Given(vec![1.0, 2.0])) };
        let err = Criterion::new(&spec, &[0, 1, 2], 3).unwrap_err().to_string();
        assert!(err.contains("expected 3 weights, one per class, found 2"), "{err}");
    }

    #[test]
    fn losses_match_pytorchs_on_the_committed_fixture() {
        let fixture = crate::testing::toolkit_fixture();
        let logits: Vec<f32> = (0..6)
            .flat_map(|i| (0..4).map(move |j| 2.0 * (0.7 * i as f64 + 1.3 * j as f64).sin()))
            .map(|x| x as f32)
            .collect();
        let logits = Tensor::from_slice(&logits).view([6, 4]);
        let labels = Tensor::from_slice(&(0..6).map(|i| i % 4).collect::<Vec<i64>>());
        let cases = fixture["loss"]["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 6);
        for case in cases {
            let class_weights =
                (!case["weights"].is_null()).then(|| ClassWeights::Given(crate::testing::floats(&case["weights"])));
            let spec = LossSpec { label_smoothing: case["label_smoothing"].as_f64().unwrap(), class_weights };
            let got = Criterion::new(&spec, &[], 4).unwrap().loss(&logits, &labels).double_value(&[]);
            let want = case["loss"].as_f64().unwrap();
            // runner's log-softmax is float32 (PyTorch's fixture float64): 1e-7 of a loss of
            // about 2, on any processor; a wrong smoothing or weighting is off by 1e-2 or more.
            assert!((got - want).abs() < 1e-5, "{case}: runner {got}, PyTorch {want}");
        }
    }
}
