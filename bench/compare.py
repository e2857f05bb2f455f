#!/usr/bin/env python3
"""runner against the PyTorch reference (bench/torch_reference.py), side by side.

Both train the same two-phase recipe on the same files with the same model,
epochs, batch size, optimizer and thread count; each runs as its own process,
whose wall time and peak resident memory (getrusage of that child) are measured
from here. Prints a table and, with --json, writes the figures.

Needs a Python with torch and torchvision (and efficientnet-lite-pytorch for
efficientnet_lite0): the venv the test command makes has them. Example, on
2 cores:

    source scripts/env.sh && runner_setup_torch   # ~/.cache/runner/torch-venv, as the tests use
    cargo build            # the dev profile builds dependencies with opt-level 3
    python3 bench/compare.py --python ~/.cache/runner/torch-venv/bin/python --threads 2
    python3 bench/compare.py --python ~/.cache/runner/torch-venv/bin/python --threads 2 --augment
"""
import argparse
import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLASSES = ["circle", "cross", "ring", "square"]


def measured_child(cmd, env):
    """Runs cmd in a fresh helper process so that RUSAGE_CHILDREN covers it alone."""
    helper = (
        "import json,resource,subprocess,sys,time\n"
        "cmd=json.loads(sys.argv[1]);t=time.perf_counter()\n"
        "p=subprocess.run(cmd,capture_output=True,text=True)\n"
        "w=time.perf_counter()-t\n"
        "r=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024\n"
        "print(json.dumps({'rc':p.returncode,'out':p.stdout,'err':p.stderr[-3000:],'wall':w,'rss_mib':r}))\n"
    )
    res = subprocess.run([sys.executable, "-c", helper, json.dumps([str(c) for c in cmd])], env=env,
                         capture_output=True, text=True, check=True)
    r = json.loads(res.stdout)
    if r["rc"] != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({r['rc']}):\n{r['err']}")
    return r


def measured(cmd, env, device):
    """measured_child, plus the peak GPU memory in use meanwhile (nvidia-smi, every 100 ms) on CUDA."""
    if device != "cuda":
        return measured_child(cmd, env)
    smi = subprocess.Popen(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-lms", "100"],
                           stdout=subprocess.PIPE, text=True)
    try:
        r = measured_child(cmd, env)
    finally:
        smi.terminate()
    samples = [int(x) for x in smi.communicate()[0].split() if x.isdigit()]
    r["gpu_mib"] = max(samples, default=0)
    return r


def make_data(runner, root, per_class, size):
    """Synthetic shapes (runner data synth), split into train/ and val/ folders (every 5th image to val)."""
    split = root / "split"
    if (split / ".complete").exists():
        return split
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run([runner, "data", "synth", "--out", root / "all", "--classes", str(len(CLASSES)),
                    "--per-class", str(per_class), "--size", str(size), "--seed", "0"], check=True)
    for cls in sorted(os.listdir(root / "all")):
        files = sorted(os.listdir(root / "all" / cls))
        for i, f in enumerate(files):
            dest = split / ("val" if i % 5 == 4 else "train") / cls
            dest.mkdir(parents=True, exist_ok=True)
            os.symlink(root / "all" / cls / f, dest / f)
    (split / ".complete").touch()
    return split


def spec_text(a, data, weights, seed):
    augment = '["random_resized_crop", "hflip"]' if a.augment else "[]"
    extra = "".join(f"{line}\n" for line in a.runner_set)
    return f'''name = "bench"
seed = {seed}
precision = "{a.precision}"

[data]
source = "{data}"
image_size = {a.image_size}
batch_size = {a.batch_size}
augment = {augment}

[model]
backbone = "{a.model}"
weights = "{weights or 'none'}"
{extra}
[[phases]]
name = "head"
epochs = {a.epochs[0]}
freeze_up_to = "all"
optimizer = {{ kind = "rmsprop", lr = {a.lr} }}

[[phases]]
name = "fine_tune"
epochs = {a.epochs[1]}
freeze_up_to = {a.freeze}
optimizer = {{ kind = "rmsprop", lr_factor = {a.lr_factor} }}
'''


def run_both(a, data, weights, env, seed):
    """One seed: runner, then (unless --skip-reference) the PyTorch reference; their figures."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        spec = pathlib.Path(tmp) / "bench.toml"
        spec.write_text(spec_text(a, data, weights, seed))
        r = measured([a.runner, "run", spec, "--out", pathlib.Path(tmp) / "runs", "--quiet", "--force",
                      "--device", a.device], env, a.device)
        (run_dir,) = (pathlib.Path(tmp) / "runs/bench").iterdir()
        timing = list(csv.DictReader(open(run_dir / "timing.csv")))
        metrics = list(csv.DictReader(open(run_dir / "metrics.csv")))
        phase_of = lambda row: 1 if row["phase"] == "head" else 2
        results["runner"] = {
            "wall_s": r["wall"], "rss_mib": r["rss_mib"], "gpu_mib": r.get("gpu_mib"),
            "epochs": [{"phase": phase_of(t), "seconds": float(t["seconds"]),
                        "train_images_per_s": float(t["train_images_per_s"]), "val_acc": float(m["val_acc"])}
                       for t, m in zip(timing, metrics)],
        }
    if not a.skip_reference:
        cmd = [a.python, ROOT / "bench/torch_reference.py", "--data", data, "--model", a.model,
               "--weights", weights, "--image-size", a.image_size, "--batch-size", a.batch_size,
               "--epochs", *a.epochs, "--freeze", a.freeze, "--lr", a.lr, "--lr-factor", a.lr_factor,
               "--threads", a.threads, "--workers", a.workers, "--device", a.device, "--seed", seed] \
            + (["--augment"] if a.augment else []) \
            + (["--amp"] if a.precision in ("fp16", "bf16") else []) \
            + (["--amp-dtype", "bfloat16"] if a.precision == "bf16" else []) \
            + (["--channels-last"] if a.reference_channels_last else []) \
            + (["--frozen-train-mode"] if a.reference_frozen_train_mode else []) \
            + (["--preload"] if a.device == "cuda" else [])
        r = measured(cmd, env, a.device)
        ref = json.loads(r["out"])
        results["pytorch"] = {"wall_s": r["wall"], "rss_mib": r["rss_mib"], "gpu_mib": r.get("gpu_mib"),
                              "epochs": ref["epochs"], "torch": ref["torch"], "workers": ref["workers"]}
    accs = "  ".join(f"{k} {v['epochs'][-1]['val_acc']:.4f}" for k, v in results.items())
    print(f"seed {seed}: final val acc  {accs}", file=sys.stderr, flush=True)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runner", default=str(ROOT / "target/debug/runner"))
    ap.add_argument("--python", default=sys.executable, help="a Python with torch and torchvision")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--weights", default=str(pathlib.Path.home() / ".cache/runner/weights/efficientnet-lite0-57934424.pth"))
    ap.add_argument("--per-class", type=int, default=225, help="images per class (4 classes)")
    ap.add_argument("--source-size", type=int, default=128, help="side of the generated images")
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, nargs=2, default=[3, 3])
    ap.add_argument("--freeze", type=int, default=11, help="phase 2: layers below this stay frozen (11: from block 10)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-factor", type=float, default=0.1)
    ap.add_argument("--augment", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference")
    ap.add_argument("--data-dir", default=str(ROOT / "datasets/bench"))
    ap.add_argument("--dataset", help="an existing folder with train/ and val/ class folders (e.g. from "
                    "bench/real_photos.py) instead of the synthetic shapes")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="run both sides once per seed; accuracy is reported as mean, spread and each value")
    ap.add_argument("--runner-set", action="append", default=[], metavar="LINE",
                    help='a line added to the [model] table of runner\'s spec, e.g. \'head = { init = "kaiming" }\'')
    ap.add_argument("--reference-frozen-train-mode", action="store_true",
                    help="the reference's frozen blocks stay in training mode (dropout, stochastic depth), "
                         "their BatchNorm in inference mode, as `model.train()` then freezing leaves them")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the reference then preloads its data too)")
    ap.add_argument("--precision", default="fp32",
                    help="fp16 / bf16: runner's precision = \"fp16\" / \"bf16\", the reference's autocast in that type")
    ap.add_argument("--reference-channels-last", action="store_true",
                    help="the reference's model and inputs in channels-last memory (what PyTorch users do on GPUs)")
    a = ap.parse_args()

    weights = a.weights if a.weights and pathlib.Path(a.weights).exists() else ""
    if not weights:
        print("note: no weights file; both sides start from random weights", file=sys.stderr)
    if a.dataset:
        data = pathlib.Path(a.dataset).resolve()
        if not (data / "train").is_dir() or not (data / "val").is_dir():
            sys.exit(f"--dataset {data}: expected train/ and val/ class folders in it")
    else:
        data = make_data(a.runner, pathlib.Path(a.data_dir) / f"{len(CLASSES)}x{a.per_class}-{a.source_size}px",
                         a.per_class, a.source_size)
    env = dict(os.environ, RUNNER_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    per_seed = [run_both(a, data, weights, env, seed) for seed in a.seeds]
    # Speed and memory from the first seed; accuracy over all of them.
    results = per_seed[0]
    def row(name, f, fmt="{:.2f}"):
        vals = [f(results[k]) for k in results]
        cells = [fmt.format(v) for v in vals]
        ratio = f"{vals[0] / vals[1]:.3f}" if len(vals) == 2 and vals[1] else ""
        print(f"{name:<32}" + "".join(f"{c:>14}" for c in cells) + f"{ratio:>10}")

    mean = lambda xs: sum(xs) / len(xs)
    per_phase = lambda r, p, key: mean([e[key] for e in r["epochs"] if e["phase"] == p])
    print(f"{a.model}, {a.image_size} px, {sum(1 for _ in data.glob('*/*/*'))} images, batch {a.batch_size}, "
          f"epochs {a.epochs[0]}+{a.epochs[1]}, phase 2 from layer {a.freeze}, "
          f"augment {'on' if a.augment else 'off'}, {a.threads} threads, {a.device}, {a.precision}"
          + (", reference channels-last" if a.reference_channels_last else ""))
    print(f"{'':<32}" + "".join(f"{k:>14}" for k in results) + f"{'ratio':>10}")
    row("wall time (s)", lambda r: r["wall_s"])
    row("phase 1 train images/s", lambda r: per_phase(r, 1, "train_images_per_s"), "{:.1f}")
    row("phase 2 train images/s", lambda r: per_phase(r, 2, "train_images_per_s"), "{:.1f}")
    # Without each phase's first epoch (cuDNN autotuning, cache building, warm-up).
    steady = lambda r, p: mean([e["train_images_per_s"] for e in r["epochs"] if e["phase"] == p][1:] or [0])
    row("phase 2 images/s, later epochs", lambda r: steady(r, 2), "{:.1f}")
    row("mean epoch time (s)", lambda r: mean([e["seconds"] for e in r["epochs"]]))
    row("peak memory (MiB)", lambda r: r["rss_mib"], "{:.0f}")
    if a.device == "cuda":
        row("peak GPU memory in use (MiB)", lambda r: r["gpu_mib"] or 0, "{:.0f}")
    if len(per_seed) == 1:
        row("final val acc", lambda r: r["epochs"][-1]["val_acc"], "{:.4f}")
        row("best val acc", lambda r: max(e["val_acc"] for e in r["epochs"]), "{:.4f}")
    else:
        print(f"val accuracy over seeds {' '.join(map(str, a.seeds))} (mean ± sample sd [each seed]):")
        for side in results:
            for what, f in [("final", lambda e: e[-1]["val_acc"]), ("best", lambda e: max(x["val_acc"] for x in e))]:
                vals = [f(s[side]["epochs"]) for s in per_seed]
                m = mean(vals)
                sd = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
                print(f"  {side:<8} {what:<6} {m:.4f} ± {sd:.4f}  [{' '.join(f'{v:.4f}' for v in vals)}]")
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps({"args": vars(a), "seeds": a.seeds, "results": per_seed},
                                                   indent=1, default=str))


if __name__ == "__main__":
    main()
