//! `runner sweep`: a killed sweep reruns only what is missing; shard workers and
//! workers with overlapping work each run every run exactly once; one failing run
//! does not stop the others; the emitted Slurm and Kubernetes jobs run the same sweep.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{runner, runner_bin, shapes, stderr, stdout, tiny_spec};

/// A grid of `seeds.len()` runs of a tiny two-phase spec (random init, 32 px).
fn grid_spec(name: &str, source: &Path, seeds: &[u32]) -> String {
    grid_spec_epochs(name, source, seeds, 1)
}

/// [`grid_spec`] with `epochs` epochs per phase.
fn grid_spec_epochs(name: &str, source: &Path, seeds: &[u32], epochs: usize) -> String {
    let seeds: Vec<String> = seeds.iter().map(u32::to_string).collect();
    let spec = tiny_spec(source).replace("name = \"tiny\"", &format!("name = \"{name}\""));
    format!("{}\n[grid]\nseed = [{}]\n", spec.replace("epochs = 1", &format!("epochs = {epochs}")), seeds.join(", "))
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

/// A temporary folder with a dataset and `specs/<file>` for each (file, text).
fn fixture(specs: &[(&str, String)]) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    std::fs::create_dir_all(root.join("specs")).unwrap();
    for (file, text) in specs {
        std::fs::write(root.join("specs").join(file), text).unwrap();
    }
    Fixture { _tmp: tmp, root }
}

fn data(root: &Path) -> PathBuf {
    shapes(root, 3, 8)
}

/// Every run directory of `experiment` under `out`, by run id.
fn run_dirs(root: &Path, out: &str, experiment: &str) -> BTreeMap<String, PathBuf> {
    let Ok(entries) = std::fs::read_dir(root.join(out).join(experiment)) else { return BTreeMap::new() };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect()
}

fn status(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("summary.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["status"].as_str().map(str::to_string)
}

fn completed(root: &Path, out: &str, experiment: &str) -> Vec<PathBuf> {
    run_dirs(root, out, experiment).into_values().filter(|d| status(d).as_deref() == Some("completed")).collect()
}

/// Every file of a directory and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

/// How many times a run was started or resumed, from its run.log.
fn starts(dir: &Path) -> (usize, usize) {
    let log = std::fs::read_to_string(dir.join("run.log")).unwrap_or_default();
    (log.matches("starting run").count(), log.matches("resuming run").count())
}

/// The totals line of a sweep's table: (completed, skipped, busy, failed, diverged).
fn totals(out: &str) -> (usize, usize, usize, usize, usize) {
    let line = out.lines().find(|l| l.contains(" runs: ") && l.contains("completed,")).expect("a totals line");
    let n: Vec<usize> =
        line.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
    (n[1], n[2], n[3], n[4], n[5])
}

fn sweep(root: &Path, args: &[&str]) -> Output {
    let mut all = vec!["sweep"];
    all.extend_from_slice(args);
    runner(root, &all)
}

fn spawn_sweep(root: &Path, args: &[&str]) -> Child {
    runner_bin()
        .current_dir(root)
        .arg("sweep")
        .args(args)
        .env("RUNNER_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_killed_sweep_reruns_only_the_missing_runs() {
    let f = fixture(&[]);
    // Runs of a few seconds each, so that the kill lands inside the fourth.
    let source = shapes(&f.root, 3, 24);
    let spec = grid_spec_epochs("six", &source, &[1, 2, 3, 4, 5, 6], 3).replace("image_size = 32", "image_size = 48");
    std::fs::write(f.root.join("specs/six.toml"), spec).unwrap();
    let root = &f.root;
    let mut child = runner_bin()
        .current_dir(root)
        .args(["sweep", "specs", "--out", "runs", "--quiet", "--no-report"])
        .env("RUNNER_THREADS", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while completed(root, "runs", "six").len() < 3 {
        if let Some(s) = child.try_wait().unwrap() {
            panic!("the sweep ended ({s}) before 3 runs completed");
        }
        assert!(start.elapsed() < Duration::from_secs(600), "3 runs never completed");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL, in the middle of the fourth run
    child.wait().unwrap();
    let done = completed(root, "runs", "six");
    assert_eq!(done.len(), 3, "the kill must land before a fourth run completes");
    let before: Vec<_> = done.iter().map(|d| (d.clone(), snapshot(d))).collect();

    // The plan says so, and changes nothing.
    let o = sweep(root, &["specs", "--out", "runs", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan = stdout(&o);
    assert_eq!(plan.matches("skip (completed)").count(), 3, "{plan}");
    assert!(plan.contains("6 runs: "), "{plan}");
    assert_eq!(completed(root, "runs", "six").len(), 3);

    let o = sweep(root, &["specs", "--out", "runs", "--quiet", "--no-report"]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert_eq!(totals(&out), (3, 3, 0, 0, 0), "{out}");
    for (dir, files) in before {
        assert_eq!(snapshot(&dir), files, "{} changed", dir.display());
    }
    let all = run_dirs(root, "runs", "six");
    assert_eq!(all.len(), 6);
    for dir in all.values() {
        assert_eq!(status(dir).as_deref(), Some("completed"), "{}", dir.display());
        let (started, resumed) = starts(dir);
        // The run the kill interrupted starts once more (fresh, or resumed from its checkpoint).
        assert!(started >= 1 && started + resumed <= 2, "{}: {started} starts, {resumed} resumes", dir.display());
    }
    // Each seed of the grid ran: six different configs.
    let seeds: BTreeSet<String> = all
        .values()
        .map(|d| {
            let config = std::fs::read_to_string(d.join("config.toml")).unwrap();
            config.lines().find(|l| l.starts_with("seed")).unwrap().to_string()
        })
        .collect();
    assert_eq!(seeds.len(), 6);

    // A third sweep has nothing left to do.
    let o = sweep(root, &["specs", "--out", "runs", "--quiet", "--no-report"]);
    assert!(o.status.success());
    assert_eq!(totals(&stdout(&o)), (0, 6, 0, 0, 0));
}

/// Waits for every child; returns their outputs.
fn wait_all(children: Vec<Child>) -> Vec<Output> {
    children.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
}

/// The run ids a sweep's table lists as completed.
fn completed_ids(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("completed"))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        .collect()
}

#[test]
fn three_shards_run_a_nine_run_sweep_once() {
    let f = fixture(&[]);
    let source = data(&f.root);
    std::fs::write(f.root.join("specs/nine.toml"), grid_spec("nine", &source, &[1, 2, 3, 4, 5, 6, 7, 8, 9])).unwrap();
    let root = &f.root;
    let children: Vec<Child> = (0..3)
        .map(|i| spawn_sweep(root, &["specs", "--out", "runs", "--quiet", "--no-report", "--shard", &format!("{i}/3")]))
        .collect();
    let outputs = wait_all(children);
    let mut ids = vec![];
    for o in &outputs {
        assert!(o.status.success(), "{}\n{}", stdout(o), stderr(o));
        let out = stdout(o);
        assert_eq!(totals(&out), (3, 0, 0, 0, 0), "{out}");
        ids.extend(completed_ids(&out));
    }
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), distinct.len()), (9, 9), "{ids:?}");
    let dirs = run_dirs(root, "runs", "nine");
    assert_eq!(dirs.keys().collect::<BTreeSet<_>>(), distinct);
    for dir in dirs.values() {
        assert_eq!(status(dir).as_deref(), Some("completed"));
        assert_eq!(starts(dir), (1, 0), "{} was not executed exactly once", dir.display());
    }
}

#[test]
fn workers_sharing_all_runs_run_each_once() {
    // No shards: both workers walk the same four runs; the run locks keep them apart.
    let f = fixture(&[]);
    let source = data(&f.root);
    std::fs::write(f.root.join("specs/four.toml"), grid_spec("four", &source, &[1, 2, 3, 4])).unwrap();
    let root = &f.root;
    let children: Vec<Child> =
        (0..2).map(|_| spawn_sweep(root, &["specs", "--out", "runs", "--quiet", "--no-report"])).collect();
    let outputs = wait_all(children);
    let mut ran = 0;
    for o in &outputs {
        assert!(o.status.success(), "{}\n{}", stdout(o), stderr(o));
        let (completed, skipped, busy, failed, diverged) = totals(&stdout(o));
        assert_eq!(completed + skipped + busy, 4);
        assert_eq!((failed, diverged), (0, 0));
        ran += completed;
    }
    assert_eq!(ran, 4, "{}\n{}", stdout(&outputs[0]), stdout(&outputs[1]));
    let dirs = run_dirs(root, "runs", "four");
    assert_eq!(dirs.len(), 4);
    for dir in dirs.values() {
        assert_eq!(starts(dir), (1, 0), "{} was not executed exactly once", dir.display());
    }
}

#[test]
fn a_failing_run_does_not_stop_the_sweep() {
    let f = fixture(&[]);
    let source = data(&f.root);
    let spec =
        grid_spec("mixed", &source, &[1]).replace("seed = [1]", "\"phases.1.optimizer.lr_factor\" = [0.1, 1e30, 0.2]");
    std::fs::write(f.root.join("specs/mixed.toml"), spec).unwrap();
    let o = sweep(&f.root, &["specs", "--out", "runs", "--quiet", "--report-dir", "rep"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_eq!(totals(&out), (2, 0, 0, 0, 1), "{out}");
    assert!(stderr(&o).contains("1 of 3 runs failed"), "{}", stderr(&o));
    // The closing report was written, failed run included.
    let summary = std::fs::read_to_string(f.root.join("rep/summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 4, "{summary}");
    assert!(summary.contains(",diverged,"), "{summary}");
}

#[test]
fn a_broken_spec_stops_the_sweep_before_any_run() {
    let f = fixture(&[]);
    let source = data(&f.root);
    std::fs::write(f.root.join("specs/a.toml"), grid_spec("a", &source, &[1])).unwrap();
    std::fs::write(f.root.join("specs/b.toml"), grid_spec("b", &source, &[1]).replacen("epochs = 1", "epochs = -1", 1))
        .unwrap();
    let o = sweep(&f.root, &["specs", "--out", "runs", "--quiet"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("b.toml") && err.contains("epochs"), "{err}");
    assert!(!f.root.join("runs").exists(), "nothing may run before every spec is read");
    let o = sweep(&f.root, &["nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nope: no such spec file or folder"), "{}", stderr(&o));
}

#[test]
fn the_emitted_slurm_script_runs_its_shard() {
    let f = fixture(&[]);
    let source = data(&f.root);
    std::fs::write(f.root.join("specs/three.toml"), grid_spec("three", &source, &[1, 2, 3])).unwrap();
    let root = &f.root;
    let o = sweep(root, &["specs", "--out", "runs", "--emit", "slurm", "--workers", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = stdout(&o);
    assert!(script.starts_with("#!/bin/bash\n"), "{script}");
    for line in ["#SBATCH --array=0-2", "#SBATCH --gres=gpu:1", "--device cuda", "\"${SLURM_ARRAY_TASK_ID}/3\""] {
        assert!(script.contains(line), "no `{line}` in\n{script}");
    }
    // A CPU cluster: no GPU request, --device cpu; this one is run here as Slurm would run task 1.
    let o = sweep(root, &["specs", "--out", "runs", "--emit", "slurm", "--workers", "3", "--gpus", "0"]);
    let script = stdout(&o);
    assert!(!script.contains("--gres") && script.contains("--device cpu"), "{script}");
    std::fs::write(root.join("job.sbatch"), &script).unwrap();
    let o = std::process::Command::new("bash")
        .arg(root.join("job.sbatch"))
        .current_dir("/")
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("RUNNER_THREADS", "2")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    assert_eq!(totals(&stdout(&o)), (1, 0, 0, 0, 0), "{}", stdout(&o));
    // Task 1 of 3 is the grid's second point: seed 2.
    let done = completed(root, "runs", "three");
    assert_eq!(done.len(), 1);
    let config = std::fs::read_to_string(done[0].join("config.toml")).unwrap();
    assert!(config.lines().any(|l| l == "seed = 2"), "{config}");
}

#[test]
fn the_emitted_kubernetes_job_runs_its_shard() {
    let f = fixture(&[]);
    let source = data(&f.root);
    std::fs::write(f.root.join("specs/three.toml"), grid_spec("three", &source, &[1, 2, 3])).unwrap();
    let root = &f.root;
    let o = sweep(root, &["specs", "--emit", "k8s", "--workers", "3"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--image"), "{}", stderr(&o));

    let args = ["specs", "--out", "runs", "--emit", "k8s", "--workers", "3", "--image", "registry.example/runner:1"];
    let o = sweep(root, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let job: serde_json::Value = serde_norway::from_str(&stdout(&o)).expect("the manifest is YAML");
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    assert_eq!(job["spec"]["completions"], 3);
    assert_eq!(job["spec"]["parallelism"], 3);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["volumes"][0]["persistentVolumeClaim"]["claimName"], "runner-work");
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.example/runner:1");
    assert_eq!(container["workingDir"], "/work");
    assert_eq!(container["resources"]["limits"]["nvidia.com/gpu"], 1);
    assert_eq!(container["env"][0]["name"], "SHARD_INDEX");
    assert_eq!(
        container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    );
    let command: Vec<String> =
        container["command"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(command[..4], ["runner", "sweep", "specs", "--out"]);
    assert!(command.windows(2).any(|w| w == ["--shard", "$(SHARD_INDEX)/3"]), "{command:?}");

    // What the pod of index 2 runs, here (the project is the working directory; cpu instead of cuda).
    let argv: Vec<String> = command[1..]
        .iter()
        .map(|a| a.replace("$(SHARD_INDEX)", "2"))
        .map(|a| if a == "cuda" { "cpu".to_string() } else { a })
        .collect();
    let o = runner_bin().current_dir(root).args(&argv).env("RUNNER_THREADS", "2").output().unwrap();
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let done = completed(root, "runs", "three");
    assert_eq!(done.len(), 1);
    let config = std::fs::read_to_string(done[0].join("config.toml")).unwrap();
    assert!(config.lines().any(|l| l == "seed = 3"), "{config}");
}

#[test]
fn devices_run_one_worker_each_and_every_run_once() {
    let f = fixture(&[]);
    let source = data(&f.root);
    std::fs::write(f.root.join("specs/four.toml"), grid_spec("four", &source, &[1, 2, 3, 4])).unwrap();
    let root = &f.root;
    // Two CPU workers stand in for two GPUs.
    let o = sweep(root, &["specs", "--out", "runs", "--devices", "cpu,cpu", "--quiet", "--report-dir", "rep"]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("sweep: 2 workers (Cpu, Cpu)") && out.contains("sweep: all 2 workers done"), "{out}");
    // Each worker printed its table; together they completed every run once.
    let completed: usize = out.lines().filter(|l| l.contains(" runs: ")).map(|l| totals(l).0).sum();
    assert_eq!(completed, 4, "{out}");
    let dirs = run_dirs(root, "runs", "four");
    assert_eq!(dirs.len(), 4);
    for dir in dirs.values() {
        assert_eq!(starts(dir), (1, 0), "{} was not executed exactly once", dir.display());
    }
    assert_eq!(std::fs::read_to_string(root.join("rep/summary.csv")).unwrap().lines().count(), 5);
    // Devices that are not there are refused before anything runs.
    for (list, message) in [
        ("0", "--devices 0: GPU 0 does not exist (libtorch sees 0 CUDA devices)"),
        ("all", "--devices all: no CUDA device is visible to libtorch"),
        ("gpu", "`gpu` is neither a GPU index (0, 1, ...) nor `cpu`"),
    ] {
        let o = sweep(root, &["specs", "--out", "elsewhere", "--devices", list]);
        assert_eq!(o.status.code(), Some(1), "{list}: {}", stdout(&o));
        assert!(stderr(&o).contains(message), "{list}: {}", stderr(&o));
        assert!(!root.join("elsewhere").exists(), "{list}: nothing may run");
    }
    // Without a GPU, --device cuda fails at once, for a run as for a sweep, and writes nothing.
    if runner::sys::cuda::load_cuda_backend() && tch::Cuda::is_available() {
        println!("SKIPPED the --device cuda refusal: this machine has a GPU");
        return;
    }
    for command in ["run", "sweep"] {
        let o = runner(root, &[command, "specs/four.toml", "--out", "elsewhere", "--device", "cuda"]);
        assert_eq!(o.status.code(), Some(1), "{command}: {}", stdout(&o));
        assert!(stderr(&o).contains("--device cuda: no CUDA device is visible to libtorch"), "{}", stderr(&o));
        assert!(!root.join("elsewhere").exists(), "{command}: no partial run directory");
    }
}
