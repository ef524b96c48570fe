"""ResNet-50 (torchvision's v1.5: stride in the 3x3 conv) with torchvision's keys, at stride 8.

Keys: `conv1`, `bn1`, `layer1..4.N.{conv1,bn1,conv2,bn2,conv3,bn3,downsample.0,downsample.1}`,
`fc` (used only by the ImageNet check).

Stride 8 as torchvision's `replace_stride_with_dilation=[False, True, True]`: layer3 and layer4
lose their stride; their first block keeps the previous dilation in its 3x3 conv and the others
use 2 (layer3) and 4 (layer4). `high_stride=16`: layer4 keeps its stride, all its 3x3 convs
dilation 2; the high tap is upsampled to stride 8 (see `Backbone`). Taps: low = layer2 (512 ch), mid = layer3 (1024), high = layer4 (2048).
"""

from __future__ import annotations

from typing import Mapping

from torch import Tensor, nn

from .base import Backbone, _load_into


class Bottleneck(nn.Module):
    """(B,inp,H,W) -> (B,planes*4,H/stride,W/stride)."""

    expansion = 4

    def __init__(self, inp: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inp, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(Backbone):
    """ResNet-50 feature extractor: [512, 1024, 2048] channels at stride 8."""

    name = "resnet50"
    channels = (512, 1024, 2048)
    classifier_prefixes = ("fc.",)

    def __init__(self, output_stride: int = 8, high_stride: int = 8) -> None:
        super().__init__(output_stride=output_stride, high_stride=high_stride)
        self.options = {"output_stride": output_stride, "high_stride": high_stride}
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self._inp, self._dilation = 64, 1
        dilate = output_stride == 8
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, stride=2)
        self.layer3 = self._make_layer(256, 6, stride=2, dilate=dilate)
        self.layer4 = self._make_layer(512, 3, stride=2, dilate=dilate and high_stride == 8)
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        previous_dilation = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self._inp != planes * 4:
            downsample = nn.Sequential(nn.Conv2d(self._inp, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self._inp, planes, stride, previous_dilation, downsample)]
        self._inp = planes * 4
        layers += [Bottleneck(self._inp, planes, dilation=self._dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def extract(self, x: Tensor) -> list[Tensor]:
        """Normalised (B,3,H,W) -> [(B,512,h,w), (B,1024,h,w), (B,2048,h,w)], h = ceil(H/8)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer2(self.layer1(x))
        mid = self.layer3(low)
        high = self.layer4(mid)
        return [low, mid, high]

    def _imagenet_head(self, state_dict: Mapping[str, Tensor]) -> nn.Module:
        fc = _load_into(nn.Linear(2048, 1000), state_dict, "fc.")
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), fc)


def resnet50(output_stride: int = 8, high_stride: int = 8) -> ResNet50:
    """Random-init ResNet-50 backbone (layer3/layer4 dilated by default)."""
    return ResNet50(output_stride=output_stride, high_stride=high_stride)


__all__ = ["ResNet50", "Bottleneck", "resnet50"]
