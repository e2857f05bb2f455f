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
