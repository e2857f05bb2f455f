//! Hostile and unlucky inputs (issue 16): each builds its input itself and checks for a
//! clear error, skip or refusal, with nothing left behind.

use crate::common::*;

/// CRC-32 (IEEE) of `bytes`, as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A PNG whose header claims `width` x `height` RGB pixels and whose data is a few bytes.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let body = [kind, data].concat();
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let ihdr = [&width.to_be_bytes()[..], &height.to_be_bytes(), &[8, 2, 0, 0, 0]].concat();
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    png
}

#[test]
fn a_decompression_bomb_is_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let root = shapes(dir.path(), 2, 8);
    let bomb = png_claiming(100_000, 100_000);
    assert!(bomb.len() < 100, "{} bytes", bomb.len());
    std::fs::write(root.join("circle/bomb.png"), &bomb).unwrap();

    let o = runner(dir.path(), &["data", "check", "./shapes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("bomb.png: image of 100000 x 100000 pixels is over the limit"), "{out}");

    // A run trains around it (skipped.csv lists it); prediction with the run's weights
    // reports the bomb and still answers for the good image beside it.
    std::fs::write(dir.path().join("spec.toml"), tiny_spec(&root)).unwrap();
    let o = runner(dir.path(), &["run", "spec.toml", "--out", "runs", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = only_run(&dir.path().join("runs/tiny"));
    assert!(std::fs::read_to_string(run.join("skipped.csv")).unwrap().contains("bomb.png,image of 100000 x 100000"));
    let good = std::fs::read_dir(root.join("cross")).unwrap().next().unwrap().unwrap().path();
    let bomb_path = root.join("circle/bomb.png");
    let o = runner(
        dir.path(),
        &[
            "predict",
            "--run",
            run.to_str().unwrap(),
            "-k",
            "2",
            "--json",
            good.to_str().unwrap(),
            bomb_path.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(json[0]["top"].as_array().map(Vec::len), Some(2), "{json}");
    assert!(json[1]["error"].as_str().unwrap().contains("over the limit"), "{json}");

    // The limit is a setting: lowered below 48 x 48, the good images go too.
    let o = runner_with_env(dir.path(), &["data", "check", "./shapes"], &[("RUNNER_MAX_IMAGE_PIXELS", "100")]);
    assert!(stderr(&o).contains("no usable training image (17 files skipped in all)"), "{}", stderr(&o));
}

#[test]
fn a_zip_is_reextracted_when_another_archive_takes_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let circles = shapes(dir.path(), 2, 2).join("circle");
    let png = std::fs::read(std::fs::read_dir(circles).unwrap().next().unwrap().unwrap().path()).unwrap();
    let zip = |classes: [&str; 2]| {
        let mut files: Vec<(String, Vec<u8>)> = vec![];
        for c in classes {
            files.extend((0..3).map(|i| (format!("{c}/{i}.png"), png.clone())));
        }
        zip_of(&files)
    };
    std::fs::write(dir.path().join("data.zip"), zip(["ants", "bees"])).unwrap();
    let o = runner(dir.path(), &["data", "check", "data.zip"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("ants") && !stdout(&o).contains("wasps"), "{}", stdout(&o));

    // Another archive under the same name: extracted anew, not the old folder reused.
    std::fs::write(dir.path().join("data.zip"), zip(["wasps", "flies"])).unwrap();
    let o = runner(dir.path(), &["data", "check", "data.zip"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("wasps") && !stdout(&o).contains("ants"), "{}", stdout(&o));
    assert!(stderr(&o).contains("extracting it again"), "{}", stderr(&o));

    // A name that makes no folder is refused, and nothing is read from datasets/ itself.
    for bad in [".zip", "...zip"] {
        std::fs::write(dir.path().join(bad), zip(["ants", "bees"])).unwrap();
        let o = runner(dir.path(), &["data", "check", bad]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("cannot name a folder under datasets/"), "{}", stderr(&o));
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("datasets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial") || n.contains(".stale"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn out_of_range_values_are_spec_and_flag_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 2, 4);
    let spec = tiny_spec(&data);

    let e = spec_error(root, &spec.replace("image_size = 32", "image_size = 100000"));
    assert!(e.contains("`data.image_size`: expected 32 to 1024 pixels, found 100000"), "{e}");
    let e = spec_error(root, &spec.replace("momentum = 0.9", "momentum = nan"));
    assert!(e.contains("`phases.1.optimizer.momentum`: expected a finite value >= 0, found NaN"), "{e}");
    let e = spec_error(root, &spec.replace("momentum = 0.9", "momentum = 0.9, weight_decay = inf"));
    assert!(e.contains("`phases.1.optimizer.weight_decay`: expected a finite value >= 0, found inf"), "{e}");
    let e = spec_error(root, &spec.replace("name = \"tiny\"", "name = \"a\\tb\""));
    assert!(e.contains("`name`: expected a plain name"), "{e}");
    let long = "x".repeat(300);
    let e = spec_error(root, &spec.replace("name = \"tiny\"", &format!("name = \"{long}\"")));
    assert!(e.contains("`name`: expected at most 100 bytes, found 300"), "{e}");
    // One key on a plain axis and in a paired one.
    let grid = format!("{spec}\n[grid]\nseed = [1, 2]\npair = {{ seed = [3, 4], \"data.batch_size\" = [4, 8] }}\n");
    let e = spec_error(root, &grid);
    assert!(e.contains("`seed` is varied by two grid axes"), "{e}");

    for args in [
        &["predict", "--backbone", "resnet18", "--image-size", "0", "x.png"][..],
        &["predict", "-k", "0", "--backbone", "resnet18", "x.png"],
    ] {
        let o = runner(root, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("not in 32..=1024") || stderr(&o).contains("not in 1..=1000"), "{}", stderr(&o));
    }
    let o = runner(root, &["summary", "resnet18", "--image-size", "100000"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn a_signal_ends_the_run_cleanly_and_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 2, 8);
    std::fs::write(root.join("spec.toml"), tiny_spec(&data)).unwrap();
    let child = start_at_failpoint(root, &["run", "spec.toml", "--out", "runs", "--quiet"], "epoch-2-batch-1");
    // SAFETY: a plain kill(2) of the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let status = { child }.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let run = &only_run(&root.join("runs/tiny"));
    let summary = summary_json(run);
    assert_eq!(summary["status"], "interrupted");
    assert_eq!(summary["epochs"], 1);
    let log = std::fs::read_to_string(run.join("run.log")).unwrap();
    assert!(log.contains("interrupted: interrupted by a signal: the checkpoint after epoch 1 is kept"), "{log}");
    assert!(run.join("checkpoint.safetensors").exists());

    let o = runner(root, &["run", "spec.toml", "--out", "runs", "--resume", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary = summary_json(run);
    assert_eq!(
        (summary["status"].as_str(), summary["resumed_after"].clone()),
        (Some("completed"), serde_json::json!([1]))
    );
}

#[test]
fn a_grid_of_a_million_points_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 2, 4);
    let values = (0..1000).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    let spec = format!("{}\n[grid]\nseed = [{values}]\n\"data.batch_size\" = [{values}]\n", tiny_spec(&data));
    let started = std::time::Instant::now();
    let e = spec_error(root, &spec);
    assert!(e.contains("`grid`: 1000000 runs, more than the limit of 10000"), "{e}");
    assert!(started.elapsed().as_secs() < 60);
    // The limit is a setting.
    let small = format!("{}\n[grid]\nseed = [1, 2, 3]\n", tiny_spec(&data));
    std::fs::write(root.join("spec.toml"), small).unwrap();
    let o = runner_with_env(root, &["plan", "spec.toml"], &[("RUNNER_MAX_GRID_RUNS", "2")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("3 runs, more than the limit of 2"), "{}", stderr(&o));
    assert!(runner(root, &["plan", "spec.toml"]).status.success());
}

#[test]
fn links_that_lead_nowhere_are_listed_and_a_class_without_validation_images_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 2, 8);
    std::os::unix::fs::symlink(root.join("nowhere.png"), data.join("circle/ghost.png")).unwrap();
    std::os::unix::fs::symlink(&data, data.join("cross/loop")).unwrap();
    let o = runner(root, &["data", "check", "./shapes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("ghost.png: unreachable"), "{out}");
    assert!(out.contains("loop: a link loop"), "{out}");

    std::fs::remove_file(data.join("cross/loop")).unwrap();
    std::fs::create_dir(data.join("lonely")).unwrap();
    let one = std::fs::read_dir(data.join("circle")).unwrap().map(|e| e.unwrap().path()).find(|p| p.is_file()).unwrap();
    std::fs::copy(one, data.join("lonely/only.png")).unwrap();
    std::fs::write(root.join("spec.toml"), tiny_spec(&data)).unwrap();
    let o = runner(root, &["run", "spec.toml", "--out", "runs"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("class `lonely` has no validation images"), "{}", stderr(&o));
    let skipped = only_run(&root.join("runs/tiny")).join("skipped.csv");
    assert!(std::fs::read_to_string(skipped).unwrap().contains("ghost.png,unreachable"));
}

#[test]
fn a_bad_value_from_set_says_it_came_from_set() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 2, 4);
    std::fs::write(root.join("spec.toml"), tiny_spec(&data)).unwrap();
    let o = runner(root, &["plan", "spec.toml", "--set", "data.image_size=5"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("`data.image_size`: expected 32 to 1024 pixels, found 5 (from --set data.image_size=5)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_batch_of_one_that_would_train_nothing_is_a_spec_error_and_a_lone_last_batch_is_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = shapes(root, 2, 6);
    // Phase 2 trains layers 10.. with their BatchNorms: every batch of one would be left out.
    let one = tiny_spec(&data).replace("batch_size = 8", "batch_size = 1");
    let e = spec_error(root, &one);
    assert!(e.contains("spec.toml:7:1: `data.batch_size`: 1 cannot train phase `fine_tune`"), "{e}");
    let o = runner(root, &["run", "spec.toml", "--out", "runs", "--quiet"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!root.join("runs").exists(), "a refused run wrote its directory");

    // With the backbone frozen, BatchNorm runs in inference: a batch of one trains.
    let frozen_only = &one[..one.find("[[phases]]\nname = \"fine_tune\"").unwrap()];
    std::fs::write(root.join("frozen.toml"), frozen_only).unwrap();
    let o = runner(root, &["run", "frozen.toml", "--out", "frozen", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = only_run(&root.join("frozen/tiny"));
    let timing = std::fs::read_to_string(run.join("timing.csv")).unwrap();
    let rate: f64 = timing.lines().nth(1).unwrap().split(',').nth(3).unwrap().parse().unwrap();
    assert!(rate > 0.0, "nothing trained: {timing}");
    let train_images = summary_json(&run)["train_images"].as_u64().unwrap() as usize;

    // A last batch of one, where BatchNorm trains: left out, and run.log says so.
    let lone = tiny_spec(&data).replace("batch_size = 8", &format!("batch_size = {}", train_images - 1));
    std::fs::write(root.join("lone.toml"), lone).unwrap();
    let o = runner(root, &["run", "lone.toml", "--out", "lone", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let log = std::fs::read_to_string(only_run(&root.join("lone/tiny")).join("run.log")).unwrap();
    assert!(
        log.contains(&format!(
            "phase 2 (fine_tune): each epoch's last batch holds 1 of the {train_images} train images and is left out"
        )),
        "{log}"
    );
    assert!(!log.contains("phase 1 (head): each epoch's last batch"), "the frozen phase trains every image: {log}");
}

#[test]
fn an_export_onto_a_full_disk_fails_cleanly_and_leaves_no_file() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_, run) = tiny_run(root, 2, 6);
    // A file size limit of 2 MiB stands in for a full disk (the TorchScript module is ~14 MB):
    // writes past it fail (EFBIG, SIGXFSZ ignored) as they would with ENOSPC.
    let mut cmd = runner_bin();
    cmd.current_dir(root).args(["export", &run, "--format", "torchscript", "--out", "model"]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 2 << 20, rlim_max: 2 << 20 };
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(1), "not a clean failure: {:?}\n{}", o.status, stderr(&o));
    assert!(stderr(&o).contains("model.pt"), "{}", stderr(&o));
    let left: Vec<_> = std::fs::read_dir(root.join("model")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // Without the limit the same export works.
    let o = runner(root, &["export", &run, "--format", "torchscript", "--out", "model"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::metadata(root.join("model/model.pt")).unwrap().len() > 2 << 20);
}

#[test]
fn an_edited_model_json_is_refused_with_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_, run) = tiny_run(root, 2, 6);
    let o = runner(root, &["export", &run, "--format", "safetensors", "--out", "model"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let card_path = root.join("model/model.json");
    let card: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&card_path).unwrap()).unwrap();
    let image = root.join("shapes/circle/0000.jpg").to_string_lossy().into_owned();
    let o = runner(root, &["predict", "--model", "model", &image]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cases: [(&str, serde_json::Value, &str); 7] = [
        ("image_size", 0.into(), "`image_size`: expected 32 to 1024 pixels, found 0"),
        ("image_size", 4_000_000_000u64.into(), "`image_size`: expected 32 to 1024 pixels, found 4000000000"),
        ("hidden", serde_json::json!([-5]), "`hidden`: expected layer widths of 1 to 1048576, found -5"),
        ("hidden", serde_json::json!([1_000_000, 1_000_000]), "`hidden` and `classes`: a head of"),
        ("std", serde_json::json!([0.0, 0.0, 0.0]), "`std`: expected finite numbers above 0"),
        ("classes", serde_json::json!([]), "`classes`: expected at least one class name"),
        ("resize", 10.into(), "`resize`: expected the image size"),
    ];
    for (key, value, message) in cases {
        let mut edited = card.clone();
        edited[key] = value;
        std::fs::write(&card_path, serde_json::to_string(&edited).unwrap()).unwrap();
        let o = runner(root, &["predict", "--model", "model", &image]);
        assert_eq!(o.status.code(), Some(1), "{key}: {:?}\n{}", o.status, stderr(&o));
        assert!(stderr(&o).contains("model.json: ") && stderr(&o).contains(message), "{key}: {}", stderr(&o));
    }
}

#[test]
fn results_are_as_readable_as_the_umask_makes_any_file() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = shapes(root, 2, 6);
    std::fs::write(root.join("spec.toml"), tiny_spec(&data)).unwrap();
    let with_umask = |args: &[&str]| {
        let mut cmd = runner_bin();
        cmd.current_dir(root).args(args).env("RUNNER_THREADS", "2");
        // SAFETY: umask is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0o027);
                Ok(())
            });
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    };
    with_umask(&["run", "spec.toml", "--out", "runs", "--quiet"]);
    let run = only_run(&root.join("runs/tiny")).to_string_lossy().into_owned();
    with_umask(&["report", "--runs", "runs", "--out", "report"]);
    with_umask(&["export", &run, "--format", "safetensors", "--format", "torchscript", "--out", "model"]);
    let mut seen = 0;
    for top in ["runs", "report", "model"] {
        for e in walkdir::WalkDir::new(root.join(top)).into_iter().map(Result::unwrap) {
            if e.file_type().is_file() {
                let mode = e.metadata().unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o640, "{}: {mode:o}, not 0640 (0666 less the umask 027)", e.path().display());
                seen += 1;
            }
        }
    }
    assert!(seen >= 15, "only {seen} files");
}

#[test]
fn garbage_in_runners_own_variables_is_refused_not_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = shapes(root, 2, 2);
    std::fs::write(root.join("spec.toml"), tiny_spec(&data)).unwrap();
    for (name, value, expected) in [
        ("RUNNER_THREADS", "two", "RUNNER_THREADS: expected a whole number of 1 or more, found \"two\""),
        ("RUNNER_THREADS", "0", "RUNNER_THREADS: expected a whole number of 1 or more, found \"0\""),
        ("RUNNER_CHANNELS_LAST", "yes", "RUNNER_CHANNELS_LAST: expected 0 or 1, found \"yes\""),
        ("RUNNER_FEATURE_CACHE_MB", "-1", "RUNNER_FEATURE_CACHE_MB: expected a whole number, found \"-1\""),
        ("RUNNER_MAX_IMAGE_PIXELS", "1e9", "RUNNER_MAX_IMAGE_PIXELS: expected a whole number of 1 or more"),
        ("RUNNER_MLFLOW_URI", "file:///etc/passwd", "RUNNER_MLFLOW_URI: expected an http(s) URL of a tracking server"),
        ("RUNNER_MLFLOW_URI", "127.0.0.1:5000", "RUNNER_MLFLOW_URI: expected an http(s) URL of a tracking server"),
    ] {
        let o = runner_with_env(root, &["plan", "spec.toml"], &[(name, value)]);
        assert_eq!(o.status.code(), Some(2), "{name}={value}: {}", stdout(&o));
        assert!(stderr(&o).contains(expected), "{name}={value}: {}", stderr(&o));
    }
    let o = runner_with_env(
        root,
        &["plan", "spec.toml"],
        &[("RUNNER_FEATURE_CACHE_MB", "0"), ("RUNNER_CHANNELS_LAST", "1")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn predict_writes_csv_to_stdout_checks_its_file_first_follows_links_and_escapes_names() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_, run) = tiny_run(root, 2, 6);
    let photos = root.join("photos");
    std::fs::create_dir(&photos).unwrap();
    std::fs::copy(root.join("shapes/circle/0000.jpg"), photos.join("a.jpg")).unwrap();
    std::os::unix::fs::symlink(root.join("shapes/cross/0000.jpg"), photos.join("linked.jpg")).unwrap();
    std::fs::copy(root.join("shapes/circle/0001.jpg"), photos.join("\u{1b}[2Jwiped.jpg")).unwrap();

    // CSV on standard output; a 2-class model has 2 class columns, whatever --top-k says.
    let o = runner(root, &["predict", "--run", &run, "photos", "--csv", "-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = stdout(&o);
    let header = csv.lines().next().unwrap();
    assert!(header.starts_with("path,class_1,probability_1,class_2,probability_2"), "{header}");
    assert!(!header.contains("class_3"), "{header}");
    assert_eq!(csv.lines().count(), 4, "the link is an image too: {csv}");
    assert!(csv.contains("linked.jpg"), "{csv}");
    assert!(!root.join("-").exists());

    // A CSV path that cannot be written is refused before any image is classified.
    let o = runner(root, &["predict", "--run", &run, "photos", "--csv", "photos"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--csv photos: not a file in an existing folder"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("predicted"), "{}", stderr(&o));

    // A file name with a terminal escape sequence is printed escaped.
    let o = runner(root, &["predict", "--run", &run, "photos"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).contains('\u{1b}'), "{}", stdout(&o));
    assert!(stdout(&o).contains("\\u{1b}[2Jwiped.jpg"), "{}", stdout(&o));
}

#[test]
fn fp16_on_the_cpu_is_said_in_run_log() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = shapes(root, 2, 4);
    let spec = tiny_spec(&data).replace("seed = 3\n", "seed = 3\nprecision = \"fp16\"\n");
    std::fs::write(root.join("spec.toml"), spec).unwrap();
    let o = runner(root, &["run", "spec.toml", "--out", "runs", "--quiet", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let log = std::fs::read_to_string(only_run(&root.join("runs/tiny")).join("run.log")).unwrap();
    assert!(log.contains("warning: precision = \"fp16\" needs a CUDA device; training in fp32 on the cpu"), "{log}");
}

#[test]
fn a_missing_data_folder_and_class_weights_of_the_wrong_length_are_spec_errors_before_any_run() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = shapes(root, 2, 4);
    // A grid of 4 runs over a folder that is not there: one error, at the line of data.source.
    let grid = format!("{}\n[grid]\nseed = [1, 2, 3, 4]\n", tiny_spec(&root.join("flowers")));
    std::fs::write(root.join("spec.toml"), grid).unwrap();
    let o = runner(root, &["run", "spec.toml", "--out", "runs", "--quiet"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("spec.toml:5:1: `data.source`:") && err.contains("not found"), "{err}");
    assert!(!err.contains("runs failed"), "{err}");
    assert!(!root.join("runs").exists());
    // Three weights for two classes.
    let spec = tiny_spec(&data) + "\n[loss]\nclass_weights = [1.0, 2.0, 3.0]\n";
    std::fs::write(root.join("spec.toml"), &spec).unwrap();
    let o = runner(root, &["run", "spec.toml", "--out", "runs", "--quiet"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let line = spec.lines().position(|l| l.starts_with("class_weights")).unwrap() + 1;
    assert!(
        stderr(&o).contains(&format!("spec.toml:{line}:1: `loss.class_weights`: expected 2 weights")),
        "{}",
        stderr(&o)
    );
    // Weights whose float32 sums overflow.
    let e = spec_error(root, &spec.replace("[1.0, 2.0, 3.0]", "[1e308, 1.0]"));
    assert!(e.contains("expected \"balanced\" or weights from 0 to 1e6"), "{e}");
}
