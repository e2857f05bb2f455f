//! Bounded fuzzing of every loader of untrusted bytes (issue 16): seeded mutations of the
//! committed seed corpus (tests/fixtures/fuzz/, plus the .pth fixtures) go through the
//! weights readers, the archive extractor, the image decoder, the spec parser, a halving
//! search's journal and an exported model's model.json in a
//! child process under a memory limit, which must end every case with a value or an
//! error: no panic, no abort, and no case slower than [`CASE_SECONDS`].
//!
//! `RUNNER_FUZZ_CASES` sets the cases per target (default 3000).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The longest a case may take to be read or refused.
const CASE_SECONDS: u64 = 10;
/// The child's data limit (RLIMIT_DATA): a loader that tries to allocate more fails.
const MEMORY_LIMIT: u64 = 3 << 30;
const TARGETS: [&str; 8] = ["legacy_pth", "zip_pth", "safetensors", "zip", "image", "spec", "journal", "model_json"];
const CHILD: &str = "RUNNER_FUZZ_TARGET";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The seed inputs of a target.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let read = |name: &str| std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("seed {name}: {e}"));
    match target {
        "legacy_pth" => vec![read("tiny_legacy.pth")],
        "zip_pth" => vec![read("tiny_zip.pth")],
        "safetensors" => vec![read("fuzz/tiny.safetensors")],
        "zip" => vec![read("fuzz/images.zip")],
        "image" => vec![read("fuzz/tiny.png"), read("fuzz/tiny.jpg")],
        "spec" => vec![read("fuzz/spec.toml"), read("ci_verify.toml")],
        "journal" => vec![read("fuzz/journal.txt")],
        "model_json" => vec![read("fuzz/model.json")],
        other => panic!("no target {other}"),
    }
}

/// 1 to 3 random edits: bit flips, special bytes and integers, insertions, deletions,
/// duplications, truncation.
fn mutate(seed: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.random_range(1..=3) {
        let len = b.len().max(1);
        let at = rng.random_range(0..len).min(b.len());
        let last = at.min(b.len().saturating_sub(1));
        match rng.random_range(0..7) {
            0 if !b.is_empty() => b[last] ^= 1 << rng.random_range(0..8),
            1 if !b.is_empty() => b[last] = [0x00, 0xff, 0x7f, 0x80, b'.', b'('][rng.random_range(0..6)],
            2 => {
                let n: u64 = [u32::MAX as u64, i64::MAX as u64, 1 << 31, 1 << 40, 0][rng.random_range(0..5)];
                let bytes = n.to_le_bytes();
                let w = [4, 8][rng.random_range(0..2)];
                let end = (at + w).min(b.len());
                b.splice(at..end, bytes[..end - at].iter().copied());
            }
            3 => {
                let n = rng.random_range(1..16);
                let ins: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                b.splice(at..at, ins);
            }
            4 if !b.is_empty() => {
                let end = (at + rng.random_range(1..64)).min(b.len());
                b.drain(at..end);
            }
            5 if !b.is_empty() => {
                let end = (at + rng.random_range(1..64)).min(b.len());
                let copy = b[at..end].to_vec();
                b.splice(at..at, copy);
            }
            _ => b.truncate(at),
        }
    }
    b
}

/// Runs one input through the target's loader; its result is dropped, only a panic or
/// an abort would fail.
fn load(target: &str, input: &[u8], scratch: &Path) {
    match target {
        "legacy_pth" => drop(crate::model::pickle::read_legacy_state_dict(input)),
        "zip_pth" => drop(crate::model::pickle::read_zip_state_dict(std::io::Cursor::new(input))),
        "safetensors" => {
            let path = scratch.join("w.safetensors");
            std::fs::write(&path, input).unwrap();
            drop(crate::model::weights::read(&path));
        }
        "zip" => {
            let (path, target) = (scratch.join("d.zip"), scratch.join("out"));
            std::fs::write(&path, input).unwrap();
            let limits = crate::data::archive::Limits { max_bytes: 64 << 20, max_entries: 10_000 };
            drop(crate::data::archive::extract_zip(&path, &target, limits));
            let _ = std::fs::remove_dir_all(&target);
        }
        "image" => {
            let path = scratch.join("i.img");
            std::fs::write(&path, input).unwrap();
            drop(crate::data::decode_file(&path, 36));
        }
        "spec" => {
            let text = String::from_utf8_lossy(input);
            drop(crate::config::spec::Spec::from_str_at(&text, Path::new("fuzz.toml")));
        }
        "journal" => crate::sweep::halving::fuzz_journal(input),
        "model_json" => crate::predict::ModelCard::fuzz(input),
        other => panic!("no target {other}"),
    }
}

/// The child's work: every case of one target, under the memory limit.
fn run_target(target: &str, cases: usize) {
    let limit = libc::rlimit { rlim_cur: MEMORY_LIMIT, rlim_max: MEMORY_LIMIT };
    // SAFETY: setrlimit with a valid struct; it only lowers this process's own limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) }, 0);
    let scratch = tempfile::tempdir().unwrap();
    let seeds = seeds(target);
    for case in 0..cases {
        let mut rng = ChaCha8Rng::seed_from_u64(case as u64);
        rng.set_stream(TARGETS.iter().position(|t| *t == target).unwrap() as u64);
        let seed = &seeds[case % seeds.len()];
        let input = if case < seeds.len() { seed.clone() } else { mutate(seed, &mut rng) };
        let started = Instant::now();
        load(target, &input, scratch.path());
        let took = started.elapsed();
        assert!(took < Duration::from_secs(CASE_SECONDS), "{target} case {case} took {took:?}");
    }
}

#[test]
fn fuzz_child() {
    // Only as the child that `loaders_survive_mutated_inputs` starts.
    if let Ok(target) = std::env::var(CHILD) {
        let cases = std::env::var("RUNNER_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
        run_target(&target, cases);
    }
}

#[test]
fn loaders_survive_mutated_inputs() {
    for target in TARGETS {
        let started = Instant::now();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["fuzz::fuzz_child", "--exact", "--nocapture", "--test-threads", "1"])
            .env(CHILD, target)
            .output()
            .unwrap();
        let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{target}: the child failed ({}):\n{log}", out.status);
        assert!(log.contains("1 passed"), "{target}: {log}");
        println!("fuzz {target}: {:.1}s", started.elapsed().as_secs_f64());
    }
}

#[test]
fn mutations_are_seeded_and_change_the_input() {
    let seed = b"0123456789abcdef".repeat(4);
    let a = mutate(&seed, &mut ChaCha8Rng::seed_from_u64(7));
    let b = mutate(&seed, &mut ChaCha8Rng::seed_from_u64(7));
    assert_eq!(a, b);
    let changed = (0..100).filter(|&s| mutate(&seed, &mut ChaCha8Rng::seed_from_u64(s)) != seed).count();
    assert!(changed > 90, "{changed}");
}

/// Writes the seed corpus (run by hand: `cargo test --lib write_seed_corpus -- --ignored`).
#[test]
#[ignore]
fn write_seed_corpus() {
    let dir = fixtures().join("fuzz");
    std::fs::create_dir_all(&dir).unwrap();
    let img = image::RgbImage::from_fn(24, 16, |x, y| image::Rgb([(x * 10) as u8, (y * 15) as u8, 128]));
    img.save_with_format(dir.join("tiny.png"), image::ImageFormat::Png).unwrap();
    img.save_with_format(dir.join("tiny.jpg"), image::ImageFormat::Jpeg).unwrap();
    let w = tch::Tensor::from_slice(&[1.0f32, -2.0, 0.5, 4.0]).view([2, 2]);
    tch::Tensor::write_safetensors(
        &[("fc.weight", &w), ("fc.bias", &tch::Tensor::from_slice(&[0.1f32, 0.2]))],
        dir.join("tiny.safetensors"),
    )
    .unwrap();
    let png = std::fs::read(dir.join("tiny.png")).unwrap();
    let mut zip = zip::ZipWriter::new(std::fs::File::create(dir.join("images.zip")).unwrap());
    for name in ["ants/a.png", "bees/b.png"] {
        zip.start_file(name, zip::write::SimpleFileOptions::default()).unwrap();
        std::io::Write::write_all(&mut zip, &png).unwrap();
    }
    zip.finish().unwrap();
    std::fs::write(
        dir.join("spec.toml"),
        "name = \"fuzz\"\nseed = 1\n\n[data]\nsource = \"datasets/x\"\nimage_size = 32\nsplit = [0.8, 0.2]\n\n\
         [model]\nbackbone = \"resnet18\"\nweights = \"none\"\nhead = { dropout = 0.2, hidden = [8] }\n\n\
         [[phases]]\nname = \"head\"\nepochs = 2\nfreeze_up_to = \"all\"\n\
         optimizer = { kind = \"sgd\", lr = 0.01, momentum = 0.9 }\nschedule = { kind = \"step\", step_size = 1, gamma = 0.5 }\n\n\
         [grid]\nseed = [1, 2]\n\n[early_stopping]\nmonitor = \"val_loss\"\npatience = 2\n",
    )
    .unwrap();
}
