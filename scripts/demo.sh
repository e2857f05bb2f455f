#!/usr/bin/env bash
# The offline demo: generate a synthetic shapes dataset, then fine-tune
# efficientnet_lite0 on it in two phases (experiments/quickstart.toml).
# Sets up everything it needs: libtorch, pretrained weights, the build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
runner_build
if [ ! -d datasets/shapes ]; then
    target/debug/runner data synth --out datasets/shapes
fi
target/debug/runner run experiments/quickstart.toml "$@"
