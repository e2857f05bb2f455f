//! Evaluation: mean loss and accuracy in inference mode, with the weights evaluation
//! uses (the EMA's with `ema`), over a split's images, over cached features, or with
//! test-time views (shared with `predict`).

use tch::{Device, Kind, Tensor};

use super::Trainer;
use super::autocast::Autocast;
use super::stored::Rows;
use crate::config::spec::TtaView;
use crate::data::{Fetched, Read, Split};
use crate::model::Classifier;

impl Trainer {
    /// Runs `f` with the weights evaluation uses in the model (the EMA's with `ema`).
    pub(crate) fn with_eval_weights<T>(&mut self, f: impl FnOnce(&Self) -> T) -> T {
        if let Some(ema) = &mut self.ema {
            ema.swap(&self.vs);
        }
        let out = f(self);
        if let Some(ema) = &mut self.ema {
            ema.swap(&self.vs);
        }
        out
    }

    /// Whether cached val activations at layer `start` are what the evaluation weights
    /// compute: not with test-time views (the cache holds the plain images only), nor with
    /// an EMA whose layers below `start` have trained (then they differ from the model's).
    pub(super) fn cached_eval_exact(&self, start: usize) -> bool {
        self.tta.is_empty() && (self.ema.is_none() || self.trained_from >= start)
    }

    /// Mean loss and accuracy on `split`, everything in inference mode.
    pub(crate) fn evaluate(&self, split: &Split) -> (f64, f64) {
        let (loss, acc, _) = self.evaluate_split(split, false);
        (loss, acc)
    }

    /// [`Trainer::evaluate`], and every image's prediction, in one pass.
    pub(crate) fn evaluate_and_predict(&self, split: &Split) -> (f64, f64, Vec<Prediction>) {
        self.evaluate_split(split, true)
    }

    /// The model inputs of `split`'s images, batch by batch in order: their center crops
    /// (read ahead from the store), normalised, on the device, in the trainer's layout.
    /// With multi-crop test-time views, the stored squares instead, which [`tta_logits`] cuts.
    pub(super) fn eval_inputs<'a>(&'a self, split: &'a Split) -> impl Iterator<Item = Tensor> + 'a {
        let batches = crate::data::in_order(split.len(), self.batch_size);
        let squares = TtaView::multi_crop(&self.tta);
        let side = if squares { split.images.side() as i64 } else { self.transform.size };
        split.images.prefetch(batches, Read::Crops(side)).map(move |fetched| {
            let Fetched::Crops(crops) = fetched else { unreachable!("crops, a read per batch") };
            let x = if squares {
                self.transform.eval_whole(&crops, self.device)
            } else {
                self.transform.eval(&crops, self.device)
            };
            self.layout(x)
        })
    }

    fn evaluate_split(&self, split: &Split, predict: bool) -> (f64, f64, Vec<Prediction>) {
        let inputs = std::cell::RefCell::new(self.eval_inputs(split));
        self.mean_loss_acc(split.len() as i64, &split.labels, predict, |_, _| {
            let x = inputs.borrow_mut().next().expect("an input per batch");
            tta_logits(&self.model, &x, &self.tta, self.transform.size)
        })
    }

    /// The logits of every image of `split` (with test-time views, the log of their averaged
    /// softmax, as evaluation sees them), in float64 on the CPU: what calibration is fitted on.
    pub(crate) fn logits_of(&self, split: &Split) -> Tensor {
        let mut out = vec![];
        Autocast::run(self.autocast(), || {
            tch::no_grad(|| {
                for x in self.eval_inputs(split) {
                    let logits = tta_logits(&self.model, &x, &self.tta, self.transform.size);
                    out.push(logits.to_kind(Kind::Double).to_device(Device::Cpu));
                }
            })
        });
        if out.is_empty() { Tensor::zeros([0, 0], (Kind::Double, Device::Cpu)) } else { Tensor::cat(&out, 0) }
    }

    /// Mean loss and accuracy of cached inputs (the output of the first `start` layers).
    pub(super) fn evaluate_inputs(&self, inputs: &Rows, labels: &Tensor, start: usize) -> (f64, f64) {
        let (loss, acc, _) = self.mean_loss_acc(inputs.len(), labels, false, |first, len| {
            self.model.infer_from(&self.layout(inputs.narrow(first, len).to_device(self.device)), start)
        });
        (loss, acc)
    }

    /// Batches of `n` examples through `logits(first, len)`, summed on the device: one sync
    /// at the end. With `predict`, also every example's prediction (else none).
    fn mean_loss_acc(
        &self,
        n: i64,
        labels: &Tensor,
        predict: bool,
        logits: impl Fn(i64, i64) -> Tensor,
    ) -> (f64, f64, Vec<Prediction>) {
        Autocast::run(self.autocast(), || {
            tch::no_grad(|| {
                let mut loss_sum = Tensor::zeros([], (Kind::Double, self.device));
                let mut correct = Tensor::zeros([], (Kind::Int64, self.device));
                let mut predicted = vec![];
                let mut first = 0;
                while first < n {
                    let len = (self.batch_size as i64).min(n - first);
                    let y = labels.narrow(0, first, len).to_device(self.device);
                    let out = logits(first, len).to_kind(Kind::Float);
                    loss_sum += out.cross_entropy_for_logits(&y).to_kind(Kind::Double) * len as f64;
                    let classes = out.argmax(-1, false);
                    correct += classes.eq_tensor(&y).sum(Kind::Int64);
                    if predict {
                        let p = out.softmax(-1, Kind::Float);
                        let p_true = p.gather(1, &y.unsqueeze(1), false).squeeze_dim(1);
                        predicted.push(Tensor::stack(&[classes.to_kind(Kind::Float), p.amax(-1, false), p_true], 1));
                    }
                    first += len;
                }
                let predicted = predictions(&predicted);
                let n = n.max(1) as f64;
                (loss_sum.double_value(&[]) / n, correct.int64_value(&[]) as f64 / n, predicted)
            })
        })
    }
}

/// One image's prediction: its class, that class's softmax probability, and the true class's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Prediction {
    pub class: i64,
    pub confidence: f32,
    pub p_true: f32,
}

/// Batches of [class, confidence, p_true] rows as predictions.
fn predictions(batches: &[Tensor]) -> Vec<Prediction> {
    if batches.is_empty() {
        return vec![];
    }
    let rows = Tensor::cat(batches, 0).to_device(Device::Cpu);
    let values = Vec::<f32>::try_from(rows.reshape([-1])).unwrap_or_default();
    values.chunks_exact(3).map(|r| Prediction { class: r[0] as i64, confidence: r[1], p_true: r[2] }).collect()
}

/// The model's logits for the batch `x`, in inference mode; with test-time views, the log of
/// the softmax averaged over the plain image and each view (so argmax and cross-entropy
/// read it as they read logits). `x` is the center crops of `size`, or with multi-crop views
/// the stored squares they are cut from.
pub(crate) fn tta_logits(model: &Classifier, x: &Tensor, views: &[TtaView], size: i64) -> Tensor {
    let inputs = view_inputs(x, views, size);
    let logits: Vec<Tensor> = inputs.iter().map(|v| model.infer(v)).collect();
    if logits.len() == 1 { logits.into_iter().next().expect("the plain view") } else { average_views(&logits) }
}

/// The inputs of each view of the batch `x` (see [`tta_logits`]): the center crop first,
/// then hflip's mirror, five_crop's corners (top left, top right, bottom left, bottom
/// right), ten_crop's five crops' mirrors after its corners, a scale's center crop of the
/// resized square.
pub(crate) fn view_inputs(x: &Tensor, views: &[TtaView], size: i64) -> Vec<Tensor> {
    let side = x.size()[2];
    let far = side - size;
    let crop =
        |y: i64, x0: i64| if side == size { x.shallow_clone() } else { x.narrow(2, y, size).narrow(3, x0, size) };
    let center = crop(far / 2, far / 2);
    let corners = || [(0, 0), (0, far), (far, 0), (far, far)].map(|(y, x0)| crop(y, x0));
    let mut out = vec![center.shallow_clone()];
    for view in views {
        match view {
            TtaView::Hflip => out.push(center.flip([3])),
            TtaView::FiveCrop => out.extend(corners()),
            TtaView::TenCrop => {
                let corners = corners();
                let mirrors: Vec<Tensor> = std::iter::once(&center).chain(&corners).map(|c| c.flip([3])).collect();
                out.extend(corners);
                out.extend(mirrors);
            }
            TtaView::Scale(s) => {
                // At least a crop's side: 0.875 of the stored side rounds to it or above.
                let n = ((side as f64 * s).round() as i64).max(size);
                let resized = x.internal_upsample_bilinear2d_aa([n, n], false, None, None);
                let off = (n - size) / 2;
                out.push(resized.narrow(2, off, size).narrow(3, off, size));
            }
        }
    }
    out
}

/// The log of the softmax averaged over the views' logits (fp32 at least).
pub(super) fn average_views(logits: &[Tensor]) -> Tensor {
    tch::no_grad(|| {
        let kind = if logits[0].kind() == Kind::Double { Kind::Double } else { Kind::Float };
        let probs: Vec<Tensor> = logits.iter().map(|l| l.to_kind(kind).softmax(-1, kind)).collect();
        Tensor::stack(&probs, 0).mean_dim(0, false, kind).log()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_crop_views_are_the_center_the_corners_and_their_mirrors() {
        // One 1-channel "image" of side 4 whose pixel (y, x) holds 10 y + x; crops of 2.
        let x =
            Tensor::from_slice(&(0..16).map(|i| (10 * (i / 4) + i % 4) as f32).collect::<Vec<_>>()).view([1, 1, 4, 4]);
        let first = |t: &Tensor| t.double_value(&[0, 0, 0, 0]);
        let five = view_inputs(&x, &[TtaView::FiveCrop], 2);
        assert_eq!(five.iter().map(first).collect::<Vec<_>>(), [11.0, 0.0, 2.0, 20.0, 22.0]);
        assert!(five.iter().all(|v| v.size() == [1, 1, 2, 2]));
        let ten = view_inputs(&x, &[TtaView::TenCrop], 2);
        assert_eq!(ten.len(), 10);
        // The mirrors: the center's (12 11 / 22 21) first, then each corner's.
        assert_eq!(ten[5..].iter().map(first).collect::<Vec<_>>(), [12.0, 1.0, 3.0, 21.0, 23.0]);
        // The center crop alone (no multi-crop view): the input as it is, and its mirror.
        let plain = x.narrow(2, 1, 2).narrow(3, 1, 2);
        let flipped = view_inputs(&plain, &[TtaView::Hflip], 2);
        assert_eq!(flipped.iter().map(first).collect::<Vec<_>>(), [11.0, 12.0]);
    }

    #[test]
    fn a_scale_is_the_center_crop_of_the_resized_square() {
        // A linear ramp stays linear under bilinear resizing: on side 8 with x[.., j] = j, the
        // square at scale 2 (side 16) has column k at (k + 0.5) / 2 - 0.5; its center crop of 4
        // starts at column 6: 2.75, 3.25, 3.75, 4.25.
        let ramp = Tensor::arange(8, (Kind::Float, Device::Cpu)).view([1, 1, 1, 8]).expand([1, 1, 8, 8], false);
        let views = view_inputs(&ramp, &[TtaView::Scale(2.0)], 4);
        assert_eq!(views[1].size(), [1, 1, 4, 4]);
        let row = Vec::<f32>::try_from(views[1].get(0).get(0).get(0)).unwrap();
        for (got, want) in row.iter().zip([2.75f32, 3.25, 3.75, 4.25]) {
            assert!((got - want).abs() < 1e-5, "{row:?}");
        }
        // Scale 1 is the center crop itself.
        let one = view_inputs(&ramp, &[TtaView::Scale(1.0)], 4);
        assert!(one[1].allclose(&one[0], 1e-6, 1e-6, false));
    }
}
