"""Two training-free prototype models combined: one for *what* (semantics), one for *where* (detail).

DINOv2 patch features know which pixels belong to the class but live on a coarse 14-px grid;
MobileNetV2 at stride 8/16 sees edges and small parts but confuses classes. Each model scores
the query on its own grid (two-class logits: background parts vs object); the semantic logits
are resized to the detail grid and the two are summed with weights (`fuse_logits`). For two
classes a weighted sum of logits is a weighted product of the probabilities (a geometric
pooling): a pixel is object only where both models lean that way, in proportion to their weights.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from sgone import ops
from sgone.models.architecture import Architecture
from sgone.models.prototype import PrototypeModel, episode_forward

PARTS = ("semantic", "detail")


def fuse_logits(semantic: torch.Tensor, detail: torch.Tensor, weight: float = 0.5) -> torch.Tensor:
    """semantic (B,2,hs,ws), detail (B,2,hd,wd) -> (B,2,hd,wd): weight*semantic (resized) + (1-weight)*detail."""
    if semantic.shape[-2:] != detail.shape[-2:]:
        semantic = F.interpolate(semantic, size=detail.shape[-2:], mode="bilinear", align_corners=False)
    return weight * semantic + (1.0 - weight) * detail


def _split(values: dict[str, torch.Tensor], part: str) -> dict[str, torch.Tensor]:
    prefix = f"{part}."
    return {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}


def _join(part: str, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{part}.{k}": v for k, v in values.items()}


def joint_guide(encoded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add "guide": both parts' features normalised per pixel, side by side on the detail grid, so the
    cosine of two pixels is the mean of the parts' cosines (for pixel matching, e.g. the video memory)."""
    detail = F.normalize(encoded["detail.guide"], dim=1)
    semantic = F.interpolate(encoded["semantic.guide"], size=detail.shape[-2:], mode="bilinear", align_corners=False)
    guide = torch.cat([F.normalize(semantic, dim=1), detail], dim=1) / 2 ** 0.5
    return dict(encoded, guide=guide)


class FusedPrototypeModel(Architecture, nn.Module):
    """`semantic` and `detail` PrototypeModels; logits fused by `fuse_logits(weight)`.

    Same interface as PrototypeModel (encode / support_prototype / fuse_prototypes / segment /
    forward); the dicts it passes around hold each part's entries under "semantic." and "detail.",
    and the encoding also a joint "guide" (`joint_guide`).
    """

    arch = "prototype-fused"
    training_free = True

    @classmethod
    def from_config(cls, config: dict, weights: str | Path | None = "auto") -> "FusedPrototypeModel":
        """{"semantic": config, "detail": config, "weight"}; a weights path goes to the semantic
        backbone, the detail one finds its own ("auto"; None stays None)."""
        semantic = PrototypeModel.from_config(config["semantic"], weights=weights)
        detail = PrototypeModel.from_config(config["detail"], weights=None if weights is None else "auto")
        return cls(semantic, detail, weight=config.get("weight", 0.5))

    def __init__(self, semantic: PrototypeModel, detail: PrototypeModel, weight: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {weight}")
        self.semantic, self.detail, self.weight = semantic, detail, float(weight)
        self.variant = "fixed"
        self.config = {"arch": self.arch, "semantic": semantic.config, "detail": detail.config,
                       "weight": self.weight}

    def _parts(self) -> list[tuple[str, PrototypeModel]]:
        return [("semantic", self.semantic), ("detail", self.detail)]

    def encode(self, images: torch.Tensor, need_side: bool = True) -> dict[str, torch.Tensor]:
        """(B,3,H,W) in [0,1] -> {"semantic.guide": (B,Cs,hs,ws), "detail.guide": (B,Cd,hd,wd),
        "guide": (B,Cs+Cd,hd,wd) both, see `joint_guide`}."""
        out: dict[str, torch.Tensor] = {}
        for part, model in self._parts():
            out.update(_join(part, model.encode(images, need_side)))
        return joint_guide(out)

    def encode_levels(self, levels: list[torch.Tensor], need_side: bool = True) -> dict[str, torch.Tensor]:
        """encode() from both backbones' outputs, semantic's three levels first (e.g. a JointFeatureCache)."""
        out = _join("semantic", self.semantic.encode_levels(levels[:3], need_side))
        out.update(_join("detail", self.detail.encode_levels(levels[3:], need_side)))
        return joint_guide(out)

    def support_prototype(self, encoded: dict[str, torch.Tensor], masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """masks (B,H,W) -> each part's prototypes, prefixed."""
        out: dict[str, torch.Tensor] = {}
        for part, model in self._parts():
            out.update(_join(part, model.support_prototype(_split(encoded, part), masks)))
        return out

    @staticmethod
    def fuse_prototypes(prototypes: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return ops.fuse_prototype_dicts(prototypes)

    def segment(self, encoded: dict[str, torch.Tensor], prototype: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """-> {"logits": (B,2,hd,wd), "similarity": (B,hd,wd)}, both the weighted fusion of the parts'."""
        sem = self.semantic.segment(_split(encoded, "semantic"), _split(prototype, "semantic"))
        det = self.detail.segment(_split(encoded, "detail"), _split(prototype, "detail"))
        logits = fuse_logits(sem["logits"], det["logits"], self.weight)
        similarity = fuse_logits(sem["similarity"].unsqueeze(1), det["similarity"].unsqueeze(1), self.weight)[:, 0]
        return {"logits": logits, "similarity": similarity}

    def forward(self, support_images: torch.Tensor, support_masks: torch.Tensor,
                query_images: torch.Tensor) -> dict[str, torch.Tensor]:
        """support_images (B,K,3,H,W), support_masks (B,K,H,W), query_images (B,3,H,W)."""
        return episode_forward(self, support_images, support_masks, query_images)
