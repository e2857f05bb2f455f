//! Batch mixing (`data.mixup`, `data.cutmix`), as torchvision's `v2.MixUp` and `v2.CutMix`
//! do it: each batch is mixed with itself rolled by one along the batch, and the targets
//! become the same mixture of one-hot labels. With both set, each batch takes one of the
//! two at random (torchvision's `RandomChoice`).
//!
//! The mixing weight lam comes from Beta(alpha, alpha), drawn with libtorch's generator
//! (`_sample_dirichlet`, as `torch.distributions.Beta` draws it), which every epoch reseeds
//! from (seed, epoch); the choice between the two and CutMix's box centre come from the
//! epoch's own random stream. Reruns and resumes therefore mix the same batches the same way.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

/// `data.mixup` and `data.cutmix`: their Beta parameters (None: off).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Mixing {
    pub(crate) mixup: Option<f64>,
    pub(crate) cutmix: Option<f64>,
}

impl Mixing {
    pub(crate) fn is_on(&self) -> bool {
        self.mixup.is_some() || self.cutmix.is_some()
    }

    /// The batch `x` [N, C, H, W] with labels `y` mixed; the soft targets [N, classes].
    pub(crate) fn apply(&self, x: &Tensor, y: &Tensor, classes: i64, rng: &mut ChaCha8Rng) -> (Tensor, Tensor) {
        let use_cutmix = match (self.mixup, self.cutmix) {
            (Some(_), Some(_)) => rng.random_bool(0.5),
            (None, Some(_)) => true,
            _ => false,
        };
        let alpha = if use_cutmix { self.cutmix } else { self.mixup }.expect("mixing is on");
        let lam = beta(alpha);
        if use_cutmix {
            let (h, w) = (x.size()[2], x.size()[3]);
            let (rx, ry) = (rng.random_range(0..w), rng.random_range(0..h));
            cutmix(x, y, classes, lam, rx, ry)
        } else {
            mixup(x, y, classes, lam)
        }
    }
}

/// One draw from Beta(alpha, alpha) with libtorch's generator.
fn beta(alpha: f64) -> f64 {
    let concentration = Tensor::from_slice(&[alpha, alpha]);
    concentration.internal_sample_dirichlet().double_value(&[0])
}

/// One-hot labels mixed with their roll by one: lam * y + (1 - lam) * y.roll(1).
fn mixed_targets(y: &Tensor, classes: i64, lam: f64) -> Tensor {
    let one_hot = y.one_hot(classes).to_kind(Kind::Float);
    one_hot.roll([1], [0]) * (1.0 - lam) + one_hot * lam
}

/// torchvision's `MixUp` with weight `lam`.
pub(crate) fn mixup(x: &Tensor, y: &Tensor, classes: i64, lam: f64) -> (Tensor, Tensor) {
    let mixed = x.roll([1], [0]) * (1.0 - lam) + x * lam;
    (mixed, mixed_targets(y, classes, lam))
}

/// torchvision's `CutMix` with weight `lam` and box centre (`rx`, `ry`): the box of
/// half-sides 0.5 sqrt(1 - lam) W and H (clipped to the image) is taken from the rolled
/// batch, and lam becomes the share of the image left as it was.
pub(crate) fn cutmix(x: &Tensor, y: &Tensor, classes: i64, lam: f64, rx: i64, ry: i64) -> (Tensor, Tensor) {
    let (h, w) = (x.size()[2], x.size()[3]);
    let r = 0.5 * (1.0 - lam).sqrt();
    let (half_w, half_h) = ((r * w as f64) as i64, (r * h as f64) as i64);
    let (x1, y1) = ((rx - half_w).max(0), (ry - half_h).max(0));
    let (x2, y2) = ((rx + half_w).min(w), (ry + half_h).min(h));
    let out = x.copy();
    if x2 > x1 && y2 > y1 {
        let patch = x.roll([1], [0]).narrow(2, y1, y2 - y1).narrow(3, x1, x2 - x1);
        out.narrow(2, y1, y2 - y1).narrow(3, x1, x2 - x1).copy_(&patch);
    }
    let lam = 1.0 - ((x2 - x1) * (y2 - y1)) as f64 / (w * h) as f64;
    (out, mixed_targets(y, classes, lam))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{floats, toolkit_fixture};

    /// The fixture's batch: x[n, c, h, w] = sin(0.3 (n + 1) + 0.2 c + 0.1 h + 0.05 w), 4 x 3 x 6 x 8.
    fn batch() -> (Tensor, Tensor) {
        let mut v = vec![];
        for n in 0..4 {
            for c in 0..3 {
                for h in 0..6 {
                    for w in 0..8 {
                        v.push((0.3 * (n + 1) as f64 + 0.2 * c as f64 + 0.1 * h as f64 + 0.05 * w as f64).sin() as f32);
                    }
                }
            }
        }
        (Tensor::from_slice(&v).view([4, 3, 6, 8]), Tensor::from_slice(&[0i64, 2, 1, 2]))
    }

    fn close(got: &Tensor, want: &serde_json::Value, what: &str) {
        let got = Vec::<f64>::try_from(&got.to_kind(Kind::Double).flatten(0, -1)).unwrap();
        let want = floats(want);
        assert_eq!(got.len(), want.len(), "{what}");
        for (a, b) in got.iter().zip(&want) {
            // One float32 multiply-add per value of at most 1: a few ulp (1e-7) on any
            // processor; a wrong box or weight is off by 1e-2 or more.
            assert!((a - b).abs() < 1e-6, "{what}: {a} vs torchvision {b}");
        }
    }

    #[test]
    fn mixed_images_and_targets_are_torchvisions_on_the_committed_fixture() {
        let fixture = toolkit_fixture();
        let (x, y) = batch();
        let m = &fixture["mixup"];
        let (images, targets) = mixup(&x, &y, 3, m["lam"].as_f64().unwrap());
        close(&images, &m["images"], "mixup images");
        close(&targets, &m["targets"], "mixup targets");
        for c in fixture["cutmix"].as_array().unwrap() {
            let (rx, ry) = (c["rx"].as_i64().unwrap(), c["ry"].as_i64().unwrap());
            let (images, targets) = cutmix(&x, &y, 3, c["lam"].as_f64().unwrap(), rx, ry);
            close(&images, &c["images"], "cutmix images");
            close(&targets, &c["targets"], "cutmix targets");
        }
    }

    #[test]
    fn beta_draws_stay_in_the_unit_interval_and_follow_the_shape_of_beta() {
        // libtorch's generator is shared with the tests running beside this one, so only the
        // distribution is checked here; that reruns draw the same values is checked end to end
        // (tests/it/toolkit.rs resumes a mixing run to the same bytes).
        let a: Vec<f64> = (0..200).map(|_| beta(0.4)).collect();
        assert!(a.iter().all(|l| (0.0..=1.0).contains(l)));
        // Beta(0.4, 0.4) is U-shaped: about 65% of its mass lies below 0.2 or above 0.8.
        let outer = a.iter().filter(|l| **l < 0.2 || **l > 0.8).count();
        assert!((90..=160).contains(&outer), "{outer} of 200 draws outside [0.2, 0.8]");
        // Beta(50, 50) is concentrated at 1/2.
        let b: Vec<f64> = (0..200).map(|_| beta(50.0)).collect();
        assert!(b.iter().all(|l| (l - 0.5).abs() < 0.3), "{b:?}"); // 6 standard deviations
    }
}
