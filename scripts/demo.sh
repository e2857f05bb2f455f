#!/usr/bin/env bash
# The offline demo: fine-tune efficientnet_lite0 in two phases on runner's synthetic
# shapes (experiments/quickstart.toml; the run generates the data on first use).
# Sets up everything it needs: libtorch, pretrained weights, just, the build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
runner_build
target/debug/runner run experiments/quickstart.toml "$@"
echo "next: just report (reports/index.html), just sweep --dry-run, just run SPEC; just --list shows the rest" >&2
