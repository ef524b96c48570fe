"""DINOv2 for *what*, MobileNetV2 for *where*, as one backbone for a trainable head.

`JointBackbone.forward` returns four levels on the detail CNN's stride-8 grid:
`[semantic, low, mid, high]`: the DINOv2 patch features resized bilinearly from the 14-px patch
grid, then the CNN's three levels. One grid for all levels lets the feature cache, the training
crops and flips and the head treat them alike (`PriorGuidedSGOne` reads a 4-level backbone as
"semantic level first").
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .dinov2 import DinoV2S14


class JointBackbone(nn.Module):
    """semantic (DINOv2) + detail (a stride-8 CNN) -> [semantic, low, mid, high], each (B,C,ceil(H/8),ceil(W/8))."""

    def __init__(self, semantic: DinoV2S14, detail: nn.Module) -> None:
        super().__init__()
        self.semantic, self.detail = semantic, detail
        self.name = f"{semantic.name}+{detail.name}"
        self.options = {"semantic": dict(semantic.options), "detail": dict(detail.options)}
        self.channels = (semantic.channels[0], *detail.channels)
        self.weights_path: Any = None

    def load_weights(self, weights: str | Path | None) -> None:
        """"auto": both files found offline; a path: the DINOv2 ONNX file (MobileNetV2 found offline);
        None: the DINOv2 file only (found offline: it is never part of a state dict, so a checkpoint
        that holds the CNN's weights still needs it)."""
        from .weights import find_weights, load_backbone_weights, read_state_dict

        explicit = None if weights is None or (isinstance(weights, str) and weights == "auto") else weights
        self.semantic.load_file(find_weights(self.semantic.name, explicit))
        if weights is not None:
            path = find_weights(self.detail.name)
            load_backbone_weights(self.detail, read_state_dict(path), path)
        self.weights_path = self.semantic.onnx_path

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B,3,H,W) in [0,1] -> [semantic (B,384,h,w), low, mid, high] on the detail's stride-8 grid."""
        levels = list(self.detail(x))
        semantic = self.semantic(x)[0]
        semantic = F.interpolate(semantic, size=levels[0].shape[-2:], mode="bilinear", align_corners=False)
        return [semantic, *levels]


def dinov2_s14_mobilenet_v2(high_stride: int = 16, resolution: int = 448, tile_stride: int = 112,
                            block: int = 9, precision: str = "fp32") -> JointBackbone:
    """DINOv2 ViT-S/14 (options of `dinov2_s14`) + MobileNetV2 at output stride 8 (`high_stride`)."""
    from .dinov2 import dinov2_s14
    from .mobilenet import mobilenet_v2

    return JointBackbone(dinov2_s14(resolution=resolution, tile_stride=tile_stride, block=block, precision=precision),
                         mobilenet_v2(high_stride=high_stride))


__all__ = ["JointBackbone", "dinov2_s14_mobilenet_v2"]
