#!/usr/bin/env bash
# The speed cost of reproducibility = "portable" against the default ("machine"), side by
# side in one run: the same specs, alternating modes, each REPEAT times; prints the median
# train images/s of each phase and the median wall time (docs/performance.md).
#
#   bash bench/portable.sh [REPEAT]        (default 3; needs target/debug/runner built)
#
# Specs (synthetic shapes, 320 images at 128 px, weights "none": speed only):
#   efficientnet_lite0  frozen backbone 1 epoch, then layers 10.. 2 epochs (depthwise convolutions)
#   resnet18            the whole network 2 epochs (dense convolutions, full backward)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repeat="${1:-3}"
runner=target/debug/runner
[ -x "$runner" ] || { echo "bench/portable.sh: build runner first (just build)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$runner" data synth --out "$work/shapes" --classes 4 --per-class 80 --size 160 --seed 3 >/dev/null

spec() { # NAME BACKBONE PHASES MODE
    cat <<EOF
name = "$1"
seed = 1
reproducibility = "$4"
[data]
source = "$work/shapes"
image_size = 128
batch_size = 32
[model]
backbone = "$2"
weights = "none"
$3
EOF
}
lite_phases='[[phases]]
name = "frozen"
epochs = 1
freeze_up_to = "all"
optimizer = { kind = "rmsprop", lr = 1e-3 }
[[phases]]
name = "fine_tune"
epochs = 2
freeze_up_to = 10
optimizer = { kind = "rmsprop", lr_factor = 0.1 }'
resnet_phases='[[phases]]
name = "full"
epochs = 2
freeze_up_to = 0
optimizer = { kind = "adamw", lr = 1e-3 }'

for i in $(seq 1 "$repeat"); do
    for mode in machine portable; do
        for case in "efficientnet_lite0:$lite_phases" "resnet18:$resnet_phases"; do
            backbone="${case%%:*}"
            spec "bench_${backbone}_${mode}" "$backbone" "${case#*:}" "$mode" > "$work/spec.toml"
            start=$(date +%s%N)
            "$runner" run "$work/spec.toml" --out "$work/runs/$i" --quiet --force >/dev/null
            end=$(date +%s%N)
            echo "$backbone $mode $(( (end - start) / 1000000 ))" >> "$work/wall.txt"
        done
    done
done

python3 - "$work" <<'EOF'
import csv, glob, os, statistics, sys
work = sys.argv[1]
rates, walls = {}, {}
for path in glob.glob(f"{work}/runs/*/bench_*/*/timing.csv"):
    name = path.split("/")[-3][len("bench_"):]
    backbone, mode = name.rsplit("_", 1)
    by_phase = {}
    for row in csv.DictReader(open(path)):
        by_phase.setdefault(row["phase"], []).append(float(row["train_images_per_s"]))
    for phase, r in by_phase.items():
        # The first epoch of a frozen phase computes the cached features; later ones train the head.
        rates.setdefault((backbone, phase, mode), []).append(r[0] if phase == "frozen" else statistics.median(r))
for line in open(f"{work}/wall.txt"):
    backbone, mode, s = line.split()
    walls.setdefault((backbone, mode), []).append(float(s) / 1000)
print(f"{os.uname().nodename}: {open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip()}")
print("| backbone | phase | machine images/s | portable images/s | portable / machine |")
print("| --- | --- | --- | --- | --- |")
for (backbone, phase, mode) in sorted(rates):
    if mode != "machine":
        continue
    m, p = statistics.median(rates[(backbone, phase, "machine")]), statistics.median(rates[(backbone, phase, "portable")])
    print(f"| {backbone} | {phase} | {m:.1f} | {p:.1f} | {p / m:.2f} |")
for backbone in sorted({b for b, _ in walls}):
    m, p = statistics.median(walls[(backbone, "machine")]), statistics.median(walls[(backbone, "portable")])
    print(f"| {backbone} | wall time (s) | {m:.1f} | {p:.1f} | {p / m:.2f} |")
EOF
