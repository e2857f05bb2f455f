#!/usr/bin/env bash
# The stores across the points of a grid: a 3-point learning-rate grid over a frozen
# efficientnet_lite0 (ImageNet weights), run once with the image and feature stores off and
# once with fresh stores; then again in a second process (`runner sweep`), and `runner verify` of
# its second point. Prints each point's wall time (summary.json's wall_s: from the run's
# start, decoding included, to its end), where its images and phase 1's inputs came from,
# and whether the metrics agree.
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
RUNNER_FEATURE_STORE=off RUNNER_IMAGE_STORE=off "$runner" run grid.toml --out off -q >/dev/null
export RUNNER_FEATURE_STORE="$work/store" RUNNER_IMAGE_STORE="$work/images"
"$runner" run grid.toml --out on -q >/dev/null
# A second process: `runner sweep` of the same grid into another folder (so every point runs).
"$runner" sweep grid.toml --out again --no-report -q >/dev/null
for mode in off on again; do
    for point in 1 2 3; do
        # The runs' folders in grid order: run.log's first line names the point's run id.
        dir=$(grep -l "" "$mode"/grid/*/summary.json | while read -r s; do
            d=$(dirname "$s"); echo "$(head -c 20 "$d/run.log") $d"; done | sort | sed -n "${point}p" | cut -d' ' -f2)
        wall=$(python3 -c "import json; print(round(json.load(open('$dir/summary.json'))['wall_s'], 1))")
        how=$(grep -o "phase 1 (head): trains on [a-z ]*" "$dir/run.log" | sed 's/phase 1 (head): //')
        images=$(grep -oE "\(built by [a-z ]*|held in memory" "$dir/run.log" | sed 's/(//')
        echo "stores $mode, point $point: ${wall}s; images $images; $how"
    done
done
for mode in on again; do
    if cmp -s <(cat off/grid/*/metrics.csv) <(cat "$mode"/grid/*/metrics.csv); then
        echo "metrics.csv ($mode): identical with and without the stores"
    else
        echo "metrics.csv ($mode): DIFFERENT with and without the stores"
    fi
done
# runner verify of point 2, loading the stored features (the default), and with --fresh.
point2=$(grep -l "" on/grid/*/summary.json | while read -r s; do
    d=$(dirname "$s"); echo "$(head -c 20 "$d/run.log") $d"; done | sort | sed -n "2p" | cut -d' ' -f2)
for how in "" --fresh; do
    start=$(date +%s.%N)
    "$runner" verify "$point2" $how | grep -E "identical|differ" | sed 's/^ *//'
    echo "runner verify ${how:-(stores)}: $(python3 -c "print(round($(date +%s.%N) - $start, 1))")s"
done
