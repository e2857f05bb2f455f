//! Runs as trackers show them: TensorBoard's own event reader (PyPI `tensorboard`, in the
//! venv `runner_setup_tracking` of scripts/env.sh makes) reads a run's event file.

use crate::common::{only_run, runner, shapes, stderr, tiny_spec};

/// The Python of the tracking venv; the test command installs it.
fn tracking_python() -> std::path::PathBuf {
    let cache = std::env::var_os("RUNNER_CACHE").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/runner")
    });
    let python = cache.join("tracking-venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `source scripts/env.sh && runner_setup_tracking` (scripts/test.sh does)",
        python.display()
    );
    python
}

/// Reads every event file under `dir` with TensorBoard's EventAccumulator: scalars by tag
/// (step, value) and the hparams plugin's session start (hparams) and end (status).
const READER: &str = r#"
import json, sys
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.hparams import plugin_data_pb2
acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.SCALARS: 0, ea.IMAGES: 0})
acc.Reload()
tags = acc.Tags()
scalars = {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]}
content = acc.PluginTagToContent("hparams")
start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"]).session_end_info
exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
hparams = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
images = {t: [[e.step, e.width, e.height, len(e.encoded_image_string)] for e in acc.Images(t)] for t in tags["images"]}
print(json.dumps({"scalars": scalars, "hparams": hparams, "group": start.group_name, "status": end.status,
                  "metrics": [m.name.tag for m in exp.metric_infos], "images": images}))
"#;

fn read_events(dir: &std::path::Path) -> serde_json::Value {
    let o = std::process::Command::new(tracking_python()).args(["-c", READER]).arg(dir).output().unwrap();
    assert!(o.status.success(), "TensorBoard's reader failed: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn tensorboards_reader_finds_every_epochs_scalars_the_hparams_and_the_curves() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 2, 6);
    let spec = tiny_spec(&data)
        .replace("epochs = 1\nfreeze_up_to = \"all\"", "epochs = 2\nfreeze_up_to = \"all\"")
        .replace("momentum = 0.9 }", "momentum = 0.9, layer_decay = 0.5 }");
    std::fs::write(root.join("spec.toml"), &spec).unwrap();
    let o = runner(root, &["run", "spec.toml", "--out", "runs", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = only_run(&root.join("runs/tiny"));
    let events = runner::record::tensorboard::event_files(&run);
    assert_eq!(events.len(), 1, "one event file: {events:?}");
    let got = read_events(&run);

    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let rows: Vec<Vec<&str>> = metrics.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 3, "{metrics}");
    for (tag, column) in [("loss/train", 3), ("accuracy/train", 4), ("loss/val", 5), ("accuracy/val", 6), ("lr", 2)] {
        let points = got["scalars"][tag].as_array().unwrap_or_else(|| panic!("no {tag}: {got}"));
        assert_eq!(points.len(), 3, "{tag}: one point per epoch: {points:?}");
        for (i, p) in points.iter().enumerate() {
            assert_eq!(p[0].as_i64(), Some(i as i64 + 1), "{tag}: the step is the epoch");
            let want: f64 = rows[i][column].parse().unwrap();
            let value = p[1].as_f64().unwrap();
            assert!((value - want).abs() <= 1e-6 * want.abs().max(1.0), "{tag} epoch {}: {value} vs {want}", i + 1);
        }
    }
    assert_eq!(got["scalars"]["images_per_s/train"].as_array().map(Vec::len), Some(3), "{got}");
    // Layer-wise rates in phase 2 (layers 10..17 train): the head at lr, layer 17 at lr x 0.5.
    let head = got["scalars"]["lr/head"].as_array().unwrap();
    let top = got["scalars"]["lr/layer_17"].as_array().unwrap();
    assert_eq!((head.len(), top.len()), (1, 1), "phase 2 only: {got}");
    let phase2_lr: f64 = rows[2][2].parse().unwrap();
    assert!((top[0][1].as_f64().unwrap() - phase2_lr * 0.5).abs() < 1e-9, "{got}");
    assert!(got["scalars"].get("lr/layer_09").is_none(), "frozen layers have no rate: {got}");

    // The hyperparameters: the resolved spec's dotted keys.
    let h = &got["hparams"];
    assert_eq!(h["model.backbone"], "efficientnet_lite0", "{h}");
    assert_eq!(h["seed"], 3.0, "{h}");
    assert_eq!(h["phases.1.optimizer.layer_decay"], 0.5, "{h}");
    assert_eq!(h["phases.0.epochs"], 2.0, "{h}");
    assert_eq!(got["status"], 1, "STATUS_SUCCESS");
    assert!(got["metrics"].as_array().unwrap().iter().any(|m| m == "accuracy/val"), "{got}");
    assert_eq!(got["group"], run.file_name().unwrap().to_str().unwrap(), "the session is the run id");
    // The curves image, as curves.png is.
    let png = std::fs::read(run.join("curves.png")).unwrap();
    let image = &got["images"]["curves"][0];
    assert_eq!(image[0].as_i64(), Some(3), "{got}");
    assert_eq!(image[3].as_u64(), Some(png.len() as u64), "{got}");
}
