#!/usr/bin/env python3
"""Small real torch.save files for the weights-reader tests:
tests/fixtures/tiny_zip.pth (the zip format, torch >= 1.6 default) and
tests/fixtures/tiny_legacy.pth (the legacy format, as the efficientnet-lite0
weights are stored). Both hold the same state_dict, values from arange:

    conv.weight  float32 [2, 1, 2, 2] = arange(8) / 8
    bn.running_mean float32 [2] = [0.5, -0.5]
    bn.num_batches_tracked int64 [] = 7
    fc.weight    float32 [3, 2], a transposed (non-contiguous) view of arange(6) - 2.5
Usage: python3 scripts/make_pickle_fixtures.py tests/fixtures
"""
import collections
import sys

import torch

out = sys.argv[1]
sd = collections.OrderedDict()
sd["conv.weight"] = (torch.arange(8, dtype=torch.float32) / 8).reshape(2, 1, 2, 2)
sd["bn.running_mean"] = torch.tensor([0.5, -0.5])
sd["bn.num_batches_tracked"] = torch.tensor(7)
sd["fc.weight"] = (torch.arange(6, dtype=torch.float32) - 2.5).reshape(2, 3).t()
torch.save(sd, f"{out}/tiny_zip.pth")
torch.save(sd, f"{out}/tiny_legacy.pth", _use_new_zipfile_serialization=False)
