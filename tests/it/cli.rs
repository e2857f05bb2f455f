//! The binary as users drive it: outputs of a run, and bad input that gets a
//! one-line error, a non-zero exit and nothing written.

use crate::common::*;

#[test]
fn missing_spec_file() {
    let dir = tempfile::tempdir().unwrap();
    let o = runner(dir.path(), &["run", "nope.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o), "error: nope.toml: spec file not found\n");
    assert!(!dir.path().join("reports").exists());
}

#[test]
fn an_unknown_allocator_choice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = shapes(dir.path(), 2, 4);
    let spec = dir.path().join("exp.toml");
    std::fs::write(&spec, tiny_spec(&data)).unwrap();
    let o = runner_with_env(dir.path(), &["run", "exp.toml"], &[("RUNNER_MALLOC", "jemalloc")]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "error: RUNNER_MALLOC=\"jemalloc\" is not understood: use \"system\" (glibc's defaults) or \"tuned\" (the default)\n"
    );
    assert!(!dir.path().join("reports").exists());
    // The documented opt-out is not a spec key: the same run goes through with it.
    let o = runner_with_env(dir.path(), &["plan", "exp.toml"], &[("RUNNER_MALLOC", "system")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn misspelt_key_points_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = shapes(dir.path(), 2, 4);
    let spec = tiny_spec(&data).replace("batch_size = 8", "batch_sise = 8");
    std::fs::write(dir.path().join("spec.toml"), spec).unwrap();
    let o = runner(dir.path(), &["run", "spec.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "error: spec.toml:7:1: `data.batch_sise`: unknown key `batch_sise`, did you mean `batch_size`?\n"
    );
    assert!(!dir.path().join("reports").exists());
}

#[test]
fn wrong_type_and_bad_freeze_index() {
    let dir = tempfile::tempdir().unwrap();
    let data = shapes(dir.path(), 2, 4);
    std::fs::write(
        dir.path().join("a.toml"),
        tiny_spec(&data).replace("epochs = 1\nfreeze_up_to = 10", "epochs = \"two\"\nfreeze_up_to = 10"),
    )
    .unwrap();
    let o = runner(dir.path(), &["run", "a.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o), "error: a.toml:21:1: `phases.1.epochs`: expected usize, found string \"two\"\n");

    std::fs::write(dir.path().join("b.toml"), tiny_spec(&data).replace("freeze_up_to = 10", "freeze_up_to = 40"))
        .unwrap();
    let o = runner(dir.path(), &["run", "b.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "error: b.toml:22:1: `phases.1.freeze_up_to`: efficientnet_lite0 has 18 layers (0..17), \
         so freeze_up_to must be at most 18 or \"all\", found 40\n"
    );
}

#[test]
fn data_folder_without_images() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("empty");
    std::fs::create_dir_all(data.join("cats")).unwrap();
    std::fs::create_dir_all(data.join("dogs")).unwrap();
    std::fs::write(data.join("dogs/readme.txt"), "not an image").unwrap();
    std::fs::write(dir.path().join("spec.toml"), tiny_spec(&data)).unwrap();
    let o = runner(dir.path(), &["run", "spec.toml"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with(&format!("error: no images found in {}", data.display())), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!dir.path().join("reports").exists());
}

#[test]
fn unreachable_weights_say_where_to_put_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = shapes(dir.path(), 2, 4);
    // A loopback port with nothing listening: the download fails at once, as it does offline.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/models/mobilenet_v2-b0353104.pth");
    let spec = tiny_spec(&data).replace(
        "backbone = \"efficientnet_lite0\"\nweights = \"none\"",
        &format!("backbone = \"mobilenet_v2\"\nweights = \"{url}\""),
    );
    std::fs::write(dir.path().join("m.toml"), spec).unwrap();
    let cache = dir.path().join("cache");
    let o = runner_bin().current_dir(dir.path()).args(["run", "m.toml"]).env("RUNNER_CACHE", &cache).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with(&format!("error: cannot get {url}: ")), "{err}");
    assert!(
        err.ends_with(&format!(
            "Download the file by hand and put it at {}/weights/mobilenet_v2-b0353104.pth, or set model.weights to a local file\n",
            cache.display()
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!dir.path().join("reports").exists());
}

#[test]
fn summary_shows_shapes_parameters_and_the_freeze_plan() {
    let o = runner(std::path::Path::new("."), &["summary", "resnet18"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    // torchvision's ResNet-18 has 11,689,512 parameters; layer4 ends at 7x7 for 224 px.
    assert!(out.contains("total parameters: 11689512"), "{out}");
    assert!(out.lines().any(|l| l.contains("layer4.1") && l.contains("[1, 512, 7, 7]")), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let data = shapes(dir.path(), 3, 2);
    std::fs::write(dir.path().join("spec.toml"), tiny_spec(&data)).unwrap();
    let o = runner(dir.path(), &["summary", "spec.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let row = |index: &str| out.lines().find(|l| l.split_whitespace().next() == Some(index)).unwrap().to_string();
    assert!(row("9").trim_end().ends_with("frozen        frozen"), "{out}");
    assert!(row("10").trim_end().ends_with("frozen        trainable"), "{out}");
    // The head has 3 outputs: 1280 x 3 + 3 parameters, trainable in both phases.
    assert!(out.contains("phase head: 3843 trainable"), "{out}");
    assert!(!dir.path().join("reports").exists());
}

#[test]
fn layers_lists_what_freeze_up_to_counts() {
    let o = runner(std::path::Path::new("."), &["layers", "efficientnet_lite0"]);
    assert!(o.status.success());
    let out = stdout(&o);
    let rows: Vec<&str> =
        out.lines().filter(|l| l.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit())).collect();
    assert_eq!(rows.len(), 18);
    // Stem: 3x3x3x32 conv + 2x32 BatchNorm affine parameters.
    assert_eq!(rows[0].split_whitespace().collect::<Vec<_>>(), ["0", "stem", "928", "yes"]);
    assert!(rows[10].contains("block 9"));
    let o = runner(std::path::Path::new("."), &["layers", "efficientnet_lite"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("did you mean `efficientnet_lite0`?"));
}

#[test]
fn run_writes_every_output_and_reuses_a_completed_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = shapes(dir.path(), 3, 10);
    std::fs::write(dir.path().join("spec.toml"), tiny_spec(&data)).unwrap();
    let o = runner(dir.path(), &["run", "spec.toml", "--out", "out"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let runs: Vec<_> = std::fs::read_dir(dir.path().join("out/tiny")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    let run_id = run.file_name().unwrap().to_str().unwrap().to_string();
    for f in
        ["config.toml", "metrics.csv", "metrics.parquet", "timing.csv", "curves.png", "best.safetensors", "run.log"]
    {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["run_id"], run_id);
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["epochs"], 2);
    assert!(summary["best_val_acc"].as_f64().unwrap() >= 0.0);
    assert!(summary["wall_s"].as_f64().unwrap() > 0.0);

    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "epoch,phase,lr,train_loss,train_acc,val_loss,val_acc");
    assert!(lines[1].starts_with("1,head,0.001,"), "{}", lines[1]);
    assert!(lines[2].starts_with("2,fine_tune,0.0001"), "{}", lines[2]);

    // The resolved config is itself a valid spec; with the manifest it gives the same run id.
    let resolved = runner::config::spec::Spec::load(&run.join("config.toml")).unwrap();
    let manifest = std::fs::read(run.join("manifest.csv")).unwrap();
    let manifest_sha: String = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&manifest))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(summary["manifest_sha256"], manifest_sha);
    assert_eq!(runner::run::run_id(&resolved, &manifest_sha), run_id);

    let out = stdout(&o);
    assert!(out.contains(&format!("metrics: out/tiny/{run_id}/metrics.csv")), "{out}");
    assert!(out.contains(&format!("curves:  out/tiny/{run_id}/curves.png")), "{out}");

    // Predict from the run: its best weights and class names.
    let image = data.join("circle/0000.jpg");
    let o =
        runner(dir.path(), &["predict", "--run", run.to_str().unwrap(), "-k", "2", "--json", image.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let predictions: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let top = predictions[0]["top"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    let p0 = top[0]["probability"].as_f64().unwrap();
    assert!(p0 >= top[1]["probability"].as_f64().unwrap() && p0 <= 1.0);
    let label = top[0]["label"].as_str().unwrap();
    assert_eq!(summary["classes"][top[0]["index"].as_u64().unwrap() as usize], label);
    // A file that is not an image is reported, and the exit status says so.
    let o = runner(dir.path(), &["predict", "--run", run.to_str().unwrap(), "spec.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("error: not an image (unknown format)"), "{}", stdout(&o));

    let before = std::fs::read(run.join("best.safetensors")).unwrap();
    let again = runner(dir.path(), &["run", "spec.toml", "--out", "out", "--quiet"]);
    assert!(again.status.success());
    assert!(stdout(&again).contains("already completed"), "{}", stdout(&again));
    assert_eq!(std::fs::read(run.join("best.safetensors")).unwrap(), before);
}

#[test]
fn predict_takes_folders_and_globs_in_batches_writes_a_csv_and_names_imagenet_classes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = crate::common::shapes(root, 2, 5);
    std::fs::write(data.join("circle/broken.jpg"), b"not a jpeg").unwrap();
    // A folder (recursively: 10 images and the broken one) and a quoted glob (5 more, counted again).
    let o = runner(
        root,
        &[
            "predict",
            "--backbone",
            "efficientnet_lite0",
            "--image-size",
            "64",
            "-k",
            "3",
            "--batch-size",
            "4",
            "--csv",
            "out.csv",
            "shapes",
            "shapes/cross/*.jpg",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "one file cannot be read: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("predicted 16 images in") && err.contains("images/s"), "{err}");
    assert!(err.contains("1 of 16 images could not be read"), "{err}");
    let csv = std::fs::read_to_string(root.join("out.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("path,class_1,probability_1,class_2,probability_2,class_3,probability_3,error"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 16, "{csv}");
    let names = runner::predict::imagenet_classes();
    assert_eq!((names.len(), names[285].as_str(), names[967].as_str()), (1000, "Egyptian cat", "espresso"));
    for row in &rows {
        let cells: Vec<&str> = row.split(',').collect();
        if cells[0].ends_with("broken.jpg") {
            assert!(cells[1].is_empty() && !cells[7].is_empty(), "{row}");
            continue;
        }
        // ImageNet class names, not indices; probabilities in order.
        assert!(names.iter().any(|n| n == cells[1].trim_matches('"')), "{row}");
        let p: Vec<f64> = [2, 4, 6].iter().map(|&i| cells[i].parse().unwrap()).collect();
        assert!(p[0] >= p[1] && p[1] >= p[2] && p[0] <= 1.0, "{row}");
    }
    // Batched and one at a time give the same classes and probabilities.
    let image = data.join("circle/0000.jpg");
    let one = runner(
        root,
        &["predict", "--backbone", "efficientnet_lite0", "--image-size", "64", "-k", "3", "--json"]
            .iter()
            .copied()
            .chain([image.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(one.status.success(), "{}", stderr(&one));
    let one: serde_json::Value = serde_json::from_str(&stdout(&one)).unwrap();
    let row = rows.iter().find(|r| r.starts_with(image.to_str().unwrap()) || r.contains("circle/0000.jpg")).unwrap();
    let cells: Vec<&str> = row.split(',').collect();
    assert_eq!(one[0]["top"][0]["label"].as_str().unwrap(), cells[1].trim_matches('"'));
    let p: f64 = cells[2].parse().unwrap();
    assert!((one[0]["top"][0]["probability"].as_f64().unwrap() - p).abs() < 1e-5, "{one} vs {row}");
    // A pattern that matches nothing and a folder without images are errors that say so.
    let o = runner(root, &["predict", "--backbone", "efficientnet_lite0", "nothing/*.png"]);
    assert!(stderr(&o).contains("nothing/*.png: the pattern matches no file"), "{}", stderr(&o));
    std::fs::create_dir_all(root.join("empty")).unwrap();
    let o = runner(root, &["predict", "--backbone", "efficientnet_lite0", "empty"]);
    assert!(stderr(&o).contains("no image files (.jpg, .jpeg, .png) in this folder"), "{}", stderr(&o));
    assert!(!root.join("empty.csv").exists());
}

/// Loads an export's TorchScript file with PyTorch's `torch.jit.load` and its ONNX file with
/// onnxruntime, and prints both's logits for an input given as raw float32 bytes (argv:
/// the export's folder, the input file, then the input's shape).
const PYTHON_LOGITS: &str = r#"
import json, sys, torch, onnxruntime
folder, data, shape = sys.argv[1], open(sys.argv[2], "rb").read(), list(map(int, sys.argv[3:]))
x = torch.frombuffer(bytearray(data), dtype=torch.float32).view(*shape)
module = torch.jit.load(folder + "/model.pt")
with torch.no_grad():
    jit = module(x).tolist()
session = onnxruntime.InferenceSession(folder + "/model.onnx", providers=["CPUExecutionProvider"])
onnx = session.run(["logits"], {"images": x.numpy()})[0].tolist()
print(json.dumps({"torch": torch.__version__, "torchscript": jit, "onnx": onnx}))
"#;

/// The logits of an export's `model.pt` in PyTorch and `model.onnx` in onnxruntime (from the
/// test command's torch venv) for the input `x`.
fn python_logits(root: &std::path::Path, export: &std::path::Path, x: &tch::Tensor) -> (Vec<f64>, Vec<f64>) {
    let input = root.join("input.f32");
    let values = Vec::<f32>::try_from(x.flatten(0, -1)).unwrap();
    std::fs::write(&input, values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let o = std::process::Command::new(torch_python())
        .args(["-c", PYTHON_LOGITS])
        .arg(export)
        .arg(&input)
        .args(x.size().iter().map(i64::to_string))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(out["torch"].as_str().unwrap().starts_with("2.11.0"), "{out}");
    let first = |k: &str| serde_json::from_value::<Vec<Vec<f64>>>(out[k].clone()).unwrap().remove(0);
    (first("torchscript"), first("onnx"))
}

fn torch_python() -> std::path::PathBuf {
    crate::common::cached_python("torch-venv", "runner_setup_torch")
}

/// `runner predict --logits --json` of one image: its top classes and its logits.
fn predict_logits(
    root: &std::path::Path,
    how: &str,
    what: &std::path::Path,
    image: &std::path::Path,
) -> (serde_json::Value, Vec<f64>) {
    let o = runner(
        root,
        &["predict", how, what.to_str().unwrap(), "--json", "--logits", "-k", "3", image.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    (out[0]["top"].clone(), serde_json::from_value(out[0]["logits"].clone()).unwrap())
}

fn max_abs_difference(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn exported_torchscript_and_safetensors_models_give_the_runs_logits() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = crate::common::shapes(root, 3, 4);
    let image = data.join("circle/0000.jpg");
    // efficientnet_lite0's module takes normalised input; resnet18's includes the
    // preprocessing and takes 0-255 pixels.
    for (backbone, preprocessing) in [("efficientnet_lite0", false), ("resnet18", true)] {
        let spec = crate::common::tiny_spec(&data)
            .replace("name = \"tiny\"", &format!("name = \"{backbone}\""))
            .replace("efficientnet_lite0", backbone)
            .replace("freeze_up_to = 10", "freeze_up_to = 5");
        std::fs::write(root.join(format!("{backbone}.toml")), spec).unwrap();
        let o = runner(root, &["run", &format!("{backbone}.toml"), "--out", "runs", "--quiet"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let run = crate::common::only_run(&root.join("runs").join(backbone));
        let out = root.join(format!("export-{backbone}"));
        let python = torch_python();
        let mut args = vec!["export", run.to_str().unwrap(), "--format", "safetensors", "--format", "torchscript"];
        args.extend(["--format", "onnx", "--python", python.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        if preprocessing {
            args.push("--with-preprocessing");
        }
        let o = runner(root, &args);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains("model.safetensors, model.pt, model.onnx and model.json"), "{}", stdout(&o));

        // model.json describes it.
        let card: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap()).unwrap();
        assert_eq!(card["backbone"], backbone);
        assert_eq!(card["classes"], serde_json::json!(["circle", "cross", "ring"]));
        assert_eq!((card["image_size"].as_u64(), card["resize"].as_u64()), (Some(32), Some(37)), "{card}");
        assert_eq!(card["torchscript_preprocessing"], preprocessing, "{card}");
        assert_eq!(card["traced_batch_size"], 1, "{card}");

        // The image as runner prepares it (normalised), or its 0-255 pixels for a module that
        // normalises itself, with the mean and std model.json gives.
        let predictor = runner::predict::Predictor::from_run(&run).unwrap();
        let mut x = predictor.inputs(std::slice::from_ref(&image)).unwrap();
        if preprocessing {
            let stat = |k: &str| {
                let v: Vec<f32> = serde_json::from_value(card[k].clone()).unwrap();
                tch::Tensor::from_slice(&v).view([1, 3, 1, 1])
            };
            x = (x * stat("std") + stat("mean")) * 255.0;
        }

        // PyTorch's torch.jit.load, onnxruntime, and libtorch's loader from Rust give runner
        // predict's logits.
        let (top, want) = predict_logits(root, "--run", &run, &image);
        assert_eq!(want.len(), 3);
        let (jit, onnx) = python_logits(root, &out, &x);
        for (what, got) in [("torch.jit.load in Python", &jit), ("onnxruntime", &onnx)] {
            let diff = max_abs_difference(got, &want);
            println!("{backbone}: {what} vs runner predict, max abs logit difference {diff:.2e}");
            assert!(diff <= 1e-4, "{backbone}, {what}: {diff}: {got:?} vs {want:?}");
        }
        let module = tch::CModule::load(out.join("model.pt")).unwrap();
        let rust = Vec::<f64>::try_from(tch::no_grad(|| module.forward_ts(&[&x]).unwrap()).flatten(0, -1)).unwrap();
        assert!(max_abs_difference(&rust, &want) <= 1e-4, "{backbone}: {rust:?} vs {want:?}");

        // predict --model (the safetensors export and model.json) gives what predict --run gives.
        let (model_top, model_logits) = predict_logits(root, "--model", &out, &image);
        assert_eq!(model_top, top, "{backbone}");
        assert!(max_abs_difference(&model_logits, &want) <= 1e-6, "{backbone}");
    }
    // ONNX without a Python that can export: a clear error, and nothing left behind.
    let run = crate::common::only_run(&root.join("runs/resnet18"));
    let no_torch = crate::common::cached_python("tracking-venv", "runner_setup_tracking");
    for (python, says) in [
        (std::path::PathBuf::from("/nonexistent/python3"), "cannot run /nonexistent/python3 for the ONNX export"),
        (no_torch, "ONNX export needs torch and onnx in this Python"),
        // Issue 29: a "Python" that exits 0 and writes nothing, and one that fails silently.
        (std::path::PathBuf::from("/bin/true"), "succeeded but wrote no ONNX model (0 bytes)"),
        (std::path::PathBuf::from("/bin/false"), "failed (exit status: 1): it printed nothing"),
    ] {
        let out = root.join("onnx-failed");
        let args = ["export", run.to_str().unwrap(), "--format", "onnx", "--out", "onnx-failed", "--python"];
        let o = runner(root, &[&args[..], &[python.to_str().unwrap()]].concat());
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "{left:?}");
    }
    // Exporting into a folder that holds an earlier export leaves only the new model's files.
    let args = ["export", run.to_str().unwrap(), "--out", "again"];
    let o = runner(root, &[&args[..], &["--format", "torchscript", "--format", "safetensors"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let o = runner(root, &[&args[..], &["--format", "safetensors"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let mut left: Vec<_> = std::fs::read_dir(root.join("again")).unwrap().map(|e| e.unwrap().file_name()).collect();
    left.sort();
    assert_eq!(left, ["model.json", "model.safetensors"]);
    // A folder that is not an exported model says what it lacks.
    let o = runner(root, &["predict", "--model", "runs", "x.png"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("has no readable model.json (runner export writes one)"), "{}", stderr(&o));
}
