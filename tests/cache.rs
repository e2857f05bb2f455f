//! The feature cache is exact: a run that trains on cached activations gives the
//! numbers of the same run with a full forward pass every epoch, to float tolerance.

mod common;

use std::path::{Path, PathBuf};

use common::{runner, shapes, stderr, stdout, tiny_spec};

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
    assert!(out.contains("phase 2 (fine_tune): trains on cached activations at layer 10"), "{out}");
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

    // With augmentation the frozen part sees new inputs every epoch: no cache.
    let (_, out) = run(root, "augmented", &["--set", "data.augment=[\"hflip\"]"]);
    assert!(out.contains("full forward every epoch (the inputs are augmented)"), "{out}");
}
