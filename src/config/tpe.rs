//! `[search] method = "tpe"`: the Tree-structured Parzen Estimator (Bergstra et al. 2011) as
//! Optuna's `TPESampler` runs it by default: each key of the space on its own (not
//! multivariate); the first `startup_trials` (10) trials random, drawn as random search
//! draws them; then the finished trials are split by their value into the best
//! gamma(n) = min(ceil(0.1 n), 25) and the rest, a Parzen estimator l(x) is fitted to the
//! values of the best and g(x) to the rest (each observation a truncated normal, or for a
//! `choice` a categorical kernel, plus a prior component of weight 1 over the whole range;
//! bandwidths from the neighbouring observations, clipped by Optuna's "magic clip"),
//! `candidates` (24) values are drawn from l and the one with the highest log l(x) - log g(x)
//! is proposed. Log-uniform keys are modelled in log space, integers as a discretised
//! truncated normal. A trial's draws come from its own stream of the seed, so the search is
//! reproducible from the seed and the finished trials' values.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use statrs::distribution::{Continuous, ContinuousCDF, Normal};

use super::search::{Dimension, Dist, Search, round4};

/// Optuna's defaults.
pub(crate) const STARTUP_TRIALS: usize = 10;
pub(crate) const CANDIDATES: usize = 24;
const PRIOR_WEIGHT: f64 = 1.0;

/// TPE's settings (`startup_trials`, `candidates`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tpe {
    pub startup_trials: usize,
    pub candidates: usize,
}

impl Default for Tpe {
    fn default() -> Self {
        Tpe { startup_trials: STARTUP_TRIALS, candidates: CANDIDATES }
    }
}

/// Optuna's `default_gamma`: how many of `n` finished trials count as the good ones.
fn gamma(n: usize) -> usize {
    n.div_ceil(10).min(25)
}

/// Optuna's `default_weights`: equal below 25 observations, older ones ramped down above.
fn weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp = n - 25;
    let mut w: Vec<f64> = (0..ramp)
        .map(|i| {
            if ramp == 1 {
                1.0 / n as f64
            } else {
                1.0 / n as f64 + (1.0 - 1.0 / n as f64) * i as f64 / (ramp - 1) as f64
            }
        })
        .collect();
    w.extend(std::iter::repeat_n(1.0, 25));
    w
}

/// One key's mixture: a kernel per observation and the prior, with normalised weights.
enum Parzen {
    /// Truncated normals on [low, high] (with `step`: discretised to it), in the modelled space.
    Numeric { mus: Vec<f64>, sigmas: Vec<f64>, weights: Vec<f64>, low: f64, high: f64, step: Option<f64> },
    /// Per kernel, a probability for each choice.
    Categorical { kernels: Vec<Vec<f64>>, weights: Vec<f64> },
}

/// The modelled space of a numeric dimension: (low, high, step), values mapped into it.
fn space_of(dist: &Dist) -> Option<(f64, f64, Option<f64>)> {
    match dist {
        Dist::LogUniform(lo, hi) => Some((lo.ln(), hi.ln(), None)),
        Dist::Uniform(lo, hi) => Some((*lo, *hi, None)),
        Dist::IntUniform(lo, hi) => Some((*lo as f64, *hi as f64, Some(1.0))),
        Dist::Choice(_) => None,
    }
}

/// A value of the dimension in its modelled space (the choice's index for `choice`).
fn modelled(dist: &Dist, v: &toml::Value) -> f64 {
    let num = v.as_float().or_else(|| v.as_integer().map(|i| i as f64)).unwrap_or(f64::NAN);
    match dist {
        Dist::LogUniform(..) => num.ln(),
        Dist::Choice(values) => values.iter().position(|c| c == v).map_or(f64::NAN, |i| i as f64),
        _ => num,
    }
}

impl Parzen {
    /// Optuna's `_ParzenEstimator` of one parameter over `obs` (in trial order).
    fn fit(dist: &Dist, obs: &[f64]) -> Parzen {
        let mut weights = weights(obs.len());
        weights.push(PRIOR_WEIGHT);
        let total: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= total);
        let Some((low, high, step)) = space_of(dist) else {
            let Dist::Choice(choices) = dist else { unreachable!("numeric dimensions have a space") };
            let n = choices.len();
            let kernels = obs.len() + 1;
            let mut rows = vec![vec![PRIOR_WEIGHT / kernels as f64; n]; kernels];
            for (row, &o) in rows.iter_mut().zip(obs) {
                row[o as usize] += 1.0;
            }
            for row in &mut rows {
                let sum: f64 = row.iter().sum();
                row.iter_mut().for_each(|p| *p /= sum);
            }
            return Parzen::Categorical { kernels: rows, weights };
        };
        let s = step.unwrap_or(0.0);
        // A kernel's bandwidth: the larger gap to its neighbours among the observations,
        // the range's ends (widened by half a step) outside them.
        let mut order: Vec<usize> = (0..obs.len()).collect();
        order.sort_by(|&a, &b| obs[a].total_cmp(&obs[b]));
        let mut ends = vec![low - s / 2.0];
        ends.extend(order.iter().map(|&i| obs[i]));
        ends.push(high + s / 2.0);
        let m = obs.len();
        let mut sorted_sigmas: Vec<f64> = (1..=m).map(|i| (ends[i] - ends[i - 1]).max(ends[i + 1] - ends[i])).collect();
        // consider_endpoints = False: the outermost kernels take their inner neighbour's gap.
        if ends.len() >= 4 {
            sorted_sigmas[0] = ends[2] - ends[1];
            sorted_sigmas[m - 1] = ends[m] - ends[m - 1];
        }
        let mut sigmas = vec![0.0; m];
        for (k, &i) in order.iter().enumerate() {
            sigmas[i] = sorted_sigmas[k];
        }
        let prior_mu = 0.5 * (low + high);
        let range = high - low + s;
        let minsigma = range / (100f64).min(1.0 + (obs.len() + 1) as f64);
        sigmas.iter_mut().for_each(|x| *x = x.clamp(minsigma, range));
        let mut mus = obs.to_vec();
        mus.push(prior_mu);
        sigmas.push(range);
        Parzen::Numeric { mus, sigmas, weights, low, high, step }
    }

    /// `n` draws: a kernel by the weights, then a value from it.
    fn sample(&self, rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
        let pick = |rng: &mut ChaCha8Rng, weights: &[f64]| {
            let u: f64 = rng.random();
            let mut acc = 0.0;
            weights
                .iter()
                .position(|w| {
                    acc += w;
                    u < acc
                })
                .unwrap_or(weights.len() - 1)
        };
        (0..n)
            .map(|_| match self {
                Parzen::Numeric { mus, sigmas, weights, low, high, step } => {
                    let k = pick(rng, weights);
                    let s = step.unwrap_or(0.0);
                    let x = trunc_normal_draw(rng, mus[k], sigmas[k], low - s / 2.0, high + s / 2.0);
                    match step {
                        Some(st) => (low + ((x - low) / st).round() * st).clamp(*low, *high),
                        None => x,
                    }
                }
                Parzen::Categorical { kernels, weights } => {
                    let k = pick(rng, weights);
                    pick(rng, &kernels[k]) as f64
                }
            })
            .collect()
    }

    /// The mixture's log density (or log probability, for steps and choices) at `x`.
    fn log_pdf(&self, x: f64) -> f64 {
        let terms: Vec<f64> = match self {
            Parzen::Numeric { mus, sigmas, weights, low, high, step } => (0..mus.len())
                .map(|k| {
                    let n = Normal::new(mus[k], sigmas[k]).expect("a positive bandwidth");
                    let s = step.unwrap_or(0.0);
                    let mass = n.cdf(high + s / 2.0) - n.cdf(low - s / 2.0);
                    let p = match step {
                        Some(st) => (n.cdf(x + st / 2.0) - n.cdf(x - st / 2.0)) / mass,
                        None => n.pdf(x) / mass,
                    };
                    weights[k].ln() + p.max(f64::MIN_POSITIVE).ln()
                })
                .collect(),
            Parzen::Categorical { kernels, weights } => {
                (0..kernels.len()).map(|k| weights[k].ln() + kernels[k][x as usize].ln()).collect()
            }
        };
        let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
    }
}

/// A draw of the normal (mu, sigma) truncated to [a, b], by the inverse CDF.
fn trunc_normal_draw(rng: &mut ChaCha8Rng, mu: f64, sigma: f64, a: f64, b: f64) -> f64 {
    let n = Normal::new(mu, sigma).expect("a positive bandwidth");
    let (lo, hi) = (n.cdf(a), n.cdf(b));
    let u = lo + (hi - lo) * rng.random::<f64>();
    n.inverse_cdf(u.clamp(f64::MIN_POSITIVE, 1.0 - f64::EPSILON)).clamp(a, b)
}

/// The value of `dim` proposed from `obs` (modelled values in trial order, and whether each
/// is among the good trials), from `candidates` draws of l.
fn propose_one(dim: &Dimension, good: &[f64], bad: &[f64], candidates: usize, rng: &mut ChaCha8Rng) -> toml::Value {
    let (l, g) = (Parzen::fit(&dim.dist, good), Parzen::fit(&dim.dist, bad));
    let draws = l.sample(rng, candidates);
    let score = |x: f64| l.log_pdf(x) - g.log_pdf(x);
    let best = draws.iter().copied().fold((f64::NAN, f64::NEG_INFINITY), |(bx, bs), x| {
        let s = score(x);
        if s > bs { (x, s) } else { (bx, bs) }
    });
    match &dim.dist {
        Dist::LogUniform(lo, hi) => toml::Value::Float(round4(best.0.exp()).clamp(*lo, *hi)),
        Dist::Uniform(lo, hi) => toml::Value::Float(round4(best.0).clamp(*lo, *hi)),
        Dist::IntUniform(..) => toml::Value::Integer(best.0.round() as i64),
        Dist::Choice(values) => values[best.0 as usize].clone(),
    }
}

impl Search {
    /// Trial `t`'s values under TPE, from the finished trials before it: each one's values
    /// and its monitored result (`higher_is_better` says which way is good; a result that is
    /// not finite, a failed or diverged trial's, ranks below every other). Before
    /// `startup_trials` finished trials, the random search's draw of trial `t`.
    pub fn propose(&self, t: usize, history: &[(Vec<toml::Value>, f64)], higher_is_better: bool) -> Vec<toml::Value> {
        let (mut finished, failed): (Vec<_>, Vec<_>) = history.iter().partition(|h| h.1.is_finite());
        let key = |h: &(Vec<toml::Value>, f64)| if higher_is_better { -h.1 } else { h.1 };
        // Stable: equal results keep the trials' order.
        finished.sort_by(|a, b| key(a).total_cmp(&key(b)));
        let ranked: Vec<&[toml::Value]> = finished.iter().chain(&failed).map(|h| h.0.as_slice()).collect();
        self.propose_ranked(t, &ranked)
    }

    /// Trial `t`'s values under TPE from the observed trials' values, best first (the
    /// ranking is the caller's: by result, or within halving by how far a trial went).
    /// Before `startup_trials` observations, the random search's draw of trial `t`.
    pub fn propose_ranked(&self, t: usize, ranked: &[&[toml::Value]]) -> Vec<toml::Value> {
        let tpe = self.tpe.unwrap_or_default();
        if ranked.len() < tpe.startup_trials.max(1) {
            return self.sample(t);
        }
        // Each part in rank order, as Optuna 5 builds its estimators (the order weighs
        // observations from the 26th on).
        let (good, bad) = ranked.split_at(gamma(ranked.len()));
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(t as u64);
        self.space
            .iter()
            .enumerate()
            .map(|(d, dim)| {
                let values =
                    |part: &[&[toml::Value]]| part.iter().map(|v| modelled(&dim.dist, &v[d])).collect::<Vec<_>>();
                propose_one(dim, &values(good), &values(bad), tpe.candidates, &mut rng)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dim(dist: Dist) -> Dimension {
        Dimension { key: vec!["x".into()], location: vec![], dist }
    }

    #[test]
    fn gamma_and_weights_are_optunas() {
        assert_eq!([gamma(1), gamma(10), gamma(11), gamma(300)], [1, 1, 2, 25]);
        assert_eq!(weights(3), [1.0; 3]);
        let w = weights(30);
        assert_eq!(w.len(), 30);
        assert!((w[0] - 1.0 / 30.0).abs() < 1e-15 && w[4] == 1.0 && w[29] == 1.0);
    }

    #[test]
    fn bandwidths_follow_the_neighbours_and_the_magic_clip() {
        // Observations 3, 2 and 9 on [0, 10]: sorted 2, 3, 9 between 0 and 10.
        let Parzen::Numeric { mus, sigmas, weights, .. } = Parzen::fit(&Dist::Uniform(0.0, 10.0), &[3.0, 2.0, 9.0])
        else {
            panic!("numeric")
        };
        assert_eq!(mus, [3.0, 2.0, 9.0, 5.0]);
        // 3: the larger of its gaps 1 and 6; 2 and 9 (outermost) their inner gaps 1 and 6; 1
        // clipped up to range / (1 + kernels) = 2; the prior (last) has the range.
        assert_eq!(sigmas, [6.0, 2.0, 6.0, 10.0]);
        assert_eq!(weights, [0.25; 4]);
    }

    #[test]
    fn the_density_integrates_to_one_and_draws_stay_in_range() {
        let p = Parzen::fit(&Dist::Uniform(-1.0, 3.0), &[0.2, 0.25, 2.5]);
        let n = 40_000;
        let integral: f64 =
            (0..n).map(|i| p.log_pdf(-1.0 + 4.0 * (i as f64 + 0.5) / n as f64).exp() * 4.0 / n as f64).sum();
        assert!((integral - 1.0).abs() < 1e-3, "{integral}");
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert!(p.sample(&mut rng, 500).iter().all(|x| (-1.0..=3.0).contains(x)));
        let ints = Parzen::fit(&Dist::IntUniform(2, 5), &[3.0]);
        let total: f64 = (2..=5).map(|k| ints.log_pdf(k as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        let cat = Parzen::fit(&Dist::Choice(vec![1.into(), 2.into(), 3.into()]), &[1.0, 1.0]);
        assert!((0..3).map(|k| cat.log_pdf(k as f64).exp()).sum::<f64>() - 1.0 < 1e-12);
        assert!(cat.log_pdf(1.0) > cat.log_pdf(0.0));
    }

    /// Each trial's values and result.
    type History = Vec<(Vec<toml::Value>, f64)>;

    /// A 40-trial TPE search of x on [0, 10] minimising `objective` (NaN: the trial failed):
    /// the search, its history, and random search's draws of the same trials.
    fn search_1d(seed: u64, objective: impl Fn(f64) -> f64) -> (Search, History, Vec<f64>) {
        let s = Search {
            trials: 40,
            seed,
            space: vec![dim(Dist::Uniform(0.0, 10.0))],
            halving: None,
            tpe: Some(Tpe::default()),
        };
        let mut history: History = vec![];
        for t in 0..40 {
            let v = s.propose(t, &history, false);
            let x = v[0].as_float().unwrap();
            history.push((v, objective(x)));
        }
        let random = (0..40).map(|t| s.sample(t)[0].as_float().unwrap()).collect();
        (s, history, random)
    }

    fn x_of(h: &(Vec<toml::Value>, f64)) -> f64 {
        h.0[0].as_float().unwrap()
    }

    #[test]
    fn tpe_proposes_nearer_the_optimum_than_random_search_and_is_reproducible() {
        // The objective is |x - 7| on [0, 10], minimised; trials 10 to 39 of five searches.
        let (mut tpe_sum, mut random_sum) = (0.0, 0.0);
        for seed in 0..5 {
            let (s, history, random) = search_1d(seed, |x| (x - 7.0).abs());
            for (t, h) in history.iter().enumerate().take(STARTUP_TRIALS) {
                assert_eq!(x_of(h), random[t], "startup trials are random search's");
            }
            tpe_sum += history[STARTUP_TRIALS..].iter().map(|h| (x_of(h) - 7.0).abs()).sum::<f64>();
            random_sum += random[STARTUP_TRIALS..].iter().map(|x| (x - 7.0).abs()).sum::<f64>();
            assert_eq!(s.propose(25, &history[..25], false), s.propose(25, &history[..25], false));
        }
        assert!(tpe_sum < random_sum * 0.75, "TPE {tpe_sum} against random {random_sum} over 150 trials");
    }

    #[test]
    fn failed_trials_count_as_the_worst_results_and_are_avoided() {
        // |x - 3| on [0, 10], minimised, where every x above 6 fails (diverges: no result).
        let (mut failing, mut random_failing) = (0, 0);
        for seed in 0..5 {
            let (s, history, random) = search_1d(seed, |x| if x > 6.0 { f64::NAN } else { (x - 3.0).abs() });
            failing += history[STARTUP_TRIALS..].iter().filter(|h| x_of(h) > 6.0).count();
            random_failing += random[STARTUP_TRIALS..].iter().filter(|x| **x > 6.0).count();
            // The failures count toward the startup trials: trial 10 is proposed by the model.
            assert_ne!(s.propose(STARTUP_TRIALS, &history[..STARTUP_TRIALS], false), s.sample(STARTUP_TRIALS));
        }
        assert!(failing * 3 < random_failing, "TPE proposed {failing} failing trials, random search {random_failing}");
    }

    #[test]
    fn densities_match_optunas_parzen_estimator_on_the_committed_fixture() {
        let f: serde_json::Value = serde_json::from_str(include_str!("../../tests/fixtures/tpe.json")).unwrap();
        let floats = |v: &serde_json::Value| crate::testing::floats(v);
        for (name, case) in f.as_object().unwrap().iter().filter(|(k, _)| *k != "optuna") {
            let (low, high) = (case["low"].as_f64().unwrap(), case["high"].as_f64().unwrap());
            let dist = match case["kind"].as_str().unwrap() {
                "uniform" => Dist::Uniform(low, high),
                "log_uniform" => Dist::LogUniform(low, high),
                "int_uniform" => Dist::IntUniform(low as i64, high as i64),
                _ => Dist::Choice((0..=high as i64).map(toml::Value::Integer).collect()),
            };
            let log = matches!(dist, Dist::LogUniform(..));
            let obs: Vec<f64> =
                floats(&case["observations"]).into_iter().map(|o| if log { o.ln() } else { o }).collect();
            let p = Parzen::fit(&dist, &obs);
            for (x, want) in floats(&case["points"]).into_iter().zip(floats(&case["log_pdf"])) {
                // Optuna gives a log-uniform key's density over ln x, as runner models it.
                let ours = p.log_pdf(if log { x.ln() } else { x });
                assert!((ours - want).abs() < 1e-9, "{name} at {x}: ours {ours}, optuna {want}");
            }
        }
    }
}
