//! Specs through the real binary: layering, grids, `runner plan`, and the exact
//! message, exit status 2 and empty output for each kind of bad spec.

use std::path::Path;

use crate::common::*;

/// A spec over a 3-class dataset with a 2x3 grid.
fn grid_spec(data: &Path) -> String {
    format!(
        r#"name = "grid"
seed = 1

[data]
source = "{}"
image_size = 32

[model]
backbone = "efficientnet_lite0"
weights = "none"

[grid]
"phases.1.freeze_up_to" = [8, 10, 12]
"data.batch_size" = [8, 16]

[[phases]]
name = "head"
epochs = 1
freeze_up_to = "all"
optimizer = {{ kind = "adam", lr = 1e-3 }}

[[phases]]
name = "fine_tune"
epochs = 2
freeze_up_to = 10
optimizer = {{ kind = "sgd", lr_factor = 0.1, momentum = 0.9, nesterov = true }}
schedule = {{ kind = "cosine", warmup = 1 }}
"#,
        data.display()
    )
}

fn plan_rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip(1)
        .filter(|l| !l.contains(" runs of "))
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// Writes `text` as spec.toml in a fresh folder with a 3-class dataset; runs `args` on it.
fn check_bad(text_for: impl Fn(&Path) -> String, args: &[&str], expected: &str) {
    check_bad_with(text_for, args, |_| expected.to_string())
}

fn check_bad_with(text_for: impl Fn(&Path) -> String, args: &[&str], expected: impl Fn(&Path) -> String) {
    let dir = tempfile::tempdir().unwrap();
    let data = shapes(dir.path(), 3, 3);
    std::fs::write(dir.path().join("spec.toml"), text_for(&data)).unwrap();
    let o = runner(dir.path(), args);
    assert_eq!(stderr(&o), expected(&data));
    assert_eq!(o.status.code(), Some(2));
    assert!(!dir.path().join("reports").exists(), "nothing may be written");
}

#[test]
fn lr_factor_in_the_first_phase() {
    check_bad(
        |d| tiny_spec(d).replace(r#"kind = "adam", lr = 1e-3"#, r#"kind = "adam", lr_factor = 0.5"#),
        &["run", "spec.toml"],
        "error: spec.toml:17:30: `phases.0.optimizer.lr_factor`: the first phase has no previous learning rate: give `lr`\n",
    );
}

#[test]
fn empty_grid_axis() {
    check_bad(
        |d| grid_spec(d).replace("[8, 10, 12]", "[]"),
        &["plan", "spec.toml"],
        "error: spec.toml:13:1: `grid.\"phases.1.freeze_up_to\"`: a grid axis needs at least one value, found []\n",
    );
}

#[test]
fn grid_key_that_names_no_field() {
    check_bad(
        |d| grid_spec(d).replace("\"data.batch_size\" = [8, 16]", "\"data.batch\" = [8, 16]"),
        &["plan", "spec.toml"],
        "error: spec.toml:14:1: `data.batch`: unknown key `batch`, did you mean `batch_size`?\n",
    );
}

#[test]
fn grid_value_of_the_wrong_type() {
    check_bad(
        |d| grid_spec(d).replace("[8, 10, 12]", "[8, \"ten\"]"),
        &["run", "spec.toml"],
        "error: spec.toml:13:1: `phases.1.freeze_up_to`: expected \"all\", a backbone layer index, or { from = A, to = B, every = E }, found string \"ten\"\n",
    );
}

#[test]
fn head_size_that_does_not_match_the_dataset() {
    check_bad_with(
        |d| tiny_spec(d).replace("weights = \"none\"", "weights = \"none\"\nhead = { classes = 5 }"),
        &["run", "spec.toml"],
        |d| {
            format!(
                "error: spec.toml:12:10: `model.head.classes`: expected 3 to match the 3 class folders of {} \
                 (circle, cross, ring), found 5\n",
                d.display()
            )
        },
    );
}

#[test]
fn bad_override_names_its_flag() {
    check_bad(
        tiny_spec,
        &["run", "spec.toml", "--set", "phases.2.epochs=3"],
        "error: spec.toml: `phases.2.epochs`: `phases` has 2 entries, so there is no index 2 (from --set phases.2.epochs=3)\n",
    );
    check_bad(
        tiny_spec,
        &["run", "spec.toml", "--set", "epochs"],
        "error: spec.toml: --set epochs: expected key=value, e.g. --set phases.1.optimizer.lr=1e-5\n",
    );
}

#[test]
fn plan_prints_one_row_per_run_and_set_pins_an_axis() {
    let dir = tempfile::tempdir().unwrap();
    let data = shapes(dir.path(), 3, 3);
    std::fs::write(dir.path().join("spec.toml"), grid_spec(&data)).unwrap();
    let o = runner(dir.path(), &["plan", "spec.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = plan_rows(&stdout(&o));
    assert_eq!(rows.len(), 6, "{}", stdout(&o));
    assert!(rows.iter().all(|r| r[1] == "no" && r[2] == "3"));
    let mut ids: Vec<&String> = rows.iter().map(|r| &r[0]).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "run ids are distinct");
    assert_eq!(rows[0][3..], ["phases.1.freeze_up_to=8", "data.batch_size=8"]);

    // Pinning a grid key removes its axis.
    let o = runner(dir.path(), &["plan", "spec.toml", "--set", "data.batch_size=16"]);
    let pinned = plan_rows(&stdout(&o));
    assert_eq!(pinned.len(), 3, "{}", stdout(&o));
    // ... and the pinned runs are the same runs as in the full grid.
    for r in &pinned {
        assert!(rows.iter().any(|full| full[0] == r[0] && full.contains(&"data.batch_size=16".to_string())));
    }
    // The environment is a layer below --set.
    let o = runner_bin()
        .current_dir(dir.path())
        .args(["plan", "spec.toml", "--set", "data.batch_size=16"])
        .env("RUNNER_SPEC__DATA__BATCH_SIZE", "8")
        .env("RUNNER_SPEC__PHASES__0__EPOCHS", "4")
        .output()
        .unwrap();
    let env_rows = plan_rows(&stdout(&o));
    assert_eq!(env_rows.len(), 3);
    assert!(env_rows.iter().all(|r| r[2] == "6"), "{}", stdout(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    // The old prefix still works for spec keys, with a warning that names the new variable.
    let o = runner_bin()
        .current_dir(dir.path())
        .args(["plan", "spec.toml", "--set", "data.batch_size=16"])
        .env("RUNNER_PHASES__0__EPOCHS", "4")
        .output()
        .unwrap();
    assert!(plan_rows(&stdout(&o)).iter().all(|r| r[2] == "6"), "{}", stdout(&o));
    assert!(
        stderr(&o).contains(
            "warning: RUNNER_PHASES__0__EPOCHS sets a spec key under the old prefix: use RUNNER_SPEC__PHASES__0__EPOCHS"
        ),
        "{}",
        stderr(&o)
    );
}

/// Every variable GitHub Actions sets in a job whose name starts with `RUNNER_`, with
/// values as a hosted runner has them (docs.github.com, "Store information in variables").
const GITHUB_ACTIONS: &[(&str, &str)] = &[
    ("RUNNER_NAME", "GitHub Actions 2"),
    ("RUNNER_OS", "Linux"),
    ("RUNNER_ARCH", "X64"),
    ("RUNNER_TEMP", "/home/runner/work/_temp"),
    ("RUNNER_TOOL_CACHE", "/opt/hostedtoolcache"),
    ("RUNNER_DEBUG", "1"),
    ("RUNNER_ENVIRONMENT", "github-hosted"),
    ("RUNNER_WORKSPACE", "/home/runner/work/project"),
    ("RUNNER_PERFLOG", "/home/runner/perflog"),
    ("RUNNER_TRACKING_ID", "github_5b1f2c3a"),
    // Kubernetes, for a service named "runner" beside the pod.
    ("RUNNER_SERVICE_HOST", "10.0.0.7"),
    ("RUNNER_SERVICE_PORT", "5000"),
    ("RUNNER_PORT", "tcp://10.0.0.7:5000"),
    ("RUNNER_PORT_5000_TCP_ADDR", "10.0.0.7"),
];

#[test]
fn ci_services_runner_variables_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = shapes(dir.path(), 2, 4);
    std::fs::write(dir.path().join("spec.toml"), crate::common::tiny_spec(&data)).unwrap();
    let with = |env: &[(&str, &str)], args: &[&str]| {
        let o = crate::common::runner_with_env(dir.path(), args, env);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
        stdout(&o)
    };
    let plain = plan_rows(&with(&[], &["plan", "spec.toml"]));
    let in_ci = plan_rows(&with(GITHUB_ACTIONS, &["plan", "spec.toml"]));
    assert_eq!(plain.len(), 1);
    assert_eq!(in_ci, plain, "the run ids differ under GitHub Actions' variables");
    let out = with(GITHUB_ACTIONS, &["run", "spec.toml", "--out", "runs", "--quiet"]);
    assert!(out.contains(&format!("run {} completed", plain[0][0])), "{out}");
    let run = crate::common::only_run(&dir.path().join("runs/tiny"));
    assert_eq!(run.file_name().unwrap().to_str().unwrap(), plain[0][0]);
    assert_eq!(crate::common::summary_json(&run)["experiment"], "tiny");
}

#[test]
fn run_ids_survive_reordering_and_explicit_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let data = shapes(dir.path(), 3, 3);
    let ids = |text: String| {
        std::fs::write(dir.path().join("spec.toml"), text).unwrap();
        let o = runner(dir.path(), &["plan", "spec.toml"]);
        assert!(o.status.success(), "{}", stderr(&o));
        plan_rows(&stdout(&o)).into_iter().map(|r| r[0].clone()).collect::<Vec<_>>()
    };
    let base = ids(grid_spec(&data));
    let reordered =
        grid_spec(&data).replace("[data]\nsource", "[data]\naugment = []\nbatch_size = 32\nsplit = [0.8, 0.2]\nsource");
    let reordered = reordered.replace("name = \"grid\"\nseed = 1\n", "seed = 1\nname = \"grid\"\n");
    assert_eq!(ids(reordered), base);
    assert_ne!(ids(grid_spec(&data).replace("seed = 1", "seed = 2")), base);
    // The id covers the data too: a changed image is a different run.
    let image = data.join("circle/0000.jpg");
    let mut bytes = std::fs::read(&image).unwrap();
    bytes.push(0);
    std::fs::write(&image, bytes).unwrap();
    let changed = ids(grid_spec(&data));
    assert!(changed.iter().all(|id| !base.contains(id)), "{changed:?} vs {base:?}");
}

#[test]
fn a_grid_runs_every_point() {
    let dir = tempfile::tempdir().unwrap();
    let data = shapes(dir.path(), 2, 6);
    let spec = tiny_spec(&data)
        .replace("[[phases]]\nname = \"head\"", "[grid]\n\"phases.0.epochs\" = [1, 2]\n\n[[phases]]\nname = \"head\"");
    std::fs::write(dir.path().join("spec.toml"), spec).unwrap();
    let o = runner(dir.path(), &["run", "spec.toml", "--out", "out", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(dir.path().join("out/tiny")).unwrap().count(), 2);
    let out = stdout(&o);
    assert!(out.contains("== run 1/2: phases.0.epochs=1") && out.contains("== run 2/2: phases.0.epochs=2"), "{out}");
}
