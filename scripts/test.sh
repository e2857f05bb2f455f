#!/usr/bin/env bash
# The test suite, from a fresh clone: libtorch, pretrained weights (the logits test needs
# them), just, TensorBoard and MLflow in a venv (their readers check ours), PyTorch in another
# (it loads the exported TorchScript), Slurm (slurm-wlm and munge: a real single-node cluster),
# Chromium (the report's browser test), qemu-user (the CI record on emulated Intel and AMD
# processors), then rustfmt, clippy, every test, and the rerun of the
# committed CI experiment (scripts/ci-verify.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
runner_setup_libtorch
bash scripts/fetch-weights.sh
runner_setup_just
runner_setup_tracking
runner_setup_torch
# Debian packages that some tests drive, installed once (as root, or with sudo).
apt_install() {
    local why="$1"; shift
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "test: installing Debian's $* ($why)" >&2
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"; } >/dev/null ||
        echo "test: could not install $*; the tests that need it will fail or say they are skipped" >&2
}
command -v chromium >/dev/null 2>&1 || apt_install "the HTML report is checked in a headless browser" chromium
[ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/munged ] ||
    apt_install "a single-node Slurm cluster runs an emitted job array" slurm-wlm munge
command -v qemu-x86_64 >/dev/null 2>&1 ||
    apt_install "the CI record is verified on emulated Intel and AMD processors" qemu-user
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test "$@"
bash scripts/ci-verify.sh
