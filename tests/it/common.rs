//! Fixtures shared by the integration tests: made by the tests themselves.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use runner::data::synth::{SynthOptions, generate};

/// The binary, with the feature store off: a test's runs compute their features unless it
/// names a store of its own (`RUNNER_FEATURE_STORE`), so tests sharing a user's cache cannot
/// change each other's run.log. The decoded images go to an image store of the tests' own
/// (under cargo's target folder), shared by every test as users' runs share theirs.
pub fn runner_bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runner"));
    cmd.env("RUNNER_FEATURE_STORE", "off");
    cmd.env("RUNNER_IMAGE_STORE", image_store());
    cmd
}

/// The image store of the tests' runs.
pub fn image_store() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("image-store")
}

/// Runs the binary in `cwd` with the given arguments.
pub fn runner(cwd: &Path, args: &[&str]) -> Output {
    runner_with_env(cwd, args, &[])
}

/// [`runner`] with these environment variables set as well.
pub fn runner_with_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = runner_bin();
    cmd.current_dir(cwd).args(args).env("RUNNER_THREADS", "2");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("runner starts")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A small synthetic dataset under `dir/shapes`.
pub fn shapes(dir: &Path, classes: usize, per_class: usize) -> PathBuf {
    let root = dir.join("shapes");
    generate(&root, &SynthOptions { classes, per_class, size: 48, seed: 1 }).unwrap();
    root
}

/// A two-phase spec over `source` with random initialisation (no download needed).
pub fn tiny_spec(source: &Path) -> String {
    format!(
        r#"name = "tiny"
seed = 3

[data]
source = "{}"
image_size = 32
batch_size = 8

[model]
backbone = "efficientnet_lite0"
weights = "none"

[[phases]]
name = "head"
epochs = 1
freeze_up_to = "all"
optimizer = {{ kind = "adam", lr = 1e-3 }}

[[phases]]
name = "fine_tune"
epochs = 1
freeze_up_to = 10
optimizer = {{ kind = "sgd", lr_factor = 0.1, momentum = 0.9 }}
"#,
        source.display()
    )
}

/// A run of the tiny spec on `classes` x `per_class` shapes under `root/runs` (spec.toml
/// written there), trained: its directory, and that as an argument.
pub fn tiny_run(root: &Path, classes: usize, per_class: usize) -> (PathBuf, String) {
    let source = shapes(root, classes, per_class);
    std::fs::write(root.join("spec.toml"), tiny_spec(&source)).unwrap();
    let o = runner(root, &["run", "spec.toml", "--out", "runs", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = only_run(&root.join("runs/tiny"));
    let arg = dir.to_string_lossy().into_owned();
    (dir, arg)
}

/// Starts `runner ARGS` in `cwd` with `RUNNER_FAILPOINT=failpoint` and returns once
/// the run has reached it (it then waits there to be killed).
pub fn start_at_failpoint(cwd: &Path, args: &[&str], failpoint: &str) -> std::process::Child {
    let marker = cwd.join(format!("{failpoint}.{}.reached", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let mut child = runner_bin()
        .current_dir(cwd)
        .args(args)
        .env("RUNNER_THREADS", "2")
        .env("RUNNER_FAILPOINT", failpoint)
        .env("RUNNER_FAILPOINT_MARKER", &marker)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("runner starts");
    let start = std::time::Instant::now();
    while !marker.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before reaching {failpoint}");
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(600), "never reached {failpoint}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&marker);
    child
}

/// A loopback HTTP server: GET /<anything>/<file> answers with `files[file]`, or 404.
/// Returns the base URL and the number of requests answered so far.
pub fn serve_files(
    files: std::collections::HashMap<String, Vec<u8>>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let name = path.rsplit('/').next().unwrap_or("");
            let response = match files.get(name) {
                Some(body) => {
                    let head =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                    [head.into_bytes(), body.clone()].concat()
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    (format!("http://{addr}"), hits)
}

/// The reference fixtures' inputs: x[n,c,h,w] = float32(2 sin(0.05 h (c+1) + 0.03 w + 1.3 n)).
pub fn formula_inputs(batch: usize, size: usize) -> tch::Tensor {
    let mut v = Vec::with_capacity(batch * 3 * size * size);
    for n in 0..batch {
        for c in 0..3 {
            for h in 0..size {
                for w in 0..size {
                    v.push((2.0 * (0.05 * h as f64 * (c + 1) as f64 + 0.03 * w as f64 + 1.3 * n as f64).sin()) as f32);
                }
            }
        }
    }
    tch::Tensor::from_slice(&v).view([batch as i64, 3, size as i64, size as i64])
}

/// A zip archive of these (name, bytes) entries, in order.
pub fn zip_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in files {
        w.start_file(name.as_str(), zip::write::SimpleFileOptions::default()).unwrap();
        std::io::Write::write_all(&mut w, data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// CIFAR-10's binary archive in miniature: its folder, batches.meta.txt, one data batch
/// (20 records, 2 per class) and the test batch (10 records).
pub fn cifar_tar_gz() -> Vec<u8> {
    let classes = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
    // 20 training records (2 per class) and 10 test records.
    let batch = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|i| std::iter::once((i % 10) as u8).chain((0..3072).map(move |p| ((p + i) % 256) as u8)))
            .collect()
    };
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (name, data) in [
        ("cifar-10-batches-bin/batches.meta.txt", classes.as_bytes().to_vec()),
        ("cifar-10-batches-bin/data_batch_1.bin", batch(20)),
        ("cifar-10-batches-bin/test_batch.bin", batch(10)),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, data.as_slice()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// The sha256 of `bytes`, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The folder of this project's shipped experiment specs.
pub fn experiments_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments")
}

/// The one run directory of an experiment, `<out>/<experiment>/<run id>`.
pub fn only_run(experiment: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(experiment).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().unwrap()
}

/// A run directory's summary.json.
pub fn summary_json(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

/// `runner plan` of `spec`, written as `root/spec.toml`, which must be a spec error (exit 2):
/// its message.
pub fn spec_error(root: &Path, spec: &str) -> String {
    std::fs::write(root.join("spec.toml"), spec).unwrap();
    let o = runner(root, &["plan", "spec.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    stderr(&o)
}

/// The Python of `venv` in the per-user cache (`$RUNNER_CACHE`), which the function `setup`
/// of scripts/env.sh makes and the test command calls.
pub fn cached_python(venv: &str, setup: &str) -> PathBuf {
    let cache = std::env::var_os("RUNNER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/runner"));
    let python = cache.join(venv).join("bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `source scripts/env.sh && {setup}` (scripts/test.sh does)",
        python.display()
    );
    python
}
