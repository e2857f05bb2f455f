//! The feature cache is exact: a run that trains on cached activations gives the
//! numbers of the same run with a full forward pass every epoch, to float tolerance.

use std::path::{Path, PathBuf};

use crate::common::{runner, runner_with_env, shapes, stderr, stdout, tiny_spec};

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

/// The persistent feature store: later grid points train on the features earlier ones kept
/// (run.log says so) with the same metrics bit for bit as computing them; a store file
/// altered on disk is not read but computed again; `runner cache` lists and prunes it.
#[test]
fn the_feature_store_serves_later_runs_exactly_and_never_an_altered_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 2, 8);
    let spec = format!("{}\n[grid]\n\"phases.1.optimizer.lr_factor\" = [0.1, 0.3, 0.5]\n", tiny_spec(&data));
    std::fs::write(root.join("spec.toml"), spec).unwrap();
    let store = root.join("store");
    let images = root.join("images");
    let with_store =
        [("RUNNER_FEATURE_STORE", store.to_str().unwrap()), ("RUNNER_IMAGE_STORE", images.to_str().unwrap())];
    let o = runner_with_env(root, &["run", "spec.toml", "--out", "stored"], &with_store);
    assert!(o.status.success(), "{}", stderr(&o));
    // A grid ends with the sweep's table: a header and a row a point.
    let printed = stdout(&o);
    let table: Vec<&str> = printed.lines().skip_while(|l| !l.starts_with("experiment")).collect();
    assert_eq!(table.iter().filter(|l| l.starts_with("tiny") && l.contains("completed")).count(), 3, "{table:?}");
    let o = runner(root, &["run", "spec.toml", "--out", "computed"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let runs = |out: &str| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> =
            std::fs::read_dir(root.join(out).join("tiny")).unwrap().map(|e| e.unwrap().path()).collect();
        v.sort();
        v
    };
    let log = |run: &Path| std::fs::read_to_string(run.join("run.log")).unwrap();
    let from_store = |run: &Path| log(run).lines().filter(|l| l.contains("of the feature store (")).count();
    let stored = runs("stored");
    assert_eq!(stored.len(), 3);
    // Point 1 keeps the pooled features and, from the same pass, the activations at layer
    // 10 that its second phase then trains on from the store; points 2 and 3 load both.
    let mut loads: Vec<usize> = stored.iter().map(|r| from_store(r)).collect();
    loads.sort();
    assert_eq!(loads, [1, 2, 2]);
    for (a, b) in stored.iter().zip(runs("computed")) {
        assert_eq!(a.file_name(), b.file_name(), "the store is no part of the run id");
        assert_eq!(metrics(a), metrics(&b), "{}: stored features give other numbers", a.display());
    }
    // Every stored file altered in its middle (same size): read as nothing, computed again.
    let files = runner::sys::filestore::entries(&store);
    assert_eq!(files.len(), 2, "{files:?}");
    for f in &files {
        let mut bytes = std::fs::read(&f.path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&f.path, bytes).unwrap();
    }
    let o = runner_with_env(root, &["run", "spec.toml", "--out", "stored", "--force"], &with_store);
    assert!(o.status.success(), "{}", stderr(&o));
    // A forced rerun starts each run.log afresh: these are the rerun's lines.
    let kept: usize = stored.iter().map(|r| log(r).matches("; kept in the feature store").count()).sum();
    assert_eq!(kept, 1, "point 1 computed both altered files again in one pass and kept them");
    assert_eq!(stored.iter().map(|r| from_store(r)).sum::<usize>(), 5, "point 1's phase 2, points 2 and 3 loaded them");
    for (a, b) in stored.iter().zip(runs("computed")) {
        assert_eq!(metrics(a), metrics(&b), "{}: the rerun after the alteration", a.display());
    }
    let list = runner_with_env(root, &["cache", "list"], &with_store);
    assert!(stdout(&list).contains("features: 2 files"), "{}", stdout(&list));
    assert!(stdout(&list).contains("images: 1 files"), "{}", stdout(&list));
    let pruned = runner_with_env(root, &["cache", "prune", "--all"], &with_store);
    assert!(stdout(&pruned).contains("features: removed 2 files"), "{}", stdout(&pruned));
    assert!(stdout(&pruned).contains("images: removed 1 files"), "{}", stdout(&pruned));
    assert!(runner::sys::filestore::entries(&store).is_empty());
    assert!(runner::sys::filestore::entries(&images).is_empty());
}

/// Two processes computing the same features at once, into one store: both runs complete
/// with the numbers of a run without the store, and the store holds each file once, whole.
#[test]
fn two_processes_filling_one_feature_store_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 2, 8);
    std::fs::write(root.join("spec.toml"), tiny_spec(&data)).unwrap();
    let store = root.join("store");
    let start = |out: &str| {
        crate::common::runner_bin()
            .current_dir(root)
            .args(["run", "spec.toml", "--out", out, "--quiet"])
            .env("RUNNER_THREADS", "1")
            .env("RUNNER_FEATURE_STORE", &store)
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (start("a"), start("b"));
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let o = crate::common::runner_with_env(root, &["run", "spec.toml", "--out", "plain"], &[("RUNNER_THREADS", "1")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let only = |out: &str| std::fs::read_dir(root.join(out).join("tiny")).unwrap().next().unwrap().unwrap().path();
    assert_eq!(metrics(&only("a")), metrics(&only("plain")));
    assert_eq!(metrics(&only("b")), metrics(&only("plain")));
    let names: Vec<String> =
        std::fs::read_dir(&store).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    // The pooled features and the activations at layer 10, from the same pass.
    assert_eq!(names.iter().filter(|n| n.ends_with(".safetensors")).count(), 2, "{names:?}");
    assert!(names.iter().all(|n| !n.starts_with('.')), "a temporary left behind: {names:?}");
}
