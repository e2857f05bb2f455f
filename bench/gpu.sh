#!/usr/bin/env bash
# runner against the PyTorch a user would write on a GPU, side by side on one GPU:
# eager autocast with channels-last and the decoded images already on the GPU
# (torch_reference.py --preload --channels-last), 224 px, batch 256, random initial
# weights on both sides, resnet18 and efficientnet_lite0, full fine-tuning and a partly
# frozen backbone, fp16 and bf16 (both sides).
#
#   bash bench/gpu.sh RUNNER_BINARY OUT_DIR
#
# Needs python3 with torch 2.11 (CUDA), torchvision and efficientnet-lite-pytorch; the
# runner binary finds the CUDA libtorch through LD_LIBRARY_PATH (set here from torch).
set -uo pipefail
runner=${1:?usage: bench/gpu.sh RUNNER_BINARY OUT_DIR}
out=${2:?usage: bench/gpu.sh RUNNER_BINARY OUT_DIR}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "$out"
torch_lib=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)' | tee -a "$out/gpu.txt"

common=(--runner "$runner" --python python3 --device cuda --weights "" --image-size 224 --batch-size 256
        --epochs 1 3 --per-class 1024 --source-size 256 --threads 16 --data-dir /tmp/runner-bench-data)
data=/tmp/runner-bench-data/4x1024-256px/split
for precision in fp16 bf16; do
    for case in "resnet18 0" "resnet18 5" "efficientnet_lite0 0" "efficientnet_lite0 10"; do
        set -- $case
        name="$1-freeze$2-$precision"
        echo "== $name" | tee -a "$out/summary.txt"
        python3 bench/compare.py "${common[@]}" --model "$1" --freeze "$2" --precision "$precision" \
            --reference-channels-last --json "$out/$name.json" 2>&1 | tee -a "$out/summary.txt"
    done
done
# runner in NCHW on CUDA (RUNNER_CHANNELS_LAST=0; channels-last is its default for
# convolutional backbones): whether that default holds for runner's own kernels.
for case in "resnet18 0" "efficientnet_lite0 0"; do
    set -- $case
    name="$1-freeze$2-fp16-runner-nchw"
    echo "== $name" | tee -a "$out/summary.txt"
    RUNNER_CHANNELS_LAST=0 python3 bench/compare.py "${common[@]}" --model "$1" --freeze "$2" --precision fp16 \
        --reference-channels-last --json "$out/$name.json" 2>&1 | tee -a "$out/summary.txt"
done
# PyTorch alone, fp16 without channels-last (the reference of the earlier H100 figure).
for model in resnet18 efficientnet_lite0; do
    name="pytorch-$model-freeze0-float16"
    echo "== $name" | tee -a "$out/summary.txt"
    python3 bench/torch_reference.py --data "$data" --model "$model" --image-size 224 --batch-size 256 \
        --epochs 1 3 --freeze 0 --threads 16 --device cuda --preload --amp --amp-dtype float16 \
        > "$out/$name.json" 2>>"$out/summary.txt"
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); e=[x for x in r["epochs"] if x["phase"]==2][1:]; print("phase 2 later epochs images/s: %.1f, val_acc %.4f" % (sum(x["train_images_per_s"] for x in e)/len(e), r["epochs"][-1]["val_acc"]))' "$out/$name.json" | tee -a "$out/summary.txt"
done
