//! `[search]`: random trials as runs of their own, planned the same way every time, combined
//! with a grid, pinned by overrides, with errors at the line of the space that is wrong.

use crate::common::{runner, shapes, spec_error, stderr, stdout, tiny_spec};

const SEARCH: &str = r#"
[grid]
seed = [1, 2]

[search]
trials = 3
seed = 5

[search.space]
"phases.0.optimizer.lr" = { log_uniform = [1e-4, 1e-2] }
"model.head.dropout" = { uniform = [0.0, 0.5] }
"phases.1.freeze_up_to" = { int_uniform = [8, 14] }
"data.batch_size" = { choice = [4, 8] }
"#;

/// (run id, the varying column) of each line of `runner plan`.
fn plan(root: &std::path::Path, args: &[&str]) -> Vec<(String, String)> {
    let mut all = vec!["plan", "spec.toml"];
    all.extend_from_slice(args);
    let o = runner(root, &all);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .skip(1)
        .filter(|l| !l.contains(" runs of ") && !l.starts_with("then "))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0].to_string(), cols[3..].join(" "))
        })
        .collect()
}

#[test]
fn search_trials_are_planned_runs_that_a_sweep_completes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 2, 4);
    std::fs::write(root.join("spec.toml"), format!("{}{SEARCH}", tiny_spec(&data))).unwrap();
    let runs = plan(root, &[]);
    assert_eq!(runs.len(), 6, "2 grid points x 3 trials: {runs:?}");
    // The same trials for each grid point, and again on a second plan.
    let trial = |i: usize| runs[i].1.split_once(' ').unwrap().1.to_string();
    assert_eq!((trial(0), trial(1), trial(2)), (trial(3), trial(4), trial(5)));
    assert_ne!(trial(0), trial(1));
    assert_eq!(plan(root, &[]), runs, "a search plans the same trials every time");
    for (_, varying) in &runs {
        let value = |key: &str| -> f64 {
            let kv = varying.split(' ').find(|kv| kv.starts_with(&format!("{key}="))).unwrap();
            kv.split_once('=').unwrap().1.parse().unwrap()
        };
        assert!((1e-4..=1e-2).contains(&value("phases.0.optimizer.lr")), "{varying}");
        assert!((0.0..=0.5).contains(&value("model.head.dropout")), "{varying}");
        assert!((8.0..=14.0).contains(&value("phases.1.freeze_up_to")), "{varying}");
        assert!([4.0, 8.0].contains(&value("data.batch_size")), "{varying}");
    }
    // An override pins its key in every trial.
    let pinned = plan(root, &["--set", "data.batch_size=6"]);
    assert_eq!(pinned.len(), 6);
    assert!(pinned.iter().all(|(_, v)| !v.contains("data.batch_size")), "{pinned:?}");

    // Each trial is a normal run: a sweep completes all six, and a second sweep has nothing to do.
    let o = runner(root, &["sweep", "spec.toml", "--out", "runs", "--quiet", "--no-report"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (id, _) in &runs {
        let summary = crate::common::summary_json(&root.join("runs/tiny").join(id));
        assert_eq!(summary["status"], "completed", "{id}");
    }
    let after = plan(root, &[]);
    assert!(after.iter().all(|(id, _)| runs.iter().any(|(r, _)| r == id)));
}

#[test]
fn search_errors_point_at_the_line_of_the_space() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 2, 2);
    let base = format!("{}{SEARCH}", tiny_spec(&data));
    let line_of = |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let cases = [
        (
            base.replace("uniform = [0.0, 0.5]", "uniform = [0.0, 1.5]"),
            "\"model.head.dropout\"",
            "`model.head.dropout`: expected a probability in [0, 1)",
        ),
        (
            base.replace("log_uniform = [1e-4, 1e-2]", "log_uniform = [0, 1e-2]"),
            "\"phases.0.optimizer.lr\"",
            "`log_uniform` needs 0 < lo < hi, found [0, 0.01]",
        ),
        (base.replace("trials = 3", "trails = 3"), "trails", "unknown key `trails`, did you mean `trials`?"),
        (
            base.replace("{ choice = [4, 8] }", "{ pick = [4, 8] }"),
            "\"data.batch_size\"",
            "unknown distribution `pick`",
        ),
        (
            base.replace("trials = 3", "trials = 3\nmethod = \"halving\"\neta = 1"),
            "eta = 1",
            "`search.eta`: expected an integer >= 2, found 1",
        ),
        (base.replace("trials = 3", "trials = 3\neta = 2"), "eta = 2", "`eta` is for method = \"halving\""),
        // Issue 29: too few trials for halving to promote any (it trained them all to the first rung).
        (
            base.replace("trials = 3", "trials = 2\nmethod = \"halving\""),
            "trials = 2",
            "halving needs at least eta = 3 trials to promote any, found 2",
        ),
        // Issue 29: a width that overflows was a panic in the draw.
        (
            base.replace("uniform = [0.0, 0.5]", "uniform = [-1e308, 1e308]"),
            "\"model.head.dropout\"",
            "`uniform` needs lo < hi, both finite and hi - lo too, found [-1000",
        ),
    ];
    for (text, needle, message) in cases {
        let e = spec_error(root, &text);
        let line = line_of(&text, needle);
        assert!(e.contains(&format!("spec.toml:{line}:")), "expected line {line}: {e}");
        assert!(e.contains(message), "{e}");
    }
}

/// 9 trials of the learning rate over 1 + 8 epochs: rungs of 1, 3 and 9 epochs (eta 3).
fn halving_spec(data: &std::path::Path) -> String {
    tiny_spec(data)
        .replace("image_size = 32", "image_size = 64")
        .replace("weights = \"none\"", "weights = \"imagenet\"")
        .replace("epochs = 1\nfreeze_up_to = 10", "epochs = 8\nfreeze_up_to = 12")
        + r#"
[search]
trials = 9
method = "halving"
min_epochs = 1
eta = 3
seed = 1

[search.space]
"phases.0.optimizer.lr" = { log_uniform = [1e-5, 1e-1] }
"#
}

/// (trial, rung) of a job; (trial, rung, value) of a result.
type Decisions = Vec<(usize, usize)>;
type Results = Vec<(usize, usize, f64)>;

/// The journal's decisions in order (a job taken over counts once) and results.
fn journal(out: &std::path::Path) -> (Decisions, Results) {
    let dir = out.join("tiny");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(".halving-"))
        .expect("a journal beside the runs");
    let text = std::fs::read_to_string(file.path()).unwrap();
    let mut starts = vec![];
    let mut dones = vec![];
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (t, r) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        match f[0] {
            "start" if !starts.contains(&(t, r)) => starts.push((t, r)),
            "done" => dones.push((t, r, f[3].parse().unwrap())),
            _ => {}
        }
    }
    (starts, dones)
}

/// Runs `runner sweep spec.toml` into the folder above `experiment` (`out/name`) on
/// `threads` threads and kills it as soon as its halving journal's text passes `enough`.
fn kill_when(root: &std::path::Path, experiment: &str, threads: usize, enough: impl Fn(&str) -> bool) {
    let out = experiment.split('/').next().unwrap();
    let mut child = crate::common::runner_bin()
        .current_dir(root)
        .args(["sweep", "spec.toml", "--out", out, "--quiet", "--no-report"])
        .env("RUNNER_THREADS", threads.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let text = std::fs::read_dir(root.join(experiment))
            .ok()
            .and_then(|d| d.flatten().find(|e| e.file_name().to_string_lossy().starts_with(".halving-")))
            .and_then(|e| std::fs::read_to_string(e.path()).ok())
            .unwrap_or_default();
        if enough(&text) {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the search ended before it was killed");
        assert!(started.elapsed().as_secs() < 120, "the search made no progress");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_halving_search_spends_fewer_epochs_promotes_the_best_and_resumes_with_the_same_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 2, 8);
    std::fs::write(root.join("spec.toml"), halving_spec(&data)).unwrap();
    let o = runner(root, &["sweep", "spec.toml", "--out", "a", "--no-report"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let line = out.lines().find(|l| l.contains("epochs trained in all")).unwrap_or_else(|| panic!("{out}"));
    println!("{line}");
    let numbers: Vec<usize> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    let (spent, grid) = (numbers[0], numbers[1]);
    assert_eq!(grid, 81, "9 trials x 9 epochs: {line}");
    assert!(spent < grid, "{line}");
    assert!(out.contains("pruned by halving"), "{out}");
    // The frozen backbone's pooled features are computed once for the whole search: the
    // other trials (and the promoted ones resuming phase 1) load them.
    let logs: Vec<String> = std::fs::read_dir(root.join("a/tiny"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| std::fs::read_to_string(e.path().join("run.log")).unwrap())
        .collect();
    let lines =
        |a: &str, b: &str| logs.iter().flat_map(|l| l.lines()).filter(|l| l.contains(a) && l.contains(b)).count();
    assert_eq!(lines("cached pooled features", "; kept in the feature store"), 1, "{logs:?}");
    assert_eq!(lines("phase 1", "trains on the pooled features of the feature store"), 8, "{logs:?}");
    assert!(
        !root
            .join("a/tiny")
            .read_dir()
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".features")),
        "the store goes with the search"
    );

    // Every promotion follows the rule: at the moment it was decided, the trial was among
    // the best floor(n / 3) of the n trials done at the rung below (ties: the lower trial).
    let (starts, dones) = journal(&root.join("a"));
    assert_eq!(starts.iter().filter(|(_, r)| *r == 0).count(), 9, "every trial starts: {starts:?}");
    assert!(starts.iter().any(|(_, r)| *r == 2), "some trial reaches the last rung: {starts:?}");
    let epochs: usize =
        [1, 2, 6].iter().zip(0..).map(|(e, k)| e * starts.iter().filter(|(_, r)| *r == k).count()).sum();
    assert_eq!(epochs, spent, "the rungs' epochs add up to what was trained");
    let text = std::fs::read_to_string(
        std::fs::read_dir(root.join("a/tiny"))
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(".halving-"))
            .unwrap()
            .path(),
    )
    .unwrap();
    let mut done_so_far: Vec<(usize, usize, f64)> = vec![];
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (t, r): (usize, usize) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        if f[0] == "done" {
            done_so_far.push((t, r, f[3].parse().unwrap()));
        } else if r > 0 {
            let mut below: Vec<(usize, f64)> =
                done_so_far.iter().filter(|d| d.1 == r - 1).map(|d| (d.0, d.2)).collect();
            below.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let best: Vec<usize> = below.iter().take(below.len() / 3).map(|d| d.0).collect();
            assert!(best.contains(&t), "trial {t} promoted to rung {r} but the best at rung {} were {best:?}", r - 1);
        }
    }

    // The same search killed part-way and run again decides the same, with the same results.
    kill_when(root, "b/tiny", 2, |journal| journal.lines().filter(|l| l.starts_with("done")).count() >= 5);
    let (killed_starts, _) = journal(&root.join("b"));
    assert!(killed_starts.len() < starts.len(), "killed part-way: {killed_starts:?}");
    let o = runner(root, &["sweep", "spec.toml", "--out", "b", "--no-report"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (resumed_starts, resumed_dones) = journal(&root.join("b"));
    assert_eq!(resumed_starts, starts, "the same decisions in the same order");
    let values = |d: &[(usize, usize, f64)]| {
        let mut v: Vec<(usize, usize, u64)> = d.iter().map(|(t, r, x)| (*t, *r, x.to_bits())).collect();
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(values(&resumed_dones), values(&dones), "the same results");

    // Two workers (two shards) share one search through its journal: every job once.
    let workers: Vec<std::process::Child> = ["0/2", "1/2"]
        .iter()
        .map(|shard| {
            crate::common::runner_bin()
                .current_dir(root)
                .args(["sweep", "spec.toml", "--out", "c", "--quiet", "--no-report", "--shard", shard])
                .env("RUNNER_THREADS", "1")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for w in workers {
        let o = w.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (shared_starts, shared_dones) = journal(&root.join("c"));
    let mut jobs: Vec<(usize, usize)> = shared_dones.iter().map(|(t, r, _)| (*t, *r)).collect();
    let n = jobs.len();
    jobs.sort();
    jobs.dedup();
    assert_eq!(jobs.len(), n, "no job done twice: {shared_dones:?}");
    assert_eq!(shared_starts.iter().filter(|(_, r)| *r == 0).count(), 9, "{shared_starts:?}");
    assert!(shared_starts.iter().any(|(_, r)| *r == 2), "{shared_starts:?}");
}

/// `runner run` of a halving spec runs the search as `runner sweep` does: fewer epochs than
/// the full grid, trials pruned, and the sweep's closing table at the end.
#[test]
fn runner_run_of_a_halving_spec_runs_the_search() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 2, 8);
    std::fs::write(root.join("spec.toml"), halving_spec(&data)).unwrap();
    let o = runner(root, &["run", "spec.toml", "--out", "runs", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let line = out.lines().find(|l| l.contains("epochs trained in all")).unwrap_or_else(|| panic!("{out}"));
    let numbers: Vec<usize> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    assert_eq!(numbers[1], 81, "9 trials x 9 epochs: {line}");
    assert!(numbers[0] < 81, "runner run trained every trial to its end: {line}");
    assert!(out.contains("pruned by halving"), "{out}");
    let (starts, _) = journal(&root.join("runs"));
    assert_eq!(starts.iter().filter(|(_, r)| *r == 0).count(), 9, "{starts:?}");
}

/// A head on cached ImageNet features, its rate and dropout searched by TPE after 4 random trials.
fn tpe_spec(data: &std::path::Path, trials: usize, method: &str) -> String {
    format!(
        r#"name = "tpe"
seed = 2

[data]
source = "{}"
image_size = 32
batch_size = 8
split = [0.6, 0.4]

[model]
backbone = "efficientnet_lite0"
weights = "imagenet"

[[phases]]
name = "head"
epochs = 2
freeze_up_to = "all"
optimizer = {{ kind = "adam", lr = 1e-3 }}

[search]
method = "{method}"
trials = {trials}
startup_trials = 4
seed = 9

[search.space]
"phases.0.optimizer.lr" = {{ log_uniform = [1e-5, 1.0] }}
"model.head.dropout" = {{ uniform = [0.0, 0.5] }}
"#,
        data.display()
    )
}

/// tpe_trials.csv's rows after the header.
fn tpe_journal(root: &std::path::Path, out: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root.join(out).join("tpe/tpe_trials.csv")).unwrap();
    assert_eq!(text.lines().next().unwrap(), "trial,run_id,phases.0.optimizer.lr,model.head.dropout,best_val_acc");
    text.lines().skip(1).map(str::to_string).collect()
}

#[test]
fn a_tpe_search_proposes_from_results_reproducibly_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 3, 12);
    // Plan: the 4 startup trials are random search's first 4.
    std::fs::write(root.join("spec.toml"), tpe_spec(&data, 10, "tpe")).unwrap();
    let o = runner(root, &["plan", "spec.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("4 runs of tpe") && stdout(&o).contains("then 6 more trials of the TPE search"));
    let tpe_plan = plan(root, &[]);
    std::fs::write(root.join("random.toml"), tpe_spec(&data, 4, "random").replace("startup_trials = 4\n", "")).unwrap();
    let o = runner(root, &["plan", "random.toml"]);
    let random_ids: Vec<String> = stdout(&o).lines().skip(1).take(4).map(|l| l[..10].to_string()).collect();
    assert_eq!(tpe_plan.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), random_ids);

    // Six trials, then the same search to ten: the first six are found completed and the
    // proposals after them follow from their results as if it had run through.
    std::fs::write(root.join("spec.toml"), tpe_spec(&data, 6, "tpe")).unwrap();
    let o = runner(root, &["run", "spec.toml", "--out", "part", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let six = tpe_journal(root, "part");
    assert_eq!(six.len(), 6);
    std::fs::write(root.join("spec.toml"), tpe_spec(&data, 10, "tpe")).unwrap();
    let o = runner(root, &["run", "spec.toml", "--out", "part", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("10 runs: 4 completed, 6 skipped"), "{}", stdout(&o));
    let ten = tpe_journal(root, "part");
    assert_eq!(ten[..6], six[..]);
    let o = runner(root, &["run", "spec.toml", "--out", "whole", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(tpe_journal(root, "whole"), ten, "the same trials, run through in one go");
    // Every trial has a result; the proposals after the startup differ from one another.
    let cells: Vec<Vec<&str>> = ten.iter().map(|l| l.split(',').collect()).collect();
    assert!(cells.iter().all(|c| c[4].parse::<f64>().is_ok()), "{ten:?}");
    let later: std::collections::BTreeSet<&str> = cells[4..].iter().map(|c| c[2]).collect();
    assert!(later.len() > 1, "{ten:?}");

    // A grid with TPE, or its keys on another method, are errors at the line.
    let e = crate::common::spec_error(root, &format!("{}\n[grid]\nseed = [1, 2]\n", tpe_spec(&data, 6, "tpe")));
    assert!(e.contains("method = \"tpe\" with a [grid]"), "{e}");
    let e = crate::common::spec_error(root, &tpe_spec(&data, 6, "random"));
    assert!(e.contains("`startup_trials` is for method = \"tpe\""), "{e}");
}

/// The TPE spec as a halving search: 8 trials of 4 epochs, rungs of 1, 2 and 4 (eta 2),
/// the trials after the 3 random ones proposed by TPE.
fn bohb_spec(data: &std::path::Path, sampler: &str) -> String {
    tpe_spec(data, 8, "halving").replace("epochs = 2\n", "epochs = 4\n").replace(
        "startup_trials = 4\n",
        &format!("sampler = \"{sampler}\"\nstartup_trials = 3\nmin_epochs = 1\neta = 2\n"),
    )
}

/// The halving journal's lines of `out`.
fn halving_lines(root: &std::path::Path, out: &str) -> Vec<String> {
    let dir = root.join(out).join("tpe");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(".halving-"))
        .expect("a journal beside the runs");
    std::fs::read_to_string(file.path()).unwrap().lines().map(str::to_string).collect()
}

/// The decisions (start lines without pid, host and time, a job taken over once) and the
/// proposals, in order.
fn decisions(lines: &[String]) -> Vec<String> {
    let mut seen = vec![];
    for l in lines {
        let f: Vec<&str> = l.splitn(4, ' ').collect();
        let d = match f[0] {
            "start" => format!("start {} {}", f[1], f[2]),
            "propose" => l.clone(),
            _ => continue,
        };
        if !seen.contains(&d) {
            seen.push(d);
        }
    }
    seen
}

#[test]
fn tpe_proposes_the_trials_of_a_halving_search_from_every_rung_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 3, 12);
    std::fs::write(root.join("spec.toml"), bohb_spec(&data, "tpe")).unwrap();
    let o = runner(root, &["plan", "spec.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("then 5 more trials of the TPE search"), "{}", stdout(&o));
    std::fs::write(root.join("random.toml"), bohb_spec(&data, "random").replace("startup_trials = 3\n", "")).unwrap();
    let o = runner(root, &["plan", "random.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let random_ids: Vec<String> = stdout(&o).lines().skip(1).take(8).map(|l| l[..10].to_string()).collect();
    let planned = plan(root, &[]);
    assert_eq!(planned.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), random_ids[..3], "startup = random");

    let o = runner(root, &["sweep", "spec.toml", "--out", "a", "--no-report"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("8 trials (TPE after 3 random), rungs of 1, 2, 4 epochs"), "{out}");
    assert!(out.contains("pruned by halving"), "{out}");
    let line = out.lines().find(|l| l.contains("epochs trained in all")).unwrap_or_else(|| panic!("{out}"));
    let numbers: Vec<usize> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    assert_eq!(numbers[1], 32, "8 trials x 4 epochs: {line}");
    let lines = halving_lines(root, "a");
    let order = decisions(&lines);
    // Trials 3 to 7 are proposed, each just before its first start; the startup trials are not.
    for t in 0..8 {
        let start = order.iter().position(|d| *d == format!("start {t} 0")).unwrap_or_else(|| panic!("{order:?}"));
        let proposal = order.iter().position(|d| d.starts_with(&format!("propose {t} ")));
        assert_eq!(proposal.map(|p| p + 1), (t >= 3).then_some(start), "trial {t}: {order:?}");
    }
    // Each proposal was made after results were in: at least 3 trials done by then.
    let first_proposal = lines.iter().position(|l| l.starts_with("propose ")).unwrap();
    assert!(lines[..first_proposal].iter().filter(|l| l.starts_with("done ")).count() >= 3, "{lines:?}");
    // The journal's proposals are the trials' runs (their values in tpe_trials.csv), and
    // they are not random search's draws of the same trials.
    let csv = std::fs::read_to_string(root.join("a/tpe/tpe_trials.csv")).unwrap();
    let rows: Vec<Vec<String>> = csv.lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect();
    assert_eq!(
        csv.lines().next().unwrap(),
        "trial,run_id,phases.0.optimizer.lr,model.head.dropout,epochs,best_val_acc"
    );
    assert_eq!(rows.len(), 8);
    for l in lines.iter().filter(|l| l.starts_with("propose ")) {
        let t: usize = l.split(' ').nth(1).unwrap().parse().unwrap();
        let array: Vec<f64> = serde_json::from_str(l.splitn(3, ' ').nth(2).unwrap()).unwrap();
        let csv_values: Vec<f64> = rows[t][2..4].iter().map(|v| v.parse().unwrap()).collect();
        assert_eq!(array, csv_values, "{l} / {csv}");
    }
    let proposed_ids: Vec<&str> = rows[3..].iter().map(|r| r[1].as_str()).collect();
    assert!(proposed_ids.iter().all(|id| !random_ids.iter().any(|r| r == id)), "{proposed_ids:?} {random_ids:?}");
    let spent: usize = rows.iter().map(|r| r[4].parse::<usize>().unwrap()).sum();
    assert_eq!(spent, numbers[0], "the epochs column adds up to what was trained: {csv}");

    // The same search from scratch decides and proposes the same; killed after its first
    // proposal and run again, too.
    let o = runner(root, &["sweep", "spec.toml", "--out", "b", "--quiet", "--no-report"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(decisions(&halving_lines(root, "b")), order);
    kill_when(root, "c/tpe", 1, |journal| journal.contains("\npropose "));
    assert!(decisions(&halving_lines(root, "c")).len() < order.len(), "killed part-way");
    let o = runner(root, &["sweep", "spec.toml", "--out", "c", "--quiet", "--no-report"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(decisions(&halving_lines(root, "c")), order, "the same decisions and proposals after the kill");
    assert_eq!(std::fs::read_to_string(root.join("c/tpe/tpe_trials.csv")).unwrap(), csv);

    // Two workers share the search: each trial proposed once, by whichever worker started it,
    // and trained (by either) with the journal's values.
    let workers: Vec<std::process::Child> = ["0/2", "1/2"]
        .iter()
        .map(|shard| {
            crate::common::runner_bin()
                .current_dir(root)
                .args(["sweep", "spec.toml", "--out", "d", "--quiet", "--no-report", "--shard", shard])
                .env("RUNNER_THREADS", "1")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for w in workers {
        let o = w.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let shared = halving_lines(root, "d");
    let proposed: Vec<&str> = shared.iter().filter(|l| l.starts_with("propose ")).map(|l| &l[8..9]).collect();
    assert_eq!(proposed, ["3", "4", "5", "6", "7"], "{shared:?}");
    let mut jobs: Vec<&str> = shared.iter().filter(|l| l.starts_with("done ")).map(|l| &l[5..8]).collect();
    let n = jobs.len();
    jobs.sort();
    jobs.dedup();
    assert_eq!(jobs.len(), n, "no job done twice: {shared:?}");
    let rows_d: Vec<String> =
        std::fs::read_to_string(root.join("d/tpe/tpe_trials.csv")).unwrap().lines().map(str::to_string).collect();
    for l in shared.iter().filter(|l| l.starts_with("propose ")) {
        let t: usize = l[8..9].parse().unwrap();
        let array: Vec<f64> = serde_json::from_str(&l[10..]).unwrap();
        let cells: Vec<f64> = rows_d[t + 1].split(',').skip(2).take(2).map(|v| v.parse().unwrap()).collect();
        assert_eq!(array, cells, "trial {t} ran with its proposal: {rows_d:?}");
    }

    // `sampler` is halving's; TPE's keys need a TPE sampler.
    let e = spec_error(root, &bohb_spec(&data, "tpe").replace("method = \"halving\"", "method = \"random\""));
    assert!(e.contains("`sampler` is for method = \"halving\""), "{e}");
    let e = spec_error(root, &bohb_spec(&data, "random"));
    assert!(e.contains("`startup_trials` is for method = \"tpe\" or sampler = \"tpe\""), "{e}");
    let e = spec_error(root, &bohb_spec(&data, "bayes"));
    assert!(e.contains("expected \"random\" or \"tpe\", found \"bayes\""), "{e}");
    let e = spec_error(root, &format!("{}\n[grid]\nseed = [1, 2]\n", bohb_spec(&data, "tpe")));
    assert!(e.contains("sampler = \"tpe\" with a [grid]"), "{e}");
}
