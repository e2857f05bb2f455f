#!/usr/bin/env python3
"""Reference learning rates (and momenta) of PyTorch's per-step and plateau schedulers, for
tests/fixtures/schedules.json.

Each case builds the scheduler a PyTorch user would over one parameter and records, step
by step, the rate (and the momentum or Adam's first beta) the optimizer's param group holds
when it steps: the value after construction for step 0, then after each scheduler.step().

- one_cycle_*: torch.optim.lr_scheduler.OneCycleLR (anneal_strategy "cos", two phases) over
  SGD(momentum 0.9) and over Adam, so that both the momentum and beta1 are cycled;
- warm_cosine_*: SequentialLR([LinearLR(start_factor = 1 / (W + 1), total_iters = W),
  CosineAnnealingLR(T_max = T - W)], milestones = [W]); with W = 0 a plain
  CosineAnnealingLR(T_max = T);
- plateau_*: ReduceLROnPlateau stepped once per epoch on a fixed sequence of metric values
  (null: NaN).

Usage:
    python3 scripts/make_schedule_fixtures.py > tests/fixtures/schedules.json
"""
import json
import math

import torch
from torch.optim.lr_scheduler import (CosineAnnealingLR, LinearLR, OneCycleLR, ReduceLROnPlateau,
                                      SequentialLR)


def param():
    return [torch.zeros(1, requires_grad=True)]


def momentum_of(group):
    return group["betas"][0] if "betas" in group else group["momentum"]


def trace(opt, sched, steps, with_momentum):
    lrs, moms = [], []
    for _ in range(steps):
        g = opt.param_groups[0]
        lrs.append(g["lr"])
        moms.append(momentum_of(g))
        opt.step()
        sched.step()
    return {"lr": lrs, "momentum": moms} if with_momentum else {"lr": lrs}


def one_cycle(optimizer, total, lr, **kw):
    opt = optimizer(param())
    sched = OneCycleLR(opt, max_lr=lr, total_steps=total, **kw)
    case = {"optimizer": optimizer.__name__.lower(), "total": total, "max_lr": lr, **kw}
    case.update(trace(opt, sched, total, kw.get("cycle_momentum", True)))
    return case


def warm_cosine(total, warmup, lr):
    opt = torch.optim.SGD(param(), lr=lr)
    if warmup == 0:
        sched = CosineAnnealingLR(opt, T_max=total)
    else:
        first = LinearLR(opt, start_factor=1 / (warmup + 1), total_iters=warmup)
        sched = SequentialLR(opt, [first, CosineAnnealingLR(opt, T_max=total - warmup)], milestones=[warmup])
    case = {"total": total, "warmup_steps": warmup, "lr": lr}
    case["lrs"] = trace(opt, sched, total, False)["lr"]
    return case


def plateau(values, lr, **kw):
    opt = torch.optim.SGD(param(), lr=lr)
    sched = ReduceLROnPlateau(opt, **kw)
    lrs = []
    for v in values:
        sched.step(v)
        lrs.append(opt.param_groups[0]["lr"])
    # JSON has no NaN: a NaN metric (a diverged epoch) is written as null.
    values = [None if math.isnan(v) else v for v in values]
    return {"lr": lr, "values": values, **kw, "lrs_after": lrs}


def main():
    sgd = lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)  # noqa: E731
    sgd.__name__ = "sgd"
    adam = lambda p: torch.optim.Adam(p, lr=0.1)  # noqa: E731
    adam.__name__ = "adam"
    losses = [1.0, 0.8, 0.79, 0.795, 0.8, 0.81, 0.7, 0.7, 0.71, 0.72, 0.73, 0.74, 0.75, 0.76, float("nan"), 0.9]
    accs = [0.5, 0.6, 0.6, 0.6, 0.605, 0.61, 0.62, 0.62, 0.62, 0.62, 0.62, 0.62]
    out = {
        "torch": torch.__version__,
        "one_cycle_sgd": one_cycle(sgd, 23, 0.1),
        "one_cycle_adam": one_cycle(adam, 17, 0.02, pct_start=0.25, div_factor=10.0, final_div_factor=100.0,
                                    base_momentum=0.8, max_momentum=0.9),
        "one_cycle_fixed_momentum": one_cycle(sgd, 10, 0.05, cycle_momentum=False),
        "warm_cosine_5_of_20": warm_cosine(20, 5, 0.1),
        "warm_cosine_0_of_7": warm_cosine(7, 0, 0.3),
        "plateau_min_rel": plateau(losses, 0.1, mode="min", factor=0.5, patience=2, threshold=1e-2, cooldown=1,
                                   min_lr=0.02),
        "plateau_max_abs": plateau(accs, 0.01, mode="max", factor=0.1, patience=1, threshold=0.004,
                                   threshold_mode="abs"),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
