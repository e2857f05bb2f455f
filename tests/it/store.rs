//! The decoded-image store (`data.store`): the same bits from disk as from memory, a store
//! killed while being built, a damaged one, two processes building one at once, and
//! random_resized_crop's boxes against torchvision's.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{only_run, runner_bin, stderr, tiny_spec};

/// Two classes of images of several shapes (wide, tall, square), told apart by colour.
fn photos(root: &Path, per_class: u32) -> PathBuf {
    let data = root.join("photos");
    for (c, class) in ["warm", "cool"].iter().enumerate() {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..per_class {
            let (w, h) = [(60, 40), (36, 54), (44, 44), (70, 30)][i as usize % 4];
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let v = ((x * 3 + y * 5 + i * 17) % 200) as u8;
                if c == 0 { image::Rgb([200, v, 40]) } else { image::Rgb([40, v, 200]) }
            });
            img.save(data.join(class).join(format!("{i:03}.png"))).unwrap();
        }
    }
    data
}

/// The tiny two-phase spec over `data`, augmented with a random resized crop and flips.
fn augmented_spec(root: &Path, data: &Path) -> PathBuf {
    let spec =
        tiny_spec(data).replace("batch_size = 8", "batch_size = 8\naugment = [\"random_resized_crop\", \"hflip\"]");
    let path = root.join("spec.toml");
    std::fs::write(&path, spec).unwrap();
    path
}

fn run_in(root: &Path, store: &Path, out: &str, extra: &[&str]) -> std::process::Output {
    runner_bin()
        .current_dir(root)
        .args(["run", "spec.toml", "--out", out, "--quiet"])
        .args(extra)
        .env("RUNNER_THREADS", "2")
        .env("RUNNER_IMAGE_STORE", store)
        .output()
        .unwrap()
}

fn log(run: &Path) -> String {
    std::fs::read_to_string(run.join("run.log")).unwrap()
}

fn metrics(run: &Path) -> String {
    std::fs::read_to_string(run.join("metrics.csv")).unwrap()
}

/// The names in the store's folder, sorted.
fn names(store: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(store).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn disk_and_memory_give_the_same_bits_and_the_store_is_decoded_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = photos(root, 12);
    augmented_spec(root, &data);
    let store = root.join("images");
    let o = run_in(root, &store, "memory", &["--set", "data.store=\"memory\""]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_in(root, &store, "disk", &["--set", "data.store=\"disk\""]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_in(root, &store, "again", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (memory, disk, again) =
        (only_run(&root.join("memory/tiny")), only_run(&root.join("disk/tiny")), only_run(&root.join("again/tiny")));
    assert_eq!(memory.file_name(), disk.file_name(), "data.store is no part of the run id");
    assert!(
        log(&memory).contains("images: decoded images held in memory (data.store = \"memory\")"),
        "{}",
        log(&memory)
    );
    assert!(log(&disk).contains("(built by this run; data.store = \"disk\")"), "{}", log(&disk));
    assert!(log(&again).contains("(built by an earlier run; data.store = \"auto\")"), "{}", log(&again));
    assert_eq!(metrics(&memory), metrics(&disk), "memory and disk give other numbers");
    assert_eq!(metrics(&memory), metrics(&again));
    let files: Vec<String> = names(&store).into_iter().filter(|n| !n.starts_with('.')).collect();
    assert_eq!(files.len(), 1, "{files:?}");
}

/// Starts a run that builds the store and stops halfway (at the failpoint), or builds it
/// whole; its stderr goes to `root/<out>.err`.
fn start(root: &Path, store: &Path, out: &str, failpoint: Option<&Path>) -> Child {
    let mut cmd = runner_bin();
    cmd.current_dir(root)
        .args(["run", "spec.toml", "--out", out])
        .env("RUNNER_THREADS", "2")
        .env("RUNNER_IMAGE_STORE", store)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(root.join(format!("{out}.err"))).unwrap());
    if let Some(marker) = failpoint {
        cmd.env("RUNNER_FAILPOINT", "image-store-chunk-1").env("RUNNER_FAILPOINT_MARKER", marker);
    }
    cmd.spawn().unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(300), "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A builder killed halfway leaves no store; a second process waits for the first's lock,
/// then builds the store itself; nothing of the killed build is left. Then a truncated
/// store is rebuilt, not read, and two processes starting at once build it once.
#[test]
fn a_killed_build_a_truncated_store_and_two_builders_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = photos(root, 10);
    augmented_spec(root, &data);
    let store = root.join("images");
    let marker = root.join("reached");
    let mut killed = start(root, &store, "killed", Some(&marker));
    wait_for("the first build reaches its failpoint", || marker.exists());
    let mut waiting = start(root, &store, "waiting", None);
    wait_for("the second process waits for the lock", || {
        std::fs::read_to_string(root.join("waiting.err")).unwrap_or_default().contains("waiting for another process")
    });
    assert!(waiting.try_wait().unwrap().is_none(), "it waits while the first holds the lock");
    let partial: Vec<String> = names(&store).into_iter().filter(|n| n.contains(".img")).collect();
    assert!(partial.len() == 1 && partial[0].starts_with('.'), "only a temporary while building: {partial:?}");
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert!(waiting.wait().unwrap().success(), "{}", std::fs::read_to_string(root.join("waiting.err")).unwrap());
    let run = only_run(&root.join("waiting/tiny"));
    assert!(log(&run).contains("(built by this run;"), "{}", log(&run));
    let left = names(&store);
    assert_eq!(left.len(), 2, "the store and its locks' folder, no temporary: {left:?}");
    let img = store.join(left.iter().find(|n| n.ends_with(".img")).unwrap());

    // Truncated: rebuilt, with the same numbers.
    let len = std::fs::metadata(&img).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&img).unwrap().set_len(len - 100).unwrap();
    let o = run_in(root, &store, "truncated", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let truncated = only_run(&root.join("truncated/tiny"));
    assert!(log(&truncated).contains("rebuilt by this run: the stored one was damaged"), "{}", log(&truncated));
    assert_eq!(metrics(&truncated), metrics(&run));
    assert_eq!(std::fs::metadata(&img).unwrap().len(), len);

    // Two processes at once on a new store: one builds it, the other waits or finds it.
    std::fs::remove_file(&img).unwrap();
    let (mut a, mut b) = (start(root, &store, "a", None), start(root, &store, "b", None));
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let logs = [log(&only_run(&root.join("a/tiny"))), log(&only_run(&root.join("b/tiny")))];
    assert_eq!(logs.iter().filter(|l| l.contains("(built by this run;")).count(), 1, "{logs:?}");
    for out in ["a", "b"] {
        assert_eq!(metrics(&only_run(&root.join(out).join("tiny"))), metrics(&run));
    }
    assert_eq!(names(&store).len(), 2, "{:?}", names(&store));
}

const TORCHVISION_BOXES: &str = r#"
import json, torch
import torchvision.transforms as T
draws = []
uniform, randint = torch.Tensor.uniform_, torch.randint
def recorded_uniform(self, a, b):
    out = uniform(self, a, b)
    draws.append(("u", out.item()))
    return out
def recorded_randint(low, high, size):
    out = randint(low, high, size)
    draws.append(("i", out.item()))
    return out
torch.Tensor.uniform_ = recorded_uniform
torch.randint = recorded_randint
cases = []
for seed, (h, w) in enumerate([(256, 256), (256, 384), (341, 256), (256, 1100), (40, 900), (900, 40)] * 20):
    torch.manual_seed(seed)
    draws.clear()
    box = T.RandomResizedCrop.get_params(torch.zeros(3, h, w), scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
    cases.append({"h": h, "w": w, "draws": list(draws), "box": list(box)})
print(json.dumps(cases))
"#;

/// Replays torchvision's recorded draws: the uniform ones in order, the offsets likewise.
struct Replay(std::collections::VecDeque<(String, f64)>);

impl Replay {
    fn next(&mut self, kind: &str) -> f64 {
        let (k, v) = self.0.pop_front().expect("torchvision drew as often");
        assert_eq!(k, kind, "torchvision drew in another order");
        v
    }
}

impl runner::data::CropDraws for Replay {
    fn scale(&mut self) -> f64 {
        self.next("u")
    }
    fn log_ratio(&mut self) -> f64 {
        self.next("u")
    }
    fn offset(&mut self, _max: i64) -> i64 {
        self.next("i") as i64
    }
}

/// With the same draws, runner's random_resized_crop box is torchvision's
/// `RandomResizedCrop.get_params` box, on square, wide, tall and very elongated images
/// (which take torchvision's fallback when ten tries do not fit).
#[test]
fn random_resized_crop_boxes_are_torchvisions_for_the_same_draws() {
    let python = crate::common::cached_python("torch-venv", "runner_setup_torch");
    let o = std::process::Command::new(python).args(["-c", TORCHVISION_BOXES]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let cases: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let mut fallbacks = 0;
    for case in &cases {
        let (h, w) = (case["h"].as_i64().unwrap(), case["w"].as_i64().unwrap());
        let draws: Vec<(String, f64)> = serde_json::from_value(case["draws"].clone()).unwrap();
        fallbacks += usize::from(!draws.iter().any(|d| d.0 == "i"));
        let mut replay = Replay(draws.into());
        let (top, left, bh, bw) = runner::data::crop_box(h, w, &mut replay);
        let want: Vec<i64> = serde_json::from_value(case["box"].clone()).unwrap();
        assert_eq!(vec![top, left, bh, bw], want, "{h} x {w}: {case}");
        assert!(replay.0.is_empty(), "runner drew less than torchvision: {case}");
    }
    assert_eq!(cases.len(), 120);
    assert!(fallbacks >= 40, "the 40 x 900 and 900 x 40 images never fit: {fallbacks}");
    println!("{} boxes as torchvision's, {fallbacks} of them its fallback", cases.len());
}
