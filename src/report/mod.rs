//! `runner report`: every run under a runs folder in one place.
//!
//! Writes, into the report folder:
//! - `summary.csv` and `summary.parquet`: one row per run (experiment, run id, name,
//!   the values that tell the experiment's runs apart, status, best and final val_acc,
//!   the monitored metric's, test_acc, wall time, when and by which runner it ran);
//! - `configs.csv` and `configs.parquet`: where runs differ only in `seed`, `data.fold` or
//!   `data.split_seed`, one row per configuration with n, mean and standard deviation of the
//!   ranking measure, best and final val_acc and test_acc, and the paired difference from the
//!   first configuration over the replicates both have, with its 95% interval;
//! - `summary.md`: a leaderboard per experiment ranked by the measure (`--by`), and one of
//!   its configurations when it has replicates;
//! - `plots/<experiment>-{val_acc,val_loss,lr}.png` (the runs' curves overlaid, with phase
//!   markers, the legend beside them), `plots/<experiment>-best.png` (the measure per run)
//!   and, with replicates, `plots/<experiment>-configs.png` (each configuration's mean curve
//!   in a band of ± one standard deviation);
//! - `index.html`: all of it, with sortable and filterable tables, and per run its figures,
//!   per-class validation metrics and worst-predicted validation images (cards.rs).
//!
//! The report is a function of the run directories alone: no clock, no host (the dates it
//! shows are the runs' own), so the same runs give the same files.

mod cards;
mod compare;
mod page;
mod query;
mod stats;
mod tables;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use self::cards::{SCRIPT, STYLE};
pub use self::compare::compare;
use self::page::Section;
pub use self::query::{Filter, collect_paths, ls, select};
use self::stats::by_experiment;
pub use self::stats::{Measure, Paired, Spread};
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

/// Every run directory `<runs>/<experiment>/<run id>/` with a summary.json, in name order;
/// and the folders that could not be read, with why.
pub fn collect(runs: &Path) -> Result<(Vec<RunEntry>, Vec<String>)> {
    let (mut entries, mut unreadable) = (vec![], vec![]);
    for experiment in subfolders(runs)? {
        let (found, bad) = collect_experiment(&experiment)?;
        entries.extend(found);
        unreadable.extend(bad);
    }
    Ok((entries, unreadable))
}

/// The runs of one experiment's folder `<runs>/<experiment>/`, in name order.
pub(crate) fn collect_experiment(experiment: &Path) -> Result<(Vec<RunEntry>, Vec<String>)> {
    let (mut entries, mut unreadable) = (vec![], vec![]);
    for dir in subfolders(experiment)? {
        match read_entry(&dir) {
            Ok(entry) => entries.push(entry),
            Err(e) => unreadable.push(format!("{}: {e:#}", dir.display())),
        }
    }
    Ok((entries, unreadable))
}

/// The folders in `path` (not hidden ones), in name order.
fn subfolders(path: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    Ok(dirs)
}

pub(crate) fn read_entry(path: &Path) -> Result<RunEntry> {
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
    crate::config::dotted_leaves(value).into_iter().map(|(k, v)| (k, v.to_string())).collect()
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

/// Writes the report of every run under `runs` into `out`, ranked by `by`.
pub fn write(runs: &Path, out: &Path, by: &Measure) -> Result<Written> {
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

    tables::write_tables(&entries, by, out, &mut files)?;

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
        let section = Section::plot(name, group, by, out, &plots, &mut files)?;
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
     <a href=\"summary.md\">summary.md</a>. Click a column's header to sort by it, an image to \
     enlarge it.</p>\n<ul>\n{html}</ul>\n{sections}{}<script>\n{SCRIPT}</script>\n</body>\n</html>\n",
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
        use page::fmt_spread;
        assert_eq!(fmt_spread(stats::spread([Some(0.6875)].into_iter())), "0.6875");
        assert_eq!(fmt_spread(stats::spread([Some(0.5), Some(0.7), None].into_iter())), "0.6000 ± 0.1414");
        assert_eq!(fmt_spread(stats::spread([None, Some(f64::NAN)].into_iter())), "");
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
        use stats::varying_keys;
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
