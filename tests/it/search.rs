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
        .filter(|l| !l.contains(" runs of "))
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
            base.replace("trials = 3", "trials = 3\nmethod = \"halving\""),
            "method",
            "\"halving\" (successive halving over epochs) is not available yet",
        ),
    ];
    for (text, needle, message) in cases {
        let e = spec_error(root, &text);
        let line = line_of(&text, needle);
        assert!(e.contains(&format!("spec.toml:{line}:")), "expected line {line}: {e}");
        assert!(e.contains(message), "{e}");
    }
}
