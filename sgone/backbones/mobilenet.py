"""MobileNetV2 (width 1.0) with torchvision's state-dict keys, at output stride 8.

Keys: `features.0.{0,1}` stem, `features.1..17.conv.*` inverted residuals, `features.18` the
1x1 320->1280 conv (used only by the ImageNet check), `classifier.1` the linear layer.

Stride 8: features.7 and features.14 lose their stride 2; following DeepLab's rule, the block
whose stride is removed keeps the previous dilation and the blocks after it get the doubled one
(features.8-14 dilation 2, features.15-17 dilation 4). Weights are unchanged.
`high_stride=16`: features.14 keeps its stride (dilation 2), features.15-17 dilation 2; the
high tap is upsampled to stride 8 (see `Backbone`). That stage is 2/3 of the stride-8 FLOPs.

Taps: low = features[:7] (32 ch, stride 8), mid = features[7:14] (96 ch),
high = features[14:18] (320 ch). features.18 (1280 ch, ReLU6) is left out: it is a 1x1
projection trained for the classifier, 4x wider than the 320-ch map, and adds no context.
"""

from __future__ import annotations

from typing import Mapping

from torch import Tensor, nn

from .base import Backbone, _load_into, dilated_layout

# (expand t, out channels c, repeats n, first stride s) of torchvision's MobileNetV2
_SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _cna(inp: int, oup: int, k: int = 3, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Sequential:
    """Conv-BN-ReLU6 (torchvision's Conv2dNormActivation key layout: .0 conv, .1 bn)."""
    pad = (k - 1) // 2 * dilation
    return nn.Sequential(
        nn.Conv2d(inp, oup, k, stride, pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: (B,inp,H,W) -> (B,oup,H/stride,W/stride)."""

    def __init__(self, inp: int, oup: int, stride: int, expand: int, dilation: int = 1) -> None:
        super().__init__()
        hidden = int(round(inp * expand))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_cna(inp, hidden, k=1))
        layers += [
            _cna(hidden, hidden, k=3, stride=stride, groups=hidden, dilation=dilation),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(Backbone):
    """MobileNetV2 feature extractor: [32, 96, 320] channels at stride 8."""

    name = "mobilenet_v2"
    channels = (32, 96, 320)
    classifier_prefixes = ("features.18.", "classifier.")

    def __init__(self, output_stride: int = 8, high_stride: int = 8) -> None:
        super().__init__(output_stride=output_stride, high_stride=high_stride)
        self.options = {"output_stride": output_stride, "high_stride": high_stride}
        settings = [(t, c, s if i == 0 else 1) for t, c, n, s in _SETTING for i in range(n)]
        # features.14 (index 13 after the stem) starts the high tap
        layout = dilated_layout([s for _, _, s in settings], output_stride, high_stride, high_start=13)
        blocks: list[nn.Module] = [_cna(3, 32, stride=2)]
        inp = 32
        for (t, c, _), (stride, dilation) in zip(settings, layout):
            blocks.append(InvertedResidual(inp, c, stride, t, dilation=dilation))
            inp = c
        self.features = nn.Sequential(*blocks)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def extract(self, x: Tensor) -> list[Tensor]:
        """Normalised (B,3,H,W) -> [(B,32,h,w), (B,96,h,w), (B,320,h,w)], h = ceil(H/8)."""
        low = self.features[:7](x)
        mid = self.features[7:14](low)
        high = self.features[14:18](mid)
        return [low, mid, high]

    def _imagenet_head(self, state_dict: Mapping[str, Tensor]) -> nn.Module:
        last = _load_into(_cna(320, 1280, k=1), state_dict, "features.18.")
        fc = _load_into(nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000)), state_dict, "classifier.")
        return nn.Sequential(last, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), fc)


def mobilenet_v2(output_stride: int = 8, high_stride: int = 8) -> MobileNetV2:
    """Random-init MobileNetV2 backbone (stride 8 with dilation by default)."""
    return MobileNetV2(output_stride=output_stride, high_stride=high_stride)


__all__ = ["MobileNetV2", "InvertedResidual", "mobilenet_v2"]
