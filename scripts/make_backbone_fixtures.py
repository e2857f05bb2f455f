#!/usr/bin/env python3
"""Reference logits of the torchvision backbones, for tests/fixtures/backbones.json.

No pretrained weights are needed: every state_dict entry is set from a formula
that the Rust test computes too, so the fixture stays small. For the k-th entry
in name order (num_batches_tracked left out), with j its flat element index and
b = sin(0.37 j + 0.11 k) in float64:

    running_var          1 + 0.25 b^2
    other 1-D `*.weight` 1 + 0.1 b          (BatchNorm scale)
    other 1-D            0.1 b              (biases, BatchNorm shift and mean)
    N-D                  2 b / sqrt(fan_in) (fan_in = numel / shape[0])

cast to float32. Inputs: x[n,c,h,w] = float32(2 sin(0.05 h (c+1) + 0.03 w + 1.3 n)),
batch 2 at 64x64 (56x56 for DINOv2's 14-pixel patches). Eval mode. The fixture keeps every
10th logit, the top 5 classes, and a digest of the sorted "name shape" listing.

DINOv2's reference is timm's `vit_small_patch14_dinov2` / `vit_base_patch14_dinov2` (the
same modules and names as Meta's release, less the pretraining-only `mask_token`, which is
added to the listing as Meta's checkpoints hold it) with a new 1000-way `head`. The position
embeddings (stored for 518 px) are resized as Meta's `interpolate_pos_encoding` does with
the released models' settings (F.interpolate, bicubic, scale factor (grid + 0.1) / 37, no
antialiasing); the fixture also keeps DINOv2's pooled features (class token and mean patch
token after the final norm) and its resized position embeddings at two sizes.

Needs torch, torchvision and timm (any recent versions). Usage:
    python3 scripts/make_backbone_fixtures.py > tests/fixtures/backbones.json
"""
import hashlib
import json
import math
import sys

import timm
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.vision_transformer import interpolate_embeddings

BACKBONES = ["resnet18", "resnet34", "resnet50", "mobilenet_v2", "vgg16", "vgg16_bn", "convnext_tiny", "convnext_small", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_v2_s", "vit_b_16", "regnet_y_800mf"]
DINOV2 = {"dinov2_vits14": "vit_small_patch14_dinov2", "dinov2_vitb14": "vit_base_patch14_dinov2"}


def formula_state(model, extra=None):
    state = dict(model.state_dict(), **(extra or {}))
    names = sorted(n for n in state if not n.endswith("num_batches_tracked"))
    out = {}
    for k, name in enumerate(names):
        t = state[name]
        j = torch.arange(t.numel(), dtype=torch.float64)
        b = torch.sin(0.37 * j + 0.11 * k)
        if name.endswith("running_var"):
            v = 1 + 0.25 * b * b
        elif t.dim() == 1 and name.endswith("weight"):
            v = 1 + 0.1 * b
        elif t.dim() == 1:
            v = 0.1 * b
        else:
            v = b * 2 / math.sqrt(t.numel() // t.shape[0])
        out[name] = v.to(torch.float32).reshape(t.shape)
    listing = "".join(f"{n} {list(state[n].shape)}\n" for n in names)
    return out, hashlib.sha256(listing.encode()).hexdigest(), len(names)


def logits_entry(count, digest, logits):
    """A fixture entry: the state_dict's size and digest, and a sample of the logits."""
    return {
        "entries": count,
        "names_sha256": digest,
        "top5": logits.topk(5, dim=1).indices.tolist(),
        "max_abs": float(f"{logits.abs().max().item():.7g}"),
        "every_10th": [[float(f"{v:.7g}") for v in row[::10]] for row in logits.tolist()],
    }


def positions_entry(pos):
    """Resized position embeddings: their shape and every 97th value."""
    pos = pos.double()
    return {"shape": list(pos.shape), "every_97th": [float(f"{v:.7g}") for v in pos.flatten()[::97].tolist()]}


def inputs(batch, size):
    h = torch.arange(size, dtype=torch.float64).view(size, 1)
    w = torch.arange(size, dtype=torch.float64).view(1, size)
    x = torch.stack([torch.stack([2 * torch.sin(0.05 * h * (c + 1) + 0.03 * w + 1.3 * n) for c in range(3)])
                     for n in range(batch)])
    return x.to(torch.float32)


def dinov2_positions(pos, grid):
    """Meta's interpolate_pos_encoding (interpolate_offset 0.1, interpolate_antialias False)."""
    old = int(math.sqrt(pos.shape[1] - 1))
    patches = pos[:, 1:].float().reshape(1, old, old, -1).permute(0, 3, 1, 2)
    scale = (grid + 0.1) / old
    patches = F.interpolate(patches, scale_factor=(scale, scale), mode="bicubic", antialias=False)
    assert patches.shape[-2:] == (grid, grid)
    return torch.cat([pos[:, :1], patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


def dinov2(timm_name, x):
    model = timm.create_model(timm_name, pretrained=False, num_classes=1000)
    dim = model.embed_dim
    state, digest, count = formula_state(model, {"mask_token": torch.zeros(1, dim)})
    state.pop("mask_token")  # in the digest, as Meta's checkpoints hold it; timm has no such variable
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        n, grid = x.shape[0], x.shape[-1] // 14
        t = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat([model.cls_token.expand(n, -1, -1), t], dim=1) + dinov2_positions(model.pos_embed, grid)
        t = model.norm(model.blocks(t))
        features = torch.cat([t[:, 0], t[:, 1:].mean(dim=1)], dim=1).double()
        logits = model.head(t[:, 0]).double()
    entry = logits_entry(count, digest, logits)
    entry["cls_mean_max_abs"] = float(f"{features.abs().max().item():.7g}")
    entry["cls_mean_every_7th"] = [[float(f"{v:.7g}") for v in row[::7]] for row in features.tolist()]
    positions = {str(size): positions_entry(dinov2_positions(model.pos_embed, size // 14)) for size in (56, 98)}
    return entry, positions


def main():
    torch.set_num_threads(1)
    x = inputs(2, 64)
    lines = []
    for name in BACKBONES:
        model = getattr(torchvision.models, name)(weights=None)
        state, digest, count = formula_state(model)
        if name == "vit_b_16":
            # Built for 224 px (what the names-and-shapes digest and runner see), run at 64 px
            # with the position embeddings resized by torchvision's interpolate_embeddings.
            state = interpolate_embeddings(64, 16, state)
            model = torchvision.models.vit_b_16(weights=None, image_size=64)
        model.load_state_dict(state, strict=False)  # num_batches_tracked keeps its default
        model.eval()
        with torch.no_grad():
            logits = model(x).double()
        entry = logits_entry(count, digest, logits)
        lines.append(f' {json.dumps(name)}: {json.dumps(entry)}')
    # ViT's position embeddings (from the formula) resized to two grids, every 97th value.
    vit = torchvision.models.vit_b_16(weights=None)
    state, _, _ = formula_state(vit)
    resized = {str(size): positions_entry(interpolate_embeddings(size, 16, dict(state))["encoder.pos_embedding"])
               for size in (96, 128)}
    lines.append(f' "vit_b_16_positions": {json.dumps(resized)}')
    for name, timm_name in DINOV2.items():
        entry, positions = dinov2(timm_name, inputs(2, 56))
        lines.append(f' {json.dumps(name)}: {json.dumps(entry)}')
        lines.append(f' {json.dumps(name + "_positions")}: {json.dumps(positions)}')
    meta = {"torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
            "batch": 2, "size": 64, "dinov2_size": 56}
    sys.stdout.write('{\n "meta": ' + json.dumps(meta) + ",\n" + ",\n".join(lines) + "\n}\n")


if __name__ == "__main__":
    main()
