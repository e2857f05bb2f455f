//! `runner verify`: a recorded run reruns to the same bits on the machine that
//! recorded it; a changed metric is found at its epoch; a tolerance accepts small
//! differences; the recorded run is never touched.

use std::path::PathBuf;

use crate::common::{only_run, runner, shapes, stderr, stdout, tiny_spec};

/// A run of the tiny spec on `classes` x `per_class` shapes under `root/runs`: its
/// directory, and that as an argument.
fn recorded_run(root: &std::path::Path, classes: usize, per_class: usize) -> (PathBuf, String) {
    let source = shapes(root, classes, per_class);
    std::fs::write(root.join("spec.toml"), tiny_spec(&source)).unwrap();
    let o = runner(root, &["run", "spec.toml", "--out", "runs", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = only_run(&root.join("runs/tiny"));
    let arg = dir.to_string_lossy().into_owned();
    (dir, arg)
}

#[test]
fn verify_reruns_and_compares_epoch_by_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (dir, dir_arg) = recorded_run(root, 3, 10);

    let o = runner(root, &["verify", &dir_arg]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("identical: every metric of 2 epochs has the same bits"), "{out}");
    assert!(out.contains("verified: 1 of 1 runs"), "{out}");

    // A recorded value off in its last digits, in epoch 2.
    let csv_path = dir.join("metrics.csv");
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let mut lines: Vec<String> = csv.lines().map(str::to_string).collect();
    let mut cells: Vec<String> = lines[2].split(',').map(str::to_string).collect();
    let val_loss: f64 = cells[5].parse().unwrap();
    cells[5] = format!("{}", val_loss + 1e-7);
    lines[2] = cells.join(",");
    let tampered = lines.join("\n") + "\n";
    std::fs::write(&csv_path, &tampered).unwrap();
    let before: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();

    let o = runner(root, &["verify", &dir_arg]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.contains("DIFFERS from epoch 2 (fine_tune): val_loss"), "{out}");
    assert!(stderr(&o).contains("1 of 1 runs did not verify"), "{}", stderr(&o));

    let o = runner(root, &["verify", &dir_arg, "--tolerance", "1e-6"]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("within tolerance 0.000001"), "{}", stdout(&o));

    // The recorded run is as it was: same files, the tampered CSV included.
    let after: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(before, after);
    assert_eq!(std::fs::read_to_string(&csv_path).unwrap(), tampered);

    // Not a run directory.
    let o = runner(root, &["verify", "spec.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("config.toml"), "{}", stderr(&o));
}

#[test]
fn verify_also_checks_the_best_weights_and_the_best_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (dir, dir_arg) = recorded_run(root, 2, 8);
    let o = runner(root, &["verify", &dir_arg]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("best weights: the same bits"), "{}", stdout(&o));

    // One value of the best weights altered.
    let best = dir.join("best.safetensors");
    let weights = std::fs::read(&best).unwrap();
    let mut altered = weights.clone();
    *altered.last_mut().unwrap() ^= 0x01;
    std::fs::write(&best, &altered).unwrap();
    let o = runner(root, &["verify", &dir_arg]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("best weights DIFFER"), "{}", stdout(&o));
    std::fs::write(&best, &weights).unwrap();

    // The summary's best epoch altered.
    let path = dir.join("summary.json");
    let mut summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let best_epoch = summary["best_epoch"].as_u64().unwrap();
    summary["best_epoch"] = serde_json::json!(3 - best_epoch);
    std::fs::write(&path, serde_json::to_string_pretty(&summary).unwrap()).unwrap();
    let o = runner(root, &["verify", &dir_arg]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("DIFFERS: best epoch"), "{}", stdout(&o));
}
