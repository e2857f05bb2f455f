#!/usr/bin/env python3
"""PyTorch's numbers for the fine-tuning toolkit's keys, for tests/fixtures/toolkit.json.

Every input is a formula (no random numbers), so the Rust unit tests that read the
fixture rebuild the same inputs and compare what runner computes with what PyTorch
computed here:

- loss: torch.nn.functional.cross_entropy with label_smoothing and per-class weights
  on logits[i][j] = 2 sin(0.7 i + 1.3 j), labels i mod 4;
- clip: torch.nn.utils.clip_grad_norm_ on two gradients g_k[j] = cos(0.9 j + k);
- layer_lr: torch.optim.RMSprop with one param group per layer at lr * decay^(L - i)
  (the head at lr * head_lr_factor), three steps on f = sum_k sum(c_k * w_k^2);
- gradual: torch.optim.Adam on w0 for two steps, then w1 joins (add_param_group, fresh
  state, its own step count), two more steps, on f = sum(c_k * w_k^2);
- ema: timm's ModelEmaV2 update (shadow.lerp_(w, 1 - decay)) after each of six steps
  of weights w_t[j] = sin(0.5 t + j), with ModelEmaV3's warm-up decay
  min(decay, 1 - (1 + (t - 1))^(-2/3)), 0 at the first update;
- mixup / cutmix: torchvision.transforms.v2.MixUp and CutMix on the batch
  x[n, c, h, w] = sin(0.3 (n + 1) + 0.2 c + 0.1 h + 0.05 w) (4 x 3 x 6 x 8), labels
  [0, 2, 1, 2], 3 classes, with their random draws (lam, the box centre) fixed.

Needs torch (and torchvision for the mixing cases).
- accumulation: SGD (momentum 0.9) on a linear layer W[i][j] = 0.1 sin(i + 2 j) (3 -> 2,
  no bias), five batches of two inputs x[b][k][j] = cos(b + 0.5 k + j), labels (b + k) mod 2,
  accumulated two at a time (each loss divided by 2; the last group of one steps alone);
- tta: the log of the softmax averaged over two views' logits a[i][j] = sin(i + j),
  b[i][j] = cos(2 i - j);
- head_init: torch.nn.Linear(1280, 10)'s weight bound and standard deviation (seeded);
- random_erasing: torchvision's RandomErasing(p = 1) on a 3 x 20 x 24 image of ones, 4000
  seeded draws: the mean and standard deviation of the share of the image erased;
- augment_ops: torchvision.transforms.autoaugment._apply_op (what TrivialAugmentWide and
  RandAugment call; nearest interpolation, no fill) on the uint8 image
  x[c, h, w] = (37 c + 11 h + 7 w + (h w mod 13) 9) mod 256 (3 x 20 x 24), for each
  operation at a few signed magnitudes; hue: F.adjust_hue on the same image.

The augment_ops and hue sections are not committed: nearest-neighbour sampling rounds a
coordinate computed in float32, and on coordinates that fall on a pixel's edge the processor's
instruction paths decide the pixel (ShearY -0.2 differs in 15 of 1440 pixels between an Intel
and an AMD machine, for torchvision itself). The unit test runs this script with --pixels in the
test command's PyTorch (the torch venv of scripts/env.sh) on the machine under test, and
compares runner's pixels with those, exactly.

Usage:
    python3 scripts/make_toolkit_fixtures.py > tests/fixtures/toolkit.json
    python3 scripts/make_toolkit_fixtures.py --pixels     # augment_ops and hue, for this machine
"""
import json
import math
import sys

import torch
import torch.nn.functional as F


def loss_cases():
    logits = torch.tensor([[2 * math.sin(0.7 * i + 1.3 * j) for j in range(4)] for i in range(6)], dtype=torch.float64)
    labels = torch.tensor([i % 4 for i in range(6)])
    cases = []
    for smoothing in [0.0, 0.1, 0.3]:
        for weights in [None, [0.5, 1.0, 2.0, 1.5]]:
            w = None if weights is None else torch.tensor(weights, dtype=torch.float64)
            loss = F.cross_entropy(logits, labels, weight=w, label_smoothing=smoothing)
            cases.append({"label_smoothing": smoothing, "weights": weights, "loss": loss.item()})
    return {"cases": cases}


def clip_case():
    grads = [[math.cos(0.9 * j + k) for j in range(5)] for k in range(2)]
    params = [torch.zeros(5, dtype=torch.float64, requires_grad=True) for _ in grads]
    for p, g in zip(params, grads):
        p.grad = torch.tensor(g, dtype=torch.float64)
    total = torch.nn.utils.clip_grad_norm_(params, max_norm=0.5)
    return {"max_norm": 0.5, "total_norm": total.item(), "clipped": [p.grad.tolist() for p in params]}


def layer_lr_case():
    layers, lr, decay, head_factor = 3, 0.01, 0.5, 3.0
    # Parameters of layers 0, 1, 2 and the head (index 3).
    w = [torch.tensor([1.0 + 0.1 * k, -0.5, 0.25 * k], dtype=torch.float64, requires_grad=True) for k in range(4)]
    c = [torch.tensor([1.0, 2.0 + k, 0.5], dtype=torch.float64) for k in range(4)]
    scales = [decay ** (layers - i) for i in range(layers)] + [head_factor]
    opt = torch.optim.RMSprop([{"params": [p], "lr": lr * s} for p, s in zip(w, scales)], lr=lr)
    for _ in range(3):
        opt.zero_grad()
        sum((ck * wk * wk).sum() for ck, wk in zip(c, w)).backward()
        opt.step()
    return {"layers": layers, "lr": lr, "layer_decay": decay, "head_lr_factor": head_factor,
            "scales": scales, "after_3_steps": [p.tolist() for p in w]}


def gradual_case():
    w = [torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64, requires_grad=True),
         torch.tensor([0.3, 0.8, -1.2], dtype=torch.float64)]  # frozen until it joins
    c = [torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64), torch.tensor([0.5, 1.5, 3.0], dtype=torch.float64)]
    opt = torch.optim.Adam([w[0]], lr=0.1)
    for step in range(4):
        if step == 2:
            w[1].requires_grad_(True)
            opt.add_param_group({"params": [w[1]]})
        opt.zero_grad()
        sum((ck * wk * wk).sum() for ck, wk in zip(c, w)).backward()
        opt.step()
    return {"lr": 0.1, "joins_before_step": 3, "after_4_steps": [p.tolist() for p in w]}


def ema_case():
    decay = 0.9
    weights = [[math.sin(0.5 * t + j) for j in range(4)] for t in range(7)]
    out = {}
    for warmup in [False, True]:
        shadow = torch.tensor(weights[0], dtype=torch.float64)
        trail = []
        for t in range(1, 7):
            step = t - 1
            d = decay if not warmup else (0.0 if step <= 0 else min(decay, 1 - (1 + step) ** (-2 / 3)))
            shadow.lerp_(torch.tensor(weights[t], dtype=torch.float64), 1 - d)
            trail.append(shadow.tolist())
        out["warmup" if warmup else "plain"] = trail
    return {"decay": decay, "weights": weights, **out}


def mixing_batch():
    x = torch.tensor([[[[math.sin(0.3 * (n + 1) + 0.2 * c + 0.1 * h + 0.05 * w) for w in range(8)]
                        for h in range(6)] for c in range(3)] for n in range(4)], dtype=torch.float32)
    return x, torch.tensor([0, 2, 1, 2])


class Fixed:
    """Stands in for a torch.distributions.Beta: always draws lam."""

    def __init__(self, lam):
        self.lam = lam

    def sample(self, *args):
        return torch.tensor(self.lam)


def mixup_case():
    from torchvision.transforms import v2

    x, y = mixing_batch()
    mix = v2.MixUp(alpha=1.0, num_classes=3)
    mix._dist = Fixed(0.7)
    images, targets = mix(x, y)
    return {"lam": 0.7, "images": images.flatten().tolist(), "targets": targets.flatten().tolist()}


def cutmix_cases():
    from torchvision.transforms import v2

    x, y = mixing_batch()
    out = []
    for lam, rx, ry in [(0.6, 3, 2), (0.3, 0, 5), (0.9, 7, 1)]:
        mix = v2.CutMix(alpha=1.0, num_classes=3)
        mix._dist = Fixed(lam)
        draws = iter([torch.tensor([rx]), torch.tensor([ry])])
        randint = torch.randint
        torch.randint = lambda *a, **k: next(draws)  # the box centre, x then y, as CutMix draws it
        try:
            images, targets = mix(x, y)
        finally:
            torch.randint = randint
        out.append({"lam": lam, "rx": rx, "ry": ry, "images": images.flatten().tolist(),
                    "targets": targets.flatten().tolist()})
    return out


def accumulation_case():
    w = torch.tensor([[0.1 * math.sin(i + 2 * j) for j in range(3)] for i in range(2)], dtype=torch.float64,
                     requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    batches = [(torch.tensor([[math.cos(b + 0.5 * k + j) for j in range(3)] for k in range(2)], dtype=torch.float64),
                torch.tensor([(b + k) % 2 for k in range(2)])) for b in range(5)]
    k = 2
    for start in range(0, len(batches), k):
        opt.zero_grad()
        for x, y in batches[start:start + k]:
            (F.cross_entropy(x @ w.T, y) / k).backward()
        opt.step()
    return {"k": k, "after": w.detach().flatten().tolist()}


def tta_case():
    a = torch.tensor([[math.sin(i + j) for j in range(4)] for i in range(3)], dtype=torch.float64)
    b = torch.tensor([[math.cos(2 * i - j) for j in range(4)] for i in range(3)], dtype=torch.float64)
    return {"log_mean_softmax": torch.stack([a.softmax(-1), b.softmax(-1)]).mean(0).log().flatten().tolist()}


def head_init_case():
    torch.manual_seed(0)
    w = torch.nn.Linear(1280, 10).weight.detach()
    return {"fan_in": 1280, "bound": 1 / math.sqrt(1280), "max_abs": w.abs().max().item(), "std": w.std().item()}


def erasing_case():
    from torchvision import transforms as T

    torch.manual_seed(0)
    erase = T.RandomErasing(p=1.0)
    shares = torch.tensor([(erase(torch.ones(3, 20, 24)) == 0).float().mean().item() for _ in range(4000)])
    return {"draws": 4000, "mean_share": shares.mean().item(), "std_share": shares.std().item()}


def augment_cases():
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF
    from torchvision.transforms.autoaugment import _apply_op

    x = torch.tensor([[[(37 * c + 11 * h + 7 * w + (h * w % 13) * 9) % 256 for w in range(24)] for h in range(20)]
                      for c in range(3)], dtype=torch.uint8)
    cases = [("Identity", 0.0), ("ShearX", 0.3), ("ShearX", -0.66), ("ShearY", 0.5), ("ShearY", -0.2),
             ("TranslateX", 5.7), ("TranslateX", -12.0), ("TranslateY", 3.0), ("TranslateY", -8.4),
             ("Rotate", 30.0), ("Rotate", -90.0), ("Rotate", 13.5),
             ("Brightness", 0.5), ("Brightness", -0.33), ("Color", 0.8), ("Color", -0.6),
             ("Contrast", 0.7), ("Contrast", -0.5), ("Sharpness", 0.9), ("Sharpness", -0.9),
             ("Posterize", 3.0), ("Posterize", 6.0), ("Solarize", 128.0), ("Solarize", 17.0),
             ("AutoContrast", 0.0), ("Equalize", 0.0)]
    ops = [{"op": op, "magnitude": m,
            "pixels": _apply_op(x, op, m, interpolation=InterpolationMode.NEAREST, fill=None).flatten().tolist()}
           for op, m in cases]
    hue = [{"factor": f, "pixels": TF.adjust_hue(x, f).flatten().tolist()} for f in [0.1, -0.25, 0.45]]
    return ops, hue


def main():
    if sys.argv[1:] == ["--pixels"]:
        ops, hue = augment_cases()
        print(json.dumps({"torch": torch.__version__, "augment_ops": ops, "hue": hue}, separators=(",", ":")))
        return
    print(json.dumps({"torch": torch.__version__, "loss": loss_cases(), "clip": clip_case(),
                      "layer_lr": layer_lr_case(), "gradual": gradual_case(), "ema": ema_case(), "mixup": mixup_case(),
                      "cutmix": cutmix_cases(), "accumulation": accumulation_case(),
                      "tta": tta_case(), "head_init": head_init_case(), "random_erasing": erasing_case()},
                     separators=(",", ":")))


if __name__ == "__main__":
    main()
