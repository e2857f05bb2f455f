#!/usr/bin/env python3
"""Reference numbers for runner's optimizers beyond the four, and for the weight-decay
exclusion, for tests/fixtures/optimizers.json.

Every input is a formula (no random numbers): a "weight" matrix W[i][j] = sin(i + 0.5 j)
(3 x 4) and a "bias" vector b[j] = cos(0.7 j) (4), five steps on
f = sum(C * W^2) + sum(d * b^3 / 3), C[i][j] = 1 + 0.1 (i + j), d[j] = 0.5 + 0.25 j,
in float64. Each case records the parameters after the five steps.

- adamw_exclusion: torch.optim.AdamW(lr 0.05, weight_decay 0.1) with the bias in a param
  group of weight_decay 0 (timm's param_groups_weight_decay, fastai's wd_bn_bias=False:
  1-d parameters, biases and normalisation weights, are not decayed);
- sgd_exclusion: torch.optim.SGD(lr 0.05, momentum 0.9, weight_decay 0.1), the same groups;
- lion: the Lion update of Chen et al. 2023 ("Symbolic Discovery of Optimization
  Algorithms", Algorithm 2), written out below (PyTorch ships no Lion): lr 0.01, betas
  (0.9, 0.99), decoupled weight decay 0.1 on the weight only;
- lamb: the LAMB update of You et al. 2019 ("Large Batch Optimization for Deep Learning",
  Algorithm 2) with Adam's bias correction, written out below: lr 0.05, betas (0.9, 0.999),
  eps 1e-6, weight decay 0.01 on the weight only, the trust ratio ||w|| / ||update|| (1 when
  either norm is 0) on every parameter.

Usage:
    python3 scripts/make_optimizer_fixtures.py > tests/fixtures/optimizers.json
"""
import json
import math

import torch

STEPS = 5


def params():
    w = torch.tensor([[math.sin(i + 0.5 * j) for j in range(4)] for i in range(3)], dtype=torch.float64)
    b = torch.tensor([math.cos(0.7 * j) for j in range(4)], dtype=torch.float64)
    return w.requires_grad_(True), b.requires_grad_(True)


def loss(w, b):
    c = torch.tensor([[1 + 0.1 * (i + j) for j in range(4)] for i in range(3)], dtype=torch.float64)
    d = torch.tensor([0.5 + 0.25 * j for j in range(4)], dtype=torch.float64)
    return (c * w * w).sum() + (d * b ** 3 / 3).sum()


def torch_case(make):
    w, b = params()
    opt = make(w, b)
    for _ in range(STEPS):
        opt.zero_grad()
        loss(w, b).backward()
        opt.step()
    return {"weight": w.tolist(), "bias": b.tolist()}


def lion_case(lr=0.01, beta1=0.9, beta2=0.99, wd=0.1):
    w, b = params()
    state = {"w": torch.zeros_like(w), "b": torch.zeros_like(b)}
    for _ in range(STEPS):
        w.grad = b.grad = None
        loss(w, b).backward()
        with torch.no_grad():
            for name, p, decay in [("w", w, wd), ("b", b, 0.0)]:
                m = state[name]
                c = beta1 * m + (1 - beta1) * p.grad
                p.mul_(1 - lr * decay)
                p.add_(torch.sign(c), alpha=-lr)
                m.mul_(beta2).add_(p.grad, alpha=1 - beta2)
    return {"lr": lr, "betas": [beta1, beta2], "weight_decay": wd, "weight": w.tolist(), "bias": b.tolist()}


def lamb_case(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-6, wd=0.01):
    w, b = params()
    state = {n: (torch.zeros_like(p), torch.zeros_like(p)) for n, p in [("w", w), ("b", b)]}
    for t in range(1, STEPS + 1):
        w.grad = b.grad = None
        loss(w, b).backward()
        with torch.no_grad():
            for name, p, decay in [("w", w, wd), ("b", b, 0.0)]:
                m, v = state[name]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                update = (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + eps) + decay * p
                w_norm, u_norm = p.norm(), update.norm()
                trust = (w_norm / u_norm).item() if w_norm > 0 and u_norm > 0 else 1.0
                p.add_(update, alpha=-lr * trust)
    return {"lr": lr, "betas": [beta1, beta2], "eps": eps, "weight_decay": wd, "weight": w.tolist(),
            "bias": b.tolist()}


def main():
    groups = lambda w, b, wd: [{"params": [w], "weight_decay": wd}, {"params": [b], "weight_decay": 0.0}]
    out = {
        "torch": torch.__version__,
        "steps": STEPS,
        "adamw_exclusion": torch_case(lambda w, b: torch.optim.AdamW(groups(w, b, 0.1), lr=0.05)),
        "adamw_everything": torch_case(lambda w, b: torch.optim.AdamW([w, b], lr=0.05, weight_decay=0.1)),
        "sgd_exclusion": torch_case(lambda w, b: torch.optim.SGD(groups(w, b, 0.1), lr=0.05, momentum=0.9)),
        "lion": lion_case(),
        "lamb": lamb_case(),
    }
    print(json.dumps(out, separators=(",", ":")))


if __name__ == "__main__":
    main()
