"""DINOv2 + MobileNetV2 as one 4-level backbone: the levels, how its files are found, and the DINOv2 file check."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sgone.backbones import build_backbone
from sgone.errors import SgoneError
from tests.helpers import dinov2_reason, needs



pytestmark = needs(dinov2_reason())


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SGONE_CACHE_DIR", str(tmp_path))


@torch.no_grad()
def test_levels_are_dinov2_resized_onto_the_cnn_grid_then_the_cnn_levels(own_cache):
    joint = build_backbone("dinov2_s14+mobilenet_v2", resolution=224).eval()
    assert joint.channels == (384, 32, 96, 320)
    assert joint.options["semantic"]["resolution"] == 224 and joint.options["detail"]["high_stride"] == 16
    x = torch.rand(1, 3, 100, 150)
    levels = joint(x)
    assert [tuple(lv.shape) for lv in levels] == [(1, c, 13, 19) for c in joint.channels]
    cnn = build_backbone("mobilenet_v2", high_stride=16).eval()
    for got, want in zip(levels[1:], cnn(x)):
        torch.testing.assert_close(got, want)
    patches = joint.semantic(x)[0]
    torch.testing.assert_close(levels[0], F.interpolate(patches, size=(13, 19), mode="bilinear", align_corners=False))


def test_without_weights_the_dinov2_file_still_loads(own_cache):
    # a checkpoint holds the CNN's weights but never the ONNX file: loading one passes weights=None
    joint = build_backbone("dinov2_s14+mobilenet_v2", weights=None, resolution=224)
    assert joint.semantic._session is not None and int(joint.semantic.onnx_digest.sum()) > 0
    imagenet = build_backbone("mobilenet_v2", high_stride=16)
    assert not torch.equal(joint.detail.state_dict()["features.0.0.weight"], imagenet.state_dict()["features.0.0.weight"])


def test_a_checkpoint_made_with_another_dinov2_file_is_refused(own_cache):
    joint = build_backbone("dinov2_s14+mobilenet_v2", weights=None, resolution=224)
    state = joint.state_dict()
    assert torch.equal(state["semantic.onnx_digest"], joint.semantic.onnx_digest)
    joint.load_state_dict(state)  # the same file: fine
    state["semantic.onnx_digest"] = (state["semantic.onnx_digest"].int() + 1).remainder(256).to(torch.uint8)
    with pytest.raises(SgoneError, match="not the DINOv2 file the checkpoint was made with"):
        joint.load_state_dict(state)


def test_checkpoint_of_the_joint_model_round_trips(own_cache, tmp_path):
    from sgone.models.registry import build_model, has_untrained_head, load_model

    assert has_untrained_head("sgone-dinov2_s14-mobilenet_v2")
    model = build_model("sgone-prior", "dinov2_s14+mobilenet_v2", weights=None, semantic_weight=0.25,
                        backbone_options={"resolution": 224, "high_stride": 16}).eval()
    torch.nn.init.normal_(model.classifier.weight, std=0.1)
    assert model.semantic and model.config["semantic_weight"] == 0.25
    path = tmp_path / "joint.pt"
    torch.save({"model": model.state_dict(), "model_config": model.config}, path)
    loaded = load_model(path)
    assert loaded.semantic_weight == 0.25 and loaded.backbone.options == model.backbone.options
    x = torch.rand(1, 1, 3, 64, 96), torch.ones(1, 1, 64, 96, dtype=torch.long), torch.rand(1, 3, 64, 96)
    x[1][..., :20, :30] = 0
    with torch.no_grad():
        torch.testing.assert_close(loaded(*x)["logits"], model(*x)["logits"])
    from sgone.onnx.export import export_model
    from sgone.onnx.sessions import OnnxModel

    # it exports, DINOv2's own options (one 224 tile here) carried by the manifest to the runtime
    info = export_model(path, tmp_path / "onnx", size=97, dynamic=True)
    assert info["semantic"]["resolution"] == 224 and info["check"]["mask_iou"] > 0.99
    assert OnnxModel.from_folder(tmp_path / "onnx").semantic.resolution == 224
