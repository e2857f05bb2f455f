//! Runs as trackers show them: TensorBoard's own event reader (PyPI `tensorboard`, in the
//! venv `runner_setup_tracking` of scripts/env.sh makes) reads a run's event file.

use crate::common::{only_run, runner, shapes, stderr, stdout, tiny_spec};

/// The Python of the tracking venv; the test command installs it.
fn tracking_python() -> std::path::PathBuf {
    crate::common::cached_python("tracking-venv", "runner_setup_tracking")
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
assert "_hparams_/experiment" not in content, "a run defines no experiment for the log dir"
hparams = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
images = {t: [[e.step, e.width, e.height, len(e.encoded_image_string)] for e in acc.Images(t)] for t in tags["images"]}
print(json.dumps({"scalars": scalars, "hparams": hparams, "group": start.group_name, "status": end.status,
                  "images": images}))
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
    // The results at the last step: best and final val accuracy.
    let summary = crate::common::summary_json(&run);
    for (tag, key) in [("best/val_acc", "best_val_acc"), ("final/val_acc", "final_val_acc")] {
        let points = got["scalars"][tag].as_array().unwrap_or_else(|| panic!("no {tag}: {got}"));
        assert_eq!(points.len(), 1, "{got}");
        assert_eq!(points[0][0].as_i64(), Some(3), "{got}");
        assert!((points[0][1].as_f64().unwrap() - summary[key].as_f64().unwrap()).abs() < 1e-6, "{got}");
    }
    assert_eq!(got["group"], run.file_name().unwrap().to_str().unwrap(), "a run without a name: its id");
    // The curves image, as curves.png is.
    let png = std::fs::read(run.join("curves.png")).unwrap();
    let image = &got["images"]["curves"][0];
    assert_eq!(image[0].as_i64(), Some(3), "{got}");
    assert_eq!(image[3].as_u64(), Some(png.len() as u64), "{got}");
    // And the best weights' validation confusion matrix, as val_confusion.png is.
    let confusion = std::fs::read(run.join("val_confusion.png")).unwrap();
    assert_eq!(got["images"]["confusion/val"][0][3].as_u64(), Some(confusion.len() as u64), "{got}");
}

/// TensorBoard's own HParams backend over a log dir: the experiment it derives (each key's
/// type and whether it differs, the metrics) and every session's keys.
const HPARAMS: &str = r#"
import json, sys
from tensorboard import context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import backend_context, metadata
logdir = sys.argv[1]
mux = plugin_event_multiplexer.EventMultiplexer()
mux.AddRunsFromDirectory(logdir)
mux.Reload()
tb = base_plugin.TBContext(logdir=logdir, multiplexer=mux,
                           data_provider=data_provider.MultiplexerDataProvider(mux, logdir))
hp = backend_context.Context(tb)
rc = context.RequestContext()
meta = hp.hparams_metadata(rc, "")
exp = hp.experiment_from_metadata(rc, "", True, meta, hp.hparams_from_data_provider(rc, "", None))
sessions = {}
for run, tags in meta.items():
    if metadata.SESSION_START_INFO_TAG in tags:
        start = metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
        sessions[run] = {"group": start.group_name, "keys": sorted(start.hparams.keys())}
print(json.dumps({"differs": {h.name: h.differs for h in exp.hparam_infos},
                  "metrics": sorted(m.name.tag for m in exp.metric_infos), "sessions": sessions}))
"#;

#[test]
fn tensorboards_hparams_backend_sees_one_experiment_over_the_grid() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 2, 8);
    // A test split; two optimizers, one of them with a weight decay the other leaves unset.
    let spec = tiny_spec(&data).replace("batch_size = 8", "batch_size = 8\nsplit = [0.6, 0.2, 0.2]")
        + "\n[grid]\nseed = [0, 1]\n\"phases.0.optimizer\" = [{ kind = \"adam\", lr = 1e-3, weight_decay = 1e-4 }, \
           { kind = \"adam\", lr = 1e-2 }]\n";
    std::fs::write(root.join("grid.toml"), &spec).unwrap();
    let o = runner(root, &["run", "grid.toml", "--out", "runs", "--quiet"]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let o =
        std::process::Command::new(tracking_python()).args(["-c", HPARAMS]).arg(root.join("runs")).output().unwrap();
    assert!(o.status.success(), "TensorBoard's hparams backend failed: {}", String::from_utf8_lossy(&o.stderr));
    let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();

    let differs = got["differs"].as_object().unwrap();
    assert_eq!(differs["phases.0.optimizer.lr"], true, "{got}");
    assert_eq!(differs["seed"], true, "{got}");
    assert_eq!(differs["phases.0.optimizer.weight_decay"], true, "1e-4 in two runs, unset in two: {got}");
    assert_eq!(differs["model.backbone"], false, "{got}");
    // Defaults are keys too: every key of every run is in every session.
    assert!(differs.contains_key("data.cache") && differs.contains_key("precision"), "{got}");
    let sessions = got["sessions"].as_object().unwrap();
    assert_eq!(sessions.len(), 4, "{got}");
    let all: Vec<&String> = differs.keys().collect();
    for (run, s) in sessions {
        let keys: Vec<&str> = s["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
        assert_eq!(keys, all, "{run}: every key");
        // The run's TensorBoard name and its session carry its readable name.
        let group = s["group"].as_str().unwrap();
        assert!(group.starts_with("seed=") && group.contains(",optimizer="), "{group}");
        assert!(run.starts_with("tiny/") && run.ends_with(group), "{run}");
    }
    let metrics: Vec<&str> = got["metrics"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    for m in ["best/val_acc", "final/val_acc", "test/acc", "accuracy/val", "loss/val"] {
        assert!(metrics.contains(&m), "{m} in {metrics:?}");
    }
}

/// An MLflow tracking server (sqlite backend, artifacts proxied by the server) on a free
/// port of 127.0.0.1, from the tracking venv; stopped when dropped.
struct MlflowServer {
    child: std::process::Child,
    uri: String,
}

impl MlflowServer {
    /// Stops the server and its worker processes (its own process group).
    fn stop(&mut self) {
        // SAFETY: signalling the process group the server leads.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start_mlflow(dir: &std::path::Path) -> MlflowServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    use std::os::unix::process::CommandExt;
    let child = std::process::Command::new(tracking_python())
        .process_group(0)
        .args(["-m", "mlflow", "server", "--host", "127.0.0.1", "--port", &port.to_string(), "--workers", "1"])
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
        .arg("--artifacts-destination")
        .arg(dir.join("artifacts"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("server.log")).unwrap())
        .spawn()
        .unwrap();
    let server = MlflowServer { child, uri: format!("http://127.0.0.1:{port}") };
    let start = std::time::Instant::now();
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && ureq::get(&format!("{}/health", server.uri)).call().is_ok()
        {
            return server;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "the MLflow server did not start: {}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Every run of experiment `name` as MLflow's own client reads it back.
const MLFLOW_READER: &str = r#"
import json, sys
from mlflow.tracking import MlflowClient
client = MlflowClient(sys.argv[1])
exp = client.get_experiment_by_name(sys.argv[2])
out = []
for r in client.search_runs([exp.experiment_id]):
    metrics = {k: [[m.step, m.value] for m in client.get_metric_history(r.info.run_id, k)] for k in r.data.metrics}
    out.append({"name": r.info.run_name, "status": r.info.status, "params": r.data.params, "tags": r.data.tags,
                "metrics": metrics, "artifacts": sorted(a.path for a in client.list_artifacts(r.info.run_id))})
print(json.dumps(out))
"#;

/// [`MLFLOW_READER`]'s JSON for experiment `name` on the server at `uri`.
fn mlflow_runs(uri: &str, name: &str) -> String {
    let o = std::process::Command::new(tracking_python()).args(["-c", MLFLOW_READER, uri, name]).output().unwrap();
    assert!(o.status.success(), "MLflow's client failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn an_mlflow_server_receives_each_runs_params_metrics_and_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let server = start_mlflow(root);
    let data = shapes(root, 2, 6);
    let spec = tiny_spec(&data)
        + &format!(
            "\n[tracking]\nmlflow = \"{}\"\n\n[grid]\n\"phases.1.optimizer.lr_factor\" = [0.1, 0.5]\n",
            server.uri
        );
    std::fs::write(root.join("spec.toml"), &spec).unwrap();
    let o = runner(root, &["sweep", "spec.toml", "--out", "runs", "--quiet", "--no-report"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let runs: Vec<serde_json::Value> = serde_json::from_str(&mlflow_runs(&server.uri, "tiny")).unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    for r in &runs {
        let id = r["tags"]["runner.run_id"].as_str().unwrap();
        let run_dir = root.join("runs/tiny").join(id);
        assert!(run_dir.is_dir(), "the MLflow run is tagged with the run id: {id}");
        // Named by the values its grid point sets, as summary.json names it.
        let name = r["name"].as_str().unwrap();
        assert!(["lr_factor=0.1", "lr_factor=0.5"].contains(&name), "{r}");
        assert_eq!(crate::common::summary_json(&run_dir)["name"], name, "{r}");
        assert_eq!(r["status"], "FINISHED", "{r}");
        assert_eq!(r["tags"]["runner.status"], "completed", "{r}");
        let summary = crate::common::summary_json(&run_dir);
        assert_eq!(r["tags"]["runner.numerics_version"], summary["numerics_version"].to_string(), "{r}");
        assert_eq!(r["params"]["model.backbone"], "efficientnet_lite0", "{r}");
        assert_eq!(r["params"]["phases.0.optimizer.lr"], "0.001", "{r}");
        assert!(["0.1", "0.5"].contains(&r["params"]["phases.1.optimizer.lr_factor"].as_str().unwrap()), "{r}");
        assert!(r["params"].get("tracking.mlflow").is_some(), "{r}");
        // Every epoch's metrics, equal to metrics.csv's.
        let metrics = std::fs::read_to_string(run_dir.join("metrics.csv")).unwrap();
        let rows: Vec<Vec<&str>> = metrics.lines().skip(1).map(|l| l.split(',').collect()).collect();
        for (key, column) in [("accuracy/val", 6), ("loss/train", 3), ("lr", 2)] {
            let points = r["metrics"][key].as_array().unwrap_or_else(|| panic!("no {key}: {r}"));
            assert_eq!(points.len(), rows.len(), "{key}: {r}");
            for (p, row) in points.iter().zip(&rows) {
                assert_eq!(p[0].as_u64(), row[0].parse().ok());
                let want: f64 = row[column].parse().unwrap();
                assert!((p[1].as_f64().unwrap() - want).abs() <= 1e-9 * want.abs().max(1.0), "{key}: {p} vs {want}");
            }
        }
        let artifacts: Vec<&str> = r["artifacts"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(artifacts, ["best.safetensors", "curves.png", "summary.json"], "{r}");
        assert!(summary["tracking"].as_str().unwrap().starts_with("mlflow: run "), "{summary}");
    }
}

#[test]
fn a_tracking_server_that_goes_away_mid_run_does_not_stop_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut server = start_mlflow(root);
    let data = shapes(root, 2, 12);
    let spec = tiny_spec(&data)
        .replace("image_size = 32", "image_size = 48")
        .replace("epochs = 1\nfreeze_up_to = 10", "epochs = 12\nfreeze_up_to = 0")
        + &format!("\n[tracking]\nmlflow = \"{}\"\n", server.uri);
    std::fs::write(root.join("spec.toml"), &spec).unwrap();
    let mut child = crate::common::runner_bin()
        .current_dir(root)
        .args(["run", "spec.toml", "--out", "runs", "--quiet"])
        .env("RUNNER_THREADS", "2")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the run has logged an epoch to the server, the server goes.
    let start = std::time::Instant::now();
    loop {
        let logged = std::fs::read_dir(root.join("runs/tiny"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .and_then(|e| std::fs::read_to_string(e.path().join("metrics.csv")).ok())
            .is_some_and(|m| m.lines().count() >= 2);
        if logged {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before the server could be stopped");
        assert!(start.elapsed().as_secs() < 120);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    server.stop();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = only_run(&root.join("runs/tiny"));
    let summary = crate::common::summary_json(&run);
    assert_eq!(summary["status"], "completed", "{summary}");
    assert_eq!(summary["epochs"], 13, "{summary}");
    let tracking = summary["tracking"].as_str().unwrap();
    assert!(tracking.starts_with(&format!("mlflow: failed at {}", server.uri)), "{tracking}");
    let log = std::fs::read_to_string(run.join("run.log")).unwrap();
    assert!(log.contains("warning: MLflow tracking at") && log.contains("the run goes on without it"), "{log}");
    assert_eq!(log.matches("warning: MLflow").count(), 1, "tracking stops after the first failure: {log}");
}

/// Every file under `root` (but `except`) that holds `needle`, by its bytes.
fn files_holding(root: &std::path::Path, needle: &str, except: &[&std::path::Path]) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && !except.contains(&e.path()))
        .filter(|e| {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .map(|e| e.path().display().to_string())
        .collect()
}

#[test]
fn a_password_in_a_tracking_uri_reaches_no_file_log_tracker_or_message() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let server = start_mlflow(root);
    let password = "S3cret-Pw-91";
    let with_password = server.uri.replace("http://", &format!("http://bob:{password}@"));
    let data = shapes(root, 2, 6);
    // In the spec, and in RUNNER_MLFLOW_URI.
    let spec = tiny_spec(&data) + &format!("\n[tracking]\nmlflow = \"{with_password}\"\n");
    std::fs::write(root.join("spec.toml"), &spec).unwrap();
    std::fs::write(root.join("env.toml"), tiny_spec(&data).replace("seed = 3", "seed = 4")).unwrap();
    // A server that is not there: the failure is reported, with the address.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(root.join("down.toml"), tiny_spec(&data).replace("seed = 3", "seed = 5")).unwrap();
    let mut said = String::new();
    let mut say = |o: std::process::Output| {
        said.push_str(&stdout(&o));
        said.push_str(&stderr(&o));
        o
    };
    let o = say(runner(root, &["run", "spec.toml", "--out", "runs"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let env = [("RUNNER_MLFLOW_URI", with_password.as_str())];
    let o = say(crate::common::runner_with_env(root, &["run", "env.toml", "--out", "runs"], &env));
    assert!(o.status.success(), "{}", stderr(&o));
    let down = format!("http://bob:{password}@127.0.0.1:{closed}");
    let o = say(crate::common::runner_with_env(
        root,
        &["run", "down.toml", "--out", "runs"],
        &[("RUNNER_MLFLOW_URI", &down)],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let runs: Vec<_> = std::fs::read_dir(root.join("runs/tiny")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 3);
    let failed = runs
        .iter()
        .map(|r| crate::common::summary_json(r))
        .find(|s| s["tracking"].as_str().unwrap_or("").contains("failed"));
    let failed = failed.expect("the run whose server is down says so");
    assert!(failed["tracking"].as_str().unwrap().contains(&format!("http://***@127.0.0.1:{closed}")), "{failed}");
    let o = say(runner(root, &["report", "--runs", "runs", "--out", "report"]));
    assert!(o.status.success(), "{}", stderr(&o));
    for r in &runs {
        let out = root.join("export").join(r.file_name().unwrap());
        let run_arg = r.to_string_lossy().into_owned();
        let o = say(runner(
            root,
            &[
                "export",
                &run_arg,
                "--format",
                "safetensors",
                "--format",
                "torchscript",
                "--out",
                &out.to_string_lossy(),
            ],
        ));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // What MLflow stored, as its own client reads it back.
    let stored = mlflow_runs(&server.uri, "tiny");
    let tracked: Vec<serde_json::Value> = serde_json::from_str(&stored).unwrap();
    assert_eq!(tracked.len(), 2, "{stored}");
    assert!(
        tracked.iter().any(|r| r["params"]["tracking.mlflow"].as_str().is_some_and(|u| u.starts_with("http://***@"))),
        "{stored}"
    );

    assert!(!stored.contains(password), "MLflow's params or tags hold the password: {stored}");
    assert!(!said.contains(password), "the commands' output holds the password: {said}");
    let spec_file = root.join("spec.toml");
    let leaks = files_holding(root, password, &[&spec_file]);
    assert!(leaks.is_empty(), "files holding the password: {leaks:?}");
    // The check finds what it looks for: the spec itself holds it.
    assert_eq!(files_holding(root, password, &[]), vec![spec_file.display().to_string()]);
    assert!(said.contains("http://***@127.0.0.1"), "{said}");
}
