"""The traceable prototype maths equals the models' own (k-means parts, masked averages)."""
from __future__ import annotations

import pytest
import torch

from sgone import ops
from sgone.errors import SgoneError
from sgone.models.registry import FUSED_DINO_MOBILENET, build_model, build_model_from_config
from sgone.onnx.graphs import graph_spec, kmeans_parts, prototypes_from_regions, region_inputs


def _mask(h, w, seed, ignore=False):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(1, h, w, dtype=torch.long)
    y, x = torch.randint(0, h // 2, (2,), generator=g)
    mask[:, y:y + h // 2, x:x + w // 3] = 1
    if ignore:
        mask[:, :3] = 255
    return mask


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 3, 8])
def test_kmeans_parts_equals_region_prototypes(seed, k):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(1, 16, 11, 13, generator=g).relu()
    mask = _mask(88, 104, seed, ignore=seed % 2 == 1)
    for region in ("foreground", "background"):
        cover = ops.region_weights(mask, (11, 13), region)
        assert torch.allclose(kmeans_parts(feats, cover, k), ops.region_prototypes(feats, cover, k), atol=1e-5)


def test_kmeans_parts_tiny_and_empty_regions():
    feats = torch.randn(1, 8, 6, 6, generator=torch.Generator().manual_seed(0))
    cover = torch.zeros(1, 1, 6, 6)
    assert torch.equal(kmeans_parts(feats, cover, 4), torch.zeros(1, 4, 8))  # empty: zero vectors
    cover[0, 0, 2, 3] = cover[0, 0, 4, 1] = 1.0  # two cells for four parts: prototypes repeat
    assert torch.allclose(kmeans_parts(feats, cover, 4), ops.region_prototypes(feats, cover, 4), atol=1e-6)


@pytest.mark.parametrize("arch,options", [("prototype", {}), ("prototype", {"foreground_prototypes": 3}),
                                          ("sgone", {}), ("sgone", {"variant": "published"}), ("sgone-prior", {})])
def test_prototypes_from_regions_match_support_prototype(arch, options):
    torch.manual_seed(0)
    model = build_model(arch, "mobilenet_v2", weights=None, **options).eval()
    spec = graph_spec(model)
    image, mask = torch.rand(1, 3, 97, 113), _mask(97, 113, 1, ignore=True)
    with torch.inference_mode():
        encoded = model.encode(image, need_side=False)
        ours = prototypes_from_regions(model, arch, encoded, region_inputs(spec, mask, encoded["guide"].shape[-2:]))
        theirs = model.support_prototype(encoded, mask)
    assert set(ours) == set(theirs) == set(spec.prototypes)
    for key in theirs:
        assert torch.allclose(ours[key], theirs[key], atol=1e-5), key


def test_prototypes_from_regions_match_with_a_dinov2_level():
    """The SG-One head on DINOv2 + MobileNetV2: the semantic pair too (random levels, no DINOv2 file needed)."""
    torch.manual_seed(0)
    model = build_model("sgone-prior", "dinov2_s14+mobilenet_v2", weights=None).eval()
    spec = graph_spec(model)
    assert spec.inputs == ("image", "semantic") and "semantic_background_set" in spec.prototypes
    grid, mask = (13, 15), _mask(97, 113, 2, ignore=True)
    levels = [torch.randn(1, c, *grid).relu() for c in model.backbone.channels]
    with torch.inference_mode():
        encoded = model.encode_levels(levels, need_side=False)
        ours = prototypes_from_regions(model, "sgone-prior", encoded, region_inputs(spec, mask, grid))
        theirs = model.support_prototype(encoded, mask)
    assert set(ours) == set(theirs) == set(spec.prototypes)
    for key in theirs:
        assert torch.allclose(ours[key], theirs[key], atol=1e-5), key


def test_unsupported_models_are_refused_with_a_reason():
    model = build_model("sgone", "mobilenet_v2", weights=None)
    model.config = dict(model.config, backbone="dinov2_s14")  # the lead's ViT backbone: out of scope
    with pytest.raises(SgoneError, match="dinov2_s14: backbone not supported by the ONNX export"):
        graph_spec(model)
    fused = build_model_from_config(FUSED_DINO_MOBILENET, weights=None)  # training-free DINOv2
    with pytest.raises(SgoneError, match=r"\(fused\): backbone not supported .* trained on dinov2_s14\+mobilenet_v2"):
        graph_spec(fused)
    model.config = dict(model.config, backbone="mobilenet_v2", arch="sgone-next")
    with pytest.raises(SgoneError, match="sgone-next: architecture not supported"):
        graph_spec(model)
