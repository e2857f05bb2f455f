//! The learning-rate range test: it leaves the weights, the optimizer and everything a
//! run goes on to do as they were; a phase on cached features runs no backbone layer;
//! `optimizer.lr = "find"` trains as the found rate given by hand; `runner lr-find` writes
//! its plot and CSV and prints the suggestion.

use std::path::Path;

use runner::config::experiment::Experiment;
use runner::train::{Flow, RangeTest};
use tch::{Device, Tensor};

use crate::common::{runner, shapes, start_at_failpoint, stderr, stdout};

/// A head phase whose rate is found, then fine-tuning above layer 12 at a tenth of it.
fn spec(source: &Path) -> String {
    format!(
        r#"name = "lrf"
seed = 4

[data]
source = "{}"
image_size = 32
batch_size = 6
split = [0.7, 0.3]

[model]
backbone = "efficientnet_lite0"
weights = "imagenet"

[[phases]]
name = "head"
epochs = 2
freeze_up_to = "all"
optimizer = {{ kind = "adam", lr = "find" }}

[[phases]]
name = "fine_tune"
epochs = 2
freeze_up_to = 12
optimizer = {{ kind = "sgd", lr_factor = 0.1, momentum = 0.9 }}
"#,
        source.display()
    )
}

/// A tensor's bits, for comparisons that must be exact.
fn bits(t: &Tensor) -> Vec<u8> {
    let t = t.to_device(Device::Cpu).contiguous().view([-1]);
    let bytes = t.numel() * t.kind().elt_size_in_bytes();
    let mut out = vec![0u8; bytes];
    t.copy_data_u8(&mut out, t.numel());
    out
}

fn same(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|((n, x), (m, y))| n == m && bits(x) == bits(y))
}

#[test]
fn the_range_test_leaves_the_weights_and_the_optimizer_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 3, 12);
    std::fs::write(root.join("spec.toml"), spec(&data)).unwrap();
    let exp = Experiment::load(&root.join("spec.toml"), &[]).unwrap();
    let s = exp.runs[0].spec.clone();
    let mut trainer = runner::run::prepare(&s, Device::Cpu).unwrap();
    let layers = trainer.model().backbone.layers().len();
    // The head phase at a rate of its own for an epoch: Adam's moments are in its state.
    let mut run = trainer.start_phase(0, 0);
    trainer.use_found_lr(0, 1e-3, Some(&mut run));
    trainer.train_phase(&mut run, 0, 1, 4, |_| Ok(Flow::Stop)).unwrap();
    // Deep copies: the variables and the state are views of the live tensors.
    let copies = |set: Vec<(String, Tensor)>| set.into_iter().map(|(n, t)| (n, t.copy())).collect::<Vec<_>>();
    let (weights, state) = (copies(trainer.variables()), copies(run.optimizer_state()));
    assert!(state.iter().any(|(n, _)| n.ends_with("/exp_avg")), "no optimizer state to keep");
    let test = RangeTest { steps: 30, ..Default::default() };
    let found = trainer.lr_range_test(&mut run, &test);
    assert_eq!(found.lrs.len(), found.losses.len());
    assert!(found.suggestion > 0.0 && found.suggestion.is_finite(), "{found:?}");
    assert!(same(&weights, &trainer.variables()), "the weights changed");
    assert!(same(&state, &run.optimizer_state()), "the optimizer state changed");
    // Features cached above the last layer: no backbone layer ran.
    assert_eq!((found.cached_at, found.backbone_layers_per_step), (Some(layers), 0));
    assert!(found.describe(&test).contains("no backbone layer run"), "{}", found.describe(&test));

    // Fine-tuning above layer 12 (BatchNorm training there): its statistics are put back too.
    let mut run = trainer.start_phase(1, 0);
    let before = copies(trainer.variables());
    let found = trainer.lr_range_test(&mut run, &test);
    assert!(same(&before, &trainer.variables()), "the weights or BatchNorm statistics changed");
    assert_eq!((found.cached_at, found.backbone_layers_per_step), (Some(12), layers - 12));
}

#[test]
fn lr_find_in_a_run_trains_as_the_found_rate_given_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 3, 12);
    std::fs::write(root.join("spec.toml"), spec(&data)).unwrap();
    let o = runner(root, &["run", "spec.toml", "--out", "found", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run_dir = |out: &str| {
        let exp = root.join(out).join("lrf");
        std::fs::read_dir(&exp).unwrap().next().unwrap().unwrap().path()
    };
    let found = run_dir("found");
    let log = std::fs::read_to_string(found.join("run.log")).unwrap();
    assert!(log.contains("phase 1 (head): lr-find: "), "{log}");
    assert!(log.contains("on features cached at layer 18, no backbone layer run"), "{log}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(found.join("summary.json")).unwrap()).unwrap();
    let lr = summary["found_lr"]["head"].as_f64().expect("summary.json found_lr.head");
    assert!(lr > 1e-7 && lr < 10.0, "{lr}");
    assert!(found.join("lr_find_1_head.png").is_file() && found.join("lr_find_1_head.csv").is_file());
    let csv = std::fs::read_to_string(found.join("metrics.csv")).unwrap();
    let lrs: Vec<f64> = csv.lines().skip(1).map(|l| l.split(',').nth(2).unwrap().parse().unwrap()).collect();
    assert_eq!(lrs[0], lr, "the head trains at the found rate: {csv}");
    assert!((lrs[2] - lr * 0.1).abs() <= 1e-15 * lr, "fine-tuning at lr_factor of it: {csv}");

    // The same run with the found rate written in: the same bytes, so the test left nothing behind.
    let set = format!("phases.0.optimizer.lr={lr:?}");
    let o = runner(root, &["run", "spec.toml", "--out", "given", "--quiet", "--set", &set]);
    assert!(o.status.success(), "{}", stderr(&o));
    let given = run_dir("given");
    for f in ["metrics.csv", "best.safetensors", "val_predictions.csv"] {
        assert!(std::fs::read(found.join(f)).unwrap() == std::fs::read(given.join(f)).unwrap(), "{f} differs");
    }
    assert!(!given.join("lr_find_1_head.png").exists());

    // Killed in fine-tuning: the resumed run keeps the found rate (from its checkpoint) without a new test.
    let mut child = start_at_failpoint(root, &["run", "spec.toml", "--out", "killed", "--quiet"], "epoch-4-batch-2");
    child.kill().unwrap();
    child.wait().unwrap();
    let o = runner(root, &["run", "spec.toml", "--out", "killed", "--resume", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let killed = run_dir("killed");
    assert!(std::fs::read(found.join("metrics.csv")).unwrap() == std::fs::read(killed.join("metrics.csv")).unwrap());
    let log = std::fs::read_to_string(killed.join("run.log")).unwrap();
    assert_eq!(log.matches("lr-find: ").count(), 1, "{log}");
}

#[test]
fn runner_lr_find_writes_its_plot_and_prints_the_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 3, 12);
    std::fs::write(root.join("spec.toml"), spec(&data)).unwrap();
    let o = runner(root, &["lr-find", "spec.toml", "--phase", "fine_tune", "--steps", "40", "--out", "lf"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    // The head's own rate is found first, on the way to the state fine-tuning starts from.
    assert!(out.contains("phase 1: lr-find: 100 steps"), "{out}");
    assert!(
        out.contains("phase 2 (fine_tune): lr-find: ") && out.contains("on activations cached at layer 12"),
        "{out}"
    );
    let suggested: f64 = out.lines().find_map(|l| l.strip_prefix("suggested lr: ")).unwrap().parse().unwrap();
    let csv = std::fs::read_to_string(root.join("lf/lr_find_2_fine_tune.csv")).unwrap();
    assert_eq!(csv.lines().next().unwrap(), "step,lr,loss,smoothed_loss");
    assert!((2..=41).contains(&csv.lines().count()), "{csv}");
    let first: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(first[..2], ["1", "1e-7"]);
    assert!(image::open(root.join("lf/lr_find_2_fine_tune.png")).is_ok());
    assert!(suggested > 0.0 && suggested < 10.0);
    assert!(!root.join("lf/lrf").exists() && !root.join("runs").exists(), "no run is written");

    let o = runner(root, &["lr-find", "spec.toml", "--phase", "3"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--phase 3: expected a number from 1 to 2 or a phase name (head, fine_tune)"),
        "{}",
        stderr(&o)
    );
    let o = runner(root, &["lr-find", "spec.toml", "--start", "1", "--end", "0.1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("expected 0 < start < end"), "{}", stderr(&o));
}
