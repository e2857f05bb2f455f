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
    assert!(e.contains("`loss.class_weights`: expected \"balanced\" or finite weights >= 0"), "{e}");
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
