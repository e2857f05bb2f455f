//! The feature cache is exact: a run that trains on cached activations gives the
//! numbers of the same run with a full forward pass every epoch, to float tolerance.

use std::path::{Path, PathBuf};

use crate::common::{runner, shapes, stderr, stdout, tiny_spec};

fn run(root: &Path, out: &str, extra: &[&str]) -> (PathBuf, String) {
    let mut args = vec!["run", "spec.toml", "--out", out];
    args.extend_from_slice(extra);
    let o = runner(root, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = std::fs::read_dir(root.join(out).join("tiny")).unwrap().next().unwrap().unwrap().path();
    (dir, stdout(&o))
}

fn metrics(dir: &Path) -> Vec<Vec<f64>> {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').skip(2).map(|v| v.parse().unwrap()).collect())
        .collect()
}

#[test]
fn cached_and_full_forward_runs_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = shapes(root, 3, 12);
    // Two epochs per phase, so that the second epoch of each phase trains on weights the cache did not see.
    let spec = tiny_spec(&data).replace("epochs = 1", "epochs = 2");
    std::fs::write(root.join("spec.toml"), spec).unwrap();

    let (cached, out) = run(root, "cached", &[]);
    assert!(out.contains("phase 1 (head): trains on cached pooled features"), "{out}");
    // Phase 1's pass kept the activations phase 2 starts from.
    assert!(
        out.contains("phase 2 (fine_tune): trains on the activations at layer 10 (block 9) cached by an earlier pass"),
        "{out}"
    );
    let (full, out) = run(root, "full", &["--set", "data.cache=\"off\""]);
    assert!(out.contains("full forward every epoch (data.cache = \"off\")"), "{out}");

    let (a, b) = (metrics(&cached), metrics(&full));
    assert_eq!(a.len(), 4);
    for (ra, rb) in a.iter().zip(&b) {
        // lr, train_loss, train_acc, val_loss, val_acc
        for (x, y) in ra.iter().zip(rb) {
            assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "{ra:?} vs {rb:?}");
        }
    }
    let wa = tch::Tensor::read_safetensors(cached.join("best.safetensors")).unwrap();
    let wb: std::collections::HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(full.join("best.safetensors")).unwrap().into_iter().collect();
    for (name, t) in &wa {
        let diff = (t - &wb[name]).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{name}: {diff}");
    }

    // With augmentation the frozen part sees new inputs every epoch: no cache unless views are asked for.
    let (_, out) = run(root, "augmented", &["--set", "data.augment=[\"hflip\"]"]);
    assert!(out.contains("full forward every epoch (the inputs are augmented; data.cache_views"), "{out}");
}

#[test]
fn cached_mirror_views_equal_the_full_forward_with_hflip() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = shapes(root, 3, 12);
    let spec = tiny_spec(&data)
        .replace("epochs = 1", "epochs = 2")
        .replace("batch_size = 8", "batch_size = 8\naugment = [\"hflip\"]");
    std::fs::write(root.join("spec.toml"), spec).unwrap();

    let (full, out) = run(root, "full", &[]);
    assert!(out.contains("full forward every epoch (the inputs are augmented"), "{out}");
    let (views, out) = run(root, "views", &["--set", "data.cache_views=2"]);
    assert!(
        out.contains("phase 1 (head): trains on cached pooled features of 2 exact views (as is and mirrored)"),
        "{out}"
    );
    assert!(
        out.contains("phase 2 (fine_tune): trains on cached activations at layer 10 (block 9) of 2 exact views"),
        "{out}"
    );
    let (a, b) = (metrics(&views), metrics(&full));
    assert_eq!(a.len(), 4);
    for (ra, rb) in a.iter().zip(&b) {
        for (x, y) in ra.iter().zip(rb) {
            assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "{ra:?} vs {rb:?}");
        }
    }

    // Random crops have no exact finite set of views: K are drawn once and sampled per epoch.
    let (sampled, out) = run(
        root,
        "sampled",
        &["--set", "data.cache_views=3", "--set", "data.augment=[\"random_resized_crop\", \"hflip\"]"],
    );
    assert!(out.contains("trains on cached pooled features of 3 augmented views drawn once of"), "{out}");
    let m = metrics(&sampled);
    assert_eq!(m.len(), 4);
    assert!(m.iter().flatten().all(|v| v.is_finite()));
    // The same spec again gives the same numbers: the views are drawn from the seed.
    let (again, _) = run(
        root,
        "sampled_again",
        &["--set", "data.cache_views=3", "--set", "data.augment=[\"random_resized_crop\", \"hflip\"]"],
    );
    assert_eq!(std::fs::read(sampled.join("metrics.csv")).unwrap(), std::fs::read(again.join("metrics.csv")).unwrap());
}

#[test]
fn a_run_on_cached_features_resumes_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = shapes(root, 3, 12);
    std::fs::write(root.join("spec.toml"), tiny_spec(&data).replace("epochs = 1", "epochs = 2")).unwrap();
    let (clean, _) = run(root, "clean", &["--quiet"]);

    // Killed in the second fine-tuning epoch: the resumed phase computes its cache afresh.
    let mut child =
        crate::common::start_at_failpoint(root, &["run", "spec.toml", "--out", "killed", "--quiet"], "epoch-4-batch-2");
    child.kill().unwrap();
    child.wait().unwrap();
    let (resumed, out) = run(root, "killed", &["--resume"]);
    assert!(out.contains("phase 2 (fine_tune): trains on cached activations at layer 10"), "{out}");
    for f in ["metrics.csv", "metrics.parquet", "best.safetensors"] {
        assert!(std::fs::read(clean.join(f)).unwrap() == std::fs::read(resumed.join(f)).unwrap(), "{f} differs");
    }
}
