"""docs/architecture.md's worked example, run: a new architecture is one class plus one table
entry, and its registered name then works everywhere a name does (here: the Predictor)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from sgone import ops
from sgone.models import zoo
from sgone.models.architecture import Architecture
from sgone.predictor import Predictor
from tests.helpers import mobilenet_weights


class CentroidModel(Architecture, nn.Module):
    """Cosine of each query cell to the support's mean object and background features (high level)."""

    arch = "centroid"
    training_free = True

    def __init__(self, backbone: nn.Module, temperature: float = 10.0, config: dict | None = None) -> None:
        super().__init__()
        self.backbone, self.temperature = backbone, temperature
        self.config = dict(config or {}, arch=self.arch, temperature=temperature)

    def encode(self, images: torch.Tensor, need_side: bool = True) -> dict[str, torch.Tensor]:
        return {"guide": self.backbone(images)[2]}  # (B,C,h,w), stride 8

    def support_prototype(self, encoded: dict, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        guide = encoded["guide"]
        return {"vector": ops.masked_average_pooling(guide, masks),
                "background": ops.masked_average_pooling(guide, masks, region="background")}

    @staticmethod
    def fuse_prototypes(prototypes: list[dict]) -> dict[str, torch.Tensor]:
        return ops.fuse_prototype_dicts(prototypes)

    def segment(self, encoded: dict, prototype: dict) -> dict[str, torch.Tensor]:
        fg = ops.cosine_similarity_map(prototype["vector"], encoded["guide"])
        bg = ops.cosine_similarity_map(prototype["background"], encoded["guide"])
        return {"logits": self.temperature * torch.stack([bg, fg], dim=1), "similarity": fg}


def test_one_class_and_one_table_entry_make_a_model_name(monkeypatch):
    mobilenet_weights()  # the example's backbone
    # the two entries the example adds (sgone/models/zoo.py names the class "module:Class"; an object works too)
    monkeypatch.setitem(zoo.ARCHITECTURES, "centroid", CentroidModel)
    monkeypatch.setitem(zoo.MODELS, "centroid-mobilenet_v2", {"arch": "centroid", "backbone": "mobilenet_v2"})

    predictor = Predictor("centroid-mobilenet_v2", size=96)
    assert isinstance(predictor.model, CentroidModel) and predictor.model_name == "centroid-mobilenet_v2"
    y, x = np.mgrid[0:80, 0:96]
    image = np.stack([x * 2, y * 3, np.full_like(x, 90)], axis=2).astype(np.uint8)
    disc = (y - 40) ** 2 + (x - 48) ** 2 <= 18 ** 2
    image[disc] = (230, 40, 40)
    predictor.set_support(image, disc.astype(np.uint8))
    result = predictor.predict(image[:, ::-1].copy())  # the same red disc, mirrored
    mirrored = disc[:, ::-1]
    assert result.mask.shape == disc.shape
    # it finds the disc: the object is more probable on it than off it (the road is tested, not the model)
    assert result.probability[mirrored].mean() > result.probability[~mirrored].mean()
    # a checkpoint of it is a config plus weights: the config rebuilds it
    from sgone.models.registry import build_model_from_config

    rebuilt = build_model_from_config(predictor.model.config, weights=None)
    assert isinstance(rebuilt, CentroidModel) and rebuilt.config == predictor.model.config
