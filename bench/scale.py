#!/usr/bin/env python3
"""runner at scale: memory, the image store and the feature store on growing datasets.

For each size (synthetic shapes of 128 px, 4 classes, every 5th image to val), with
efficientnet_lite0 (ImageNet weights), image_size 64, batch 32, RUNNER_THREADS threads:

  store     the time to build the decoded-image store (`runner data check`: hashing the
            files, decoding, writing), and its size;
  disk /    a two-phase run: 1 frozen epoch (on the pooled features, cached in the feature
  memory    store), 1 fine-tuning epoch from block 10 with random_resized_crop and hflip (so it
            reads its images): peak RSS, wall time, fine-tuning images/s; data.store = "disk"
            and "memory";
  grid      a 3-point learning-rate grid of a frozen phase (1 epoch), run twice: each
            point's wall time (summary.json), and whether run.log says it loaded the stores;
  pytorch   bench/torch_reference.py --augment (ImageFolder + DataLoader, 2 workers;
            RandomResizedCrop + RandomHorizontalFlip) on the same files: its fine-tuning
            images/s and peak RSS;
  limit     with --limit-mb: the disk run again under RLIMIT_DATA (ulimit -d) of that
            many MiB, and the memory run, which must fail under it.

Peak RSS is getrusage's ru_maxrss of the child alone (bench/compare.py's helper).

    source scripts/env.sh && runner_setup_torch && cargo build
    python3 bench/scale.py --python ~/.cache/runner/torch-venv/bin/python --sizes 3000 30000
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
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from compare import ROOT, make_data, measured_child  # noqa: E402

WEIGHTS = pathlib.Path.home() / ".cache/runner/weights/efficientnet-lite0-57934424.pth"


def spec(data, phases, grid=False, store="auto"):
    text = f'''name = "scale"
seed = 1
[data]
source = "{data}"
image_size = 64
batch_size = 32
store = "{store}"
[model]
backbone = "efficientnet_lite0"
[[phases]]
name = "head"
epochs = 1
freeze_up_to = "all"
optimizer = {{ kind = "rmsprop", lr = 1e-3 }}
'''
    if phases == 2:
        text += '''[[phases]]
name = "fine_tune"
epochs = 1
freeze_up_to = 10
augment = ["random_resized_crop", "hflip"]
optimizer = { kind = "rmsprop", lr_factor = 0.1 }
'''
    if grid:
        text += '[grid]\n"phases.0.optimizer.lr" = [1e-3, 3e-3, 1e-2]\n'
    return text


def runner_run(a, tmp, name, text, env, limit_mb=None, shared_features=False):
    """One `runner run`, with a feature store of its own (so that it starts with no stored
    features) unless `shared_features`."""
    if not shared_features:
        env = dict(env, RUNNER_FEATURE_STORE=str(tmp / f"features-{name}"))
    path = tmp / f"{name}.toml"
    path.write_text(text)
    cmd = [a.runner, "run", path, "--out", tmp / name, "--quiet", "--force"]
    if limit_mb:
        cmd = ["bash", "-c", f'ulimit -d {limit_mb * 1024} && exec "$@"', "limited", *map(str, cmd)]
    t = time.perf_counter()
    r = measured_child(cmd, env) if not limit_mb else limited(cmd, env)
    r["wall"] = time.perf_counter() - t
    return r


def limited(cmd, env):
    """A run that may fail: its exit status and the end of its error output. Without
    RUST_BACKTRACE: symbolising a backtrace after an allocation failed can hang the process."""
    env = {k: v for k, v in env.items() if k != "RUST_BACKTRACE"}
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return {"rc": p.returncode, "err": p.stderr[-400:]}


def runs(folder):
    return sorted(p for p in folder.glob("scale/*") if p.is_dir())


def fine_tune_ips(run_dir):
    rows = list(csv.DictReader(open(run_dir / "timing.csv")))
    return float(rows[-1]["train_images_per_s"])


def one_size(a, n, env):
    out = {"images": n}
    data = make_data(a.runner, a.work / f"shapes-{n}", n // 4, 128)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=a.work))
    env = dict(env, RUNNER_IMAGE_STORE=str(tmp / "images"))
    t = time.perf_counter()
    subprocess.run([a.runner, "data", "check", data, "--image-size", "64"], env=env, check=True,
                   capture_output=True)
    out["store_build_s"] = round(time.perf_counter() - t, 1)
    out["store_mib"] = round(sum(f.stat().st_size for f in (tmp / "images").glob("*.img")) / 2**20, 1)
    # Alternately, to even out what runs first; the figures of each mode's best.
    for rep in range(a.repeat):
        for store in ["disk", "memory"]:
            r = runner_run(a, tmp, f"{store}-{rep}", spec(data, 2, store=store), env)
            (run_dir,) = runs(tmp / f"{store}-{rep}")
            got = {"rss_mib": round(r["rss_mib"]), "wall_s": round(r["wall"], 1),
                   "fine_tune_images_per_s": round(fine_tune_ips(run_dir), 1)}
            print(f"{n}: {store} {got}", file=sys.stderr, flush=True)
            best = out.get(store)
            if best is None or got["fine_tune_images_per_s"] > best["fine_tune_images_per_s"]:
                out[store] = got
    if a.grid:
        # Both invocations share one feature store, the first starting with it empty.
        grid_env = dict(env, RUNNER_FEATURE_STORE=str(tmp / "features-grid"))
        for attempt in ["first", "second"]:
            runner_run(a, tmp, f"grid-{attempt}", spec(data, 1, grid=True), grid_env, shared_features=True)
            points = []
            # In the order they ran (one after the other): by when each wrote its run.log last.
            for d in sorted(runs(tmp / f"grid-{attempt}"), key=lambda d: (d / "run.log").stat().st_mtime):
                log = (d / "run.log").read_text()
                points.append({
                    "wall_s": round(json.load(open(d / "summary.json"))["wall_s"], 2),
                    "images_from_store": "built by an earlier run" in log or "while this one waited" in log,
                    "features_from_store": "of the feature store (" in log,
                })
            out[f"grid_{attempt}"] = points
            print(f"{n}: grid {attempt} {points}", file=sys.stderr, flush=True)
    if a.python and n <= a.pytorch_max:
        cmd = [a.python, ROOT / "bench/torch_reference.py", "--data", data, "--model", "efficientnet_lite0",
               "--weights", WEIGHTS, "--image-size", 64, "--batch-size", 32, "--epochs", 1, 1, "--freeze", 10,
               "--threads", a.threads, "--workers", 2, "--seed", 1, "--augment"]
        r = measured_child(cmd, env)
        ref = json.loads(r["out"])
        out["pytorch"] = {"rss_mib": round(r["rss_mib"]), "wall_s": round(r["wall"], 1),
                          "fine_tune_images_per_s": round(ref["epochs"][-1]["train_images_per_s"], 1)}
        print(f"{n}: pytorch {out['pytorch']}", file=sys.stderr, flush=True)
    if a.limit_mb:
        for store in ["disk", "memory"]:
            r = runner_run(a, tmp, f"limited-{store}", spec(data, 2, store=store), env, limit_mb=a.limit_mb)
            out[f"limited_{store}"] = {"rc": r["rc"], "err": r["err"].strip().splitlines()[-1:] if r["rc"] else []}
            print(f"{n}: RLIMIT_DATA {a.limit_mb} MiB, {store}: {out[f'limited_{store}']}", file=sys.stderr, flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runner", default=str(ROOT / "target/debug/runner"))
    ap.add_argument("--python", default="", help="a Python with torch and torchvision for the PyTorch figures")
    ap.add_argument("--sizes", type=int, nargs="+", default=[3000, 30000, 100000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="disk and memory runs, alternately, this many times each")
    ap.add_argument("--grid", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--pytorch-max", type=int, default=30000, help="the largest size PyTorch runs on")
    ap.add_argument("--limit-mb", type=int, default=0, help="also run under RLIMIT_DATA of this many MiB")
    ap.add_argument("--work", default=str(ROOT / "target/bench-scale"), help="datasets are kept here")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    a.work = pathlib.Path(a.work)
    a.work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, RUNNER_THREADS=str(a.threads))
    results = [one_size(a, n, env) for n in a.sizes]
    print(json.dumps(results, indent=1))
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
