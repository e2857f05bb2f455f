//! What the report computes from runs: the keys that set an experiment's runs apart, the
//! runs that replicate one configuration (they differ only in `seed`, `data.fold` or
//! `data.split_seed`), a
//! measure's mean and spread over them, and the paired difference of two configurations
//! measured on the same seeds or folds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use statrs::distribution::{ContinuousCDF, StudentsT};

use super::RunEntry;
use crate::record::summary::Summary;

/// The keys whose values make replicates: runs that differ only in these measure one
/// configuration.
pub(crate) const REPLICATE_KEYS: [&str; 3] = ["seed", "data.fold", "data.split_seed"];

/// What the report and `runner ls` rank by (`--by`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measure {
    /// val_acc at the best epoch (by the monitored metric).
    BestValAcc,
    /// val_acc at the last epoch.
    FinalValAcc,
    /// The best weights on the test split.
    TestAcc,
    /// The monitored metric at the best epoch.
    BestValue,
    /// The monitored metric at the last epoch.
    FinalValue,
    /// val_acc at a phase's best epoch (`PHASE.best_val_acc`) or its last (`PHASE.final_val_acc`).
    Phase { phase: String, last: bool },
}

impl FromStr for Measure {
    type Err = String;

    fn from_str(s: &str) -> Result<Measure, String> {
        Ok(match s {
            "best_val_acc" => Measure::BestValAcc,
            "final_val_acc" => Measure::FinalValAcc,
            "test_acc" => Measure::TestAcc,
            "best_value" => Measure::BestValue,
            "final_value" => Measure::FinalValue,
            _ => match s.rsplit_once('.') {
                Some((phase, "best_val_acc")) if !phase.is_empty() => {
                    Measure::Phase { phase: phase.into(), last: false }
                }
                Some((phase, "final_val_acc")) if !phase.is_empty() => {
                    Measure::Phase { phase: phase.into(), last: true }
                }
                _ => {
                    return Err(format!(
                        "unknown measure `{s}`: expected best_val_acc, final_val_acc, test_acc, best_value \
                         (the monitored metric at the best epoch), final_value, or PHASE.best_val_acc / \
                         PHASE.final_val_acc for a phase's own best or last epoch"
                    ));
                }
            },
        })
    }
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Measure::BestValAcc => f.write_str("best_val_acc"),
            Measure::FinalValAcc => f.write_str("final_val_acc"),
            Measure::TestAcc => f.write_str("test_acc"),
            Measure::BestValue => f.write_str("best_value"),
            Measure::FinalValue => f.write_str("final_value"),
            Measure::Phase { phase, last: false } => write!(f, "{phase}.best_val_acc"),
            Measure::Phase { phase, last: true } => write!(f, "{phase}.final_val_acc"),
        }
    }
}

impl Measure {
    /// The run's value of this measure, when it has a finite one.
    pub fn of(&self, s: &Summary) -> Option<f64> {
        let phase = |name: &str| s.phases.iter().find(|p| p.phase == name);
        match self {
            Measure::BestValAcc => s.best_val_acc,
            Measure::FinalValAcc => s.final_val_acc,
            Measure::TestAcc => s.test_acc,
            Measure::BestValue => s.best_value,
            Measure::FinalValue => s.final_value,
            Measure::Phase { phase: name, last: false } => phase(name).and_then(|p| p.best_val_acc),
            Measure::Phase { phase: name, last: true } => phase(name).map(|p| p.final_val_acc),
        }
        .filter(|x| x.is_finite())
    }

    /// Whether more is better: accuracies, and the monitored metric when it is one (a loss is
    /// better lower).
    pub fn higher_is_better(&self, runs: &[&RunEntry]) -> bool {
        match self {
            Measure::BestValue | Measure::FinalValue => {
                runs.first().is_none_or(|r| r.summary.monitor.higher_is_better())
            }
            _ => true,
        }
    }

    /// Orders two values best first (a value before none).
    fn order(&self, higher: bool, a: Option<f64>, b: Option<f64>) -> std::cmp::Ordering {
        match (a, b) {
            (Some(x), Some(y)) if higher => y.total_cmp(&x),
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    }
}

/// The config keys whose values differ between runs: the grid's axes (and any
/// edit made to the spec between runs).
pub(crate) fn varying_keys(runs: &[&RunEntry]) -> Vec<String> {
    let keys: BTreeSet<&String> = runs.iter().flat_map(|r| r.config.keys()).collect();
    keys.into_iter()
        .filter(|k| {
            let mut values = runs.iter().map(|r| r.config.get(*k));
            let first = values.next().flatten();
            values.any(|v| v != first)
        })
        .cloned()
        .collect()
}

/// Runs best first by `by` (runs without a value last, then by run id).
pub(crate) fn ranked<'a>(runs: &[&'a RunEntry], by: &Measure) -> Vec<&'a RunEntry> {
    let higher = by.higher_is_better(runs);
    let mut v = runs.to_vec();
    v.sort_by(|a, b| {
        by.order(higher, by.of(&a.summary), by.of(&b.summary)).then_with(|| a.summary.run_id.cmp(&b.summary.run_id))
    });
    v
}

/// The runs grouped by experiment, in name order.
pub(crate) fn by_experiment(entries: &[RunEntry]) -> BTreeMap<&str, Vec<&RunEntry>> {
    let mut groups: BTreeMap<&str, Vec<&RunEntry>> = BTreeMap::new();
    for e in entries {
        groups.entry(e.summary.experiment.as_str()).or_default().push(e);
    }
    groups
}

/// A measure over replicates: its mean, sample standard deviation (none for one value) and count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub mean: f64,
    pub sd: Option<f64>,
    pub n: usize,
}

/// The mean and spread of the finite values.
pub(crate) fn spread(values: impl Iterator<Item = Option<f64>>) -> Option<Spread> {
    let v: Vec<f64> = values.flatten().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.len() > 1).then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    Some(Spread { mean, sd, n: v.len() })
}

/// Runs of one experiment that differ only in their replicate keys: one configuration, replicated.
pub(crate) struct Replicates<'a> {
    /// The values of the experiment's varying keys other than the replicate keys.
    pub values: Vec<(String, String)>,
    pub runs: Vec<&'a RunEntry>,
}

/// Which replicate a run is: its values of the replicate keys (`seed=1 data.fold=2`).
fn replicate_of(run: &RunEntry) -> String {
    REPLICATE_KEYS
        .iter()
        .map(|k| format!("{k}={}", run.config.get(*k).map_or("", String::as_str)))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Replicates<'_> {
    pub fn spread(&self, by: &Measure) -> Option<Spread> {
        spread(self.runs.iter().map(|r| by.of(&r.summary)))
    }

    /// The replicates' seeds and folds, where they vary, in ascending order: `seed 0 1 2`, `fold 0 1 2`.
    pub fn replicates(&self) -> String {
        let mut parts = vec![];
        for (key, word) in [("seed", "seed"), ("data.fold", "fold"), ("data.split_seed", "split")] {
            let mut values: Vec<String> = self
                .runs
                .iter()
                .filter_map(|r| r.config.get(key).cloned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            values.sort_by_key(|s| (s.parse::<i64>().unwrap_or(i64::MAX), s.clone()));
            if values.len() > 1 {
                parts.push(format!("{word} {}", values.join(" ")));
            }
        }
        parts.join(", ")
    }
}

/// The experiment's runs grouped by configuration (every varying key but the replicate keys),
/// best mean of `by` first; `None` when no two runs are replicates of one configuration.
pub(crate) fn replicate_groups<'a>(
    runs: &[&'a RunEntry],
    varying: &[String],
    by: &Measure,
) -> Option<Vec<Replicates<'a>>> {
    if !varying.iter().any(|k| REPLICATE_KEYS.contains(&k.as_str())) {
        return None;
    }
    let keys: Vec<&String> = varying.iter().filter(|k| !REPLICATE_KEYS.contains(&k.as_str())).collect();
    let mut groups: Vec<Replicates<'a>> = vec![];
    for r in ranked(runs, by) {
        let values: Vec<(String, String)> =
            keys.iter().map(|k| ((*k).clone(), r.config.get(*k).cloned().unwrap_or_default())).collect();
        match groups.iter_mut().find(|g| g.values == values) {
            Some(g) => g.runs.push(r),
            None => groups.push(Replicates { values, runs: vec![r] }),
        }
    }
    if groups.iter().all(|g| g.runs.len() == 1) {
        return None;
    }
    let higher = by.higher_is_better(runs);
    groups.sort_by(|a, b| by.order(higher, a.spread(by).map(|s| s.mean), b.spread(by).map(|s| s.mean)));
    Some(groups)
}

/// The paired difference `a - b` of a measure over the replicates (seeds, folds) both
/// configurations have: its mean and 95% confidence interval (Student's t with n - 1
/// degrees of freedom).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Paired {
    pub n: usize,
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

impl Paired {
    /// Whether the interval holds 0: the difference is not told apart from replicate noise.
    pub fn within_noise(&self) -> bool {
        self.low <= 0.0 && self.high >= 0.0
    }

    /// `+0.0312 [0.0105, 0.0519]`, and `within noise` when the interval holds 0.
    pub fn describe(&self) -> String {
        let noise = if self.within_noise() { ", within noise" } else { "" };
        format!("{:+.4} [{:+.4}, {:+.4}] (n = {}{noise})", self.mean, self.low, self.high, self.n)
    }
}

/// The paired difference of `by` between `a` and `b` over the replicates both measured;
/// `None` with fewer than two such pairs (no interval to give).
pub(crate) fn paired(a: &Replicates, b: &Replicates, by: &Measure) -> Option<Paired> {
    let b_values: BTreeMap<String, f64> =
        b.runs.iter().filter_map(|r| Some((replicate_of(r), by.of(&r.summary)?))).collect();
    let diffs: Vec<f64> =
        a.runs.iter().filter_map(|r| Some(by.of(&r.summary)? - b_values.get(&replicate_of(r))?)).collect();
    paired_interval(&diffs)
}

/// Mean and 95% interval of paired differences; `None` for fewer than two.
pub(crate) fn paired_interval(diffs: &[f64]) -> Option<Paired> {
    let s = spread(diffs.iter().map(|d| Some(*d)))?;
    let sd = s.sd?;
    let t = StudentsT::new(0.0, 1.0, (s.n - 1) as f64).ok()?.inverse_cdf(0.975);
    let half = t * sd / (s.n as f64).sqrt();
    Some(Paired { n: s.n, mean: s.mean, low: s.mean - half, high: s.mean + half })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_interval_uses_students_t() {
        // Differences 0.01, 0.03, 0.05: mean 0.03, sd 0.02, t(0.975, 2) = 4.3027.
        let p = paired_interval(&[0.01, 0.03, 0.05]).unwrap();
        assert_eq!(p.n, 3);
        assert!((p.mean - 0.03).abs() < 1e-12);
        let half = 4.302_652_729_911 * 0.02 / 3f64.sqrt();
        assert!((p.high - (0.03 + half)).abs() < 1e-6 && (p.low - (0.03 - half)).abs() < 1e-6, "{p:?}");
        assert!(p.within_noise(), "0.03 ± 0.0497 holds 0");
        // A steady difference is told apart from noise.
        let p = paired_interval(&[0.030, 0.031, 0.029, 0.030]).unwrap();
        assert!(!p.within_noise() && p.low > 0.0, "{p:?}");
        assert!(p.describe().starts_with("+0.0300 [+0.0"), "{}", p.describe());
        assert!(paired_interval(&[0.5]).is_none(), "one pair has no interval");
    }

    #[test]
    fn measures_parse_and_print_alike() {
        for text in ["best_val_acc", "final_val_acc", "test_acc", "best_value", "final_value", "fine.best_val_acc"] {
            assert_eq!(text.parse::<Measure>().unwrap().to_string(), text);
        }
        assert_eq!(
            "fine.tune.final_val_acc".parse::<Measure>().unwrap(),
            Measure::Phase { phase: "fine.tune".into(), last: true }
        );
        let err = "val_accuracy".parse::<Measure>().unwrap_err();
        assert!(err.contains("unknown measure `val_accuracy`") && err.contains("final_val_acc"), "{err}");
    }

    #[test]
    fn one_value_has_no_spread() {
        assert_eq!(spread([Some(0.6875)].into_iter()).unwrap().sd, None);
        let s = spread([Some(0.5), Some(0.7), None, Some(f64::NAN)].into_iter()).unwrap();
        assert_eq!(s.n, 2);
        assert!((s.sd.unwrap() - 0.141_421_356).abs() < 1e-6);
        assert!(spread([None].into_iter()).is_none());
    }
}
