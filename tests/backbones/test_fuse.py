"""Folding BatchNorm into convolutions keeps every backbone's output."""
import copy

import pytest
import torch
from torch import nn

from sgone.backbones import build_backbone
from sgone.backbones.base import fuse_batchnorm


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0", "resnet50", "vgg16"])
def test_fuse_batchnorm_keeps_outputs(name):
    torch.manual_seed(0)
    backbone = build_backbone(name, weights=None).eval()
    for m in backbone.modules():  # non-trivial statistics, so a wrong fold would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    x = torch.rand(1, 3, 48, 56)
    with torch.no_grad():
        before = backbone(x)
        fused = fuse_batchnorm(copy.deepcopy(backbone))
        after = fused(x)
    remaining = [m for m in fused.modules() if isinstance(m, nn.BatchNorm2d)]
    assert not remaining
    for a, b in zip(before, after):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-3 * a.abs().max().item())
