#!/usr/bin/env bash
# The test suite, from a fresh clone: libtorch, pretrained weights (the logits
# test needs them), just, TensorBoard in a venv (its event reader checks ours), Chromium (the report's browser test), then rustfmt, clippy,
# every test, and the rerun of the committed CI experiment (scripts/ci-verify.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
runner_setup_libtorch
bash scripts/fetch-weights.sh
runner_setup_just
runner_setup_tracking
if ! command -v chromium >/dev/null 2>&1; then
    echo "test: installing Debian's chromium (the HTML report is checked in a headless browser)" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium; } >/dev/null ||
        echo "test: could not install chromium; the report's browser check will fail under CI" >&2
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test "$@"
bash scripts/ci-verify.sh
