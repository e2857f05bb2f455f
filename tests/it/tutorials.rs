//! Every spec under experiments/ runs as shipped, offline: only its size is changed
//! (`--set` of epochs, image size, and `model.weights = "none"` where the weights are
//! torchvision's files, which cannot be fetched here). A loopback server stands in for
//! the datasets' hosts and serves miniature archives in their real formats: the
//! hymenoptera zip's folders, Microsoft's PetImages zip with its kinds of bad files
//! (zero-byte and non-JPEG `.jpg` files, `Thumbs.db`), CIFAR-10's binary tar.gz. runner
//! downloads, checks, extracts and trains; a second run downloads nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::common::*;

/// The miniature archives under their real file names.
fn archives(dir: &Path) -> HashMap<String, Vec<u8>> {
    let shapes_dir = shapes(dir, 2, 10);
    let jpg = |shape: &str, i: usize| std::fs::read(shapes_dir.join(shape).join(format!("{i:04}.jpg"))).unwrap();

    let mut hymenoptera = vec![];
    for (split, first, n) in [("train", 0, 6), ("val", 6, 3)] {
        for (class, shape) in [("ants", "circle"), ("bees", "cross")] {
            for i in first..first + n {
                hymenoptera.push((format!("hymenoptera_data/{split}/{class}/{i}_{class}.jpg"), jpg(shape, i)));
            }
        }
    }

    // PetImages as Microsoft ships it: a licence and a readme beside the folder, and
    // among the images files no decoder reads.
    let mut pets = vec![
        ("CDLA-Permissive-2.0.pdf".to_string(), b"%PDF-1.4 licence".to_vec()),
        ("readme[1].txt".to_string(), b"Cats and dogs".to_vec()),
    ];
    for (class, shape) in [("Cat", "circle"), ("Dog", "cross")] {
        for i in 0..10 {
            pets.push((format!("PetImages/{class}/{i}.jpg"), jpg(shape, i)));
        }
        pets.push((format!("PetImages/{class}/Thumbs.db"), vec![0xd0, 0xcf, 0x11, 0xe0, 0, 0, 0, 0]));
    }
    pets.push(("PetImages/Cat/666.jpg".to_string(), vec![]));
    pets.push(("PetImages/Dog/11702.jpg".to_string(), vec![]));
    pets.push(("PetImages/Dog/2317.jpg".to_string(), b"GIF89a not really a jpeg".to_vec()));

    [
        ("hymenoptera_data.zip".to_string(), zip_of(&hymenoptera)),
        ("kagglecatsanddogs_5340.zip".to_string(), zip_of(&pets)),
        ("cifar-10-binary.tar.gz".to_string(), cifar_tar_gz()),
    ]
    .into()
}

fn summary_of(out: &Path, experiment: &str) -> (PathBuf, serde_json::Value) {
    let dirs: Vec<PathBuf> =
        std::fs::read_dir(out.join(experiment)).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let text = std::fs::read_to_string(dirs[0].join("summary.json")).unwrap();
    (dirs[0].clone(), serde_json::from_str(&text).unwrap())
}

struct Tutorial {
    spec: &'static str,
    backbone: &'static str,
    sets: &'static [&'static str],
    classes: &'static [&'static str],
    /// train, val, test images: exact for a train/ val/ layout; for a split, the 3
    /// unreadable files are dropped from whichever part the seeded split put them in.
    images: Option<[u64; 3]>,
    total: u64,
    skipped: u64,
}

const TUTORIALS: &[Tutorial] = &[
    Tutorial {
        spec: "resnet18_ants_bees",
        backbone: "resnet18",
        sets: &["phases.0.epochs=2", "data.image_size=32", "model.weights=none"],
        classes: &["ants", "bees"],
        images: Some([12, 6, 0]),
        total: 18,
        skipped: 0,
    },
    Tutorial {
        spec: "mobilenet_two_phase",
        backbone: "mobilenet_v2",
        sets: &["phases.0.epochs=1", "phases.1.epochs=1", "data.image_size=32", "model.weights=none"],
        classes: &["Cat", "Dog"],
        // 10 good images per class, split 80/10/10; the 3 unreadable .jpg files are skipped.
        images: None,
        total: 20,
        skipped: 3,
    },
    Tutorial {
        spec: "vgg16_cifar10",
        backbone: "vgg16",
        sets: &["phases.0.epochs=1", "phases.1.epochs=1", "data.image_size=32", "model.weights=none"],
        classes: &["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
        images: Some([20, 10, 0]),
        total: 30,
        skipped: 0,
    },
];

fn run_tutorial(dir: &Path, env: &[(&str, &str)], t: &Tutorial, extra: &[&str]) -> std::process::Output {
    let spec = experiments_dir().join(format!("{}.toml", t.spec));
    let mut args: Vec<String> = vec!["run".into(), spec.display().to_string(), "--out".into(), "runs".into()];
    for s in t.sets {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    runner_with_env(dir, &args, env)
}

#[test]
fn the_tutorial_specs_download_their_data_and_train_as_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let files = archives(dir.path());
    let cifar_sha = format!("cifar10={}", sha256_hex(&files["cifar-10-binary.tar.gz"]));
    let (base, hits) = serve_files(files);
    let cache = dir.path().join("cache");
    let cache_s = cache.display().to_string();
    let env = [
        ("RUNNER_CACHE", cache_s.as_str()),
        ("RUNNER_DATASETS_MIRROR", base.as_str()),
        ("RUNNER_DATASETS_SHA256", cifar_sha.as_str()),
    ];

    // Before anything is fetched, a dry run of the whole folder lists nothing as failing.
    let o = runner_with_env(
        dir.path(),
        &["sweep", &experiments_dir().display().to_string(), "--dry-run", "--out", "runs"],
        &env,
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(!out.contains("fail"), "{out}");
    assert_eq!(out.matches("run (downloads its data first)").count(), 3, "{out}");
    assert_eq!(out.matches("run (generates its data first)").count(), 1, "{out}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a dry run downloads nothing");
    assert!(!dir.path().join("datasets").exists() && !dir.path().join("runs").exists());

    for (n, t) in TUTORIALS.iter().enumerate() {
        let o = run_tutorial(dir.path(), &env, t, &["--quiet"]);
        assert!(o.status.success(), "{}: {}", t.spec, stderr(&o));
        assert_eq!(hits.load(Ordering::SeqCst), n + 1, "{}: one download", t.spec);
        let (run_dir, s) = summary_of(&dir.path().join("runs"), t.spec);
        assert_eq!(s["status"], "completed", "{}: {s}", t.spec);
        assert_eq!(s["classes"], serde_json::json!(t.classes), "{}", t.spec);
        let images = [&s["train_images"], &s["val_images"], &s["test_images"]].map(|v| v.as_u64().unwrap());
        assert_eq!(images.iter().sum::<u64>(), t.total, "{}: {s}", t.spec);
        match t.images {
            Some(exact) => assert_eq!(images, exact, "{}: {s}", t.spec),
            None => assert!(images.iter().all(|n| *n > 0), "{}: train, val and test images: {s}", t.spec),
        }
        assert_eq!(s["skipped_files"].as_u64(), Some(t.skipped), "{}: {s}", t.spec);
        assert_eq!(s["backbone"], t.backbone);
        if images[2] > 0 {
            assert!(run_dir.join("test_metrics.csv").is_file() && s["test_acc"].is_number(), "{}", t.spec);
        }
        if t.skipped > 0 {
            let skipped = std::fs::read_to_string(run_dir.join("skipped.csv")).unwrap();
            for bad in ["Cat/666.jpg", "Dog/11702.jpg", "Dog/2317.jpg"] {
                assert!(skipped.contains(bad), "{skipped}");
            }
            assert!(!skipped.contains("Thumbs.db"), "not an image file: not listed as unreadable\n{skipped}");
        }
    }
    // The downloads were recorded (hymenoptera, PetImages) or checked (CIFAR-10) in the cache.
    for f in ["hymenoptera_data.zip", "kagglecatsanddogs_5340.zip", "cifar-10-binary.tar.gz"] {
        assert!(cache.join("datasets").join(f).is_file(), "{f}");
    }

    // A second run finds its data in place and its result completed: no download.
    let served = hits.load(Ordering::SeqCst);
    for t in TUTORIALS {
        let o = run_tutorial(dir.path(), &env, t, &[]);
        assert!(o.status.success(), "{}: {}", t.spec, stderr(&o));
        assert!(stdout(&o).contains("already completed"), "{}: {}", t.spec, stdout(&o));
    }
    // With the extracted folder gone, the cached archive is extracted again, still no download.
    std::fs::remove_dir_all(dir.path().join("datasets/hymenoptera")).unwrap();
    let o = run_tutorial(dir.path(), &env, &TUTORIALS[0], &["--quiet", "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(hits.load(Ordering::SeqCst), served, "the second runs downloaded something");
}

#[test]
fn the_quickstart_generates_its_data_and_trains_offline() {
    let dir = tempfile::tempdir().unwrap();
    let spec = experiments_dir().join("quickstart.toml").display().to_string();
    let sets = ["--set", "phases.0.epochs=1", "--set", "phases.1.epochs=1", "--set", "data.image_size=48"];
    let o = runner(dir.path(), &[&["run", &spec, "--out", "runs"][..], &sets].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("generating the synthetic shapes dataset into datasets/shapes"), "{}", stderr(&o));
    let (_, s) = summary_of(&dir.path().join("runs"), "quickstart");
    assert_eq!(s["status"], "completed");
    assert_eq!(s["classes"], serde_json::json!(["circle", "cross", "ring", "square"]));
    // 600 images, split 80/20 per class.
    assert_eq!([&s["train_images"], &s["val_images"]].map(|v| v.as_u64().unwrap()), [480, 120]);
    // Generated as `runner data synth` makes them: the same files, so the same run id.
    let synth = tempfile::tempdir().unwrap();
    let o = runner(synth.path(), &["data", "synth"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listing = |root: &Path| -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = walkdir::WalkDir::new(root)
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().is_file())
            .map(|e| (e.path().strip_prefix(root).unwrap().display().to_string(), std::fs::read(e.path()).unwrap()))
            .collect();
        files.sort();
        files
    };
    let generated = listing(&dir.path().join("datasets/shapes"));
    assert_eq!(generated.len(), 600);
    assert!(generated == listing(&synth.path().join("datasets/shapes")), "runner data synth made other files");
}

#[test]
fn a_pinned_dataset_checksum_refuses_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (base, hits) = serve_files([("cifar-10-binary.tar.gz".to_string(), cifar_tar_gz())].into());
    let cache = dir.path().join("cache").display().to_string();
    let o = runner_with_env(
        dir.path(),
        &["data", "check", "cifar10"],
        &[("RUNNER_CACHE", &cache), ("RUNNER_DATASETS_MIRROR", &base)],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("sha256 mismatch") && err.contains("c4a38c50a1bc5f3a"), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(!dir.path().join("datasets").exists(), "nothing extracted");
    assert!(!Path::new(&cache).join("datasets/cifar-10-binary.tar.gz").exists(), "nothing kept");
}

#[test]
fn missing_data_folders_name_the_source_that_fetches_them() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("datasets/hymenoptera_data", "set data.source = \"hymenoptera\""),
        ("datasets/cats_and_dogs_filtered", "set data.source = \"cats_vs_dogs\""),
        ("data/cifar-10-batches-py", "set data.source = \"cifar10\""),
        ("datasets/shapes", "set data.source = \"shapes\""),
        ("datasets/flowers", "hymenoptera, cats_vs_dogs, cifar10, shapes"),
    ];
    for (folder, hint) in cases {
        let o = runner(dir.path(), &["data", "check", folder]);
        assert_eq!(o.status.code(), Some(1), "{folder}");
        let err = stderr(&o);
        assert!(err.contains(&format!("data folder {folder} not found; ")) && err.contains(hint), "{err}");
    }
}
