"""Every choice the user makes by name, and the defaults, in one torch-free module.

The CLI builds its flags and help strings from these, the app its menus, and the library checks
its arguments against them; importing this module imports nothing heavy, so `sgone --help`
stays instant. Video modes live in `sgone.video.options` beside the trackers.
"""
from __future__ import annotations

# the longer image side fed to the network, aspect kept (as the paper's 473 x 473 crops)
DEFAULT_SIZE = 473
DEFAULT_THRESHOLD = 0.5

# k-shot fusion (`sgone.ops.fuse_shots`): average the support prototypes, the union of the k
# one-shot masks, or pixels with at least half the top vote
FUSIONS = ("avg", "max", "vote")
DEFAULT_FUSION = "avg"

# runtime name -> the module that loads a model for it (`sgone.runtimes`); strings, so naming a
# runtime imports nothing
RUNTIMES: dict[str, str] = {
    # the installed runtime measured fastest for the model on this kind of CPU (`sgone.runtimes.auto_runtime`'s
    # table); PyTorch on a CUDA device
    "auto": "sgone.runtimes.auto_runtime",
    "torch": "sgone.runtimes.torch_runtime",
    "onnx": "sgone.runtimes.onnx_runtime",  # ONNX Runtime on the CPU (a core dependency)
    "openvino": "sgone.runtimes.openvino_runtime",  # OpenVINO on the CPU (extra: pip install "sgone[openvino]")
}
DEFAULT_RUNTIME = "auto"

# what the runtime computes in: "auto" = the model as it ships (the default model's DINOv2 in int8, the
# rest fp32); fp32 everywhere; bf16 (OpenVINO on a CPU with AVX-512 BF16 or AMX). No other int8: a static
# int8 DINOv2 under OpenVINO was no faster than the shipped one (benchmarks/dinov2_int8.py). Only the
# shipped precision is a default until another passes the accuracy rule of issue 24 (<= 0.5 mIoU on the
# held-out folds, <= 1.0 on the photo checks)
PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_PRECISION = "auto"

# the step from the stride-8 grid to the image's pixels: "none" = bilinear only (default); "guided" =
# bilinear, then a guided filter on the image's grey levels (`sgone.boundary.refine_probability`, its
# window per model: `boundary_settings`): +1.4 mIoU on held-out classes for prototype-mobilenet_v2 at 473
# px but worse at small input sizes; +0.5 on the default's held-out folds (+0.25 on folds 1-3), under the
# +1.0 that a default needs (docs/results.md, "Small objects"), so it is not the default
BOUNDARIES = ("none", "guided")
DEFAULT_BOUNDARY = "none"

DEFAULT_DEVICE = "auto"
DEVICES_HELP = f"cpu, cuda, cuda:N or auto (default {DEFAULT_DEVICE}: cuda if available)"

# what a command does with an input file it cannot read: stop before writing anything, or skip it
ON_BAD_INPUT = ("stop", "skip")

# model names (the name -> config table is `sgone.models.zoo.MODELS`)
# SG-One trained on real photos, on DINOv2 + MobileNetV2 features (shipped checkpoint, head_weight 0.25, DINOv2 in
# int8): 9.0 mIoU above the training-free model on held-out classes and better on each photo check
# (docs/results.md, "The default model"); the default of `segment`, `Predictor()`, `demo`, `app`, `export`
DEFAULT_MODEL = "sgone-dinov2_s14-mobilenet_v2-real"
# the training-free model: 4.7x faster than the default, needs only MobileNetV2's ImageNet file; the
# default of `sgone video` and `sgone evaluate`, and the baseline of the benchmarks
TRAINING_FREE_MODEL = "prototype-mobilenet_v2"
DEFAULT_MODEL_HELP = (f"{DEFAULT_MODEL}, SG-One trained on real photos on DINOv2 + MobileNetV2 features; "
                      f"{TRAINING_FREE_MODEL}, the training-free model, is about 5x faster")

# a query or frame smaller than this (either side, in pixels) is segmented with a warning: its
# few stride-8 cells rarely hold the object
SMALL_INPUT = 16

