"""VGG-16 in the layout of the public SG-One code, with torchvision's state-dict keys.

Layout (output_stride=8, the published one): conv1..conv5 blocks of torchvision's VGG-16
(`features.{0,2,5,7,10,12,14,17,19,21,24,26,28}`); pool1-pool3 are 3x3 stride 2 padding 1,
pool4 and pool5 are 3x3 stride 1 padding 1, no dilation.

Taps, as in SG-One's `vgg_sg.py` (each of its `features_k` blocks ends with its pool, so the
side branches and the guidance branch see the pooled maps):
  low  = pool3 output   (256 ch)  -> side3
  mid  = pool4 output   (512 ch)  -> side4 (concat)
  high = pool5 output   (512 ch)  -> side5 (concat) and the guidance conv ("fc6")
With stride-1 pools, pool4/pool5 are 3x3 max filters that keep the size.

`dilated=True` gives conv5 a dilation of 2 (DeepLab-LargeFOV style), so its receptive field
matches the ImageNet network's, where conv5 sees a 2x coarser grid; not the published model.
`output_stride=32` is torchvision's VGG-16 (2x2 stride-2 pools), for the ImageNet check.
"""

from __future__ import annotations

from typing import Mapping

from torch import Tensor, nn

from .base import Backbone, _load_into

# torchvision's "D" config; "M" = pool
_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG16(Backbone):
    """VGG-16 feature extractor: [pool3 (256), pool4 (512), pool5 (512)], all at stride 8."""

    name = "vgg16"
    channels = (256, 512, 512)
    classifier_prefixes = ("classifier.",)

    def __init__(self, dilated: bool = False, output_stride: int = 8) -> None:
        super().__init__(output_stride=output_stride)
        self.options = {"dilated": dilated, "output_stride": output_stride}
        layers: list[nn.Module] = []
        in_ch, n_pool = 3, 0
        self._taps: list[int] = []  # index of pool3, pool4, pool5 in `features`
        for v in _CFG:
            if v == "M":
                n_pool += 1
                if output_stride == 32:
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                elif n_pool <= 3:
                    layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
                else:
                    layers.append(nn.MaxPool2d(kernel_size=3, stride=1, padding=1))
                if n_pool >= 3:
                    self._taps.append(len(layers) - 1)
            else:
                d = 2 if (dilated and n_pool == 4 and output_stride == 8) else 1
                layers += [nn.Conv2d(in_ch, int(v), kernel_size=3, padding=d, dilation=d), nn.ReLU(inplace=True)]
                in_ch = int(v)
        self.features = nn.Sequential(*layers)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's VGG init (only matters for random-init use)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def extract(self, x: Tensor) -> list[Tensor]:
        """Normalised (B,3,H,W) -> [(B,256,h,w), (B,512,h,w), (B,512,h,w)], h = ceil(H/8)."""
        outs: list[Tensor] = []
        start = 0
        for tap in self._taps:
            x = self.features[start : tap + 1](x)
            outs.append(x)
            start = tap + 1
        return outs

    def _imagenet_head(self, state_dict: Mapping[str, Tensor]) -> nn.Module:
        # torchvision's classifier expects the 7x7 pooled stride-32 map; exact only for output_stride=32.
        classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
            nn.Linear(4096, 1000),
        )
        _load_into(classifier, state_dict, "classifier.")
        return nn.Sequential(nn.AdaptiveAvgPool2d(7), nn.Flatten(1), classifier)


def vgg16(dilated: bool = False, output_stride: int = 8) -> VGG16:
    """Random-init VGG-16 backbone (published SG-One layout by default)."""
    return VGG16(dilated=dilated, output_stride=output_stride)


__all__ = ["VGG16", "vgg16"]
