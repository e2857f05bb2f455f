//! `runner compare A B`: two runs side by side: what differs in their configs and data,
//! their metrics epoch by epoch, and the validation images whose prediction changed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::page::{fmt_opt, plain};
use super::{RunEntry, read_entry};
use crate::record::run_dir::RunDir;
use crate::train::metrics::EpochRecord;

/// The most changed predictions listed one by one.
const LISTED: usize = 20;

/// One row of val_predictions.csv.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Predicted {
    pub label: String,
    pub predicted: String,
    /// The predicted class's probability, and the true class's.
    pub confidence: f64,
    pub p_true: f64,
}

/// A run's val_predictions.csv by path, or why there is none.
pub(super) fn predictions(run: &RunEntry) -> Result<BTreeMap<String, Predicted>, String> {
    let path = run.dir.file(RunDir::VAL_PREDICTIONS);
    let mut reader = csv::Reader::from_path(&path).map_err(|_| {
        format!(
            "{} has no {} (a run made before runner kept them, or one that did not finish)",
            run.summary.run_id,
            RunDir::VAL_PREDICTIONS
        )
    })?;
    let mut out = BTreeMap::new();
    for (i, row) in reader.records().enumerate() {
        let row = row.map_err(|e| format!("{}: row {}: {e}", path.display(), i + 2))?;
        let cell = |c: usize| row.get(c).unwrap_or_default().to_string();
        let number = |c: usize| cell(c).parse().unwrap_or(f64::NAN);
        out.insert(cell(0), Predicted { label: cell(1), predicted: cell(2), confidence: number(4), p_true: number(5) });
    }
    Ok(out)
}

/// The run's line: id, experiment, name, status and results.
fn describe(tag: &str, r: &RunEntry) -> String {
    let s = &r.summary;
    let name = if s.name.is_empty() { String::new() } else { format!(" ({})", s.name) };
    format!(
        "{tag}: {}{name} of {}, {}: best val_acc {} at epoch {}, final val_acc {}, test_acc {}  [{}]",
        s.run_id,
        s.experiment,
        s.status.name(),
        fmt_opt(s.best_val_acc),
        s.best_epoch.map_or("-".into(), |e| e.to_string()),
        fmt_opt(s.final_val_acc),
        s.test_acc.map_or("-".into(), |t| format!("{t:.4}")),
        r.dir.display()
    )
}

/// The config keys whose values differ, with both values.
fn config_diff(a: &RunEntry, b: &RunEntry, out: &mut String) {
    let keys: BTreeSet<&String> = a.config.keys().chain(b.config.keys()).collect();
    let value = |r: &RunEntry, k: &str| r.config.get(k).map_or("(unset)".to_string(), |v| plain(v).to_string());
    let differ: Vec<&String> = keys.into_iter().filter(|k| a.config.get(*k) != b.config.get(*k)).collect();
    if differ.is_empty() {
        let _ = writeln!(out, "config: the same");
    } else {
        let _ = writeln!(out, "config: {} key(s) differ (A -> B)", differ.len());
        for k in differ {
            let _ = writeln!(out, "  {k}: {} -> {}", value(a, k), value(b, k));
        }
    }
    if a.summary.manifest_sha256 != b.summary.manifest_sha256 {
        let _ = writeln!(
            out,
            "data: other files or another split (manifest sha256 {} -> {})",
            &a.summary.manifest_sha256[..a.summary.manifest_sha256.len().min(12)],
            &b.summary.manifest_sha256[..b.summary.manifest_sha256.len().min(12)]
        );
    } else {
        let _ = writeln!(out, "data: the same files and split");
    }
}

/// Epoch by epoch: train loss, val loss and val accuracy of both, and val accuracy's change.
fn metric_diff(a: &[EpochRecord], b: &[EpochRecord], out: &mut String) {
    let _ = writeln!(
        out,
        "\n{:>5}  {:<12} {:>10} {:>10}  {:>10} {:>10}  {:>8} {:>8} {:>8}",
        "epoch", "phase", "train_loss", "(B)", "val_loss", "(B)", "val_acc", "(B)", "B - A"
    );
    let epochs = a.len().max(b.len());
    let cell = |r: Option<&EpochRecord>, f: fn(&EpochRecord) -> f64, p: usize| {
        r.map_or("-".to_string(), |r| format!("{:.p$}", f(r)))
    };
    for i in 0..epochs {
        let (x, y) = (a.get(i), b.get(i));
        let phase = x.or(y).map_or("", |r| r.phase.as_str());
        let delta = match (x, y) {
            (Some(x), Some(y)) => format!("{:+.4}", y.val_acc - x.val_acc),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:>5}  {:<12} {:>10} {:>10}  {:>10} {:>10}  {:>8} {:>8} {:>8}",
            i + 1,
            phase,
            cell(x, |r| r.train_loss, 4),
            cell(y, |r| r.train_loss, 4),
            cell(x, |r| r.val_loss, 4),
            cell(y, |r| r.val_loss, 4),
            cell(x, |r| r.val_acc, 4),
            cell(y, |r| r.val_acc, 4),
            delta
        );
    }
}

/// The validation images both runs predicted, and those whose prediction changed.
fn prediction_diff(a: &RunEntry, b: &RunEntry, out: &mut String) {
    let (pa, pb) = match (predictions(a), predictions(b)) {
        (Ok(pa), Ok(pb)) => (pa, pb),
        (Err(why), _) | (_, Err(why)) => {
            let _ = writeln!(out, "\nvalidation predictions: cannot compare: {why}");
            return;
        }
    };
    let shared: Vec<(&String, &Predicted, &Predicted)> =
        pa.iter().filter_map(|(path, x)| Some((path, x, pb.get(path)?))).collect();
    let changed: Vec<&(&String, &Predicted, &Predicted)> =
        shared.iter().filter(|(_, x, y)| x.predicted != y.predicted).collect();
    let fixed = changed.iter().filter(|(_, _, y)| y.predicted == y.label).count();
    let broken = changed.iter().filter(|(_, x, _)| x.predicted == x.label).count();
    let _ = writeln!(
        out,
        "\nvalidation predictions (best weights): {} image(s) in both runs{}; {} predicted differently: \
         {fixed} right only in B, {broken} right only in A, {} wrong in both",
        shared.len(),
        if shared.len() < pa.len().max(pb.len()) { " (the runs validate on other images too)" } else { "" },
        changed.len(),
        changed.len() - fixed - broken
    );
    for (path, x, y) in changed.iter().take(LISTED) {
        let _ = writeln!(
            out,
            "  {path}: label {}, A {} ({:.2}), B {} ({:.2})",
            x.label, x.predicted, x.confidence, y.predicted, y.confidence
        );
    }
    if changed.len() > LISTED {
        let _ = writeln!(out, "  ... and {} more", changed.len() - LISTED);
    }
}

/// `runner compare`'s text for the runs in folders `a` and `b`.
pub fn compare(a: &Path, b: &Path) -> Result<String> {
    let read = |p: &Path| read_entry(p).with_context(|| format!("{} is not a readable run folder", p.display()));
    let (a, b) = (read(a)?, read(b)?);
    let mut out = String::new();
    let _ = writeln!(out, "{}\n{}\n", describe("A", &a), describe("B", &b));
    config_diff(&a, &b, &mut out);
    metric_diff(&a.rows, &b.rows, &mut out);
    prediction_diff(&a, &b, &mut out);
    Ok(out)
}
