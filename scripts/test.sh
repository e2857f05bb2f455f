#!/usr/bin/env bash
# The test suite, from a fresh clone: libtorch, pretrained weights (the logits
# test needs them), then rustfmt, clippy and every test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
runner_setup_libtorch
bash scripts/fetch-weights.sh
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test "$@"
