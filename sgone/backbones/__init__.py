"""ImageNet CNN backbones that return three feature levels at output stride 8.

`build_backbone(name, weights="auto")`: `weights="auto"` finds the ImageNet file (see
`sgone.backbones.weights`), a path loads that file, `None` keeps the random init.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from ..errors import SgoneError
from ..lazy import lookup
from .base import IMAGENET_MEAN, IMAGENET_STD, Backbone, freeze_batchnorm
from .dinov2 import DinoV2S14, dinov2_s14
from .joint import JointBackbone, dinov2_s14_mobilenet_v2
from .efficientnet import EfficientNetLite0, efficientnet_lite0
from .mobilenet import MobileNetV2, mobilenet_v2
from .resnet import ResNet50, resnet50
from .vgg import VGG16, vgg16
from .weights import find_weights, load_backbone_weights, read_state_dict

# name -> builder(**options) -> random-init Backbone
BACKBONES: dict[str, Callable[..., Backbone]] = {
    "vgg16": vgg16,
    "mobilenet_v2": mobilenet_v2,
    "efficientnet_lite0": efficientnet_lite0,
    "resnet50": resnet50,
    "dinov2_s14": dinov2_s14,
    # DINOv2 resized onto MobileNetV2's stride-8 grid, four levels (for PriorGuidedSGOne)
    "dinov2_s14+mobilenet_v2": dinov2_s14_mobilenet_v2,
}


def build_backbone(name: str, weights: str | Path | None = "auto", **options: Any) -> Backbone:
    """Build backbone `name` and load its ImageNet weights.

    weights: "auto" searches the explicit/installed/hub-cache places, a path loads that file
    (or a folder holding it), None keeps the random init. `options` go to the builder
    (e.g. `dilated=True` for vgg16, `output_stride=32` for the ImageNet layout).
    The loaded file's path is kept in `backbone.weights_path` (None for random init).
    """
    builder = lookup(BACKBONES, name, "backbone")
    accepted = inspect.signature(builder).parameters
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise SgoneError(f"{name}: unknown option(s) {', '.join(unknown)}; accepted: {', '.join(accepted) or 'none'}")
    backbone = builder(**options)
    backbone.weights_path = None
    if hasattr(backbone, "load_weights"):  # several files, some never in a state dict
        backbone.load_weights(weights)
        return backbone
    if weights is None:
        return backbone
    path = find_weights(name, None if (isinstance(weights, str) and weights == "auto") else weights)
    if hasattr(backbone, "load_file"):  # an ONNX file, not a state dict
        backbone.load_file(path)
    else:
        load_backbone_weights(backbone, read_state_dict(path), path)
    backbone.weights_path = path
    return backbone


__all__ = [
    "BACKBONES",
    "Backbone",
    "DinoV2S14",
    "EfficientNetLite0",
    "JointBackbone",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MobileNetV2",
    "ResNet50",
    "VGG16",
    "build_backbone",
    "dinov2_s14",
    "dinov2_s14_mobilenet_v2",
    "efficientnet_lite0",
    "find_weights",
    "freeze_batchnorm",
    "mobilenet_v2",
    "resnet50",
    "vgg16",
]
