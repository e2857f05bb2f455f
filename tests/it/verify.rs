//! `runner verify`: a recorded run reruns to the same bits on the machine that
//! recorded it; a changed metric is found at its epoch; a tolerance accepts small
//! differences; the recorded run is never touched.

use crate::common::{only_run, runner, shapes, stderr, stdout, tiny_run, tiny_spec};

#[test]
fn verify_reruns_and_compares_epoch_by_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (dir, dir_arg) = tiny_run(root, 3, 10);

    let o = runner(root, &["verify", &dir_arg]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("identical: every metric of 2 epochs has the same bits"), "{out}");
    assert!(out.contains("verified: 1 of 1 runs"), "{out}");

    // A recorded value off in its last digits, in epoch 2.
    let csv_path = dir.join("metrics.csv");
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let mut lines: Vec<String> = csv.lines().map(str::to_string).collect();
    let mut cells: Vec<String> = lines[2].split(',').map(str::to_string).collect();
    let val_loss: f64 = cells[5].parse().unwrap();
    cells[5] = format!("{}", val_loss + 1e-7);
    lines[2] = cells.join(",");
    let tampered = lines.join("\n") + "\n";
    std::fs::write(&csv_path, &tampered).unwrap();
    let before: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();

    let o = runner(root, &["verify", &dir_arg]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.contains("DIFFERS from epoch 2 (fine_tune): val_loss"), "{out}");
    assert!(stderr(&o).contains("1 of 1 runs did not verify"), "{}", stderr(&o));

    let o = runner(root, &["verify", &dir_arg, "--tolerance", "1e-6"]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("within tolerance 0.000001"), "{}", stdout(&o));

    // The recorded run is as it was: same files, the tampered CSV included.
    let after: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(before, after);
    assert_eq!(std::fs::read_to_string(&csv_path).unwrap(), tampered);

    // Not a run directory.
    let o = runner(root, &["verify", "spec.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("config.toml"), "{}", stderr(&o));
}

#[test]
fn verify_also_checks_the_best_weights_and_the_best_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (dir, dir_arg) = tiny_run(root, 2, 8);
    let o = runner(root, &["verify", &dir_arg]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("best weights: the same bits"), "{}", stdout(&o));

    // One value of the best weights altered.
    let best = dir.join("best.safetensors");
    let weights = std::fs::read(&best).unwrap();
    let mut altered = weights.clone();
    *altered.last_mut().unwrap() ^= 0x01;
    std::fs::write(&best, &altered).unwrap();
    let o = runner(root, &["verify", &dir_arg]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("best weights DIFFER"), "{}", stdout(&o));
    std::fs::write(&best, &weights).unwrap();

    // The summary's best epoch altered.
    let path = dir.join("summary.json");
    let mut summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let best_epoch = summary["best_epoch"].as_u64().unwrap();
    summary["best_epoch"] = serde_json::json!(3 - best_epoch);
    std::fs::write(&path, serde_json::to_string_pretty(&summary).unwrap()).unwrap();
    let o = runner(root, &["verify", &dir_arg]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("DIFFERS: best epoch"), "{}", stdout(&o));
}

/// The environment that asks libtorch for the host's widest paths, and the one that asks for
/// the narrowest: ATen's kernels, oneDNN's ISA, MKL's branch.
const WIDEST: &[(&str, &str)] =
    &[("ATEN_CPU_CAPABILITY", "avx512"), ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX"), ("MKL_CBWR", "AUTO")];
const NARROWEST: &[(&str, &str)] =
    &[("ATEN_CPU_CAPABILITY", "default"), ("ONEDNN_MAX_CPU_ISA", "SSE41"), ("MKL_CBWR", "SSE2")];

/// Trains the tiny spec (with `extra` keys first) under `env` into `root/<out>` and returns
/// its metrics.csv, best weights and summary.json.
fn run_under(
    root: &std::path::Path,
    extra: &str,
    env: &[(&str, &str)],
    out: &str,
) -> (String, Vec<u8>, serde_json::Value) {
    let source = root.join("shapes");
    if !source.is_dir() {
        shapes(root, 3, 8);
    }
    let spec = format!("{extra}{}", tiny_spec(&source));
    let file = format!("{out}.toml");
    std::fs::write(root.join(&file), spec).unwrap();
    let o = crate::common::runner_with_env(root, &["run", &file, "--out", out, "--quiet", "--device", "cpu"], env);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let dir = only_run(&root.join(out).join("tiny"));
    let metrics = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    (metrics, std::fs::read(dir.join("best.safetensors")).unwrap(), crate::common::summary_json(&dir))
}

#[test]
fn a_portable_run_gives_the_same_bits_whichever_instruction_paths_the_environment_asks_for() {
    if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
        eprintln!("skipped: the portable mode needs AVX2 and FMA, which this processor lacks");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let portable = "reproducibility = \"portable\"\n";
    let (metrics_wide, best_wide, summary) = run_under(root, portable, WIDEST, "wide");
    let (metrics_narrow, best_narrow, _) = run_under(root, portable, NARROWEST, "narrow");
    assert_eq!(metrics_wide, metrics_narrow, "portable: metrics.csv differs between the widest and narrowest paths");
    assert!(best_wide == best_narrow, "portable: the best weights differ between the widest and narrowest paths");
    let machine = &summary["machine"];
    assert_eq!(machine["reproducibility"], "portable", "{summary}");
    assert_eq!(machine["aten_capability"], "AVX2", "{summary}");
    assert_eq!(machine["onednn_max_cpu_isa"], "AVX2", "{summary}");
    assert_eq!(machine["mkl_cbwr"], "COMPATIBLE,STRICT", "{summary}");

    // The control: in the default mode the same two environments give other bits, so the
    // equality above is the portable mode's doing.
    let (machine_wide, _, summary) = run_under(root, "", WIDEST, "machine_wide");
    let (machine_narrow, _, _) = run_under(root, "", NARROWEST, "machine_narrow");
    assert_ne!(machine_wide, machine_narrow, "the environment did not move the default mode's bits");
    assert_eq!(summary["machine"]["reproducibility"], "machine");
    assert_eq!(
        summary["machine"]["aten_capability"],
        if std::is_x86_feature_detected!("avx512f") { "AVX512" } else { "AVX2" }
    );

    // A process that says it is pinned, with other settings, is refused rather than restarted.
    let o = crate::common::runner_with_env(
        root,
        &["run", "wide.toml", "--out", "marker", "--quiet"],
        &[
            ("RUNNER_NUMERICS_PINNED", "portable"),
            ("ATEN_CPU_CAPABILITY", "avx512"),
            ("ONEDNN_MAX_CPU_ISA", "AVX2"),
            ("MKL_CBWR", "COMPATIBLE,STRICT"),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("ATEN_CPU_CAPABILITY=\"avx512\" (portable: avx2)"), "{}", stderr(&o));
    assert!(!root.join("marker").exists(), "a refused command wrote runs");

    // One process cannot run both modes.
    let grid = format!("{}\n[grid]\nreproducibility = [\"machine\", \"portable\"]\n", tiny_spec(&root.join("shapes")));
    std::fs::write(root.join("mixed.toml"), grid).unwrap();
    let o = runner(root, &["run", "mixed.toml", "--out", "mixed", "--quiet"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("mix reproducibility = \"portable\" with \"machine\""), "{}", stderr(&o));
    assert!(!root.join("mixed").exists(), "a refused command wrote runs");
}

#[test]
fn verify_names_the_machines_of_the_record_and_the_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (dir, dir_arg) = tiny_run(root, 2, 8);
    let here = crate::common::summary_json(&dir)["machine"].clone();
    assert!(here["cpu"].is_string() && here["isa"].is_string(), "{here}");

    let o = runner(root, &["verify", &dir_arg]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("machine: the same as the record's"), "{}", stdout(&o));

    // The record says another processor made it.
    let path = dir.join("summary.json");
    let mut summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    summary["machine"]["cpu"] = "Intel(R) Xeon(R) Example CPU".into();
    summary["machine"]["aten_capability"] = "DEFAULT".into();
    std::fs::write(&path, serde_json::to_string_pretty(&summary).unwrap()).unwrap();
    let o = runner(root, &["verify", &dir_arg]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("machine: recorded on Intel(R) Xeon(R) Example CPU"), "{out}");
    assert!(out.contains(&format!("rerun on    {}", here["cpu"].as_str().unwrap())), "{out}");
    assert!(
        out.contains(&format!("processor Intel(R) Xeon(R) Example CPU vs {}", here["cpu"].as_str().unwrap())),
        "{out}"
    );
    assert!(out.contains("ATen kernels DEFAULT vs"), "{out}");

    // And its numbers differ: verify says what a machine-mode record promises.
    let csv_path = dir.join("metrics.csv");
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let mut lines: Vec<String> = csv.lines().map(str::to_string).collect();
    let mut cells: Vec<String> = lines[1].split(',').map(str::to_string).collect();
    cells[3] = format!("{}", cells[3].parse::<f64>().unwrap() + 1e-6);
    lines[1] = cells.join(",");
    std::fs::write(&csv_path, lines.join("\n") + "\n").unwrap();
    let o = runner(root, &["verify", &dir_arg]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("bit-identical only on the same machine"), "{}", stdout(&o));

    // A record from before runner kept the machine.
    summary.as_object_mut().unwrap().remove("machine");
    std::fs::write(&path, serde_json::to_string_pretty(&summary).unwrap()).unwrap();
    std::fs::write(&csv_path, &csv).unwrap();
    let o = runner(root, &["verify", &dir_arg]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("the record does not say which machine made it"), "{}", stdout(&o));
}
