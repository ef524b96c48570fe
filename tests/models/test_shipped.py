"""The shipped real-photo checkpoints: present, small, load offline by name, segment the sample."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from sgone.models.registry import load_model, shipped_checkpoints
from tests.helpers import dinov2_reason, needs

NAME = "sgone-mobilenet_v2-real"
DINO_NAME = "sgone-dinov2_s14-mobilenet_v2-real"
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


NAMES = [NAME, pytest.param(DINO_NAME, marks=needs(dinov2_reason()))]


@pytest.mark.parametrize("name", [NAME, DINO_NAME])
def test_checkpoint_ships_with_a_model_card_and_fits_the_size_limit(name):
    path = shipped_checkpoints()[name]
    assert path.stat().st_size < 25 * 2**20
    assert (path.parent / f"{name}.md").is_file()
    state = torch.load(path, map_location="cpu", weights_only=False)
    assert "optimizer" not in state and state["model_config"]["arch"] == "sgone-prior"


@pytest.mark.parametrize("name", NAMES)
def test_loads_by_name_as_a_trained_prior_guided_sgone(name):
    from sgone.models.sgone_net import PriorGuidedSGOne

    model = load_model(name)
    assert isinstance(model, PriorGuidedSGOne) and not model.training
    assert model.semantic == (name == DINO_NAME)  # the DINOv2 one has a semantic level
    # trained: the head's last conv left zero (where an untrained head starts)
    assert model.classifier.weight.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_segments_the_bundled_sample(name):
    from sgone.io import read_image, read_mask
    from sgone.predictor import Predictor

    samples = resources.files("sgone") / "samples"
    predictor = Predictor(name)
    predictor.set_support([read_image(samples / "support.jpg")], [read_mask(samples / "support_mask.png")])
    result = predictor.predict(read_image(samples / "query.jpg"))
    truth = read_mask(samples / "query_mask.png") == 1
    iou = (result.mask.astype(bool) & truth).sum() / (result.mask.astype(bool) | truth).sum()
    assert iou > 0.5  # measured 0.583 (MobileNetV2), 0.769 (DINOv2); the training-free model gets 0.619
    # the learnt head changes the answer: its logits are not the training-free prior's
    model = predictor.model
    query = model.encode(torch.rand(1, 3, 96, 128))
    proto = model.support_prototype(model.encode(torch.rand(1, 3, 96, 128), need_side=False),
                                    (torch.rand(1, 96, 128) > 0.5).long())
    assert (model.segment(query, proto)["logits"] - model.prior_logits(query, proto)).abs().max() > 0.1


@needs(dinov2_reason())
def test_the_dinov2_checkpoint_is_the_default_of_predictor_and_the_video_keeps_the_training_free_one():
    from sgone.predictor import Predictor
    from sgone.video.model import video_predictor

    predictor = Predictor()
    assert predictor.model_name == DINO_NAME and predictor.model.semantic
    video = video_predictor(device="cpu")
    assert video.model_name == "prototype-mobilenet_v2" and video.model.config["arch"] == "prototype"


@pytest.mark.skipif(not (SHARED / "ccp").is_dir(), reason=f"{SHARED} not present (the shared real corpora)")
def test_documented_folds_are_the_folds_of_the_shared_corpora():
    from sgone.data.mix import MixSource

    roots = [SHARED / name for name in ("ccp", "coco128", "camvid")]
    docs = Path(__file__).resolve().parents[2] / "docs" / "splits" / "real-mix"
    computed, documented = MixSource(roots), MixSource(roots, splits=docs)
    assert len(computed.class_names) == 76
    assert computed.fold_of == documented.fold_of
    assert np.bincount(list(computed.fold_of.values())).tolist() == [19, 19, 20, 18]
