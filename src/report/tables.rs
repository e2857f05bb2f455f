//! The report's tables: one row per run (summary.csv/parquet) and one per configuration
//! measured on several seeds or folds (configs.csv/parquet).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use polars::prelude::{Column, DataFrame};

use super::RunEntry;
use super::stats::{Measure, Paired, Replicates, by_experiment, paired, ranked, replicate_groups, varying_keys};
use crate::record::table;

/// One experiment's configurations, best first by `by`, each with its paired difference
/// from the first (none for the first itself, or without two shared replicates).
pub(crate) fn compared<'a>(
    runs: &[&'a RunEntry],
    varying: &[String],
    by: &Measure,
) -> Option<Vec<(Replicates<'a>, Option<Paired>)>> {
    let groups = replicate_groups(runs, varying, by)?;
    let diffs: Vec<Option<Paired>> =
        groups.iter().enumerate().map(|(i, g)| if i == 0 { None } else { paired(g, &groups[0], by) }).collect();
    Some(groups.into_iter().zip(diffs).collect())
}

/// The measures a configurations table shows: `by`, then best and final val_acc and test_acc.
pub(crate) fn shown_measures(by: &Measure) -> Vec<Measure> {
    let mut measures = vec![by.clone()];
    for m in [Measure::BestValAcc, Measure::FinalValAcc, Measure::TestAcc] {
        if !measures.contains(&m) {
            measures.push(m);
        }
    }
    measures
}

/// The configurations table: one row per group of replicates (seeds, folds), for the
/// experiments that have them (`None` when none has).
pub(crate) fn configs_frame(entries: &[RunEntry], by: &Measure) -> Result<Option<DataFrame>> {
    let mut rows: Vec<(&str, Replicates, Option<Paired>)> = vec![];
    let mut keys: Vec<String> = vec![];
    for (name, runs) in &by_experiment(entries) {
        for (g, diff) in compared(runs, &varying_keys(runs), by).unwrap_or_default() {
            for (k, _) in &g.values {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
            rows.push((name, g, diff));
        }
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let column = |name: String, f: &dyn Fn(&Replicates, Option<&Paired>) -> Option<f64>| {
        Column::new(name.into(), rows.iter().map(|(_, g, d)| f(g, d.as_ref())).collect::<Vec<_>>())
    };
    let mut columns =
        vec![Column::new("experiment".into(), rows.iter().map(|(n, _, _)| n.to_string()).collect::<Vec<_>>())];
    for k in &keys {
        let values: Vec<Option<String>> =
            rows.iter().map(|(_, g, _)| g.values.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone())).collect();
        columns.push(Column::new(k.as_str().into(), values));
    }
    columns.push(Column::new("n".into(), rows.iter().map(|(_, g, _)| g.runs.len() as u32).collect::<Vec<_>>()));
    for m in shown_measures(by) {
        columns.push(column(format!("{m}_mean"), &|g, _| g.spread(&m).map(|s| s.mean)));
        columns.push(column(format!("{m}_sd"), &|g, _| g.spread(&m).and_then(|s| s.sd)));
    }
    columns.extend([
        column(format!("{by}_diff_vs_first"), &|_, d| d.map(|d| d.mean)),
        column("diff_ci95_low".into(), &|_, d| d.map(|d| d.low)),
        column("diff_ci95_high".into(), &|_, d| d.map(|d| d.high)),
        Column::new("diff_pairs".into(), rows.iter().map(|(_, _, d)| d.map(|d| d.n as u32)).collect::<Vec<_>>()),
        Column::new(
            "within_noise".into(),
            rows.iter().map(|(_, _, d)| d.map(|d| d.within_noise())).collect::<Vec<_>>(),
        ),
        Column::new("replicates".into(), rows.iter().map(|(_, g, _)| g.replicates()).collect::<Vec<_>>()),
        Column::new(
            "run_ids".into(),
            rows.iter()
                .map(|(_, g, _)| g.runs.iter().map(|r| r.summary.run_id.as_str()).collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>(),
        ),
    ]);
    Ok(Some(DataFrame::new(rows.len(), columns)?))
}

/// The summary table: one row per run, ranked by `by` within each experiment.
pub(crate) fn summary_frame(entries: &[RunEntry], by: &Measure) -> Result<DataFrame> {
    let groups = by_experiment(entries);
    let groups_varying: BTreeMap<&str, Vec<String>> = groups.iter().map(|(k, v)| (*k, varying_keys(v))).collect();
    let mut grid_columns: Vec<&String> = vec![];
    for k in groups_varying.values().flatten() {
        if !grid_columns.contains(&k) {
            grid_columns.push(k);
        }
    }
    let ordered: Vec<&RunEntry> = groups.values().flat_map(|runs| ranked(runs, by)).collect();
    let str_col = |name: &str, f: &dyn Fn(&RunEntry) -> String| {
        Column::new(name.into(), ordered.iter().map(|r| f(r)).collect::<Vec<_>>())
    };
    let f64_col = |name: &str, f: &dyn Fn(&RunEntry) -> Option<f64>| {
        Column::new(name.into(), ordered.iter().map(|r| f(r)).collect::<Vec<_>>())
    };
    let u32_col = |name: &str, f: &dyn Fn(&RunEntry) -> Option<usize>| {
        Column::new(name.into(), ordered.iter().map(|r| f(r).map(|v| v as u32)).collect::<Vec<_>>())
    };
    let mut columns = vec![
        str_col("experiment", &|r| r.summary.experiment.clone()),
        str_col("run_id", &|r| r.summary.run_id.clone()),
        str_col("name", &|r| r.summary.name.clone()),
    ];
    for &key in &grid_columns {
        let values: Vec<Option<String>> = ordered
            .iter()
            .map(|r| {
                let varies = groups_varying.get(r.summary.experiment.as_str()).is_some_and(|v| v.contains(key));
                if varies { r.config.get(key).cloned() } else { None }
            })
            .collect();
        columns.push(Column::new(key.as_str().into(), values));
    }
    columns.extend([
        str_col("status", &|r| r.summary.status.name().to_string()),
        f64_col("best_val_acc", &|r| r.summary.best_val_acc),
        u32_col("best_epoch", &|r| r.summary.best_epoch),
        f64_col("final_val_acc", &|r| r.summary.final_val_acc),
        str_col("monitor", &|r| r.summary.monitor.name().to_string()),
        f64_col("best_value", &|r| r.summary.best_value),
        f64_col("final_value", &|r| r.summary.final_value),
        u32_col("epochs", &|r| Some(r.summary.epochs)),
        u32_col("epochs_planned", &|r| Some(r.summary.epochs_planned)),
        f64_col("test_acc", &|r| r.summary.test_acc),
        f64_col("wall_s", &|r| Some(r.summary.wall_s)),
        str_col("backbone", &|r| r.summary.backbone.clone()),
        str_col("started", &|r| r.summary.started.clone().unwrap_or_default()),
        str_col("runner_version", &|r| r.summary.runner_version.clone()),
        str_col("runner_commit", &|r| r.summary.runner_commit.clone().unwrap_or_default()),
        str_col("dir", &|r| r.dir.path().to_string_lossy().into_owned()),
    ]);
    if !matches!(by, Measure::BestValAcc | Measure::FinalValAcc | Measure::TestAcc) {
        columns.push(f64_col(&by.to_string(), &|r| by.of(&r.summary)));
    }
    Ok(DataFrame::new(ordered.len(), columns)?)
}

/// summary.csv/parquet, and configs.csv/parquet when the runs have replicates to group
/// (stale ones removed when they have none).
pub(crate) fn write_tables(entries: &[RunEntry], by: &Measure, out: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    table::write_frame(&mut summary_frame(entries, by)?, out, "summary")?;
    files.extend([out.join("summary.csv"), out.join("summary.parquet")]);
    if let Some(mut configs) = configs_frame(entries, by)? {
        table::write_frame(&mut configs, out, "configs")?;
        files.extend([out.join("configs.csv"), out.join("configs.parquet")]);
    } else {
        for stale in ["configs.csv", "configs.parquet"] {
            let _ = std::fs::remove_file(out.join(stale));
        }
    }
    Ok(())
}
