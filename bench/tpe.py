#!/usr/bin/env python3
"""TPE against random search on a cached-feature problem whose best configuration is known.

The problem: a linear head on frozen efficientnet_lite0 ImageNet features (cached: each trial
trains the head only), synthetic shapes of 5 classes (bench's own data, 90 images a class, 64 px,
40% validation), one epoch of SGD at batch 16, so that the learning rate and the momentum decide
the accuracy. The space: lr log-uniform [1e-5, 1], momentum uniform [0, 0.99]. The known best is
the best validation accuracy of a 12 x 6 grid over the same ranges (72 runs). For each of the
search seeds, each method runs `--trials` trials; the measure is the first trial whose best
validation accuracy is within 0.5 point of the grid's best (searches that never get there count
as trials + 1 and are reported).

Random search is runner's `method = "tpe"` with `startup_trials` = the number of trials: TPE's
startup trials are random search's draws (the same runs, tests/it/search.rs), so both methods
share their first 10 trials and differ only after them.

    python3 bench/tpe.py [--seeds 10] [--trials 30]      (needs target/debug/runner and the weights: just setup)

With --halving EPOCHS the same comparison runs inside successive halving (`method = "halving"`,
min_epochs 1, eta 2, `sampler = "random"` against `sampler = "tpe"`): each trial has EPOCHS
epochs, the grid's best is taken at EPOCHS epochs, and the measure is the epochs the search has
trained (the halving journal's results in order) when a result first reaches the target.
"""
import argparse
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BASE = """name = "{name}"
seed = 1

[data]
source = "{data}"
image_size = 64
batch_size = 16
split = [0.6, 0.4]

[model]
backbone = "efficientnet_lite0"
weights = "imagenet"

[[phases]]
name = "head"
epochs = 1
freeze_up_to = "all"
optimizer = {{ kind = "sgd", lr = 1e-3, momentum = 0.5 }}
"""

LR = (1e-5, 1.0)
MOMENTUM = (0.0, 0.99)
SPACE = f"""
[search.space]
"phases.0.optimizer.lr" = {{ log_uniform = [{LR[0]}, {LR[1]}] }}
"phases.0.optimizer.momentum" = {{ uniform = [{MOMENTUM[0]}, {MOMENTUM[1]}] }}
"""


def run(runner, *args, cwd, runs_may_fail=False):
    """runner's output; a grid or search exits 1 when some of its runs diverge (high rates do)."""
    out = subprocess.run([runner, *args], cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0 and not (runs_may_fail and "runs failed" in out.stderr):
        sys.exit(f"runner {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


def base(name, data, epochs):
    return BASE.format(name=name, data=data).replace("epochs = 1\n", f"epochs = {epochs}\n")


def grid_best(runner, work, data, epochs=1):
    lrs = [LR[0] * (LR[1] / LR[0]) ** (i / 11) for i in range(12)]
    moms = [MOMENTUM[0] + (MOMENTUM[1] - MOMENTUM[0]) * i / 5 for i in range(6)]
    spec = base("grid", data, epochs) + "\n[grid]\n"
    spec += '"phases.0.optimizer.lr" = [' + ", ".join(f"{x:.4g}" for x in lrs) + "]\n"
    spec += '"phases.0.optimizer.momentum" = [' + ", ".join(f"{x:.4g}" for x in moms) + "]\n"
    with open(os.path.join(work, "grid.toml"), "w") as f:
        f.write(spec)
    run(runner, "run", "grid.toml", "--out", "runs", "--quiet", cwd=work, runs_may_fail=True)
    best = None
    for run_id in os.listdir(os.path.join(work, "runs", "grid")):
        path = os.path.join(work, "runs", "grid", run_id, "summary.json")
        if os.path.exists(path):
            with open(path) as f:
                s = json.load(f)
            if s.get("best_val_acc") is not None and (best is None or s["best_val_acc"] > best[0]):
                best = (s["best_val_acc"], s["name"])
    return best, len(lrs) * len(moms)


def search(runner, work, data, seed, trials, startup):
    name = f"s{seed}_{'random' if startup >= trials else 'tpe'}"
    spec = BASE.format(name=name, data=data) + f"""
[search]
method = "tpe"
trials = {trials}
startup_trials = {startup}
seed = {seed}

""" + SPACE
    with open(os.path.join(work, f"{name}.toml"), "w") as f:
        f.write(spec)
    run(runner, "run", f"{name}.toml", "--out", "runs", "--quiet", cwd=work, runs_may_fail=True)
    with open(os.path.join(work, "runs", name, "tpe_trials.csv")) as f:
        return [float(r["best_val_acc"]) if r["best_val_acc"] else -1.0 for r in csv.DictReader(f)]


def halving_search(runner, work, data, seed, trials, sampler, epochs):
    """(epochs trained so far, value) of each result of a halving search, in the journal's order,
    and each trial's first-rung value (-1 for a failed trial)."""
    name = f"h{seed}_{sampler}"
    startup = "startup_trials = 10\n" if sampler == "tpe" else ""
    spec = base(name, data, epochs) + f"""
[search]
method = "halving"
sampler = "{sampler}"
{startup}min_epochs = 1
eta = 2
trials = {trials}
seed = {seed}

""" + SPACE
    with open(os.path.join(work, f"{name}.toml"), "w") as f:
        f.write(spec)
    run(runner, "run", f"{name}.toml", "--out", "runs", "--quiet", cwd=work, runs_may_fail=True)
    folder = os.path.join(work, "runs", name)
    journal = next(f for f in os.listdir(folder) if f.startswith(".halving-"))
    results, first_rung, spent = [], {}, 0
    with open(os.path.join(folder, journal)) as f:
        for line in f:
            parts = line.split()
            if parts[0] == "done":
                spent += int(parts[4])
                value = float(parts[3])
                results.append((spent, value if math.isfinite(value) else -1.0))
                if parts[2] == "0":
                    first_rung[int(parts[1])] = value if math.isfinite(value) else -1.0
    return results, first_rung


def halving_main(bench_runner, work, data, args):
    (best, name), grid_runs = grid_best(bench_runner, work, data, args.halving)
    target = best - 0.005
    print(f"grid of {grid_runs} at {args.halving} epochs: best val_acc {best:.4f} ({name}); target >= {target:.4f}")
    rows = []
    for seed in range(args.seeds):
        found = []
        for sampler in ["random", "tpe"]:
            results, first_rung = halving_search(bench_runner, work, data, seed, args.trials, sampler, args.halving)
            at = next((e for e, v in results if v >= target), None)
            # The trials after TPE's 10 startup ones, at their first rung (1 epoch): what the proposals are worth.
            later = [v for t, v in first_rung.items() if t >= 10]
            ok = [v for v in later if v >= 0]
            found.append((at, results[-1][0], max(v for _, v in results), statistics.mean(ok) if ok else 0.0,
                          len(later) - len(ok)))
        rows.append((seed, *found))
        print(f"seed {seed}: random {found[0]}, tpe {found[1]}", flush=True)
    print()
    print("| search seed | epochs to target: random / TPE | epochs in all: random / TPE | best: random / TPE "
          "| trials 11+ at 1 epoch, mean val_acc: random / TPE | trials 11+ failed: random / TPE |")
    print("|---|---|---|---|---|---|")
    for seed, r, t in rows:
        cell = lambda x: str(x[0]) if x[0] else f"not in {x[1]}"  # noqa: E731
        print(f"| {seed} | {cell(r)} / {cell(t)} | {r[1]} / {t[1]} | {r[2]:.4f} / {t[2]:.4f} | {r[3]:.4f} / {t[3]:.4f} "
              f"| {r[4]} / {t[4]} |")
    reached = lambda col: sum(1 for row in rows if row[col][0])  # noqa: E731
    mean = lambda col, i: statistics.mean(row[col][i] for row in rows)  # noqa: E731
    print(f"| reached, means | {reached(1)} / {reached(2)} of {len(rows)} | {mean(1, 1):.1f} / {mean(2, 1):.1f} "
          f"| {mean(1, 2):.4f} / {mean(2, 2):.4f} | {mean(1, 3):.4f} / {mean(2, 3):.4f} | {mean(1, 4):.1f} / {mean(2, 4):.1f} |")


def first_within(values, target):
    return next((i + 1 for i, v in enumerate(values) if v >= target), None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--halving", type=int, metavar="EPOCHS", help="compare the samplers inside halving")
    args = ap.parse_args()
    runner = os.path.join(ROOT, "target", "debug", "runner")
    work = tempfile.mkdtemp(prefix="bench-tpe-")
    bench_runner = os.path.join(work, "runner")
    shutil.copy(runner, bench_runner)  # a rebuild during the benchmark does not change it
    started = time.time()
    try:
        run(bench_runner, "data", "synth", "--out", "shapes", "--classes", "5", "--per-class", "90", "--size", "64",
            "--seed", "11", cwd=work)
        data = os.path.join(work, "shapes")
        if args.halving:
            halving_main(bench_runner, work, data, args)
            print(f"{time.time() - started:.0f} s in all")
            return
        (best, name), grid_runs = grid_best(bench_runner, work, data)
        target = best - 0.005
        print(f"grid of {grid_runs}: best val_acc {best:.4f} ({name}); target >= {target:.4f}")
        rows = []
        for seed in range(args.seeds):
            rnd = search(bench_runner, work, data, seed, args.trials, args.trials)
            tpe = search(bench_runner, work, data, seed, args.trials, 10)
            rows.append((seed, first_within(rnd, target), first_within(tpe, target), max(rnd), max(tpe)))
            print(f"seed {seed}: random {rows[-1][1]}, tpe {rows[-1][2]} (best {max(rnd):.4f} / {max(tpe):.4f})",
                  flush=True)
        print()
        print(f"| search seed | random: trials to target | TPE: trials to target | random best | TPE best |")
        print("|---|---|---|---|---|")
        for seed, r, t, rb, tb in rows:
            cell = lambda x: str(x) if x else f"not in {args.trials}"  # noqa: E731
            print(f"| {seed} | {cell(r)} | {cell(t)} | {rb:.4f} | {tb:.4f} |")
        count = lambda x: x if x else args.trials + 1  # noqa: E731
        mr = statistics.mean(count(r[1]) for r in rows)
        mt = statistics.mean(count(r[2]) for r in rows)
        wins = sum(1 for r in rows if count(r[2]) < count(r[1]))
        ties = sum(1 for r in rows if count(r[2]) == count(r[1]))
        print(f"| mean (misses as {args.trials + 1}) | {mr:.1f} | {mt:.1f} | | |")
        print(f"TPE fewer trials in {wins} of {len(rows)} seeds, as many in {ties}; "
              f"{time.time() - started:.0f} s in all")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
