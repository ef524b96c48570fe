"""Architecture tests on random init: shapes at stride 8, key layout, normalisation, BN freezing."""

from __future__ import annotations

import math

import pytest
import torch

from sgone.backbones import BACKBONES, Backbone, build_backbone, freeze_batchnorm
from sgone.errors import SgoneError

H, W = 65, 97  # odd sizes: every stage must round up, like ceil(H/8)

EXPECTED_CHANNELS = {
    "vgg16": (256, 512, 512),
    "mobilenet_v2": (32, 96, 320),
    "efficientnet_lite0": (40, 112, 320),
    "resnet50": (512, 1024, 2048),
}


# the CNNs; dinov2_s14 returns its patch grid and needs its ONNX file (tests/backbones/test_dinov2.py),
# and so does dinov2_s14+mobilenet_v2 (tests/backbones/test_joint.py)
@pytest.mark.parametrize("name", [n for n in BACKBONES if "dinov2" not in n])
def test_three_taps_at_stride_8(name):
    torch.manual_seed(0)
    b = build_backbone(name, weights=None).eval()
    assert isinstance(b, Backbone) and b.name == name
    assert b.channels == EXPECTED_CHANNELS[name]
    with torch.no_grad():
        outs = b(torch.rand(2, 3, H, W))
    assert len(outs) == 3
    for out, c in zip(outs, b.channels):
        assert tuple(out.shape) == (2, c, math.ceil(H / 8), math.ceil(W / 8))
        assert torch.isfinite(out).all()


def test_vgg_dilated_variant_keeps_keys_and_stride():
    plain = build_backbone("vgg16", None)
    dil = build_backbone("vgg16", None, dilated=True).eval()
    assert plain.state_dict().keys() == dil.state_dict().keys()
    assert dil.features[24].dilation == (2, 2) and plain.features[24].dilation == (1, 1)
    with torch.no_grad():
        outs = dil(torch.rand(1, 3, 40, 33))
    assert [tuple(o.shape[-2:]) for o in outs] == [(5, 5)] * 3


def test_vgg_published_pool_layout():
    b = build_backbone("vgg16", None)
    pools = [m for m in b.features if isinstance(m, torch.nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride, p.padding) for p in pools] == [(3, 2, 1)] * 3 + [(3, 1, 1)] * 2


def test_torchvision_key_layout():
    vgg = build_backbone("vgg16", None).state_dict()
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert set(vgg) == {f"features.{i}.{p}" for i in convs for p in ("weight", "bias")}

    res = build_backbone("resnet50", None).state_dict()
    assert len(res) == 318  # torchvision's 320 less fc.weight / fc.bias
    for k in ("conv1.weight", "bn1.running_var", "layer3.0.downsample.0.weight", "layer4.2.conv3.weight"):
        assert k in res

    mob = build_backbone("mobilenet_v2", None).state_dict()
    assert len(mob) == 314 - 6 - 2  # torchvision's keys less features.18 and classifier
    for k in ("features.0.0.weight", "features.1.conv.0.0.weight", "features.1.conv.2.running_mean",
              "features.17.conv.3.num_batches_tracked"):
        assert k in mob

    eff = build_backbone("efficientnet_lite0", None).state_dict()
    assert len(eff) == 296 - 8  # the port's keys less _conv_head, _bn1, _fc
    assert "_blocks.0._expand_conv.weight" not in eff and "_blocks.15._expand_conv.weight" in eff


def test_dilation_replaces_stride():
    mob = build_backbone("mobilenet_v2", None)
    dw = [blk.conv[-3][0] for blk in mob.features[1:18]]
    assert [c.stride[0] for c in dw] == [1, 2, 1, 2, 1, 1] + [1] * 11
    assert [c.dilation[0] for c in dw] == [1] * 7 + [2] * 7 + [4] * 3
    res = build_backbone("resnet50", None)
    assert [blk.conv2.dilation[0] for blk in res.layer3] == [1, 2, 2, 2, 2, 2]
    assert [blk.conv2.dilation[0] for blk in res.layer4] == [2, 4, 4]
    eff = build_backbone("efficientnet_lite0", None)
    assert [blk._depthwise_conv.dilation[0] for blk in eff._blocks] == [1] * 6 + [2] * 6 + [4] * 4
    assert [blk._depthwise_conv.stride[0] for blk in eff._blocks] == [1, 2, 1, 2] + [1] * 12


def test_output_stride_32_is_the_imagenet_layout():
    b = build_backbone("mobilenet_v2", None, output_stride=32).eval()
    with torch.no_grad():
        outs = b(torch.rand(1, 3, 64, 96))
    assert [tuple(o.shape[-2:]) for o in outs] == [(8, 12), (4, 6), (2, 3)]


def test_normalisation_buffers():
    for name in ("vgg16", "mobilenet_v2", "resnet50"):
        b = BACKBONES[name]()
        assert torch.allclose(b.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
        assert torch.allclose(b.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
        assert "mean" not in b.state_dict() and "std" not in b.state_dict()
    eff = BACKBONES["efficientnet_lite0"]()
    x = torch.tensor([0.0, 127 / 255, 1.0]).view(1, 3, 1, 1)
    assert torch.allclose(eff.normalize(x).flatten(), torch.tensor([-127 / 128, 0.0, 1.0]))


def test_rejects_bad_input_shape():
    b = build_backbone("mobilenet_v2", None)
    with pytest.raises(ValueError, match="B, 3, H, W"):
        b(torch.rand(1, 1, 32, 32))


def test_bn_frozen_survives_train():
    b = build_backbone("mobilenet_v2", None)
    b.set_bn_frozen(True)
    b.train()
    bns = [m for m in b.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training and not m.weight.requires_grad for m in bns)
    before = bns[0].running_mean.clone()
    b(torch.rand(1, 3, 32, 32)).__getitem__(-1).sum().backward()
    assert torch.equal(bns[0].running_mean, before)  # eval BN: statistics untouched
    assert b.features[0][0].weight.grad is not None  # convs still learn
    b.set_bn_frozen(False)
    assert all(m.training and m.weight.requires_grad for m in bns)


def test_freeze_batchnorm_helper():
    b = build_backbone("resnet50", None).train()
    freeze_batchnorm(b)
    assert all(not m.training and not m.bias.requires_grad for m in b.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert b.conv1.weight.requires_grad


def test_config_rebuilds_the_same_architecture():
    b = build_backbone("vgg16", None, dilated=True)
    again = build_backbone(b.config["name"], None, **b.config["options"])
    assert again.config == b.config and again.features[26].dilation == (2, 2)


def test_unknown_name_and_option():
    with pytest.raises(SgoneError, match="unknown backbone.*vgg16.*mobilenet_v2.*efficientnet_lite0.*resnet50"):
        build_backbone("alexnet", None)
    with pytest.raises(SgoneError, match="unknown option"):
        build_backbone("resnet50", None, dilated=True)


def _lively(backbone):
    """Random BN statistics, so deep random-init features do not fade to ~0."""
    torch.manual_seed(1)
    for m in backbone.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.05, 0.2)
            m.bias.data.uniform_(-0.1, 0.3)
    return backbone.eval()


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0", "resnet50"])
@pytest.mark.parametrize("hw", [(65, 97), (64, 96)])  # odd and even stride-8 maps (TF padding differs)
def test_high_stride_16_computes_the_dense_features_on_every_second_position(name, hw):
    dense = _lively(build_backbone(name, None))
    coarse = build_backbone(name, None, high_stride=16).eval()
    coarse.load_state_dict(dense.state_dict())
    assert coarse.config["options"]["high_stride"] == 16
    x = torch.rand(1, 3, *hw)
    with torch.no_grad():
        low, mid, high = dense(x)
        c_low, c_mid, c_high = coarse(x)
        raw_high = coarse.extract(coarse.normalize(x))[-1]
    h8, w8 = math.ceil(hw[0] / 8), math.ceil(hw[1] / 8)
    assert tuple(raw_high.shape[-2:]) == (math.ceil(h8 / 2), math.ceil(w8 / 2))
    assert tuple(c_high.shape) == tuple(high.shape)  # upsampled back to stride 8
    assert torch.equal(low, c_low) and torch.equal(mid, c_mid)
    scale = high.abs().max().item()
    assert scale > 1e-3
    torch.testing.assert_close(raw_high, high[..., ::2, ::2], rtol=1e-4, atol=1e-5 * scale)
    # in between, the upsampled map is an interpolation, not the dense value
    assert not torch.allclose(c_high, high, rtol=1e-3, atol=1e-3 * scale)


def test_high_stride_options_are_checked():
    with pytest.raises(ValueError, match="high_stride"):
        build_backbone("mobilenet_v2", None, high_stride=32)
    with pytest.raises(ValueError, match="high_stride"):
        build_backbone("resnet50", None, output_stride=32, high_stride=16)
    with pytest.raises(SgoneError, match="unknown option"):
        build_backbone("vgg16", None, high_stride=16)
    mob = build_backbone("mobilenet_v2", None, high_stride=16)
    dw = [blk.conv[-3][0] for blk in mob.features[1:18]]
    assert [c.stride[0] for c in dw] == [1, 2, 1, 2, 1, 1] + [1] * 7 + [2] + [1] * 3
    assert [c.dilation[0] for c in dw] == [1] * 7 + [2] * 10


def test_dilated_layout_hand_values():
    from sgone.backbones.base import dilated_layout

    nominal = [2, 1, 2, 1, 2, 1]
    assert dilated_layout(nominal, 8, 8, high_start=4, stem_stride=4) == [
        (2, 1), (1, 1), (1, 1), (1, 2), (1, 2), (1, 4)]
    assert dilated_layout(nominal, 8, 16, high_start=4, stem_stride=4) == [
        (2, 1), (1, 1), (1, 1), (1, 2), (2, 2), (1, 2)]
    assert dilated_layout(nominal, 32, 8, high_start=4, stem_stride=4) == [
        (2, 1), (1, 1), (2, 1), (1, 1), (2, 1), (1, 1)]  # stride 32 reached only at the end: no dilation
