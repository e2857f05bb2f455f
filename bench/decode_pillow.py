#!/usr/bin/env python3
"""The Pillow side of the decode benchmark: what torchvision's ImageFolder +
Resize(256) + CenterCrop(224) does per image (open, convert to RGB, bilinear
resize with antialiasing of the shorter side to 256, center crop to 224, to a
uint8 array), on one core. Prints images/s.

Usage: python3 bench/decode_pillow.py DIR [--repeat N]
"""
import argparse
import pathlib
import time

import numpy as np
from PIL import Image


def load(path, resize=256, crop=224):
    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        scale = resize / min(w, h)
        img = img.resize((max(resize, round(w * scale)), max(resize, round(h * scale))), Image.BILINEAR)
        w, h = img.size
        left, top = (w - crop) // 2, (h - crop) // 2
        return np.asarray(img.crop((left, top, left + crop, top + crop)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    files = sorted(p for p in pathlib.Path(args.dir).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    best = 0.0
    for _ in range(args.repeat):
        start = time.perf_counter()
        for f in files:
            load(f)
        best = max(best, len(files) / (time.perf_counter() - start))
    print(f"pillow: {len(files)} images, {best:.1f} images/s on one core (best of {args.repeat})")


if __name__ == "__main__":
    main()
