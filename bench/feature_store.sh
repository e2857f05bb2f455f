#!/usr/bin/env bash
# The feature store across the points of a grid: a 3-point learning-rate grid over a
# frozen efficientnet_lite0 (ImageNet weights), run once with the store off and once with
# a fresh store; prints each point's wall time (summary.json's wall_s: from the run's start,
# decoding included, to its end), what phase 1 trained on, and whether the metrics agree.
#
#   bash bench/feature_store.sh        (needs target/debug/runner built and the weights
#                                        fetched: just setup)
#
# Data: synthetic shapes, 4 classes x 250 images of 200 px; image_size 160, 2 epochs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runner="$PWD/target/debug/runner"
[ -x "$runner" ] || { echo "bench/feature_store.sh: build runner first (just build)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$runner" data synth --out shapes --classes 4 --per-class 250 --size 200 --seed 3 >/dev/null
cat > grid.toml <<'TOML'
name = "grid"
seed = 1
[data]
source = "./shapes"
image_size = 160
batch_size = 32
[model]
backbone = "efficientnet_lite0"
[[phases]]
name = "head"
epochs = 2
freeze_up_to = "all"
optimizer = { kind = "adam", lr = 1e-3 }
[grid]
"phases.0.optimizer.lr" = [1e-3, 3e-3, 1e-2]
TOML
export RUNNER_THREADS="${RUNNER_THREADS:-2}"
RUNNER_FEATURE_STORE=off "$runner" run grid.toml --out off -q >/dev/null
RUNNER_FEATURE_STORE="$work/store" "$runner" run grid.toml --out on -q >/dev/null
for mode in off on; do
    for point in 1 2 3; do
        # The runs' folders in grid order: run.log's first line names the point's run id.
        dir=$(grep -l "" "$mode"/grid/*/summary.json | while read -r s; do
            d=$(dirname "$s"); echo "$(head -c 20 "$d/run.log") $d"; done | sort | sed -n "${point}p" | cut -d' ' -f2)
        wall=$(python3 -c "import json; print(round(json.load(open('$dir/summary.json'))['wall_s'], 1))")
        how=$(grep -o "phase 1 (head): trains on [a-z ]*" "$dir/run.log" | sed 's/phase 1 (head): //')
        echo "store $mode, point $point: ${wall}s, $how"
    done
done
if cmp -s <(cat off/grid/*/metrics.csv) <(cat on/grid/*/metrics.csv); then
    echo "metrics.csv: identical with and without the store"
else
    echo "metrics.csv: DIFFERENT with and without the store"
fi
