"""Common base of the feature extractors: input normalisation, three taps at stride 8, BN freezing."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Put every BatchNorm layer of `module` in eval mode and stop its affine grads.

    One-shot: a later `module.train()` puts the layers back in train mode (the grads stay off).
    Use `Backbone.set_bn_frozen(True)` for a setting that survives `.train()`.
    """
    for m in module.modules():
        if isinstance(m, _BN_TYPES):
            m.eval()
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)
    return module


def dilated_layout(strides: Sequence[int], output_stride: int, high_stride: int, high_start: int,
                   stem_stride: int = 2) -> list[tuple[int, int]]:
    """(stride, dilation) of each block after a stem of `stem_stride`, given their nominal strides.

    DeepLab's rule: once the network is at `output_stride` (`high_stride` from block `high_start`,
    the high tap's first block, on), a block's stride is removed; it keeps the previous dilation
    and the blocks after it get the dilation multiplied by that stride.
    """
    layout, current, dilation = [], stem_stride, 1
    for index, stride in enumerate(strides):
        limit = max(high_stride, output_stride) if index >= high_start else output_stride
        if stride > 1 and current >= limit:
            layout.append((1, dilation))
            dilation *= stride
        else:
            layout.append((stride, dilation))
            current *= stride
    return layout


class Backbone(nn.Module):
    """An ImageNet CNN cut into three feature levels, all at output stride 8.

    `forward(x)` takes (B, 3, H, W) float images in [0, 1] and returns
    `[low, mid, high]`, each (B, C_i, ceil(H/8), ceil(W/8)) with C_i = `channels[i]`.
    `high_stride=16` (the dilated backbones) runs the deepest stage at stride 16, on every
    second position of the stride-8 grid, and upsamples its output bilinearly to stride 8:
    the same features where computed, a quarter of that stage's cost.
    Subclasses implement `extract(x_normalised) -> list[Tensor]` and, for the ImageNet
    sanity check, `_imagenet_head(state_dict) -> nn.Module` (high tap -> (B, 1000) logits).
    """

    name: str = "backbone"
    channels: tuple[int, int, int] = (0, 0, 0)
    # Keys of the ImageNet file that belong to the classifier, not to the three taps.
    classifier_prefixes: tuple[str, ...] = ()

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        output_stride: int = 8,
        high_stride: int = 8,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 32):
            raise ValueError(f"output_stride must be 8 or 32, not {output_stride}")
        if high_stride not in (8, 16) or (high_stride != 8 and output_stride != 8):
            raise ValueError(f"high_stride must be 8 or 16 (16 only with output_stride 8), not {high_stride}")
        self.output_stride = output_stride
        self.high_stride = high_stride
        # Not persistent: the ImageNet state dicts have no such keys, and strict loading stays exact.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.bn_frozen = False
        self.options: dict[str, Any] = {}
        self.weights_path: Any = None  # Path of the loaded ImageNet file, set by build_backbone

    @property
    def config(self) -> dict[str, Any]:
        """Enough to rebuild the architecture: `build_backbone(config["name"], None, **config["options"])`."""
        return {"name": self.name, "options": dict(self.options)}

    def normalize(self, x: Tensor) -> Tensor:
        """(B,3,H,W) in [0,1] -> the network's input scale."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B,3,H,W) in [0,1] -> [low, mid, high] at stride 8 (8/16/32 for output_stride=32)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        taps = self.extract(self.normalize(x))
        if self.high_stride > self.output_stride:
            taps[-1] = F.interpolate(taps[-1], size=taps[0].shape[-2:], mode="bilinear", align_corners=False)
        return taps

    def extract(self, x: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- BatchNorm freezing -------------------------------------------------------------
    def set_bn_frozen(self, frozen: bool = True) -> "Backbone":
        """Keep every BN layer in eval mode with no affine grads, also across `.train()` calls."""
        self.bn_frozen = frozen
        for m in self.modules():
            if isinstance(m, _BN_TYPES):
                for p in m.parameters(recurse=False):
                    p.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        if self.bn_frozen:
            for m in self.modules():
                if isinstance(m, _BN_TYPES):
                    m.eval()
        return self

    # --- ImageNet sanity check ----------------------------------------------------------
    def _imagenet_head(self, state_dict: Mapping[str, Tensor]) -> nn.Module:  # pragma: no cover
        raise NotImplementedError

    @torch.no_grad()
    def imagenet_logits(self, x: Tensor, state_dict: Mapping[str, Tensor]) -> Tensor:
        """(B,3,H,W) in [0,1] -> (B,1000) ImageNet logits, using the classifier keys of `state_dict`.

        Only a check that the loaded weights are right: the head is built on the fly from the
        ImageNet file's classifier weights and applied to the high tap.
        """
        head = self._imagenet_head(state_dict).to(x.device).eval()
        return head(self(x)[-1])


def _load_into(module: nn.Module, state_dict: Mapping[str, Tensor], prefix: str) -> nn.Module:
    """Load the keys under `prefix` into `module` (strict) and return it."""
    sub = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    module.load_state_dict(sub, strict=True)
    return module


# Attribute pairs (conv, its BatchNorm) in modules that call them one after the other in
# forward(): ResNet's bottlenecks and EfficientNet-Lite's blocks and stem.
_CONV_BN_ATTRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"), ("_conv_stem", "_bn0"),
                  ("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"),
                  ("_conv_head", "_bn1"))


@torch.no_grad()
def fuse_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm that directly follows a conv into that conv (in place).

    For inference only: the result computes the same function (up to float rounding) with one
    layer less per pair; BN layers are replaced by `nn.Identity`, so training it afterwards
    would train without BatchNorm. Returns `module`.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for parent in list(module.modules()):
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            for first, second in zip(names, names[1:]):
                conv, bn = parent._modules[first], parent._modules[second]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and not bn.training:
                    parent._modules[first] = fuse_conv_bn_eval(conv, bn)
                    parent._modules[second] = nn.Identity()
        for conv_name, bn_name in _CONV_BN_ATTRS:
            conv, bn = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and not bn.training:
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, nn.Identity())
    return module
