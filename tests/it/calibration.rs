//! `eval.calibrate = "temperature"`: a temperature fitted on the best weights' validation
//! outputs lowers an over-confident model's calibration error, and `runner predict` and the
//! TorchScript export apply it alike.

use crate::common::{only_run, runner, shapes, stderr, summary_json, tiny_spec};

#[test]
fn temperature_scaling_calibrates_an_over_confident_model_and_travels_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = shapes(root, 3, 40);
    // ImageNet features and ten epochs of the head at a high rate: it learns the training
    // images far more surely than it tells the validation images apart.
    let spec = tiny_spec(&data)
        .replace("image_size = 32", "image_size = 64\nsplit = [0.5, 0.5]")
        .replace("weights = \"none\"", "weights = \"imagenet\"")
        .replace(
            "epochs = 1\nfreeze_up_to = \"all\"\noptimizer = { kind = \"adam\", lr = 1e-3 }",
            "epochs = 10\nfreeze_up_to = \"all\"\noptimizer = { kind = \"adam\", lr = 3e-2 }",
        )
        + "\n[eval]\ncalibrate = \"temperature\"\n";
    assert!(spec.contains("epochs = 10") && spec.contains("imagenet"));
    std::fs::write(root.join("spec.toml"), &spec).unwrap();
    let o = runner(root, &["run", "spec.toml", "--out", "runs", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = only_run(&root.join("runs/tiny"));
    let summary = summary_json(&run);
    let c = &summary["calibration"];
    let number = |k: &str| c[k].as_f64().unwrap_or_else(|| panic!("no {k}: {summary}"));
    println!("calibration: {c}");
    assert!(number("temperature") > 1.0, "over-confident: the logits are scaled down: {c}");
    assert!(number("ece_after") < number("ece_before"), "{c}");
    assert!(number("nll_after") <= number("nll_before"), "{c}");
    assert_eq!(c["images"], summary["val_images"]);
    let log = std::fs::read_to_string(run.join("run.log")).unwrap();
    assert!(log.contains("calibration: temperature"), "{log}");
    assert!(image::open(run.join("reliability.png")).unwrap().width() > 300);

    // predict divides the logits by the temperature; the TorchScript export outputs them so.
    let image = data.join("circle/0001.jpg");
    let o = runner(root, &["predict", "--run", run.to_str().unwrap(), "-k", "2", "--json", image.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let predicted: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let top = predicted[0]["top"][0]["probability"].as_f64().unwrap();
    let o = runner(root, &["export", run.to_str().unwrap(), "--format", "torchscript", "--out", "exported"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("exported/model.json")).unwrap()).unwrap();
    assert_eq!(card["temperature"].as_f64(), Some(number("temperature")));
    let x = runner::predict::Predictor::from_run(&run).unwrap().inputs(std::slice::from_ref(&image)).unwrap();
    let module = tch::CModule::load(root.join("exported/model.pt")).unwrap();
    let logits = tch::no_grad(|| module.forward_ts(&[&x]).unwrap()).to_kind(tch::Kind::Double);
    let p = |l: &tch::Tensor| l.softmax(-1, tch::Kind::Double).max().double_value(&[]);
    assert!((p(&logits) - top).abs() < 1e-5, "TorchScript {} vs predict {top}", p(&logits));
    let raw = p(&(&logits * number("temperature")));
    assert!(raw > top + 1e-3, "without the temperature the model is surer: {raw} vs {top}");
}
