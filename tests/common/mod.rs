//! Fixtures shared by the integration tests: made by the tests themselves.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use runner::synth::{SynthOptions, generate};

pub fn runner_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_runner"))
}

/// Runs the binary in `cwd` with the given arguments.
pub fn runner(cwd: &Path, args: &[&str]) -> Output {
    runner_bin().current_dir(cwd).args(args).env("RUNNER_THREADS", "2").output().expect("runner starts")
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
