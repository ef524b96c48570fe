"""EfficientNet-Lite0 with the state-dict keys of the `efficientnet-lite-pytorch` port, at stride 8.

Keys: `_conv_stem`, `_bn0`, `_blocks.N._expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2`
(no `_expand_conv` in block 0), and the classifier part `_conv_head`, `_bn1`, `_fc`.
Lite: ReLU6 everywhere, no squeeze-excitation, stem (32) and head (1280) not scaled.
BatchNorm eps 1e-3 and momentum 0.01 (TF's 0.99), as the weights were trained with.

Padding: the port (like TF) uses "same" padding: total (out-1)*s + (k-1)*d + 1 - in, split
floor/ceil, i.e. one more pixel at the bottom/right when the total is odd. For stride 1 that
total is (k-1)*d, always even, so plain symmetric padding is identical; only the stride-2
convs (stem, blocks 1 and 3 here) pad dynamically, so any input size gets TF's padding. (The
port's `from_pretrained` fixes the padding for 224x224 inputs; for those it is the same.)

Input: the Lite models were trained with inception-style scaling, (x*255 - 127) / 128
(TF `efficientnet_lite_builder.py`: MEAN_RGB 127, STDDEV_RGB 128), not ImageNet mean/std.

Stride 8: blocks 5 and 11 lose their stride 2 (the DeepLab rule: that block keeps the previous
dilation, later blocks double it): blocks 6-11 dilation 2, blocks 12-15 dilation 4.
`high_stride=16`: block 11 keeps its stride (dilation 2, symmetric padding), blocks 12-15
dilation 2; the high tap is upsampled to stride 8 (see `Backbone`).
Taps: low = blocks 0-4 (40 ch, stride 8), mid = blocks 5-10 (112 ch), high = blocks 11-15 (320 ch).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Backbone, _load_into, dilated_layout

LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

# (repeats, kernel, first stride, expand, in, out) of efficientnet-lite0 (width = depth = 1.0)
_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
_BN = {"eps": 1e-3, "momentum": 0.01}


class SameConv2d(nn.Conv2d):
    """Conv2d with TF "same" padding: (B,C,H,W) -> (B,C',ceil(H/s),ceil(W/s))."""

    def __init__(self, inp: int, oup: int, k: int, stride: int = 1, dilation: int = 1, groups: int = 1) -> None:
        # stride 1: the symmetric padding equals TF's. A dilated strided conv (high_stride=16)
        # pads symmetrically too, so it samples the grid of the dense stride-8 layout.
        self.dynamic = stride > 1 and dilation == 1
        pad = 0 if self.dynamic else (k - 1) * dilation // 2
        super().__init__(inp, oup, k, stride, pad, dilation=dilation, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if not self.dynamic:
            return super().forward(x)
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        dh, dw = self.dilation
        ph = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without SE: (B,inp,H,W) -> (B,oup,ceil(H/stride),ceil(W/stride))."""

    def __init__(self, inp: int, oup: int, k: int, stride: int, expand: int, dilation: int = 1,
                 skip: bool = True) -> None:
        super().__init__()
        hidden = inp * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(inp, hidden, 1)
            self._bn0 = nn.BatchNorm2d(hidden, **_BN)
        self._depthwise_conv = SameConv2d(hidden, hidden, k, stride, dilation, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, **_BN)
        self._project_conv = SameConv2d(hidden, oup, 1)
        self._bn2 = nn.BatchNorm2d(oup, **_BN)
        self.act = nn.ReLU6(inplace=True)
        self.skip = skip and stride == 1 and inp == oup

    def forward(self, inputs: Tensor) -> Tensor:
        x = inputs
        if self.has_expand:
            x = self.act(self._bn0(self._expand_conv(x)))
        x = self.act(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.skip else x


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0 feature extractor: [40, 112, 320] channels at stride 8."""

    name = "efficientnet_lite0"
    channels = (40, 112, 320)
    classifier_prefixes = ("_conv_head.", "_bn1.", "_fc.")

    def __init__(self, output_stride: int = 8, high_stride: int = 8) -> None:
        super().__init__(mean=LITE_MEAN, std=LITE_STD, output_stride=output_stride, high_stride=high_stride)
        self.options = {"output_stride": output_stride, "high_stride": high_stride}
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        self.act = nn.ReLU6(inplace=True)
        settings = [(inp if i == 0 else oup, oup, k, s if i == 0 else 1, e)
                    for repeats, k, s, e, inp, oup in _STAGES for i in range(repeats)]
        layout = dilated_layout([s for *_, s, _ in settings], output_stride, high_stride, high_start=11)
        # the skip rule uses the original stride, so removing a stride adds no skip
        self._blocks = nn.ModuleList(
            MBConvBlock(inp, oup, k, stride, e, dilation, skip=s == 1)
            for (inp, oup, k, s, e), (stride, dilation) in zip(settings, layout))
        # block ranges of the taps: [0,5), [5,11), [11,16)
        self._tap_ends = (5, 11, 16)

    def extract(self, x: Tensor) -> list[Tensor]:
        """Normalised (B,3,H,W) -> [(B,40,h,w), (B,112,h,w), (B,320,h,w)], h = ceil(H/8)."""
        x = self.act(self._bn0(self._conv_stem(x)))
        outs: list[Tensor] = []
        start = 0
        for end in self._tap_ends:
            for block in self._blocks[start:end]:
                x = block(x)
            outs.append(x)
            start = end
        return outs

    def _imagenet_head(self, state_dict: Mapping[str, Tensor]) -> nn.Module:
        conv = _load_into(SameConv2d(320, 1280, 1), state_dict, "_conv_head.")
        bn = _load_into(nn.BatchNorm2d(1280, **_BN), state_dict, "_bn1.")
        fc = _load_into(nn.Linear(1280, 1000), state_dict, "_fc.")
        return nn.Sequential(conv, bn, nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), fc)


def efficientnet_lite0(output_stride: int = 8, high_stride: int = 8) -> EfficientNetLite0:
    """Random-init EfficientNet-Lite0 backbone (stride 8 with dilation by default)."""
    return EfficientNetLite0(output_stride=output_stride, high_stride=high_stride)


__all__ = ["EfficientNetLite0", "MBConvBlock", "SameConv2d", "efficientnet_lite0", "LITE_MEAN", "LITE_STD"]
