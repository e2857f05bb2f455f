//! `runner report`: every run under a runs folder in one place.
//!
//! Writes, into the report folder:
//! - `summary.csv` and `summary.parquet`: one row per run (experiment, run id,
//!   the values that tell the experiment's runs apart, status, best val_acc and
//!   epoch, test_acc, wall time);
//! - `configs.csv` and `configs.parquet`: where runs differ only in `seed`, one row per
//!   configuration with n, mean and standard deviation of best val_acc and test_acc;
//! - `summary.md`: a leaderboard per experiment (and one of its configurations, seeds
//!   grouped, when it has replicates);
//! - `plots/<experiment>-val_acc.png` (the runs' val-accuracy curves overlaid,
//!   with phase markers), `plots/<experiment>-best.png` (best accuracy per run) and, with
//!   seed replicates, `plots/<experiment>-configs.png` (each configuration's mean curve in
//!   a band of ± one standard deviation);
//! - `index.html`: all of it, linking every run's curves, confusion matrix and config.
//!
//! The report is a function of the run directories alone: no clock, no host,
//! so the same runs give the same files.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use polars::prelude::{Column, DataFrame};

use crate::record::plot;
use crate::record::run_dir::RunDir;
use crate::record::summary::{Status, Summary};
use crate::record::table;
use crate::sys::atomic::write_atomic;
use crate::train::metrics::EpochRecord;

/// One run as the report sees it.
#[derive(Debug, Clone)]
pub struct RunEntry {
    pub dir: RunDir,
    pub summary: Summary,
    /// config.toml flattened to dotted keys (`phases.1.optimizer.lr`), values as TOML.
    pub config: BTreeMap<String, String>,
    pub rows: Vec<EpochRecord>,
}

/// What `write` produced.
#[derive(Debug)]
pub struct Written {
    pub runs: usize,
    pub experiments: usize,
    pub files: Vec<PathBuf>,
    /// Run folders that could not be read, and why.
    pub unreadable: Vec<String>,
}

/// Every run directory `<runs>/<experiment>/<run id>/` with a summary.json, in name order.
pub fn collect(runs: &Path) -> Result<(Vec<RunEntry>, Vec<String>)> {
    let mut entries = vec![];
    let mut unreadable = vec![];
    let dirs = |path: &Path| -> Result<Vec<PathBuf>> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect();
        dirs.sort();
        Ok(dirs)
    };
    for experiment in dirs(runs)? {
        for dir in dirs(&experiment)? {
            match read_entry(&dir) {
                Ok(entry) => entries.push(entry),
                Err(e) => unreadable.push(format!("{}: {e:#}", dir.display())),
            }
        }
    }
    Ok((entries, unreadable))
}

fn read_entry(path: &Path) -> Result<RunEntry> {
    let dir = RunDir::at(path);
    let text = std::fs::read_to_string(dir.summary()).context("no summary.json")?;
    let summary: Summary = serde_json::from_str(&text).context("summary.json is not a run summary")?;
    let config = match std::fs::read_to_string(dir.config()) {
        Ok(text) => {
            let table: toml::Table = toml::from_str(&text).context("config.toml is not TOML")?;
            flatten(&toml::Value::Table(table))
        }
        Err(_) => BTreeMap::new(),
    };
    let metrics = dir.metrics_parquet();
    let rows = if metrics.exists() { table::read_records(&metrics)? } else { vec![] };
    Ok(RunEntry { dir, summary, config, rows })
}

/// A config's dotted keys and their values as TOML text.
fn flatten(value: &toml::Value) -> BTreeMap<String, String> {
    crate::record::dotted_leaves(value).into_iter().map(|(k, v)| (k, v.to_string())).collect()
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

/// Runs of one experiment, best first (runs without a best value last).
fn ranked<'a>(runs: &[&'a RunEntry]) -> Vec<&'a RunEntry> {
    let mut v = runs.to_vec();
    v.sort_by(|a, b| {
        let key = |r: &RunEntry| r.summary.best_val_acc.filter(|x| x.is_finite());
        match (key(a), key(b)) {
            (Some(x), Some(y)) => y.total_cmp(&x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
        .then_with(|| a.summary.run_id.cmp(&b.summary.run_id))
    });
    v
}

/// The runs grouped by experiment, in name order.
fn by_experiment(entries: &[RunEntry]) -> BTreeMap<&str, Vec<&RunEntry>> {
    let mut groups: BTreeMap<&str, Vec<&RunEntry>> = BTreeMap::new();
    for e in entries {
        groups.entry(e.summary.experiment.as_str()).or_default().push(e);
    }
    groups
}

/// Runs of one experiment that differ only in `seed`: one configuration, replicated.
pub(crate) struct Replicates<'a> {
    /// The values of the experiment's varying keys other than `seed`.
    pub values: Vec<(String, String)>,
    pub runs: Vec<&'a RunEntry>,
}

/// Mean and sample standard deviation (0 for one value) of the finite values.
fn mean_sd(values: impl Iterator<Item = Option<f64>>) -> Option<(f64, f64, usize)> {
    let v: Vec<f64> = values.flatten().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
    Some((mean, sd, v.len()))
}

impl Replicates<'_> {
    pub fn best_val_acc(&self) -> Option<(f64, f64, usize)> {
        mean_sd(self.runs.iter().map(|r| r.summary.best_val_acc))
    }

    pub fn test_acc(&self) -> Option<(f64, f64, usize)> {
        mean_sd(self.runs.iter().map(|r| r.summary.test_acc))
    }

    /// The replicates' seeds, in ascending order.
    fn seeds(&self) -> String {
        let mut seeds: Vec<String> =
            self.runs.iter().map(|r| r.config.get("seed").cloned().unwrap_or_default()).collect();
        seeds.sort_by_key(|s| (s.parse::<i64>().unwrap_or(i64::MAX), s.clone()));
        seeds.join(" ")
    }
}

/// The experiment's runs grouped by configuration (every varying key but `seed`), best mean
/// first; `None` when no two runs are replicates of one configuration.
pub(crate) fn replicate_groups<'a>(runs: &[&'a RunEntry], varying: &[String]) -> Option<Vec<Replicates<'a>>> {
    if !varying.iter().any(|k| k == "seed") {
        return None;
    }
    let keys: Vec<&String> = varying.iter().filter(|k| *k != "seed").collect();
    let mut groups: Vec<Replicates<'a>> = vec![];
    for r in ranked(runs) {
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
    groups.sort_by(|a, b| {
        let key = |g: &Replicates| g.best_val_acc().map(|(m, _, _)| m);
        match (key(a), key(b)) {
            (Some(x), Some(y)) => y.total_cmp(&x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    });
    Some(groups)
}

/// The configurations table: one row per group of seed replicates, for the experiments
/// that have them (`None` when none has).
pub(crate) fn configs_frame(entries: &[RunEntry]) -> Result<Option<DataFrame>> {
    let groups = by_experiment(entries);
    let mut rows: Vec<(&str, Replicates)> = vec![];
    let mut keys: Vec<String> = vec![];
    for (name, runs) in &groups {
        for g in replicate_groups(runs, &varying_keys(runs)).unwrap_or_default() {
            for (k, _) in &g.values {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
            rows.push((name, g));
        }
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let stat = |f: &dyn Fn(&Replicates) -> Option<f64>| rows.iter().map(|(_, g)| f(g)).collect::<Vec<_>>();
    let mut columns =
        vec![Column::new("experiment".into(), rows.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>())];
    for k in &keys {
        let values: Vec<Option<String>> =
            rows.iter().map(|(_, g)| g.values.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone())).collect();
        columns.push(Column::new(k.as_str().into(), values));
    }
    columns.extend([
        Column::new("n".into(), rows.iter().map(|(_, g)| g.runs.len() as u32).collect::<Vec<_>>()),
        Column::new("best_val_acc_mean".into(), stat(&|g| g.best_val_acc().map(|s| s.0))),
        Column::new("best_val_acc_sd".into(), stat(&|g| g.best_val_acc().map(|s| s.1))),
        Column::new("test_acc_mean".into(), stat(&|g| g.test_acc().map(|s| s.0))),
        Column::new("test_acc_sd".into(), stat(&|g| g.test_acc().map(|s| s.1))),
        Column::new("seeds".into(), rows.iter().map(|(_, g)| g.seeds()).collect::<Vec<_>>()),
        Column::new(
            "run_ids".into(),
            rows.iter()
                .map(|(_, g)| g.runs.iter().map(|r| r.summary.run_id.as_str()).collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>(),
        ),
    ]);
    Ok(Some(DataFrame::new(rows.len(), columns)?))
}

/// The summary table: one row per run, ranked within each experiment.
pub(crate) fn summary_frame(entries: &[RunEntry]) -> Result<DataFrame> {
    let groups = by_experiment(entries);
    let groups_varying: BTreeMap<&str, Vec<String>> = groups.iter().map(|(k, v)| (*k, varying_keys(v))).collect();
    let mut grid_columns: Vec<&String> = vec![];
    for k in groups_varying.values().flatten() {
        if !grid_columns.contains(&k) {
            grid_columns.push(k);
        }
    }
    let ordered: Vec<&RunEntry> = groups.values().flat_map(|runs| ranked(runs)).collect();
    let str_col = |name: &str, f: &dyn Fn(&RunEntry) -> String| {
        Column::new(name.into(), ordered.iter().map(|r| f(r)).collect::<Vec<_>>())
    };
    let mut columns = vec![
        str_col("experiment", &|r| r.summary.experiment.clone()),
        str_col("run_id", &|r| r.summary.run_id.clone()),
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
        Column::new("best_val_acc".into(), ordered.iter().map(|r| r.summary.best_val_acc).collect::<Vec<_>>()),
        Column::new(
            "best_epoch".into(),
            ordered.iter().map(|r| r.summary.best_epoch.map(|e| e as u32)).collect::<Vec<_>>(),
        ),
        Column::new("epochs".into(), ordered.iter().map(|r| r.summary.epochs as u32).collect::<Vec<_>>()),
        Column::new(
            "epochs_planned".into(),
            ordered.iter().map(|r| r.summary.epochs_planned as u32).collect::<Vec<_>>(),
        ),
        Column::new("test_acc".into(), ordered.iter().map(|r| r.summary.test_acc).collect::<Vec<_>>()),
        Column::new("wall_s".into(), ordered.iter().map(|r| r.summary.wall_s).collect::<Vec<_>>()),
        str_col("backbone", &|r| r.summary.backbone.clone()),
        str_col("dir", &|r| r.dir.path().to_string_lossy().into_owned()),
    ]);
    Ok(DataFrame::new(ordered.len(), columns)?)
}

/// A file name made of an experiment's name (which may hold anything a TOML string can).
/// A file name (and HTML anchor) for experiment `name`: its safe characters, and when
/// some had to be replaced, a hash of the whole name, so that `a b` and `a_b` differ.
fn file_stem(name: &str) -> String {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    if safe == name { safe } else { format!("{safe}-{}", &crate::sys::fetch::sha256_hex(name.as_bytes())[..8]) }
}

/// `target` as a link from a page in `base`: relative where possible, percent-encoded.
fn href(base: &Path, target: &Path) -> String {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (base, target) = (abs(base), abs(target));
    let rel = pathdiff::diff_paths(&target, &base).unwrap_or(target);
    const UNSAFE: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    percent_encoding::utf8_percent_encode(&rel.to_string_lossy(), UNSAFE).to_string()
}

/// Text as literal Markdown: every character that Markdown or a table could read as
/// syntax is backslash-escaped, and line breaks (which would end a heading) become spaces.
fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '{' | '}' | '[' | ']' | '(' | ')' | '#' | '+' | '-' | '.' | '!' | '|' | '<'
            | '>' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `0.8413 ± 0.0150`; the mean alone for one value (it has no spread); blank for none.
fn fmt_spread(v: Option<(f64, f64, usize)>) -> String {
    match v {
        Some((m, _, 1)) => format!("{m:.4}"),
        Some((m, sd, _)) => format!("{m:.4} ± {sd:.4}"),
        None => String::new(),
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite()).map_or("".into(), |x| format!("{x:.4}"))
}

/// What sets a run apart within its experiment: `lr_factor=0.5 seed=2` (last key segments).
fn values_label(run: &RunEntry, varying: &[String]) -> String {
    let values: Vec<String> = varying
        .iter()
        .filter_map(|k| run.config.get(k).map(|v| format!("{}={v}", k.rsplit('.').next().unwrap_or(k))))
        .collect();
    values.join(" ")
}

/// A run's label in plots: its id and its varying values.
fn label(run: &RunEntry, varying: &[String]) -> String {
    format!("{} {}", run.summary.run_id, values_label(run, varying)).trim_end().to_string()
}

/// Writes the report of every run under `runs` into `out`.
pub fn write(runs: &Path, out: &Path) -> Result<Written> {
    if !runs.is_dir() {
        bail!("{}: no runs folder (run `runner run SPEC` or `runner sweep` first)", runs.display());
    }
    let (entries, unreadable) = collect(runs)?;
    if entries.is_empty() {
        bail!("no runs under {} (each run folder has a summary.json)", runs.display());
    }
    let plots = out.join("plots");
    std::fs::create_dir_all(&plots).with_context(|| format!("cannot create {}", plots.display()))?;
    let mut files = vec![];

    write_tables(&entries, out, &mut files)?;

    let groups = by_experiment(&entries);
    let mut md = String::from("# Runs\n\n");
    let completed = entries.iter().filter(|e| e.summary.status == Status::Completed).count();
    let _ = writeln!(
        md,
        "{} runs of {} experiment(s) under `{}`: {completed} completed, {} not.\n",
        entries.len(),
        groups.len(),
        runs.display(),
        entries.len() - completed
    );
    let mut html = String::new();
    let mut sections = String::new();
    for (name, group) in &groups {
        let section = Section::plot(name, group, out, &plots, &mut files)?;
        section.markdown(&mut md);
        let _ = writeln!(html, "<li><a href=\"#{}\">{}</a> ({} runs)</li>", section.id, html_escape(name), group.len());
        section.html_table(&mut sections);
        section.html_runs(&mut sections);
    }
    if !unreadable.is_empty() {
        let _ = writeln!(md, "## Unreadable run folders\n");
        for u in &unreadable {
            let _ = writeln!(md, "- {u}");
        }
    }
    write_atomic(&out.join("summary.md"), md.as_bytes())?;
    files.push(out.join("summary.md"));

    let page = html_page(&entries, groups.len(), runs, completed, &html, &sections, &unreadable);
    write_atomic(&out.join("index.html"), page.as_bytes())?;
    files.push(out.join("index.html"));
    Ok(Written { runs: entries.len(), experiments: groups.len(), files, unreadable })
}

/// summary.csv/parquet, and configs.csv/parquet when the runs have config keys to show
/// (stale ones removed when they have none).
fn write_tables(entries: &[RunEntry], out: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    table::write_frame(&mut summary_frame(entries)?, out, "summary")?;
    files.extend([out.join("summary.csv"), out.join("summary.parquet")]);
    if let Some(mut configs) = configs_frame(entries)? {
        table::write_frame(&mut configs, out, "configs")?;
        files.extend([out.join("configs.csv"), out.join("configs.parquet")]);
    } else {
        for stale in ["configs.csv", "configs.parquet"] {
            let _ = std::fs::remove_file(out.join(stale));
        }
    }
    Ok(())
}

/// index.html: the totals, the experiments' list and sections, the unreadable folders.
fn html_page(
    entries: &[RunEntry],
    experiments: usize,
    runs: &Path,
    completed: usize,
    html: &str,
    sections: &str,
    unreadable: &[String],
) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>runner report</title>\n\
     <style>\n{STYLE}</style>\n</head>\n<body>\n<h1>runner report</h1>\n\
     <p>{} runs of {} experiment(s) under <code>{}</code>: {completed} completed. \
     Tables: <a href=\"summary.csv\">summary.csv</a>, <a href=\"summary.parquet\">summary.parquet</a>, \
     <a href=\"summary.md\">summary.md</a>.</p>\n<ul>\n{html}</ul>\n{sections}{}</body>\n</html>\n",
        entries.len(),
        experiments,
        html_escape(&runs.display().to_string()),
        if unreadable.is_empty() {
            String::new()
        } else {
            format!(
                "<h2>Unreadable run folders</h2>\n<ul>{}</ul>\n",
                unreadable.iter().map(|u| format!("<li>{}</li>", html_escape(u))).collect::<String>()
            )
        }
    )
}

/// One experiment's part of the report: its runs ranked, the keys that vary between
/// them, and its two plots.
struct Section<'a> {
    name: &'a str,
    ranked: Vec<&'a RunEntry>,
    varying: Vec<String>,
    /// The anchor of its HTML section.
    id: String,
    /// Links to its plots, relative to the report.
    curves: String,
    best: String,
    /// The seed replicates' bands, when the experiment has replicates.
    bands: Option<String>,
    out: &'a Path,
}

impl<'a> Section<'a> {
    /// Ranks the experiment's runs and draws its plots into `plots` (added to `files`).
    fn plot(
        name: &'a str,
        group: &[&'a RunEntry],
        out: &'a Path,
        plots: &Path,
        files: &mut Vec<PathBuf>,
    ) -> Result<Section<'a>> {
        let varying = varying_keys(group);
        let ranked = ranked(group);
        let stem = file_stem(name);
        let curves_png = plots.join(format!("{stem}-val_acc.png"));
        let best_png = plots.join(format!("{stem}-best.png"));
        let series: Vec<(String, Vec<EpochRecord>)> =
            ranked.iter().filter(|r| !r.rows.is_empty()).map(|r| (label(r, &varying), r.rows.clone())).collect();
        plot::write_comparison(&curves_png, &format!("{name}: val accuracy of {} runs", series.len()), &series)?;
        let bars: Vec<(String, Option<f64>)> =
            ranked.iter().map(|r| (label(r, &varying), r.summary.best_val_acc)).collect();
        plot::write_best_bars(&best_png, &format!("{name}: best val accuracy per run"), &bars)?;
        let (curves, best) = (href(out, &curves_png), href(out, &best_png));
        files.extend([curves_png, best_png]);
        let mut bands = None;
        if let Some(groups) = replicate_groups(&ranked, &varying) {
            let png = plots.join(format!("{stem}-configs.png"));
            let series: Vec<(String, Vec<&[EpochRecord]>)> = groups
                .iter()
                .map(|g| {
                    let label = g.values.iter().map(|(k, v)| format!("{}={v}", k.rsplit('.').next().unwrap_or(k)));
                    (label.collect::<Vec<_>>().join(" "), g.runs.iter().map(|r| r.rows.as_slice()).collect())
                })
                .collect();
            let title = format!("{name}: val accuracy per configuration, mean ± sd over seeds");
            plot::write_replicate_bands(&png, &title, &series)?;
            bands = Some(href(out, &png));
            files.push(png);
        }
        Ok(Section { name, ranked, varying, id: html_escape(&stem), curves, best, bands, out })
    }

    /// The Markdown leaderboard and the plots.
    fn markdown(&self, md: &mut String) {
        let name = &md_escape(self.name);
        let _ = writeln!(md, "## {name}\n");
        let mut head = String::from("| rank | run id |");
        let mut rule = String::from("|---:|---|");
        for k in &self.varying {
            let _ = write!(head, " {k} |");
            rule.push_str("---|");
        }
        head.push_str(" status | best val_acc | best epoch | test_acc | wall |");
        rule.push_str("---|---:|---:|---:|---:|");
        let _ = writeln!(md, "{head}\n{rule}");
        for (i, r) in self.ranked.iter().enumerate() {
            let s = &r.summary;
            let mut line = format!("| {} | [{}]({}) |", i + 1, s.run_id, href(self.out, r.dir.path()));
            for k in &self.varying {
                let _ = write!(line, " {} |", r.config.get(k).map_or("", String::as_str).replace('|', "\\|"));
            }
            let _ = writeln!(
                line,
                " {} | {} | {} | {} | {:.1} s |",
                s.status.name(),
                fmt_opt(s.best_val_acc),
                s.best_epoch.map_or("".into(), |e| e.to_string()),
                fmt_opt(s.test_acc),
                s.wall_s
            );
            md.push_str(&line);
        }
        let _ = writeln!(md, "\n![{name}: val accuracy]({})\n![{name}: best per run]({})\n", self.curves, self.best);
        if let Some(groups) = replicate_groups(&self.ranked, &self.varying) {
            let _ = writeln!(md, "### {name}: configurations (seed replicates grouped)\n");
            let keys: Vec<&String> = self.varying.iter().filter(|k| *k != "seed").collect();
            let mut head = String::from("| rank |");
            let mut rule = String::from("|---:|");
            for k in &keys {
                let _ = write!(head, " {k} |");
                rule.push_str("---|");
            }
            let _ = writeln!(
                md,
                "{head} n | best val_acc (mean ± sd) | test_acc (mean ± sd) | seeds |\n{rule}---:|---:|---:|---|"
            );
            for (i, g) in groups.iter().enumerate() {
                let mut line = format!("| {} |", i + 1);
                for (_, v) in &g.values {
                    let _ = write!(line, " {} |", v.replace('|', "\\|"));
                }
                let _ = writeln!(
                    line,
                    " {} | {} | {} | {} |",
                    g.runs.len(),
                    fmt_spread(g.best_val_acc()),
                    fmt_spread(g.test_acc()),
                    g.seeds()
                );
                md.push_str(&line);
            }
            if let Some(bands) = &self.bands {
                let _ = writeln!(md, "\n![{name}: configurations, mean ± sd over seeds]({bands})");
            }
            md.push('\n');
        }
    }

    /// The HTML section's heading, leaderboard and plots.
    fn html_table(&self, sections: &mut String) {
        let id = &self.id;
        let _ = writeln!(sections, "<section id=\"{id}\">\n<h2>{}</h2>", html_escape(self.name));
        let _ = writeln!(sections, "<table>\n<tr><th>rank</th><th>run id</th>");
        for k in &self.varying {
            let _ = write!(sections, "<th>{}</th>", html_escape(k));
        }
        let _ = writeln!(
            sections,
            "<th>status</th><th>best val_acc</th><th>best epoch</th><th>test_acc</th><th>wall</th></tr>"
        );
        for (i, r) in self.ranked.iter().enumerate() {
            let s = &r.summary;
            let _ = write!(
                sections,
                "<tr><td>{}</td><td><a href=\"#{id}-{}\">{}</a></td>",
                i + 1,
                html_escape(&s.run_id),
                html_escape(&s.run_id)
            );
            for k in &self.varying {
                let _ = write!(sections, "<td>{}</td>", html_escape(r.config.get(k).map_or("", String::as_str)));
            }
            let _ = writeln!(
                sections,
                "<td class=\"{status}\">{status}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} s</td></tr>",
                fmt_opt(s.best_val_acc),
                s.best_epoch.map_or("".into(), |e| e.to_string()),
                fmt_opt(s.test_acc),
                s.wall_s,
                status = s.status.name(),
            );
        }
        let _ = writeln!(sections, "</table>");
        if let Some(groups) = replicate_groups(&self.ranked, &self.varying) {
            let _ = writeln!(sections, "<h3>Configurations (seed replicates grouped)</h3>\n<table>\n<tr><th>rank</th>");
            for k in self.varying.iter().filter(|k| *k != "seed") {
                let _ = write!(sections, "<th>{}</th>", html_escape(k));
            }
            let _ = writeln!(
                sections,
                "<th>n</th><th>best val_acc (mean ± sd)</th><th>test_acc (mean ± sd)</th><th>seeds</th></tr>"
            );
            for (i, g) in groups.iter().enumerate() {
                let _ = write!(sections, "<tr><td>{}</td>", i + 1);
                for (_, v) in &g.values {
                    let _ = write!(sections, "<td>{}</td>", html_escape(v));
                }
                let _ = writeln!(
                    sections,
                    "<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    g.runs.len(),
                    fmt_spread(g.best_val_acc()),
                    fmt_spread(g.test_acc()),
                    html_escape(&g.seeds())
                );
            }
            let _ = writeln!(sections, "</table>");
            if let Some(bands) = &self.bands {
                let _ = writeln!(
                    sections,
                    "<div class=\"plots\"><img src=\"{bands}\" alt=\"{}: configurations, mean and spread over seeds\"></div>",
                    html_escape(self.name)
                );
            }
        }
        let _ = writeln!(
            sections,
            "<div class=\"plots\"><img src=\"{}\" alt=\"{n}: val accuracy of every run\">\
             <img src=\"{}\" alt=\"{n}: best val accuracy per run\"></div>",
            self.curves,
            self.best,
            n = html_escape(self.name)
        );
    }

    /// Each run's card (links to its files, its curves and confusion matrix), and the section's end.
    fn html_runs(&self, sections: &mut String) {
        for r in &self.ranked {
            let s = &r.summary;
            let _ = writeln!(
                sections,
                "<div class=\"run\" id=\"{}-{}\">\n<h3>{} <small>{}</small></h3>",
                self.id,
                html_escape(&s.run_id),
                html_escape(&s.run_id),
                html_escape(&values_label(r, &self.varying)),
            );
            if let Some(error) = &s.error {
                let _ = writeln!(sections, "<p class=\"error\">{}</p>", html_escape(error));
            }
            let mut links = vec![];
            for file in
                [RunDir::CONFIG, RunDir::METRICS_CSV, RunDir::SUMMARY, RunDir::LOG, RunDir::TEST_METRICS, RunDir::BEST]
            {
                if r.dir.file(file).exists() {
                    links.push(format!("<a href=\"{}\">{file}</a>", href(self.out, &r.dir.file(file))));
                }
            }
            let _ = writeln!(sections, "<p>{}</p>", links.join(" · "));
            for (file, alt) in [(RunDir::CURVES, "learning curves"), (RunDir::CONFUSION_PNG, "test confusion matrix")] {
                if r.dir.file(file).exists() {
                    let _ = writeln!(
                        sections,
                        "<a href=\"{src}\"><img class=\"thumb\" src=\"{src}\" alt=\"{} {alt}\"></a>",
                        html_escape(&s.run_id),
                        src = href(self.out, &r.dir.file(file))
                    );
                }
            }
            let _ = writeln!(sections, "</div>");
        }
        let _ = writeln!(sections, "</section>");
    }
}

const STYLE: &str = "body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td.failed, td.diverged, p.error { color: #b00; }
.plots img { max-width: 48%; margin-right: 1%; vertical-align: top; }
.run { border-top: 1px solid #ddd; padding-top: 0.5em; }
img.thumb { width: 420px; margin: 0.3em 0.6em 0.3em 0; border: 1px solid #eee; }
";

/// The summary line `runner report` prints.
pub fn describe(w: &Written, out: &Path) -> String {
    let mut s =
        format!("report of {} runs ({} experiment(s)): {}", w.runs, w.experiments, out.join("index.html").display());
    for u in &w.unreadable {
        let _ = write!(s, "\nwarning: skipped {u}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_has_no_spread_to_show() {
        assert_eq!(fmt_spread(mean_sd([Some(0.6875)].into_iter())), "0.6875");
        assert_eq!(fmt_spread(mean_sd([Some(0.5), Some(0.7), None].into_iter())), "0.6000 ± 0.1414");
        assert_eq!(fmt_spread(mean_sd([None, Some(f64::NAN)].into_iter())), "");
    }

    #[test]
    fn experiment_names_are_literal_text_in_markdown() {
        assert_eq!(md_escape("plain name 2"), "plain name 2");
        assert_eq!(md_escape("x](http://evil) <b>*|#\nnext"), "x\\]\\(http://evil\\) \\<b\\>\\*\\|\\# next");
    }

    fn entry(id: &str, lr: &str, epochs: &str) -> RunEntry {
        let config = [("name", "\"e\""), ("phases.0.optimizer.lr", lr), ("phases.0.epochs", epochs)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let summary: Summary = serde_json::from_value(serde_json::json!({
            "run_id": id, "experiment": "e", "status": "completed", "monitor": "val_acc",
            "best_value": null, "best_val_acc": null, "best_epoch": null, "epochs": 0, "epochs_planned": 1,
            "wall_s": 0.0, "runner_version": "0", "backbone": "resnet18", "classes": [], "train_images": 0,
            "val_images": 0, "skipped_files": 0, "test_images": 0, "manifest_sha256": "", "threads": 1,
            "device": "cpu"
        }))
        .unwrap();
        RunEntry { dir: RunDir::at(id), summary, config, rows: vec![] }
    }

    #[test]
    fn experiments_whose_names_differ_get_different_files() {
        assert_eq!(file_stem("a_b"), "a_b");
        assert_ne!(file_stem("a b"), file_stem("a_b"));
        assert_ne!(file_stem("a b"), file_stem("a/b"));
        assert!(file_stem("a b").starts_with("a_b-"));
    }

    #[test]
    fn varying_keys_are_the_ones_that_differ() {
        let (a, b, c) = (entry("a", "0.1", "3"), entry("b", "0.01", "3"), entry("c", "0.1", "3"));
        assert_eq!(varying_keys(&[&a, &b, &c]), vec!["phases.0.optimizer.lr".to_string()]);
        assert!(varying_keys(&[&a, &c]).is_empty());
    }

    #[test]
    fn flatten_indexes_arrays_of_tables() {
        let table: toml::Table =
            toml::from_str("a = 1\n[b]\nc = [1, 2]\n[[p]]\nx = \"s\"\n[[p]]\nx = \"t\"\n").unwrap();
        let flat = flatten(&toml::Value::Table(table));
        let keys: Vec<&str> = flat.keys().map(String::as_str).collect();
        assert_eq!(keys, ["a", "b.c", "p.0.x", "p.1.x"]);
        assert_eq!(flat["p.1.x"], "\"t\"");
        assert_eq!(flat["b.c"], "[1, 2]");
    }
}
