//! Replicates a researcher can trust: seeds that share one split (`data.split_seed`),
//! k-fold cross-validation (`data.folds`), and a report that groups them and gives the
//! paired difference of two configurations with its 95% interval.

use std::collections::BTreeMap;
use std::path::Path;

use runner::config::experiment::Experiment;
use runner::run::prepare;
use tch::{Device, Tensor};

use crate::common::{runner, shapes, stderr, stdout, tiny_spec};

/// The tiny two-phase spec with a test split and `extra` appended (a grid).
fn spec(source: &Path, extra: &str) -> String {
    let spec = tiny_spec(source)
        .replace("name = \"tiny\"", "name = \"reps\"")
        .replace("batch_size = 8", "batch_size = 8\nsplit = [0.6, 0.2, 0.2]");
    format!("{spec}{extra}")
}

/// A CSV file as rows of named cells.
fn csv_rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_string).collect();
    reader.records().map(|r| header.iter().cloned().zip(r.unwrap().iter().map(str::to_string)).collect()).collect()
}

/// Every run folder of experiment `reps` under `root/runs`.
fn run_dirs(root: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(root.join("runs/reps"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("summary.json").exists())
        .collect();
    dirs.sort();
    dirs
}

/// The variables of the new head (everything outside the backbone's layers) of a run's
/// freshly built network.
fn head_weights(spec: &runner::config::spec::Spec) -> BTreeMap<String, Tensor> {
    let trainer = prepare(spec, Device::Cpu).unwrap();
    let prefixes: Vec<String> = trainer.model().backbone.layers().iter().flat_map(|l| l.prefixes.clone()).collect();
    trainer
        .vs()
        .variables()
        .into_iter()
        .filter(|(name, _)| !prefixes.iter().any(|p| name.starts_with(p.as_str())))
        .map(|(n, t)| (n, t.detach().copy()))
        .collect()
}

/// configs.csv's row of each learning rate, checked against summary.csv: n = 3, the mean and
/// sd of the three runs, and (for the second) the paired difference from the first over the
/// three replicates with its Student's t interval. `replicate` names the replicate column.
fn check_configs(reports: &Path, replicate: &str) {
    let configs = csv_rows(&reports.join("configs.csv"));
    let runs = csv_rows(&reports.join("summary.csv"));
    assert_eq!(configs.len(), 2, "{configs:?}");
    let lr = "phases.0.optimizer.lr";
    let acc_of = |row: &BTreeMap<String, String>| -> BTreeMap<String, f64> {
        let ids: Vec<&str> = row["run_ids"].split(' ').collect();
        assert_eq!(ids.len(), 3, "{configs:?}");
        runs.iter()
            .filter(|r| ids.contains(&r["run_id"].as_str()))
            .map(|r| (r[replicate].clone(), r["best_val_acc"].parse().unwrap()))
            .collect()
    };
    let (first, second) = (acc_of(&configs[0]), acc_of(&configs[1]));
    assert_eq!(first.keys().collect::<Vec<_>>(), second.keys().collect::<Vec<_>>(), "the same replicates");
    for (row, accs) in [(&configs[0], &first), (&configs[1], &second)] {
        assert_eq!(row["n"], "3");
        let mean = accs.values().sum::<f64>() / 3.0;
        let sd = (accs.values().map(|a| (a - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
        assert!((row["best_val_acc_mean"].parse::<f64>().unwrap() - mean).abs() < 1e-9, "{row:?}");
        let shown_sd: f64 = row["best_val_acc_sd"].parse().unwrap();
        assert!((shown_sd - sd).abs() < 1e-9, "{row:?}");
    }
    assert!(
        configs[0]["best_val_acc_mean"].parse::<f64>().unwrap() >= configs[1]["best_val_acc_mean"].parse().unwrap()
    );
    assert_ne!(configs[0][lr], configs[1][lr]);
    assert_eq!(configs[0]["best_val_acc_diff_vs_first"], "", "the first is the reference");
    let diffs: Vec<f64> = second.iter().map(|(k, b)| b - first[k]).collect();
    let mean = diffs.iter().sum::<f64>() / 3.0;
    let sd = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
    let half = 4.302_652_729_911 * sd / 3f64.sqrt(); // t(0.975, 2 degrees of freedom)
    let row = &configs[1];
    assert_eq!(row["diff_pairs"], "3", "{row:?}");
    let got = |k: &str| row[k].parse::<f64>().unwrap();
    assert!((got("best_val_acc_diff_vs_first") - mean).abs() < 1e-9, "{row:?} vs {diffs:?}");
    assert!((got("diff_ci95_low") - (mean - half)).abs() < 1e-6, "{row:?}");
    assert!((got("diff_ci95_high") - (mean + half)).abs() < 1e-6, "{row:?}");
    let within = mean - half <= 0.0 && mean + half >= 0.0;
    assert_eq!(row["within_noise"], within.to_string(), "{row:?}");

    let md = std::fs::read_to_string(reports.join("summary.md")).unwrap();
    assert!(md.contains("### reps: configurations (replicates grouped: seeds, folds)"), "{md}");
    assert!(md.contains("best_val_acc vs #1, paired (95% CI)") && md.contains("(reference)"), "{md}");
    let shown = format!("{:+.4} [{:+.4}, {:+.4}] (n = 3", mean, mean - half, mean + half);
    assert!(md.contains(&shown), "{shown} in {md}");
}

#[test]
fn seeds_share_one_split_change_the_head_and_are_compared_in_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let source = shapes(root, 2, 10);
    let grid = "\n[grid]\n\"phases.0.optimizer.lr\" = [1e-3, 1e-2]\nseed = [0, 1, 2]\n";
    std::fs::write(root.join("grid.toml"), spec(&source, grid)).unwrap();

    // Seeds change the new head's initial weights; the same seed gives the same ones.
    let exp = Experiment::load(&root.join("grid.toml"), &[]).unwrap();
    let names: Vec<&str> = exp.runs.iter().map(|r| r.spec.label.as_str()).collect();
    assert_eq!(names[..4], ["lr=0.001,seed=0", "lr=0.001,seed=1", "lr=0.001,seed=2", "lr=0.01,seed=0"]);
    let (a, b, a_again) =
        (head_weights(&exp.runs[0].spec), head_weights(&exp.runs[1].spec), head_weights(&exp.runs[3].spec));
    assert!(!a.is_empty());
    assert!(a.iter().any(|(n, t)| !t.equal(&b[n])), "seeds 0 and 1 start from other head weights");
    assert!(a.iter().all(|(n, t)| t.equal(&a_again[n])), "seed 0 starts alike whatever the learning rate");

    let o = runner(root, &["run", "grid.toml", "--out", "runs", "--quiet"]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    // Every run validates (and tests) on the same images: one manifest for all six.
    let dirs = run_dirs(root);
    assert_eq!(dirs.len(), 6);
    let manifest = std::fs::read_to_string(dirs[0].join("manifest.csv")).unwrap();
    assert!(manifest.contains(",val,") && manifest.contains(",test,"));
    for d in &dirs {
        assert_eq!(std::fs::read_to_string(d.join("manifest.csv")).unwrap(), manifest, "{}", d.display());
        let summary = crate::common::summary_json(d);
        assert!(summary["name"].as_str().unwrap().starts_with("lr=0.0"), "{summary}");
        assert!(summary["final_val_acc"].is_number() && summary["phases"].as_array().unwrap().len() == 2);
        let log = std::fs::read_to_string(d.join("run.log")).unwrap();
        assert!(log.contains(&format!("({})", summary["name"].as_str().unwrap())), "{log}");
    }

    let o = runner(root, &["report", "--runs", "runs", "--out", "reports"]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_configs(&root.join("reports"), "seed");
    let runs = csv_rows(&root.join("reports/summary.csv"));
    assert!(runs.iter().all(|r| r["name"].contains(",seed=") && !r["phases.0.optimizer.lr"].is_empty()));
    list_and_compare(root, &dirs);
}

/// `runner ls --where` and `runner compare` on the grid's runs.
fn list_and_compare(root: &Path, dirs: &[std::path::PathBuf]) {
    // lr by its last part, 1e-2 as 0.01: the three seeds of that rate, one configuration.
    let o = runner(root, &["ls", "runs", "--where", "lr=1e-2", "--by", "final_val_acc"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("reps: 3 run(s), ranked by final_val_acc"), "{out}");
    for seed in 0..3 {
        assert!(out.contains(&format!("lr=0.01,seed={seed}")), "{out}");
    }
    assert!(!out.contains("lr=0.001"), "{out}");
    assert!(out.contains("configurations") && out.contains("seed 0 1 2"), "{out}");
    // Two filters, the experiment's folder as the runs: the two rates of seed 1.
    let o = runner(root, &["ls", "runs/reps", "--where", "seed=1", "--where", "status=completed"]);
    let out = stdout(&o);
    assert!(
        out.contains("reps: 2 run(s)") && out.contains("lr=0.001,seed=1") && out.contains("lr=0.01,seed=1"),
        "{out}"
    );
    // A short key that names two keys is an error naming both.
    let o = runner(root, &["ls", "runs", "--where", "momentum=0.9"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("phases.0.optimizer.momentum, phases.1.optimizer.momentum"), "{}", stderr(&o));

    // compare: the runs of seed 0 at the two rates.
    let summaries: Vec<serde_json::Value> = dirs.iter().map(|d| crate::common::summary_json(d)).collect();
    let find = |name: &str| dirs[summaries.iter().position(|s| s["name"] == name).unwrap()].clone();
    let (a, b) = (find("lr=0.001,seed=0"), find("lr=0.01,seed=0"));
    let o = runner(root, &["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("config: 1 key(s) differ (A -> B)\n  phases.0.optimizer.lr: 0.001 -> 0.01"), "{out}");
    assert!(out.contains("data: the same files and split"), "{out}");
    // Epoch by epoch: one row per epoch of the two phases.
    let epochs: Vec<(&str, &str)> = out
        .lines()
        .filter_map(|l| {
            let mut cells = l.split_whitespace();
            Some((cells.next()?, cells.next()?))
        })
        .filter(|(epoch, phase)| epoch.parse::<usize>().is_ok() && ["head", "fine_tune"].contains(phase))
        .collect();
    assert_eq!(epochs, [("1", "head"), ("2", "fine_tune")], "{out}");
    // The changed predictions, counted from the two runs' val_predictions.csv.
    let predicted = |d: &Path| -> BTreeMap<String, String> {
        csv_rows(&d.join("val_predictions.csv"))
            .into_iter()
            .map(|r| (r["path"].clone(), r["predicted"].clone()))
            .collect()
    };
    let (pa, pb) = (predicted(&a), predicted(&b));
    assert!(!pa.is_empty() && pa.len() == pb.len());
    let changed = pa.iter().filter(|(k, v)| pb[*k] != **v).count();
    let line = format!("{} image(s) in both runs; {changed} predicted differently", pa.len());
    assert!(out.contains(&line), "{line} in {out}");
}

#[test]
fn k_folds_validate_every_image_once_and_are_compared_in_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let source = shapes(root, 2, 10);
    let extra = "\n[grid]\n\"phases.0.optimizer.lr\" = [1e-3, 1e-2]\n";
    let text = spec(&source, extra).replace("split = [0.6, 0.2, 0.2]", "split = [0.6, 0.2, 0.2]\nfolds = 3");
    std::fs::write(root.join("folds.toml"), text).unwrap();
    let o = runner(root, &["run", "folds.toml", "--out", "runs", "--quiet"]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let dirs = run_dirs(root);
    assert_eq!(dirs.len(), 6, "2 learning rates x 3 folds");

    // Per learning rate: the three folds' val files are disjoint and together every file
    // that is not a test file; the test split is the same in all.
    let mut by_lr: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut tests = vec![];
    for d in &dirs {
        let config = std::fs::read_to_string(d.join("config.toml")).unwrap();
        let lr = config.lines().find(|l| l.starts_with("lr = ")).unwrap().to_string();
        let manifest = std::fs::read_to_string(d.join("manifest.csv")).unwrap();
        let split_of = |s: &str| -> Vec<String> {
            manifest
                .lines()
                .filter(|l| l.split(',').nth(2) == Some(s))
                .map(|l| l.split(',').next().unwrap().into())
                .collect()
        };
        tests.push(split_of("test"));
        for path in split_of("val") {
            by_lr.entry(lr.clone()).or_default().push((path, d.display().to_string()));
        }
        let all: usize = manifest.lines().count() - 1;
        assert_eq!(split_of("val").len() + split_of("train").len() + split_of("test").len(), all);
    }
    assert!(tests.windows(2).all(|w| w[0] == w[1]) && !tests[0].is_empty());
    assert_eq!(by_lr.len(), 2);
    for (lr, mut vals) in by_lr {
        vals.sort();
        let before = vals.len();
        vals.dedup_by(|a, b| a.0 == b.0);
        assert_eq!(vals.len(), before, "{lr}: a file validates in one fold only");
        assert_eq!(before, 20 - tests[0].len(), "{lr}: every train and val file validates once");
    }

    let o = runner(root, &["report", "--runs", "runs", "--out", "reports"]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_configs(&root.join("reports"), "data.fold");
    let configs = csv_rows(&root.join("reports/configs.csv"));
    assert!(configs.iter().all(|r| r["replicates"] == "fold 0 1 2"), "{configs:?}");
}
