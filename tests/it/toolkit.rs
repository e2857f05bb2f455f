//! The fine-tuning toolkit's spec keys (issue 17), end to end.

use crate::common::*;

#[test]
fn label_smoothing_and_balanced_class_weights_train_and_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 2, 10);
    // 10 circles, 6 crosses: unbalanced.
    let crosses: Vec<_> = std::fs::read_dir(data.join("cross")).unwrap().map(|e| e.unwrap().path()).collect();
    for f in crosses.iter().take(4) {
        std::fs::remove_file(f).unwrap();
    }
    let spec = format!("{}\n[loss]\nlabel_smoothing = 0.1\nclass_weights = \"balanced\"\n", tiny_spec(&data));
    std::fs::write(root.join("spec.toml"), &spec).unwrap();
    let o = runner(root, &["run", "spec.toml", "--out", "runs", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = only_run(&root.join("runs/tiny"));
    let summary = summary_json(&run);
    let train = summary["train_images"].as_f64().unwrap();
    let w: Vec<f64> = summary["class_weights"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    // n / (classes x count): the rarer class weighs more, and the weighted counts sum to n.
    assert_eq!(w.len(), 2);
    assert!(w[1] > w[0], "{w:?}");
    let counts = [train / (2.0 * w[0]), train / (2.0 * w[1])];
    assert!((counts[0] + counts[1] - train).abs() < 1e-9 && counts.iter().all(|c| c.fract() == 0.0), "{counts:?}");
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("label_smoothing = 0.1") && config.contains("class_weights = \"balanced\""), "{config}");

    // A grid over the new keys: two runs, two ids, the key in the varying column.
    let grid = format!("{}\n[grid]\n\"loss.label_smoothing\" = [0.0, 0.2]\n", tiny_spec(&data));
    std::fs::write(root.join("grid.toml"), grid).unwrap();
    let o = runner(root, &["plan", "grid.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("loss.label_smoothing=0.0") && out.contains("loss.label_smoothing=0.2"), "{out}");
    // Bad values are spec errors.
    let bad = format!("{}\n[loss]\nclass_weights = [1.0, -1.0]\n", tiny_spec(&data));
    let e = spec_error(root, &bad);
    assert!(e.contains("`loss.class_weights`: expected \"balanced\" or weights from 0 to 1e6"), "{e}");
}

#[test]
fn gradient_accumulation_and_clipping_change_the_updates_and_run_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 2, 10);
    let plain = tiny_spec(&data);
    let tuned = plain.replace(
        "optimizer = { kind = \"sgd\", lr_factor = 0.1, momentum = 0.9 }",
        "optimizer = { kind = \"sgd\", lr_factor = 0.1, momentum = 0.9 }\ngradient_accumulation = 2\nclip_grad_norm = 0.05",
    );
    assert_ne!(plain, tuned);
    let metrics = |name: &str, spec: &str| {
        std::fs::write(
            root.join(format!("{name}.toml")),
            spec.replace("name = \"tiny\"", &format!("name = \"{name}\"")),
        )
        .unwrap();
        let o = runner(root, &["run", &format!("{name}.toml"), "--out", "runs", "--quiet"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let run = only_run(&root.join("runs").join(name));
        std::fs::read_to_string(run.join("metrics.csv")).unwrap()
    };
    let (a, b) = (metrics("plain", &plain), metrics("tuned", &tuned));
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    // The head phase is the same; the fine-tuning phase with its keys is not.
    assert_eq!(a[1], b[1]);
    assert_ne!(a[2], b[2]);
    let bad = tuned.replace("gradient_accumulation = 2", "gradient_accumulation = 0");
    let e = spec_error(root, &bad);
    assert!(e.contains("`phases.1.gradient_accumulation`: expected at least 1 batch, found 0"), "{e}");
}

#[test]
fn layer_decay_and_head_lr_factor_show_in_summary_and_train() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 2, 8);
    std::fs::write(root.join("spec.toml"), tiny_spec(&data)).unwrap();
    let sets = ["--set", "phases.1.optimizer.layer_decay=0.5", "--set", "phases.1.optimizer.head_lr_factor=2"];
    let o = runner(root, &[&["summary", "spec.toml"][..], &sets].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    // Phase 2 (lr 1e-4): the last layer at 1e-4 x 0.5, the one before at x 0.25, the head at x 2.
    let line = |start: &str| out.lines().find(|l| l.trim_start().starts_with(start)).unwrap_or_default().to_string();
    assert!(line("17 ").contains("lr 5.00e-5"), "{out}");
    assert!(line("16 ").contains("lr 2.50e-5"), "{out}");
    assert!(out.lines().any(|l| l.contains("head") && l.contains("lr 2.00e-4")), "{out}");
    assert!(line("0 ").contains("frozen"), "{out}");
    let o = runner(root, &[&["run", "spec.toml", "--out", "runs", "--quiet"][..], &sets].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let bad = runner(root, &["plan", "spec.toml", "--set", "phases.1.optimizer.layer_decay=1.5"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("expected 0 < decay <= 1, found 1.5"), "{}", stderr(&bad));
}

/// A spec with every toolkit key landed so far, on three classes with a test split.
fn all_keys_spec(data: &std::path::Path) -> String {
    format!(
        r#"name = "all_keys"
seed = 11
ema = {{ decay = 0.9, warmup = true }}

[data]
source = "{}"
image_size = 32
batch_size = 6
split = [0.6, 0.2, 0.2]
mixup = 0.4
cutmix = 1.0
augment = [
    "random_resized_crop",
    "hflip",
    "trivial_augment",
    {{ rand_augment = {{ n = 2, m = 9 }} }},
    {{ color_jitter = {{ brightness = 0.4, contrast = 0.4, saturation = 0.4, hue = 0.1 }} }},
    {{ random_erasing = {{ p = 0.25 }} }},
]

[model]
backbone = "efficientnet_lite0"
weights = "none"
head = {{ init = "kaiming" }}

[loss]
label_smoothing = 0.1
class_weights = "balanced"

[eval]
tta = ["hflip"]

[[phases]]
name = "head"
epochs = 2
freeze_up_to = "all"
optimizer = {{ kind = "lion", lr = 1e-4, head_lr_factor = 2.0, weight_decay = 0.1 }}

[[phases]]
name = "fine_tune"
epochs = 3
freeze_up_to = {{ from = 14, to = 12, every = 1 }}
gradient_accumulation = 2
clip_grad_norm = 1.0
optimizer = {{ kind = "lamb", lr_factor = 0.1, layer_decay = 0.7 }}
"#,
        data.display()
    )
}

#[test]
fn every_toolkit_key_at_once_runs_and_resumes_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 3, 12);
    std::fs::write(root.join("spec.toml"), all_keys_spec(&data)).unwrap();
    let o = runner(root, &["run", "spec.toml", "--out", "clean", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let clean = only_run(&root.join("clean/all_keys"));
    let log = std::fs::read_to_string(clean.join("run.log")).unwrap();
    assert!(log.contains("weight EMA (decay 0.9, with warm-up)"), "{log}");
    assert!(log.contains("test-time augmentation") && log.contains("the batches are mixed"), "{log}");
    assert_eq!(summary_json(&clean)["status"], "completed");

    assert!(log.contains("epoch 4: unfroze layer 13 (block 12)") && log.contains("epoch 5: unfroze layer 12"), "{log}");

    // Killed in the last fine-tuning epoch, after a layer was unfrozen: the checkpoint carries
    // the EMA, and the step count of the parameters that joined the optimizer late.
    let child = start_at_failpoint(root, &["run", "spec.toml", "--out", "killed", "--quiet"], "epoch-5-batch-2");
    let killed = only_run(&root.join("killed/all_keys"));
    let mut child = child;
    child.kill().unwrap();
    child.wait().unwrap();
    let ck = runner::record::checkpoint::Checkpoint::read(&killed.join("checkpoint.safetensors")).unwrap();
    assert_eq!((ck.state.epoch, ck.state.next_phase, ck.state.next_phase_epoch), (4, 1, 2));
    assert!(ck.ema.iter().any(|(n, _)| n == "ema/updates"), "no EMA in the checkpoint");
    assert!(ck.optimizer.iter().any(|(n, _)| n.starts_with("_blocks.12.") && n.ends_with("/step")), "no late steps");
    // The EMA is not the model: the head differs.
    let weight = |set: &[(String, tch::Tensor)], name: &str| {
        set.iter().find(|(n, _)| n == name).map(|(_, t)| t.shallow_clone()).unwrap()
    };
    let (live, avg) = (weight(&ck.model, "_fc.weight"), weight(&ck.ema, "ema/_fc.weight"));
    assert!(!live.allclose(&avg, 1e-6, 1e-6, false), "the EMA equals the weights");
    let o = runner(root, &["run", "spec.toml", "--out", "killed", "--resume", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // (Gradual unfreezing and clip_grad_norm together: the total norm is summed in the
    // model's order in both, numerics version 7.)
    let files = ["metrics.csv", "best.safetensors", "confusion.csv", "test_metrics.csv", "val_predictions.csv"];
    let differ: Vec<&str> =
        files.into_iter().filter(|f| std::fs::read(clean.join(f)).ok() != std::fs::read(killed.join(f)).ok()).collect();
    assert!(differ.is_empty(), "differ after the resume: {differ:?}");
    // The best weights are the EMA's, not the model's last ones (the best epoch's EMA).
    let best = tch::Tensor::read_safetensors(clean.join("best.safetensors")).unwrap();
    assert!(best.iter().any(|(n, _)| n == "_fc.weight"));

    // predict averages over the run's views by default; --tta none and hflip differ.
    let image = std::fs::read_dir(data.join("circle")).unwrap().next().unwrap().unwrap().path();
    let run_arg = clean.to_str().unwrap();
    let probs = |extra: &[&str]| {
        let args = [&["predict", image.to_str().unwrap(), "--run", run_arg, "--json"][..], extra].concat();
        let o = runner(root, &args);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        v[0]["top"].as_array().unwrap().iter().map(|t| t["probability"].as_f64().unwrap()).collect::<Vec<f64>>()
    };
    let (default, hflip, none) = (probs(&[]), probs(&["--tta", "hflip"]), probs(&["--tta", "none"]));
    assert_eq!(default, hflip);
    assert_ne!(hflip, none);
    assert!((hflip.iter().sum::<f64>() - 1.0).abs() < 1e-6, "{hflip:?}");

    // A grid over the new keys: `runner plan` shows them as its varying columns.
    let grid = format!(
        "{}\n[grid]\n\"ema.decay\" = [0.9, 0.99]\n\"model.head.init\" = [\"pytorch\", \"kaiming\"]\n",
        all_keys_spec(&data)
    );
    std::fs::write(root.join("grid.toml"), grid).unwrap();
    let o = runner(root, &["plan", "grid.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for cell in ["ema.decay=0.9 ", "ema.decay=0.99 ", "model.head.init=\"pytorch\"", "model.head.init=\"kaiming\""] {
        assert!(out.contains(cell), "{cell} not in the plan:\n{out}");
    }
    let e = spec_error(root, &all_keys_spec(&data).replace("decay = 0.9,", "decay = 1.5,"));
    assert!(e.contains("`ema.decay`: expected 0 < decay < 1, found 1.5"), "{e}");
    let e = spec_error(root, &all_keys_spec(&data).replace("n = 2, m = 9", "n = 2, m = 40"));
    assert!(
        e.contains("`data.augment`: rand_augment: expected 1 <= n <= 14 and 0 <= m <= 30, found n = 2, m = 40"),
        "{e}"
    );
    let e = spec_error(root, &all_keys_spec(&data).replace("cutmix = 1.0", "cutmix = 0.0"));
    assert!(e.contains("`data.cutmix`: expected a Beta parameter alpha > 0, found 0"), "{e}");
    let e = spec_error(root, &all_keys_spec(&data).replace("tta = [\"hflip\"]", "tta = [\"vflip\"]"));
    assert!(e.contains("eval.tta"), "{e}");
}

#[test]
fn gradual_unfreezing_moves_the_cache_down_exactly_and_marks_the_curves() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 2, 10);
    let spec = tiny_spec(&data)
        .replace("epochs = 1\nfreeze_up_to = 10", "epochs = 5\nfreeze_up_to = { from = 12, to = 10, every = 2 }");
    assert!(spec.contains("every = 2"), "{spec}");
    let run = |name: &str, extra: &[&str]| {
        std::fs::write(
            root.join(format!("{name}.toml")),
            spec.replace("name = \"tiny\"", &format!("name = \"{name}\"")),
        )
        .unwrap();
        let file = format!("{name}.toml");
        let args = [&["run", file.as_str(), "--out", "runs", "--quiet"][..], extra].concat();
        let o = runner(root, &args);
        assert!(o.status.success(), "{}", stderr(&o));
        only_run(&root.join("runs").join(name))
    };
    let cached = run("cached", &[]);
    let full = run("full", &["--set", "data.cache=\"off\""]);
    let log = std::fs::read_to_string(cached.join("run.log")).unwrap();
    // Phase 2 starts at 12; epochs 4 and 6 (its third and fifth) unfreeze layers 11 and 10,
    // each time on activations the head phase's one pass kept.
    let lines: Vec<&str> = log.lines().collect();
    let line = |start: &str| lines.iter().find(|l| l.contains(start)).copied().unwrap_or_default();
    assert!(
        line("phase 2 (fine_tune)").contains("activations at layer 12 (block 11) cached by an earlier pass"),
        "{log}"
    );
    assert!(
        line("epoch 4: unfroze layer 11 (block 10)").contains("layer 11 (block 10) cached by an earlier pass"),
        "{log}"
    );
    assert!(
        line("epoch 6: unfroze layer 10 (block 9)").contains("layer 10 (block 9) cached by an earlier pass"),
        "{log}"
    );
    // The cache is exact: the same numbers as a full forward every epoch, to float tolerance.
    let table = |dir: &std::path::Path| -> Vec<Vec<f64>> {
        std::fs::read_to_string(dir.join("metrics.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').skip(2).map(|v| v.parse().unwrap()).collect())
            .collect()
    };
    let (a, b) = (table(&cached), table(&full));
    assert_eq!(a.len(), 6);
    for (x, y) in a.iter().zip(&b) {
        for (u, v) in x.iter().zip(y) {
            assert!((u - v).abs() < 1e-4, "cached {x:?} vs full forward {y:?}");
        }
    }
    // The curves mark the unfreezing (orange) besides the phase start.
    let img = image::open(cached.join("curves.png")).unwrap().to_rgb8();
    assert!(img.pixels().any(|p| p.0 == [230, 140, 20]), "no unfreezing marker in curves.png");
    let bad = spec.replace("to = 10", "to = 12");
    let e = spec_error(root, &bad);
    assert!(e.contains("`phases.1.freeze_up_to.to`: expected `to` below `from` (12), found 12"), "{e}");
}

#[test]
fn bf16_autocast_trains_on_the_cpu_close_to_fp32_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 2, 8);
    let fp32 = tiny_spec(&data);
    // A top-level key: before the first table.
    let bf16 = fp32.replacen("seed = 3\n", "seed = 3\nprecision = \"bf16\"\n", 1);
    std::fs::write(root.join("fp32.toml"), &fp32).unwrap();
    std::fs::write(root.join("bf16.toml"), bf16.replace("name = \"tiny\"", "name = \"tiny_bf16\"")).unwrap();
    let mut losses = vec![];
    for (spec, experiment) in [("fp32.toml", "tiny"), ("bf16.toml", "tiny_bf16")] {
        let o = runner(root, &["run", spec, "--out", "runs", "--quiet"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let run = only_run(&root.join("runs").join(experiment));
        let summary = summary_json(&run);
        assert_eq!(summary["status"], "completed", "{summary}");
        let precision = if experiment == "tiny" { "fp32" } else { "bf16" };
        assert_eq!(summary["precision"], precision, "{summary}");
        let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
        let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
        let col = header.iter().position(|h| *h == "train_loss").unwrap();
        let loss: Vec<f64> = metrics.lines().skip(1).map(|l| l.split(',').nth(col).unwrap().parse().unwrap()).collect();
        losses.push(loss);
    }
    // bfloat16 arithmetic really ran (other numbers), and trained about as fp32 did (a tiny,
    // randomly initialised model fine-tuned with momentum: the rounding moves the second
    // epoch's loss by a few percent).
    assert_ne!(losses[0], losses[1]);
    for (a, b) in losses[0].iter().zip(&losses[1]) {
        assert!(b.is_finite() && (a - b).abs() <= 0.15 * a.abs(), "fp32 {:?} vs bf16 {:?}", losses[0], losses[1]);
    }
}

#[test]
fn multi_crop_test_time_views_validate_and_predict() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = crate::common::shapes(root, 2, 6);
    let spec = format!("{}\n[eval]\ntta = [\"ten_crop\"]\n", crate::common::tiny_spec(&data));
    std::fs::write(root.join("spec.toml"), &spec).unwrap();
    let o = runner(root, &["run", "spec.toml", "--out", "runs", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = only_run(&root.join("runs/tiny"));
    let log = std::fs::read_to_string(run.join("run.log")).unwrap();
    assert!(log.contains("test-time augmentation: softmax averaged over the image and ten_crop"), "{log}");
    assert!(log.contains("validation runs the full forward (eval.tta)"), "{log}");
    assert_eq!(summary_json(&run)["status"], "completed");

    let image = std::fs::read_dir(data.join("circle")).unwrap().next().unwrap().unwrap().path();
    let probs = |extra: &[&str]| {
        let args =
            [&["predict", image.to_str().unwrap(), "--run", run.to_str().unwrap(), "--json"][..], extra].concat();
        let o = runner(root, &args);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        v[0]["top"].as_array().unwrap().iter().map(|t| t["probability"].as_f64().unwrap()).collect::<Vec<f64>>()
    };
    let (default, ten, five, none) =
        (probs(&[]), probs(&["--tta", "ten_crop"]), probs(&["--tta", "five_crop"]), probs(&["--tta", "none"]));
    assert_eq!(default, ten, "predict takes the run's views");
    assert_ne!(ten, none);
    assert_ne!(five, ten);
    assert!((five.iter().sum::<f64>() - 1.0).abs() < 1e-6, "{five:?}");

    let scaled = probs(&["--tta", "hflip,scale=1.15"]);
    assert_ne!(scaled, none);
    assert!((scaled.iter().sum::<f64>() - 1.0).abs() < 1e-6, "{scaled:?}");
    let o = runner(root, &["predict", image.to_str().unwrap(), "--run", run.to_str().unwrap(), "--tta", "scale=3"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    let e = spec_error(root, &spec.replace("[\"ten_crop\"]", "[{ scale = 0.5 }]"));
    assert!(e.contains("`eval.tta`: expected a scale from 0.875 to 2, found 0.5"), "{e}");
    let e = spec_error(root, &spec.replace("[\"ten_crop\"]", "[\"ten_crop\", \"hflip\"]"));
    assert!(e.contains("`eval.tta`: ten_crop already holds the five crops and their mirrors: drop \"hflip\""), "{e}");
}
