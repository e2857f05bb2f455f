#!/usr/bin/env python3
"""The 1000 ImageNet-1k class names in index order, one per line, as torchvision lists them
for its pretrained classifiers (the order of every ImageNet head runner loads).

Needs torchvision. Usage:
    python3 scripts/make_imagenet_classes.py > src/predict/imagenet_classes.txt
"""
import sys

from torchvision.models._meta import _IMAGENET_CATEGORIES

assert len(_IMAGENET_CATEGORIES) == 1000
sys.stdout.write("".join(name + "\n" for name in _IMAGENET_CATEGORIES))
