//! Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks"): one
//! number T that divides the logits, fitted to minimise the negative log-likelihood of the
//! validation labels; and the measures it is judged by, NLL and the expected calibration
//! error over equal-width confidence bins.

use tch::{Kind, Tensor};

/// The confidence bins of the expected calibration error (Guo et al.'s 15).
pub(crate) const ECE_BINS: usize = 15;

/// Mean negative log-likelihood of `labels` under `logits` [N, C] divided by `temperature`.
pub(crate) fn nll(logits: &Tensor, labels: &Tensor, temperature: f64) -> f64 {
    // In float64 throughout (tch's cross_entropy_for_logits takes its log-softmax in float32,
    // too coarse for the fit's line search near the minimum).
    let log_p = (logits.to_kind(Kind::Double) / temperature).log_softmax(-1, Kind::Double);
    -log_p.gather(1, &labels.unsqueeze(1), false).mean(Kind::Double).double_value(&[])
}

/// The temperature that minimises the NLL of `labels` under `logits / T`. The NLL is convex
/// in b = 1/T (a log-sum-exp of b z minus b z_y, averaged): Newton's method on b from b = 1,
/// each step halved until the NLL does not rise, stopping when a step moves b by less than
/// 1e-10; b is kept within [1e-3, 1e3]. Exact arithmetic in float64.
pub(crate) fn fit_temperature(logits: &Tensor, labels: &Tensor) -> f64 {
    let z = logits.to_kind(Kind::Double);
    let zy = z.gather(1, &labels.unsqueeze(1), false).squeeze_dim(1);
    let loss = |b: f64| nll(&z, labels, 1.0 / b);
    let mut b = 1.0;
    for _ in 0..100 {
        let p = (&z * b).softmax(-1, Kind::Double);
        let mean_z = (&p * &z).sum_dim_intlist(1, false, Kind::Double);
        let var_z = (&p * &z * &z).sum_dim_intlist(1, false, Kind::Double) - &mean_z * &mean_z;
        let gradient = (&mean_z - &zy).mean(Kind::Double).double_value(&[]);
        let curvature = var_z.mean(Kind::Double).double_value(&[]);
        if curvature.is_nan() || curvature <= 1e-12 {
            break;
        }
        let mut step = -gradient / curvature;
        let before = loss(b);
        while (b + step).clamp(1e-3, 1e3) != b && loss((b + step).clamp(1e-3, 1e3)) > before && step.abs() > 1e-12 {
            step /= 2.0;
        }
        let next = (b + step).clamp(1e-3, 1e3);
        let moved = (next - b).abs();
        b = next;
        if moved < 1e-10 {
            break;
        }
    }
    1.0 / b
}

/// The expected calibration error of `logits / temperature`: over [`ECE_BINS`] equal-width
/// bins of confidence (the top probability), the share of examples in each bin times the gap
/// between its accuracy and its mean confidence, summed. Also each bin's (count, accuracy,
/// mean confidence), for a reliability diagram.
pub(crate) fn ece(logits: &Tensor, labels: &Tensor, temperature: f64) -> (f64, Vec<(usize, f64, f64)>) {
    let p = (logits.to_kind(Kind::Double) / temperature).softmax(-1, Kind::Double);
    let (confidence, predicted) = p.max_dim(1, false);
    let confidence = Vec::<f64>::try_from(&confidence).unwrap_or_default();
    let right: Vec<bool> = Vec::<i64>::try_from(&predicted.eq_tensor(labels).to_kind(Kind::Int64))
        .unwrap_or_default()
        .iter()
        .map(|&r| r == 1)
        .collect();
    let mut bins = vec![(0usize, 0.0f64, 0.0f64); ECE_BINS];
    for (&c, &ok) in confidence.iter().zip(&right) {
        // (0, 1/15], (1/15, 2/15], ...: a confidence of exactly k/15 belongs to bin k - 1.
        let bin = ((c * ECE_BINS as f64).ceil() as usize).clamp(1, ECE_BINS) - 1;
        bins[bin].0 += 1;
        bins[bin].1 += if ok { 1.0 } else { 0.0 };
        bins[bin].2 += c;
    }
    let n = confidence.len().max(1) as f64;
    let mut error = 0.0;
    for bin in &mut bins {
        if bin.0 > 0 {
            bin.1 /= bin.0 as f64;
            bin.2 /= bin.0 as f64;
            error += bin.0 as f64 / n * (bin.1 - bin.2).abs();
        }
    }
    (error, bins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_over_confident_model_gets_a_temperature_above_one_and_a_smaller_error() {
        // Logits 4x too large for labels that are right 70% of the time.
        let n = 200;
        let labels = Tensor::from_slice(&(0..n).map(|i| if i % 10 < 7 { 0i64 } else { 1 }).collect::<Vec<_>>());
        let row = Tensor::from_slice(&[4.0f64, -4.0]);
        let logits = row.unsqueeze(0).repeat([n, 1]);
        let t = fit_temperature(&logits, &labels);
        // The NLL's minimum: softmax(8 / T) = 0.7, so T = 8 / ln(7/3).
        let want = 8.0 / (7.0f64 / 3.0).ln();
        assert!((t - want).abs() < 1e-6, "{t} vs {want}");
        assert!(nll(&logits, &labels, t) < nll(&logits, &labels, 1.0));
        let (before, _) = ece(&logits, &labels, 1.0);
        let (after, bins) = ece(&logits, &labels, t);
        assert!((before - (0.99966 - 0.7)).abs() < 1e-3, "{before}");
        assert!(after < 1e-6 && after < before, "{after}");
        assert_eq!(bins.iter().map(|b| b.0).sum::<usize>(), n as usize);
    }

    #[test]
    fn a_calibrated_model_keeps_a_temperature_near_one() {
        // Labels drawn as the logits' softmax says (0.8 / 0.2): the fitted T stays near 1.
        let n = 1000;
        let labels = Tensor::from_slice(&(0..n).map(|i| if i % 5 < 4 { 0i64 } else { 1 }).collect::<Vec<_>>());
        let logits = Tensor::from_slice(&[4f64.ln(), 0.0]).unsqueeze(0).repeat([n, 1]);
        assert!((fit_temperature(&logits, &labels) - 1.0).abs() < 1e-6);
    }
}
