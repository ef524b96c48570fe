"""The fusion of a semantic and a detail prototype model: the rule on hand-made maps, and the model's plumbing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sgone.models.fused import FusedPrototypeModel, fuse_logits
from sgone.models.prototype import PrototypeModel
from sgone.models.registry import MODELS, build_model, build_model_from_config, has_untrained_head
from tests.helpers import dinov2_reason, needs


def test_fuse_logits_weights_and_resizes():
    semantic = torch.tensor([[[[0.0, 4.0], [2.0, -2.0]], [[1.0, 0.0], [0.0, 2.0]]]])  # (1,2,2,2)
    detail = torch.zeros(1, 2, 4, 4)
    assert fuse_logits(semantic, detail, 1.0).shape == (1, 2, 4, 4)
    torch.testing.assert_close(fuse_logits(semantic, detail, 0.0), detail)
    same = fuse_logits(semantic, semantic, 0.3)
    torch.testing.assert_close(same, semantic)  # equal grids: no resize, a convex mix of equals


def test_fused_two_class_probability_is_the_product_rule():
    # softmax of summed logits = p_s p_d / (p_s p_d + (1-p_s)(1-p_d)) (weight 1/2 and logits doubled)
    torch.manual_seed(0)
    a, b = torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3)
    p_a, p_b = a.softmax(1)[:, 1], b.softmax(1)[:, 1]
    fused = fuse_logits(2 * a, 2 * b, 0.5).softmax(1)[:, 1]
    torch.testing.assert_close(fused, p_a * p_b / (p_a * p_b + (1 - p_a) * (1 - p_b)))


def test_pixel_is_object_only_where_the_weighted_evidence_says_so():
    # semantic says object (margin 2), detail says background (margin 1): weight decides
    semantic = torch.tensor([0.0, 2.0]).view(1, 2, 1, 1)
    detail = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    assert fuse_logits(semantic, detail, 0.5).argmax(1).item() == 1
    assert fuse_logits(semantic, detail, 0.25).argmax(1).item() == 0


def _small_fused(weight: float) -> FusedPrototypeModel:
    torch.manual_seed(0)
    semantic = build_model("prototype", "mobilenet_v2", weights=None, levels=("high",))
    detail = build_model("prototype", "mobilenet_v2", weights=None, backbone_options={"high_stride": 16})
    return FusedPrototypeModel(semantic.eval(), detail.eval(), weight=weight).eval()


@torch.no_grad()
def test_fused_model_with_weight_zero_is_the_detail_model():
    model = _small_fused(0.0)
    s_img, q_img = torch.rand(1, 2, 3, 96, 96), torch.rand(1, 3, 96, 96)
    masks = torch.zeros(1, 2, 96, 96, dtype=torch.long)
    masks[:, :, 30:70, 20:60] = 1
    fused = model(s_img, masks, q_img)
    alone = model.detail(s_img, masks, q_img)
    torch.testing.assert_close(fused["logits"], alone["logits"])
    torch.testing.assert_close(fused["similarity"], alone["similarity"])
    semantic = _small_fused(1.0)(s_img, masks, q_img)["logits"]
    assert not torch.allclose(semantic, alone["logits"])


@torch.no_grad()
def test_fused_prototypes_keep_each_part_and_fuse_k_shots():
    model = _small_fused(0.5)
    x, masks = torch.rand(1, 3, 64, 64), torch.zeros(1, 64, 64, dtype=torch.long)
    masks[:, 10:40, 10:40] = 1
    proto = model.support_prototype(model.encode(x), masks)
    assert {"semantic.vector", "semantic.background_set", "detail.vector", "detail.background_set"} <= set(proto)
    encoded = model.encode(x)
    # the joint guide: unit length per pixel, on the detail grid, cosines the mean of the parts'
    assert encoded["guide"].shape[-2:] == encoded["detail.guide"].shape[-2:]
    torch.testing.assert_close(encoded["guide"].norm(dim=1), torch.ones_like(encoded["guide"][:, 0]))
    two = model.fuse_prototypes([proto, proto])
    assert two["detail.background_set"].shape[1] == 2 * proto["detail.background_set"].shape[1]
    torch.testing.assert_close(two["semantic.vector"], proto["semantic.vector"])


def test_fused_config_rebuilds_the_same_model():
    model = _small_fused(0.4)
    again = build_model_from_config(model.config, weights=None)
    assert isinstance(again, FusedPrototypeModel) and again.weight == 0.4
    assert again.semantic.levels == ("high",) and again.detail.backbone.high_stride == 16
    with pytest.raises(ValueError, match="weight"):
        FusedPrototypeModel(model.semantic, model.detail, weight=1.5)


def test_dinov2_models_are_registered_training_free():
    for name in ("prototype-dinov2_s14", "prototype-dinov2_s14-mobilenet_v2", "prototype-dinov2_s14-mobilenet_v2-224",
                 "prototype-dinov2_s14-mobilenet_v2-whole", "prototype-dinov2_s14-mobilenet_v2-whole-int8"):
        assert name in MODELS and not has_untrained_head(name)


@needs(dinov2_reason())
def test_fused_dinov2_model_segments_the_sample_photo(tmp_path, monkeypatch):
    from sgone.io import read_mask
    from sgone.predictor import Predictor

    monkeypatch.setenv("SGONE_CACHE_DIR", str(tmp_path))
    predictor = Predictor("prototype-dinov2_s14-mobilenet_v2", size=321)
    predictor.set_support("sgone/samples/support.jpg", "sgone/samples/support_mask.png")
    result = predictor.predict("sgone/samples/query.jpg")
    truth = read_mask("sgone/samples/query_mask.png") > 0
    mask = result.mask > 0
    assert mask.shape == truth.shape
    assert np.logical_and(mask, truth).sum() / np.logical_or(mask, truth).sum() > 0.3


def test_fused_model_runs_the_temporal_video_mode(tmp_path):
    # temporal matches pixels on encoded["guide"]: the fused model must provide one
    from importlib import resources

    from PIL import Image

    from sgone.predictor import Predictor
    from sgone.video import run_video

    samples = resources.files("sgone") / "samples"
    photo = np.asarray(Image.open(samples / "support.jpg").convert("RGB").resize((96, 72)))
    (tmp_path / "frames").mkdir()
    for t in range(3):
        Image.fromarray(np.roll(photo, -3 * t, axis=1)).save(tmp_path / "frames" / f"{t:05d}.png")
    mask = np.asarray(Image.open(samples / "support_mask.png").convert("L").resize((96, 72), Image.NEAREST))
    Image.fromarray(((mask > 0) * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    predictor = Predictor(_small_fused(0.5), size=72, fuse=False)
    summary = run_video(predictor, tmp_path / "frames", tmp_path / "mask.png", tmp_path / "out", mode="temporal",
                        preview="none", write_video=False, progress=False)
    assert summary.mode == "temporal" and summary.masks_written == 3


def test_prepare_for_inference_gives_both_backbones_the_fast_layout():
    from sgone.models.inference import prepare_for_inference

    model = prepare_for_inference(_small_fused(0.5))
    for part in (model.semantic, model.detail):
        conv = next(m for m in part.backbone.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
