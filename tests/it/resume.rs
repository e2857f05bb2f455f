//! Crash safety: a run killed in the middle of an epoch, or in the middle of
//! writing its checkpoint, resumes to the same bytes as a run never interrupted;
//! the same spec run twice gives the same bytes; a diverging run stops cleanly.

use std::path::{Path, PathBuf};
use std::process::Child;

use crate::common::{runner, shapes, stderr, stdout};
use runner::record::checkpoint::Checkpoint;

/// Two phases (Adam, then SGD with momentum from layer 10), a test split, dropout.
fn spec(source: &Path) -> String {
    format!(
        r#"name = "resume"
seed = 5

[data]
source = "{}"
image_size = 32
batch_size = 8
split = [0.6, 0.2, 0.2]
augment = ["random_resized_crop", "hflip"]

[model]
backbone = "efficientnet_lite0"
weights = "none"

[[phases]]
name = "head"
epochs = 2
freeze_up_to = "all"
optimizer = {{ kind = "adam", lr = 1e-3 }}

[[phases]]
name = "fine_tune"
epochs = 3
freeze_up_to = 10
optimizer = {{ kind = "sgd", lr_factor = 0.5, momentum = 0.9 }}
schedule = {{ kind = "cosine" }}
"#,
        source.display()
    )
}

/// The files that must come out the same.
const COMPARED: [&str; 5] = ["metrics.csv", "metrics.parquet", "best.safetensors", "confusion.csv", "test_metrics.csv"];

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let data = shapes(&root, 3, 14);
    std::fs::write(root.join("spec.toml"), spec(&data)).unwrap();
    Fixture { _tmp: tmp, root }
}

/// The single run directory under `out`.
fn run_dir(root: &Path, out: &str) -> PathBuf {
    let runs: Vec<PathBuf> =
        std::fs::read_dir(root.join(out).join("resume")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

/// Starts a run into `out` that stops at `failpoint`; returns once it is there.
fn start_and_wait(root: &Path, out: &str, failpoint: &str) -> Child {
    crate::common::start_at_failpoint(root, &["run", "spec.toml", "--out", out, "--quiet"], failpoint)
}

fn kill(mut child: Child) {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

fn assert_same_files(a: &Path, b: &Path) {
    for f in COMPARED {
        let (x, y) = (std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap());
        assert!(x == y, "{f} differs between {} and {}", a.display(), b.display());
    }
}

#[test]
fn killed_runs_resume_to_the_same_bytes() {
    let f = fixture();
    let root = &f.root;
    let o = runner(root, &["run", "spec.toml", "--out", "clean", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let clean = run_dir(root, "clean");
    let s = summary(&clean);
    assert_eq!(s["status"], "completed");
    assert_eq!(s["epochs"], 5);
    assert!(!clean.join("checkpoint.safetensors").exists(), "a completed run drops its checkpoint");

    // Determinism: the same spec again, into another directory.
    let o = runner(root, &["run", "spec.toml", "--out", "again", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_files(&clean, &run_dir(root, "again"));

    // Killed in the middle of epoch 4 (the second fine-tuning epoch: momentum buffers in the checkpoint).
    let child = start_and_wait(root, "mid_epoch", "epoch-4-batch-2");
    kill(child);
    let dir = run_dir(root, "mid_epoch");
    let ck = Checkpoint::read(&dir.join("checkpoint.safetensors")).unwrap();
    assert_eq!((ck.state.epoch, ck.state.next_phase, ck.state.next_phase_epoch), (3, 1, 1));
    assert!(ck.optimizer.iter().any(|(n, _)| n.ends_with("/momentum_buffer")));
    assert_eq!(summary(&dir)["status"], "running");

    // Without --resume the interrupted run is not silently restarted.
    let o = runner(root, &["run", "spec.toml", "--out", "mid_epoch", "--quiet"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("interrupted run (checkpoint after epoch 3 of 5): pass --resume"), "{}", stderr(&o));
    // A changed config is refused, naming what changed.
    let o = runner(root, &["run", "spec.toml", "--out", "mid_epoch", "--resume", "--set", "data.batch_size=4"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("refusing to resume") && stderr(&o).contains("data.batch_size: 8 -> 4"),
        "{}",
        stderr(&o)
    );

    let o = runner(root, &["run", "spec.toml", "--out", "mid_epoch", "--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("resuming run"), "{}", stdout(&o));
    assert_same_files(&clean, &dir);
    let s = summary(&dir);
    assert_eq!(s["status"], "completed");
    assert_eq!(s["resumed_after"], serde_json::json!([3]));

    // Killed halfway through writing the checkpoint of epoch 2 (Adam's moments in it).
    let child = start_and_wait(root, "mid_checkpoint", "checkpoint-2");
    let dir = run_dir(root, "mid_checkpoint");
    let partial: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".checkpoint.safetensors.tmp"))
        .collect();
    assert_eq!(partial.len(), 1, "the half-written checkpoint is on disk");
    kill(child);
    // The previous checkpoint is whole.
    let ck = Checkpoint::read(&dir.join("checkpoint.safetensors")).unwrap();
    assert_eq!((ck.state.epoch, ck.state.next_phase, ck.state.next_phase_epoch), (1, 0, 1));
    assert!(ck.optimizer.iter().any(|(n, _)| n.ends_with("/exp_avg_sq")));
    let o = runner(root, &["run", "spec.toml", "--out", "mid_checkpoint", "--resume", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_files(&clean, &dir);
    let leftovers = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".tmp"))
        .count();
    assert_eq!(leftovers, 0);

    // The test split was evaluated once with the best weights.
    let s = summary(&clean);
    let test_images = s["test_images"].as_u64().unwrap();
    assert!(test_images > 0);
    assert!(s["test_acc"].as_f64().is_some());
    let confusion = std::fs::read_to_string(clean.join("confusion.csv")).unwrap();
    let counted: u64 =
        confusion.lines().skip(1).flat_map(|l| l.split(',').skip(1).map(|n| n.parse::<u64>().unwrap())).sum();
    assert_eq!(counted, test_images);
    let per_class = std::fs::read_to_string(clean.join("test_metrics.csv")).unwrap();
    assert_eq!(per_class.lines().count(), 1 + 3 + 1, "{per_class}");
    assert!(image::open(clean.join("confusion.png")).is_ok());
}

#[test]
fn a_diverging_run_stops_and_keeps_its_last_good_checkpoint() {
    let f = fixture();
    let root = &f.root;
    // A grid: the second point's fine-tuning rate is absurd. The first point still completes.
    let text = std::fs::read_to_string(root.join("spec.toml")).unwrap()
        + "\n[grid]\n\"phases.1.optimizer.lr_factor\" = [0.5, 1e30]\n";
    std::fs::write(root.join("spec.toml"), text).unwrap();
    let o = runner(root, &["run", "spec.toml", "--out", "out", "--quiet"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("1 of 2 runs failed"), "{}", stderr(&o));

    let mut by_status = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(root.join("out/resume")).unwrap() {
        let dir = entry.unwrap().path();
        by_status.insert(summary(&dir)["status"].as_str().unwrap().to_string(), dir);
    }
    assert!(by_status.contains_key("completed"), "{by_status:?}");
    let dir = &by_status["diverged"];
    let s = summary(dir);
    assert!(s["error"].as_str().unwrap().contains("diverged in epoch 3"), "{s}");
    // The metrics so far, the diverged epoch included.
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3);
    assert!(csv.lines().nth(3).unwrap().contains("NaN") || csv.to_lowercase().contains("inf"), "{csv}");
    // The checkpoint is the one written after the last good epoch, and it reads back whole.
    let ck = Checkpoint::read(&dir.join("checkpoint.safetensors")).unwrap();
    assert_eq!(ck.state.epoch, 2);
    assert_eq!(ck.rows.len(), 2);
    for (name, t) in &ck.model {
        assert!(t.isfinite().all().int64_value(&[]) == 1, "{name} is not finite");
    }
    assert!(dir.join("best.safetensors").is_file());
}

#[test]
fn early_stopping_ends_the_run_or_the_phase() {
    let f = fixture();
    let root = &f.root;
    // min_delta = 1: no epoch after the first can improve val_acc enough.
    let o = runner(
        root,
        &[
            "run",
            "spec.toml",
            "--out",
            "run_scope",
            "--quiet",
            "--set",
            "early_stopping={ patience = 1, min_delta = 1.0 }",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let s = summary(&run_dir(root, "run_scope"));
    assert_eq!(s["status"], "completed");
    assert_eq!(s["epochs"], 2, "{s}");
    assert_eq!(s["early_stopping"]["stopped_after"], serde_json::json!([2]));
    assert_eq!(s["early_stopping"]["wait"], 1);

    // scope = "phase": the head phase stops after 2 epochs, fine-tuning starts with fresh patience.
    let o = runner(
        root,
        &[
            "run",
            "spec.toml",
            "--out",
            "phase_scope",
            "--quiet",
            "--set",
            "early_stopping={ monitor = \"val_loss\", patience = 1, min_delta = 100.0, scope = \"phase\" }",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = run_dir(root, "phase_scope");
    let s = summary(&dir);
    assert_eq!(s["monitor"], "val_loss");
    assert_eq!(s["early_stopping"]["stopped_after"], serde_json::json!([2, 4]), "{s}");
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let phases: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').nth(1).unwrap()).collect();
    assert_eq!(phases, ["head", "head", "fine_tune", "fine_tune"]);
}

/// Three phases on one schedule each: one-cycle (SGD's momentum cycled), cosine after
/// per-step warm-up (Adam), and reduce-on-plateau with a threshold val_acc cannot beat.
fn schedules_spec(source: &Path) -> String {
    format!(
        r#"name = "resume"
seed = 3

[data]
source = "{}"
image_size = 32
batch_size = 4
split = [0.6, 0.2, 0.2]

[model]
backbone = "efficientnet_lite0"
weights = "none"

[[phases]]
name = "one_cycle"
epochs = 2
freeze_up_to = "all"
optimizer = {{ kind = "sgd", lr = 0.05, momentum = 0.9 }}
schedule = {{ kind = "one_cycle", pct_start = 0.4 }}

[[phases]]
name = "warm_cosine"
epochs = 2
freeze_up_to = 12
optimizer = {{ kind = "adam", lr = 1e-3 }}
schedule = {{ kind = "cosine", warmup_steps = 3 }}

[[phases]]
name = "plateau"
epochs = 3
freeze_up_to = "all"
optimizer = {{ kind = "sgd", lr = 0.02 }}
schedule = {{ kind = "reduce_on_plateau", factor = 0.5, patience = 0, threshold = 1.0, threshold_mode = "abs" }}
"#,
        source.display()
    )
}

#[test]
fn per_step_and_plateau_schedules_resume_mid_epoch_to_the_same_bytes() {
    let f = fixture();
    let root = &f.root;
    let data = root.join("shapes");
    std::fs::write(root.join("spec.toml"), schedules_spec(&data)).unwrap();
    let o = runner(root, &["run", "spec.toml", "--out", "clean", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let clean = run_dir(root, "clean");
    // The lr column: the first step's rate of a per-step phase, the plateau's rate of the last.
    let csv = std::fs::read_to_string(clean.join("metrics.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "lr").unwrap();
    let lrs: Vec<f64> = csv.lines().skip(1).map(|l| l.split(',').nth(col).unwrap().parse().unwrap()).collect();
    assert_eq!(lrs.len(), 7, "{csv}");
    assert!((lrs[0] - 0.05 / 25.0).abs() < 1e-15, "one-cycle starts at max / 25: {lrs:?}");
    assert!(lrs[1] > lrs[0], "one-cycle rises: {lrs:?}");
    assert!((lrs[2] - 1e-3 / 4.0).abs() < 1e-15, "the warm-up's first step: {lrs:?}");
    // Epoch 5 sets the plateau's best; epoch 6 cannot beat it by 1.0: epoch 7 trains at half.
    assert_eq!(lrs[4..], [0.02, 0.02, 0.01], "{lrs:?}");
    let log = std::fs::read_to_string(clean.join("run.log")).unwrap();
    assert!(log.contains("epoch 6: val_acc has not improved: the rate is lowered to 1e-2"), "{log}");

    // Killed mid-epoch in the one-cycle phase, then in the plateau's last epoch (its state
    // is replayed from the epochs before).
    for (out, failpoint) in [("in_one_cycle", "epoch-2-batch-2"), ("in_plateau", "epoch-7-batch-2")] {
        kill(start_and_wait(root, out, failpoint));
        let o = runner(root, &["run", "spec.toml", "--out", out, "--resume", "--quiet"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_same_files(&clean, &run_dir(root, out));
    }
}
