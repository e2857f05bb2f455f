//! One experiment's part of summary.md and index.html: its leaderboard, its configurations
//! with their paired differences, its plots and each run's card.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::stats::{Measure, Paired, Replicates, Spread, ranked, varying_keys};
use super::tables::{compared, shown_measures};
use super::{RunEntry, file_stem, href, html_escape, md_escape};
use crate::config::experiment::run_name;
use crate::record::plot;
use crate::train::metrics::EpochRecord;

/// One experiment's part of the report: its runs ranked, the keys that vary between
/// them, its configurations when runs replicate them, and its plots.
pub(super) struct Section<'a> {
    pub name: &'a str,
    ranked: Vec<&'a RunEntry>,
    varying: Vec<String>,
    configs: Option<Vec<(Replicates<'a>, Option<Paired>)>>,
    by: &'a Measure,
    /// The anchor of its HTML section.
    pub id: String,
    /// Links to its plots, relative to the report: the runs' val accuracy, val loss and
    /// learning rate overlaid, and the measure per run.
    overlays: Vec<(plot::Overlay, String)>,
    best: String,
    /// The replicates' bands, when the experiment has replicates.
    bands: Option<String>,
    out: &'a Path,
}

/// A TOML value as a table shows it: a string without its quotes.
pub(super) fn plain(value: &str) -> &str {
    value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value)
}

/// `0.8413 ± 0.0150`; the mean alone for one value (it has no spread); blank for none.
pub(super) fn fmt_spread(v: Option<Spread>) -> String {
    match v {
        Some(Spread { mean, sd: Some(sd), .. }) => format!("{mean:.4} ± {sd:.4}"),
        Some(Spread { mean, sd: None, .. }) => format!("{mean:.4}"),
        None => String::new(),
    }
}

pub(super) fn fmt_opt(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite()).map_or("".into(), |x| format!("{x:.4}"))
}

/// What sets a run apart within its experiment, spelled as runs are named
/// ([`run_name`]): `lr_factor=0.5,seed=2`.
pub(super) fn values_label(run: &RunEntry, varying: &[String]) -> String {
    let values: Vec<(String, String)> =
        varying.iter().filter_map(|k| Some((k.clone(), run.config.get(k)?.clone()))).collect();
    run_name(&values)
}

/// A run's label in plots: its readable name (or, for a run without one, its varying values),
/// with its id where another run of the experiment has the same name.
fn label(run: &RunEntry, all: &[&RunEntry], varying: &[String]) -> String {
    let name = |r: &RunEntry| if r.summary.name.is_empty() { values_label(r, varying) } else { r.summary.name.clone() };
    let own = name(run);
    if own.is_empty() || all.iter().filter(|r| name(r) == own).count() > 1 {
        format!("{} {own}", run.summary.run_id).trim_end().to_string()
    } else {
        own
    }
}

/// A paired difference as the tables show it; blank for the first configuration.
pub(super) fn fmt_paired(d: Option<&Paired>, first: bool) -> String {
    match d {
        Some(d) => d.describe(),
        None if first => "(reference)".into(),
        None => "fewer than 2 shared seeds or folds".into(),
    }
}

impl<'a> Section<'a> {
    /// Ranks the experiment's runs by `by` and draws its plots into `plots` (added to `files`).
    pub fn plot(
        name: &'a str,
        group: &[&'a RunEntry],
        by: &'a Measure,
        out: &'a Path,
        plots: &Path,
        files: &mut Vec<PathBuf>,
    ) -> Result<Section<'a>> {
        let varying = varying_keys(group);
        let ranked = ranked(group, by);
        let stem = file_stem(name);
        let best_png = plots.join(format!("{stem}-best.png"));
        let series: Vec<(String, Vec<EpochRecord>)> = ranked
            .iter()
            .filter(|r| !r.rows.is_empty())
            .map(|r| (label(r, &ranked, &varying), r.rows.clone()))
            .collect();
        let mut overlays = vec![];
        for overlay in plot::Overlay::ALL {
            let png = plots.join(format!("{stem}-{}.png", overlay.name()));
            let title = format!("{name}: {} of {} runs", overlay.name(), series.len());
            plot::write_comparison(&png, &title, &series, overlay)?;
            overlays.push((overlay, href(out, &png)));
            files.push(png);
        }
        let bars: Vec<(String, Option<f64>)> =
            ranked.iter().map(|r| (label(r, &ranked, &varying), by.of(&r.summary))).collect();
        plot::write_best_bars(&best_png, &format!("{name}: {by} per run"), &bars)?;
        let best = href(out, &best_png);
        files.push(best_png);
        let configs = compared(&ranked, &varying, by);
        let mut bands = None;
        if let Some(groups) = &configs {
            let png = plots.join(format!("{stem}-configs.png"));
            let series: Vec<(String, Vec<&[EpochRecord]>)> = groups
                .iter()
                .map(|(g, _)| (run_name(&g.values), g.runs.iter().map(|r| r.rows.as_slice()).collect()))
                .collect();
            let title = format!("{name}: val accuracy per configuration, mean ± sd over seeds or folds");
            plot::write_replicate_bands(&png, &title, &series)?;
            bands = Some(href(out, &png));
            files.push(png);
        }
        Ok(Section { name, ranked, varying, configs, by, id: html_escape(&stem), overlays, best, bands, out })
    }

    /// The leaderboard's header cells after rank, id and the varying keys.
    fn run_columns(&self) -> Vec<String> {
        let mut head: Vec<String> =
            ["status", "best val_acc", "best epoch", "final val_acc", "test_acc", "wall"].map(String::from).into();
        if !matches!(self.by, Measure::BestValAcc | Measure::FinalValAcc | Measure::TestAcc) {
            head.insert(1, self.by.to_string());
        }
        head
    }

    /// A run's cells after rank, id and the varying keys (as `run_columns` names them).
    fn run_cells(&self, r: &RunEntry) -> Vec<String> {
        let s = &r.summary;
        let mut cells = vec![
            s.status.name().to_string(),
            fmt_opt(s.best_val_acc),
            s.best_epoch.map_or("".into(), |e| e.to_string()),
            fmt_opt(s.final_val_acc),
            fmt_opt(s.test_acc),
            format!("{:.1} s", s.wall_s),
        ];
        if !matches!(self.by, Measure::BestValAcc | Measure::FinalValAcc | Measure::TestAcc) {
            cells.insert(1, fmt_opt(self.by.of(s)));
        }
        cells
    }

    /// The configurations table's header cells after rank and the configuration's keys.
    fn config_columns(&self) -> Vec<String> {
        let mut head = vec!["n".to_string()];
        head.extend(shown_measures(self.by).iter().map(|m| format!("{m} (mean ± sd)")));
        head.push(format!("{} vs #1, paired (95% CI)", self.by));
        head.push("replicates".into());
        head
    }

    fn config_cells(&self, g: &Replicates, d: Option<&Paired>, first: bool) -> Vec<String> {
        let mut cells = vec![g.runs.len().to_string()];
        cells.extend(shown_measures(self.by).iter().map(|m| fmt_spread(g.spread(m))));
        cells.push(fmt_paired(d, first));
        cells.push(g.replicates());
        cells
    }

    /// The configuration keys (the varying keys but seeds and folds).
    fn config_keys(&self) -> Vec<&String> {
        self.varying.iter().filter(|k| !super::stats::REPLICATE_KEYS.contains(&k.as_str())).collect()
    }

    /// The Markdown leaderboard and the plots.
    pub fn markdown(&self, md: &mut String) {
        let name = &md_escape(self.name);
        let cell = |v: &str| v.replace('|', "\\|");
        let _ = writeln!(md, "## {name}\n\nRanked by {}.\n", self.by);
        let mut head = String::from("| rank | run id |");
        let mut rule = String::from("|---:|---|");
        for k in self.varying.iter().map(String::as_str).chain(self.run_columns().iter().map(String::as_str)) {
            let _ = write!(head, " {} |", cell(k));
            rule.push_str("---|");
        }
        let _ = writeln!(md, "{head}\n{rule}");
        for (i, r) in self.ranked.iter().enumerate() {
            let mut line = format!("| {} | [{}]({}) |", i + 1, r.summary.run_id, href(self.out, r.dir.path()));
            for k in &self.varying {
                let _ = write!(line, " {} |", cell(plain(r.config.get(k).map_or("", String::as_str))));
            }
            for c in self.run_cells(r) {
                let _ = write!(line, " {} |", cell(&c));
            }
            let _ = writeln!(md, "{line}");
        }
        md.push('\n');
        for (overlay, link) in &self.overlays {
            let _ = writeln!(md, "![{name}: {}]({link})", overlay.name());
        }
        let _ = writeln!(md, "![{name}: {} per run]({})\n", self.by, self.best);
        let Some(configs) = &self.configs else { return };
        let _ = writeln!(md, "### {name}: configurations (replicates grouped: seeds, folds)\n");
        let mut head = String::from("| rank |");
        let mut rule = String::from("|---:|");
        for k in self.config_keys().into_iter().chain(self.config_columns().iter()) {
            let _ = write!(head, " {} |", cell(k));
            rule.push_str("---|");
        }
        let _ = writeln!(md, "{head}\n{rule}");
        for (i, (g, d)) in configs.iter().enumerate() {
            let mut line = format!("| {} |", i + 1);
            for (_, v) in &g.values {
                let _ = write!(line, " {} |", cell(plain(v)));
            }
            for c in self.config_cells(g, d.as_ref(), i == 0) {
                let _ = write!(line, " {} |", cell(&c));
            }
            let _ = writeln!(md, "{line}");
        }
        if let Some(bands) = &self.bands {
            let _ = writeln!(md, "\n![{name}: configurations, mean ± sd over seeds or folds]({bands})");
        }
        md.push('\n');
    }

    /// The HTML section's heading, leaderboard and plots.
    pub fn html_table(&self, sections: &mut String) {
        let id = &self.id;
        let _ = writeln!(sections, "<section id=\"{id}\">\n<h2>{}</h2>", html_escape(self.name));
        let _ = writeln!(sections, "<p>Ranked by {}.</p>", html_escape(&self.by.to_string()));
        let _ = write!(sections, "<table class=\"sortable\">\n<thead><tr><th>rank</th><th>run id</th>");
        for k in self.varying.iter().chain(self.run_columns().iter()) {
            let _ = write!(sections, "<th>{}</th>", html_escape(k));
        }
        let _ = writeln!(sections, "</tr></thead>\n<tbody>");
        for (i, r) in self.ranked.iter().enumerate() {
            let run_id = html_escape(&r.summary.run_id);
            let _ = write!(sections, "<tr><td>{}</td><td><a href=\"#{id}-{run_id}\">{run_id}</a></td>", i + 1);
            for k in &self.varying {
                let _ = write!(sections, "<td>{}</td>", html_escape(plain(r.config.get(k).map_or("", String::as_str))));
            }
            for (c, value) in self.run_cells(r).iter().enumerate() {
                let class = if c == 0 { format!(" class=\"{value}\"") } else { String::new() };
                let _ = write!(sections, "<td{class}>{}</td>", html_escape(value));
            }
            let _ = writeln!(sections, "</tr>");
        }
        let _ = writeln!(sections, "</tbody></table>");
        if let Some(configs) = &self.configs {
            let _ = write!(
                sections,
                "<h3>Configurations (replicates grouped: seeds, folds)</h3>\n\
                 <table class=\"sortable\">\n<thead><tr><th>rank</th>"
            );
            for k in self.config_keys().into_iter().chain(self.config_columns().iter()) {
                let _ = write!(sections, "<th>{}</th>", html_escape(k));
            }
            let _ = writeln!(sections, "</tr></thead>\n<tbody>");
            for (i, (g, d)) in configs.iter().enumerate() {
                let _ = write!(sections, "<tr><td>{}</td>", i + 1);
                for (_, v) in &g.values {
                    let _ = write!(sections, "<td>{}</td>", html_escape(plain(v)));
                }
                for c in self.config_cells(g, d.as_ref(), i == 0) {
                    let _ = write!(sections, "<td>{}</td>", html_escape(&c));
                }
                let _ = writeln!(sections, "</tr>");
            }
            let _ = writeln!(sections, "</tbody></table>");
            if let Some(bands) = &self.bands {
                let _ = writeln!(
                    sections,
                    "<div class=\"plots\"><img class=\"zoom\" src=\"{bands}\" alt=\"{}: configurations, mean and spread over seeds or folds\"></div>",
                    html_escape(self.name)
                );
            }
        }
        let _ = write!(sections, "<div class=\"plots\">");
        let n = html_escape(self.name);
        for (overlay, link) in &self.overlays {
            let _ =
                write!(sections, "<img class=\"zoom\" src=\"{link}\" alt=\"{n}: {} of every run\">", overlay.name());
        }
        let by = html_escape(&self.by.to_string());
        let _ = writeln!(sections, "<img class=\"zoom\" src=\"{}\" alt=\"{n}: {by} per run\"></div>", self.best);
    }

    /// Each run's card, and the section's end.
    pub fn html_runs(&self, sections: &mut String) {
        for r in &self.ranked {
            super::cards::card(r, &self.id, &label(r, &self.ranked, &self.varying), self.out, sections);
        }
        let _ = writeln!(sections, "</section>");
    }
}
