//! The learning-rate range test (Smith 2015; fastai's `lr_find`, Lightning's `LearningRateFinder`):
//! from the state a phase starts from, train one batch per step at rates growing
//! exponentially from `start` to `end`, smooth the losses, stop once they diverge, and
//! suggest a rate. It trains a fresh copy of the phase's optimizer and puts every variable
//! (weights and BatchNorm statistics) back afterwards, bit for bit: the run it serves, or
//! none, goes on as if it had not happened. On a phase that trains on cached features the
//! steps run the layers above the cache only.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use super::features::view_picks;
use super::{PhaseRun, Step, Trainer, epoch_seed};

/// The sweep: `steps` rates from `start` to `end`, evenly spaced in log scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RangeTest {
    pub start: f64,
    pub end: f64,
    pub steps: usize,
}

impl Default for RangeTest {
    /// fastai's and Lightning's defaults: 100 steps from 1e-7 to 10.
    fn default() -> Self {
        RangeTest { start: 1e-7, end: 10.0, steps: 100 }
    }
}

/// The smoothing of the losses: an exponential moving average with this weight on the
/// past, bias-corrected (fastai's 0.98).
const SMOOTHING: f64 = 0.98;
/// The test stops once the smoothed loss exceeds this multiple of its best (fastai, Lightning).
const DIVERGED: f64 = 4.0;
/// Steepest descent is looked for past the first 10 points and before the last (Lightning's skips).
const SKIP_BEGIN: usize = 10;

/// What the range test measured and suggests.
#[derive(Debug, Clone, PartialEq)]
pub struct LrFind {
    /// The rate, raw loss and smoothed loss of each step taken.
    pub lrs: Vec<f64>,
    pub losses: Vec<f64>,
    pub smoothed: Vec<f64>,
    /// Whether the smoothed loss diverged (more than 4x its best, or not finite) before the last rate.
    pub diverged: bool,
    /// The rate at the lowest smoothed loss.
    pub minimum: f64,
    /// The rate where the smoothed loss falls fastest (None on fewer than 12 steps).
    pub steepest: Option<f64>,
    /// The rate suggested: the minimum / 10; when the loss was lowest at the sweep's last
    /// rate, the steepest descent.
    pub suggestion: f64,
    /// Backbone layers each step ran: 0 on features cached above the last layer.
    pub backbone_layers_per_step: usize,
    /// The layer the phase's cached inputs come from, when it trains on a cache.
    pub cached_at: Option<usize>,
}

impl LrFind {
    /// The test's one-line account, for run.log and the terminal.
    pub fn describe(&self, test: &RangeTest) -> String {
        let inputs = match self.cached_at {
            Some(at) if self.backbone_layers_per_step == 0 => {
                format!("on features cached at layer {at}, no backbone layer run")
            }
            Some(at) => format!("on activations cached at layer {at}, {} layers run", self.backbone_layers_per_step),
            None => format!("on images, {} backbone layers run", self.backbone_layers_per_step),
        };
        let end = if self.diverged { "the loss diverged" } else { "the last rate" };
        let steep = self.steepest.map_or("none".into(), |s| format!("{s:.3e}"));
        let rule = if Some(self.suggestion) == self.steepest {
            "the steepest descent: the loss was lowest at the last rate"
        } else {
            "the minimum / 10"
        };
        let warning = if self.lrs.first() == Some(&self.minimum) {
            "; the loss never fell below its first value: the suggestion is not to be trusted"
        } else {
            ""
        };
        format!(
            "lr-find: {} steps from {:e} to {:e} {inputs}; stopped at {:.3e} ({end}); lowest smoothed loss at {:.3e}, \
             steepest descent at {steep}; suggested {:.3e} ({rule}){warning}",
            self.lrs.len(),
            test.start,
            test.end,
            self.lrs.last().copied().unwrap_or(f64::NAN),
            self.minimum,
            self.suggestion
        )
    }
}

/// Step `i`'s rate of the sweep.
fn rate(test: &RangeTest, i: usize) -> f64 {
    let last = test.steps.saturating_sub(1).max(1) as f64;
    test.start * (test.end / test.start).powf(i as f64 / last)
}

/// The smoothed losses (bias-corrected moving average) and where the test stops: the index
/// after the first point that diverged, or the length.
pub(crate) fn smooth(losses: &[f64]) -> (Vec<f64>, Option<usize>) {
    let (mut avg, mut best, mut out) = (0.0, f64::INFINITY, Vec::with_capacity(losses.len()));
    for (i, &loss) in losses.iter().enumerate() {
        avg = SMOOTHING * avg + (1.0 - SMOOTHING) * loss;
        let s = avg / (1.0 - SMOOTHING.powi(i as i32 + 1));
        out.push(s);
        if !s.is_finite() || (i > 0 && s > DIVERGED * best) {
            return (out, Some(i + 1));
        }
        best = best.min(s);
    }
    (out, None)
}

/// The minimum's rate and the steepest descent's rate of a sweep (`lrs` and their smoothed
/// losses): the lowest finite smoothed loss, and the most negative slope on the way down to
/// it, by central differences (numpy's `gradient`, in steps of the sweep, which are even in
/// log rate), past the first 10 points (Lightning's skip); None when fewer than 3 points
/// lead down to the minimum.
pub(crate) fn suggest(lrs: &[f64], smoothed: &[f64]) -> (f64, Option<f64>) {
    let finite: Vec<usize> = (0..smoothed.len()).filter(|&i| smoothed[i].is_finite()).collect();
    let lowest = finite.iter().copied().min_by(|&a, &b| smoothed[a].total_cmp(&smoothed[b])).unwrap_or(0);
    let steepest = (lowest >= SKIP_BEGIN + 2).then(|| {
        let y = &smoothed[SKIP_BEGIN..=lowest];
        let slope = |i: usize| match i {
            0 => y[1] - y[0],
            i if i == y.len() - 1 => y[i] - y[i - 1],
            i => (y[i + 1] - y[i - 1]) / 2.0,
        };
        let best = (0..y.len()).min_by(|&a, &b| slope(a).total_cmp(&slope(b))).unwrap_or(0);
        lrs[SKIP_BEGIN + best]
    });
    (lrs[lowest], steepest)
}

/// The rate to train at: the minimum / 10 (fastai's rule: a tenth of where the loss
/// bottoms out before it blows up), unless the loss was still falling at the sweep's last
/// rate, where the minimum is only the end of the sweep: then the steepest descent.
fn suggestion(minimum: f64, steepest: Option<f64>, last: f64) -> f64 {
    match steepest {
        Some(s) if minimum == last => s,
        _ => minimum / 10.0,
    }
}

impl Trainer {
    /// The range test of the phase `run` starts (at its first epoch): each step one batch
    /// of the train split (shuffled from the seed on a stream of its own, the phase's
    /// augmentation and mixing applied) through the phase's forward, trained by a fresh
    /// copy of its optimizer at the step's rate (layer-wise rates kept). Every variable,
    /// the EMA and the loss scaler are as they were when it returns.
    pub fn lr_range_test(&mut self, run: &mut PhaseRun, test: &RangeTest) -> LrFind {
        let saved: Vec<(String, Tensor)> =
            self.vs.variables().into_iter().map(|(n, t)| (n, tch::no_grad(|| t.detach().copy()))).collect();
        let (ema, scaler) = (self.ema.take(), self.scaler.clone());
        let fresh = run.opt.fresh();
        let (phase_opt, accumulate) =
            (std::mem::replace(&mut run.opt, fresh), std::mem::replace(&mut run.accumulate, 1));
        let losses = self.sweep(run, test);
        run.opt = phase_opt;
        run.accumulate = accumulate;
        run.opt.zero_grad();
        (self.ema, self.scaler) = (ema, scaler);
        let vars = self.vs.variables();
        tch::no_grad(|| {
            for (name, t) in &saved {
                vars[name].shallow_clone().copy_(t);
            }
        });
        let (smoothed, _) = smooth(&losses);
        let lrs: Vec<f64> = (0..losses.len()).map(|i| rate(test, i)).collect();
        let (minimum, steepest) = suggest(&lrs, &smoothed);
        let diverged = losses.len() < test.steps;
        let suggestion = suggestion(minimum, steepest, lrs.last().copied().unwrap_or(f64::NAN));
        let layers = self.model.backbone.layers().len();
        let cached_at = run.cache.as_ref().map(|c| c.start);
        LrFind {
            diverged,
            lrs,
            losses,
            smoothed,
            minimum,
            steepest,
            suggestion,
            backbone_layers_per_step: layers - cached_at.unwrap_or(0).min(layers),
            cached_at,
        }
    }

    /// Phase `p` trains at `lr`, the rate its range test suggested (`optimizer.lr = "find"`),
    /// and later phases' `lr_factor` follow it; `run`, when the phase has started, takes it
    /// up (its `reduce_on_plateau` included).
    pub fn use_found_lr(&mut self, p: usize, lr: f64, run: Option<&mut PhaseRun>) {
        self.schedule.set_found(p, lr);
        if let Some(run) = run {
            run.plateau = self.schedule.plateau(p, self.monitor);
            run.opt.set_lr(lr);
        }
    }

    /// The sweep's training steps; returns each step's loss, until the smoothed loss diverges.
    fn sweep(&mut self, run: &mut PhaseRun, test: &RangeTest) -> Vec<f64> {
        let n = self.data.train.len();
        if n < 2 || test.steps == 0 {
            return vec![];
        }
        let batch = self.batch_size.min(n);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(u64::MAX - 1);
        tch::manual_seed(epoch_seed(self.seed, 0) as i64 ^ 0x6c72_6669);
        // Passes over the shuffled train split, full batches only, as many as the steps need.
        let mut batches: Vec<(Vec<i64>, Option<Tensor>)> = vec![];
        while batches.len() < test.steps {
            let mut order: Vec<i64> = (0..n as i64).collect();
            order.shuffle(&mut rng);
            let picks = run.cache.as_ref().and_then(|c| view_picks(c, &order, &mut rng));
            for (b, chunk) in order.chunks_exact(batch).enumerate().take(test.steps - batches.len()) {
                batches.push((chunk.to_vec(), picks.as_ref().map(|p| p.narrow(0, (b * batch) as i64, batch as i64))));
            }
        }
        let mut reads = run.cache.is_none().then(|| {
            self.data.train.images.prefetch(batches.iter().map(|b| b.0.clone()).collect(), self.transform.read())
        });
        let labels_all = self.data.train.labels.to_device(self.device);
        let mut losses = vec![];
        for (i, (chunk, rows)) in batches.into_iter().enumerate() {
            let pixels = reads.as_mut().map(|r| r.next().expect("a read per batch"));
            let idx = Tensor::from_slice(&chunk).to_device(self.device);
            let labels = labels_all.index_select(0, &idx);
            let idx = idx.to_device(run.cache.as_ref().map_or(tch::Device::Cpu, |c| c.train.device()));
            let (x, targets) = self.batch_inputs(run, pixels, &idx, rows, &labels, &mut rng);
            run.opt.set_lr(rate(test, i));
            let (_, loss) = self.train_step(run, &x, &labels, targets.as_ref(), Step { first: true, last: true });
            losses.push(loss.to_kind(Kind::Double).double_value(&[]));
            if smooth(&losses).1.is_some() || crate::sys::signal::interrupted() {
                break;
            }
        }
        losses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_is_even_in_log_rate_from_start_to_end() {
        let t = RangeTest { start: 1e-6, end: 1.0, steps: 7 };
        let lrs: Vec<f64> = (0..7).map(|i| rate(&t, i)).collect();
        assert_eq!(lrs[0], 1e-6);
        assert!((lrs[6] - 1.0).abs() < 1e-12 && (lrs[3] - 1e-3).abs() < 1e-15, "{lrs:?}");
    }

    #[test]
    fn smoothing_is_fastais_and_stops_at_four_times_the_best() {
        let (s, stop) = smooth(&[2.0, 1.0, 1.0]);
        // avg_1 = 0.04 / 0.02 = 2; avg_2 = (0.98 * 0.04 + 0.02) / (1 - 0.98^2).
        assert_eq!(s[0], 2.0);
        assert!((s[1] - (0.98 * 0.04 + 0.02) / (1.0 - 0.98f64.powi(2))).abs() < 1e-12);
        assert_eq!(stop, None);
        let mut losses = vec![1.0; 20];
        losses.push(1e6);
        assert_eq!(smooth(&losses).1, Some(21));
        assert_eq!(smooth(&[1.0, f64::NAN]).1, Some(2));
    }

    #[test]
    fn the_suggestions_are_the_minimum_and_the_steepest_descent() {
        // A valley: the loss falls fastest around step 15 and is lowest at step 25.
        let lrs: Vec<f64> = (0..40).map(|i| 10f64.powf(-7.0 + i as f64 * 0.2)).collect();
        let loss: Vec<f64> = (0..40)
            .map(|i| 2.0 - (((i as f64) - 15.0) / 4.0).tanh() + 0.01 * (i as f64 - 25.0).powi(2) / 10.0)
            .collect();
        let (minimum, steepest) = suggest(&lrs, &loss);
        let argmin = (0..40).min_by(|&a, &b| loss[a].total_cmp(&loss[b])).unwrap();
        assert_eq!(minimum, lrs[argmin]);
        assert_eq!(steepest, Some(lrs[15]));
        assert_eq!(suggestion(minimum, steepest, lrs[39]), minimum / 10.0);
        // Still falling at the end: the minimum is the sweep's end, the steepest descent is suggested.
        let (minimum, steepest) = suggest(&lrs[..20], &loss[..20]);
        assert_eq!((minimum, steepest), (lrs[19], Some(lrs[15])));
        assert_eq!(suggestion(minimum, steepest, lrs[19]), lrs[15]);
        // Lowest at the first rate: no descent to measure.
        let rising: Vec<f64> = (0..30).map(|i| 1.0 + i as f64).collect();
        assert_eq!(suggest(&lrs[..30], &rising), (lrs[0], None));
    }
}
