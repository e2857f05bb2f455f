#!/usr/bin/env python3
"""A small classification set of real photographs, for accuracy comparisons (bench/compare.py --dataset).

The photographs are the ones scikit-image ships in its wheel (the astronaut, the
cameraman, Chelsea the cat, a coffee cup, coins, a motorcycle, a rocket, and the
brick, grass and gravel textures): nothing synthetic and nothing downloaded but the
package. Each class is one photograph; each image a random square crop of it (a
side of 56-160 px, so anything from a detail to a wide view), resized to --size px
and saved as PNG. Crops from a photo's left 70% go to train/, from its right 30%
to val/, so no validation pixel was seen in training.

    ~/.cache/runner/torch-venv/bin/pip install scikit-image
    ~/.cache/runner/torch-venv/bin/python bench/real_photos.py --out datasets/real_photos
"""
import argparse
import pathlib

import numpy as np
from PIL import Image
from skimage import data

PHOTOS = ["astronaut", "brick", "camera", "cat", "coffee", "coins", "grass", "gravel", "motorcycle", "rocket"]


def photo(name):
    img = {"cat": data.chelsea, "motorcycle": lambda: data.stereo_motorcycle()[0]}.get(name, getattr(data, name, None))()
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return Image.fromarray(img[..., :3].astype(np.uint8))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=int, default=50, help="train images per class")
    ap.add_argument("--val", type=int, default=30, help="validation images per class")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    out = pathlib.Path(a.out)
    for cls in PHOTOS:
        img = photo(cls)
        w, h = img.size
        cut = int(w * 0.7)
        for split, n, (x0, x1) in [("train", a.train, (0, cut)), ("val", a.val, (cut, w))]:
            folder = out / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                side = int(rng.integers(56, min(160, x1 - x0, h) + 1))
                x = int(rng.integers(x0, x1 - side + 1))
                y = int(rng.integers(0, h - side + 1))
                crop = img.crop((x, y, x + side, y + side)).resize((a.size, a.size), Image.BICUBIC)
                crop.save(folder / f"{cls}_{i:03d}.png")
    print(f"{out}: {len(PHOTOS)} classes, {a.train} train + {a.val} val images each, {a.size} px")


if __name__ == "__main__":
    main()
