# runner export --format onnx: a TorchScript module of runner's to ONNX, with PyTorch's
# TorchScript-based exporter (libtorch has no exporter of its own). Run by runner as
#   python -c <this> MODEL_PT OUT BATCH SIDE SCALE
# SCALE: 255 for a module that takes 0-255 pixels, 1 for normalised input.
import sys
import warnings

try:
    import torch
    import onnx
except ImportError as e:
    sys.exit(f"ONNX export needs torch and onnx in this Python ({e}); pip install torch onnx")

traced, out, batch, side, scale = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
module = torch.jit.load(traced)
example = torch.rand(batch, 3, side, side) * scale
with warnings.catch_warnings():
    # The TorchScript exporter is the one that takes a ScriptModule; PyTorch says it is the
    # older of its two.
    warnings.simplefilter("ignore")
    torch.onnx.export(module, (example,), out, dynamo=False, input_names=["images"],
                      output_names=["logits"], opset_version=17)
onnx.checker.check_model(onnx.load(out))
