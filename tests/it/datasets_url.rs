//! Dataset sources by URL and by name, against a loopback server serving small
//! archives laid out as the real ones are (hymenoptera, Microsoft PetImages,
//! CIFAR-10 binary): downloaded once, checksum recorded and checked, extracted
//! or converted into an ImageFolder.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;

use crate::common::*;

fn check(dir: &Path, cache: &Path, base: &str, source: &str) -> std::process::Output {
    runner_bin()
        .current_dir(dir)
        .args(["data", "check", source, "--image-size", "32"])
        .env("RUNNER_CACHE", cache)
        .env("RUNNER_DATASETS_MIRROR", base)
        // The miniature CIFAR-10 archive in place of the real one, whose sha256 is pinned.
        .env("RUNNER_DATASETS_SHA256", format!("cifar10={}", sha256_hex(&cifar_tar_gz())))
        .output()
        .unwrap()
}

fn total_row(out: &str) -> Vec<u64> {
    out.lines()
        .find(|l| l.starts_with("total"))
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn known_datasets_download_once_and_become_image_folders() {
    let dir = tempfile::tempdir().unwrap();
    let shapes_dir = shapes(dir.path(), 2, 4);
    let jpg = |class: &str, i: usize| std::fs::read(shapes_dir.join(class).join(format!("{i:04}.jpg"))).unwrap();

    let mut hymenoptera = vec![];
    for (split, n) in [("train", 3), ("val", 1)] {
        for (class, shape) in [("ants", "circle"), ("bees", "cross")] {
            for i in 0..n {
                hymenoptera.push((format!("hymenoptera_data/{split}/{class}/{i}.jpg"), jpg(shape, i)));
            }
        }
    }
    let mut pets = vec![("readme[1].txt".to_string(), b"licence".to_vec())];
    for (class, shape) in [("Cat", "circle"), ("Dog", "cross")] {
        for i in 0..4 {
            pets.push((format!("PetImages/{class}/{i}.jpg"), jpg(shape, i)));
        }
    }
    pets.push(("PetImages/Cat/666.jpg".to_string(), b"corrupt".to_vec()));
    let files: HashMap<String, Vec<u8>> = [
        ("hymenoptera_data.zip".to_string(), zip_of(&hymenoptera)),
        ("kagglecatsanddogs_5340.zip".to_string(), zip_of(&pets)),
        ("cifar-10-binary.tar.gz".to_string(), cifar_tar_gz()),
    ]
    .into();
    let (base, hits) = serve_files(files);
    let cache = dir.path().join("cache");

    let o = check(dir.path(), &cache, &base, "hymenoptera");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(total_row(&stdout(&o)), [6, 2, 0], "{}", stdout(&o));
    assert!(dir.path().join("datasets/hymenoptera/hymenoptera_data/train/ants/0.jpg").is_file());
    let recorded = std::fs::read_to_string(cache.join("datasets/hymenoptera_data.zip.sha256")).unwrap();
    assert_eq!(recorded.trim().len(), 64);

    let o = check(dir.path(), &cache, &base, "cats_vs_dogs");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("Cat") && out.contains("Dog") && out.contains("1 unusable files"), "{out}");
    assert_eq!(total_row(&out).iter().sum::<u64>(), 8, "{out}");

    let o = check(dir.path(), &cache, &base, "cifar10");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(total_row(&out), [20, 10, 0], "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("truck") && l.split_whitespace().collect::<Vec<_>>()[1..] == ["2", "1", "0"]),
        "{out}"
    );
    let served = hits.load(Ordering::SeqCst);
    assert_eq!(served, 3);

    // Extracted data is reused: no new download.
    let o = check(dir.path(), &cache, &base, "hymenoptera");
    assert!(o.status.success());
    assert_eq!(hits.load(Ordering::SeqCst), served);

    // A cached archive that no longer matches its recorded checksum is refused.
    std::fs::remove_dir_all(dir.path().join("datasets/hymenoptera")).unwrap();
    std::fs::write(cache.join("datasets/hymenoptera_data.zip"), b"tampered").unwrap();
    let o = check(dir.path(), &cache, &base, "hymenoptera");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not match; delete it to download it again"), "{}", stderr(&o));
}

#[test]
fn a_dataset_url_that_cannot_be_reached_says_where_to_put_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/data/flowers.zip");
    let cache = dir.path().join("cache");
    let o = runner_bin()
        .current_dir(dir.path())
        .args(["data", "check", &url])
        .env("RUNNER_CACHE", &cache)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with(&format!("error: cannot get {url}: ")), "{err}");
    assert!(err.trim_end().ends_with(&format!("put it at {}", cache.join("datasets/flowers.zip").display())), "{err}");
    assert!(!dir.path().join("datasets").exists());
}
