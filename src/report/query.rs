//! `runner ls`: the runs under some folders, filtered by their config or status
//! (`--where key=value`) and ranked by a measure, with their configurations' paired
//! differences when they replicate them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::page::{fmt_opt, fmt_paired, fmt_spread, plain};
use super::stats::{Measure, by_experiment, ranked, varying_keys};
use super::tables::compared;
use super::{RunEntry, collect, collect_experiment, read_entry};
use crate::config::experiment::run_name;
use crate::record::run_dir::RunDir;

/// The runs of `paths`, each a run folder, an experiment's folder or a runs root; and the
/// folders that could not be read, with why.
pub fn collect_paths(paths: &[PathBuf]) -> Result<(Vec<RunEntry>, Vec<String>)> {
    let (mut entries, mut unreadable) = (vec![], vec![]);
    for path in paths {
        if !path.is_dir() {
            bail!("{}: no such folder (a run folder, an experiment's folder or a runs root)", path.display());
        }
        if RunDir::at(path).summary().exists() {
            match read_entry(path) {
                Ok(e) => entries.push(e),
                Err(e) => unreadable.push(format!("{}: {e:#}", path.display())),
            }
            continue;
        }
        // An experiment's folder holds run folders; a runs root holds experiments' folders.
        let (found, bad) = if is_experiment(path) { collect_experiment(path)? } else { collect(path)? };
        entries.extend(found);
        unreadable.extend(bad);
    }
    Ok((entries, unreadable))
}

/// Whether `path`'s sub-folders are runs (each with a summary.json).
fn is_experiment(path: &Path) -> bool {
    std::fs::read_dir(path)
        .map(|d| d.filter_map(|e| e.ok()).any(|e| RunDir::at(e.path()).summary().exists()))
        .unwrap_or(false)
}

/// `--where key=value`: a config key (dotted, or its last part when that names one key of
/// the runs), `status`, `experiment` or `name`, and the value it must have.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub key: String,
    pub value: String,
}

impl std::str::FromStr for Filter {
    type Err = String;

    fn from_str(s: &str) -> Result<Filter, String> {
        match s.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok(Filter { key: k.trim().into(), value: v.trim().into() }),
            _ => Err(format!("--where {s}: expected key=value, e.g. --where lr=1e-3 or --where status=completed")),
        }
    }
}

/// Two values as equal as TOML reads them: numbers by value (`1e-3` is `0.001`), strings
/// with or without quotes.
fn same_value(config: &str, wanted: &str) -> bool {
    let number = |s: &str| plain(s).parse::<f64>().ok();
    match (number(config), number(wanted)) {
        (Some(a), Some(b)) => a == b,
        _ => plain(config) == plain(wanted),
    }
}

impl Filter {
    /// The config key this filter names among `keys`: itself, or the one key ending in `.key`.
    fn resolve<'a>(&'a self, keys: &'a [String]) -> Result<&'a str> {
        if keys.contains(&self.key) {
            return Ok(&self.key);
        }
        let ending: Vec<&String> = keys.iter().filter(|k| k.ends_with(&format!(".{}", self.key))).collect();
        match ending.as_slice() {
            [one] => Ok(one.as_str()),
            [] => bail!("--where {}: no run has a key `{}`", self.key, self.key),
            many => bail!(
                "--where {}: `{}` could be any of {}; name one in full",
                self.key,
                self.key,
                many.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    fn keeps(&self, run: &RunEntry, key: &str) -> bool {
        match self.key.as_str() {
            "status" => run.summary.status.name() == self.value,
            "experiment" => run.summary.experiment == self.value,
            "name" => run.summary.name == self.value,
            _ => run.config.get(key).is_some_and(|v| same_value(v, &self.value)),
        }
    }
}

/// The runs every filter keeps.
pub fn select(entries: Vec<RunEntry>, filters: &[Filter]) -> Result<Vec<RunEntry>> {
    let mut keys: Vec<String> = entries.iter().flat_map(|e| e.config.keys().cloned()).collect();
    keys.sort();
    keys.dedup();
    let mut resolved = vec![];
    for f in filters {
        let key = match f.key.as_str() {
            "status" | "experiment" | "name" => f.key.clone(),
            _ => f.resolve(&keys)?.to_string(),
        };
        resolved.push((f, key));
    }
    Ok(entries.into_iter().filter(|e| resolved.iter().all(|(f, key)| f.keeps(e, key))).collect())
}

/// Rows of cells as columns padded to their widest cell.
fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// `runner ls`'s text: per experiment, its runs ranked by `by` (name, status, the measure,
/// best and final val_acc, test_acc, epochs, folder) and, where runs replicate a
/// configuration, the configurations with n, mean ± sd and the paired difference from the first.
pub fn ls(entries: &[RunEntry], by: &Measure) -> String {
    let mut out = String::new();
    for (experiment, runs) in by_experiment(entries) {
        let varying = varying_keys(&runs);
        let _ = writeln!(out, "{experiment}: {} run(s), ranked by {by}", runs.len());
        // The measure's own column where it is not one of the three always shown.
        let own = !matches!(by, Measure::BestValAcc | Measure::FinalValAcc | Measure::TestAcc);
        let mut head =
            vec!["run id", "name", "status", "best val_acc", "final val_acc", "test_acc", "epochs", "folder"];
        let by_name = by.to_string();
        if own {
            head.insert(3, &by_name);
        }
        let mut rows = vec![head.into_iter().map(String::from).collect::<Vec<_>>()];
        for r in ranked(&runs, by) {
            let s = &r.summary;
            let name = if s.name.is_empty() { super::page::values_label(r, &varying) } else { s.name.clone() };
            let mut row = vec![
                s.run_id.clone(),
                name,
                s.status.name().into(),
                fmt_opt(s.best_val_acc),
                fmt_opt(s.final_val_acc),
                fmt_opt(s.test_acc),
                format!("{}/{}", s.epochs, s.epochs_planned),
                r.dir.display().to_string(),
            ];
            if own {
                row.insert(3, fmt_opt(by.of(s)));
            }
            rows.push(row);
        }
        out.push_str(&aligned(&rows));
        if let Some(configs) = compared(&runs, &varying, by) {
            let _ = writeln!(out, "\n{experiment}: configurations (replicates grouped: seeds, folds)");
            let mut rows = vec![vec![
                "configuration".to_string(),
                "n".into(),
                format!("{by} (mean ± sd)"),
                format!("{by} vs the first, paired (95% CI)"),
                "replicates".into(),
            ]];
            for (i, (g, d)) in configs.iter().enumerate() {
                let config = match run_name(&g.values) {
                    name if name.is_empty() => "(one configuration)".to_string(),
                    name => name,
                };
                let diff = fmt_paired(d.as_ref(), i == 0);
                rows.push(vec![config, g.runs.len().to_string(), fmt_spread(g.spread(by)), diff, g.replicates()]);
            }
            out.push_str(&aligned(&rows));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_compare_as_toml_reads_them() {
        assert!(same_value("0.001", "1e-3"));
        assert!(same_value("\"adam\"", "adam"));
        assert!(same_value("\"adam\"", "\"adam\""));
        assert!(!same_value("0.01", "1e-3"));
        assert!(!same_value("\"sgd\"", "adam"));
        assert!("lr".parse::<Filter>().is_err());
        assert_eq!("lr = 1e-3".parse::<Filter>().unwrap(), Filter { key: "lr".into(), value: "1e-3".into() });
    }

    #[test]
    fn a_short_key_names_the_one_key_it_ends() {
        let keys = ["phases.0.optimizer.lr", "phases.1.optimizer.lr", "seed"].map(String::from);
        let f = |k: &str| Filter { key: k.into(), value: "0".into() };
        assert_eq!(f("seed").resolve(&keys).unwrap(), "seed");
        assert_eq!(f("1.optimizer.lr").resolve(&keys).unwrap(), "phases.1.optimizer.lr");
        let err = f("lr").resolve(&keys).unwrap_err().to_string();
        assert!(err.contains("could be any of phases.0.optimizer.lr, phases.1.optimizer.lr"), "{err}");
        assert!(f("momentum").resolve(&keys).unwrap_err().to_string().contains("no run has a key `momentum`"));
    }
}
