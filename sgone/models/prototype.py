"""Training-free few-shot segmentation with ImageNet features alone.

Foreground and background prototypes come from masked average pooling of the support's
features; every query pixel is scored by its cosine similarity to both, and a softmax with a
fixed temperature turns the two scores into a foreground probability (a calibrated
decision: object where the pixel is closer to the object prototype than to the background
one). A background is rarely one thing (sky, road, other objects): with
`background_prototypes=N` it is split into N parts by k-means over the support's background
cells, and a pixel's background score is its best match among the parts, so a background
whose mean happens to resemble the object no longer claims or cedes it wholesale. Optionally the query's own confident pixels give a second pair of prototypes that are
blended in (self-support refinement), which adapts the prototypes to the query's appearance.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from sgone import ops
from sgone.models.architecture import Architecture

LEVELS = ("low", "mid", "high")


class PrototypeModel(Architecture, nn.Module):
    """Cosine prototypes on selected backbone levels; no trained parameters."""

    arch = "prototype"
    training_free = True

    def __init__(self, backbone: nn.Module, levels: tuple[str, ...] = ("mid", "high"),
                 temperature: float = 10.0, refine_steps: int = 0, refine_confidence: float = 0.7,
                 refine_weight: float = 0.5, background_prototypes: int = 8, foreground_prototypes: int = 1,
                 scales: tuple[float, ...] = (1.0,), config: dict | None = None) -> None:
        super().__init__()
        unknown = [lv for lv in levels if lv not in LEVELS]
        if unknown or not levels:
            raise ValueError(f"levels must be a non-empty subset of {LEVELS}, got {levels}")
        self.backbone = backbone
        self.levels = tuple(levels)
        self.temperature = temperature
        self.refine_steps = refine_steps
        self.refine_confidence = refine_confidence
        self.refine_weight = refine_weight
        if background_prototypes < 1:
            raise ValueError(f"background_prototypes must be >= 1, got {background_prototypes}")
        self.background_prototypes = background_prototypes
        if foreground_prototypes < 1:
            raise ValueError(f"foreground_prototypes must be >= 1, got {foreground_prototypes}")
        self.foreground_prototypes = foreground_prototypes
        if not scales or any(sc <= 0 for sc in scales):
            raise ValueError(f"scales must be positive, got {scales}")
        self.scales = tuple(float(sc) for sc in scales)
        self.variant = "fixed"
        self.config = dict(config or {}, arch=self.arch, levels=list(levels), temperature=temperature,
                           refine_steps=refine_steps, refine_confidence=refine_confidence,
                           refine_weight=refine_weight, background_prototypes=background_prototypes,
                           foreground_prototypes=foreground_prototypes,
                           scales=list(self.scales))

    def encode(self, images: torch.Tensor, need_side: bool = True) -> dict[str, torch.Tensor]:
        """(B,3,H,W) in [0,1] -> {"guide": (B,C,h,w)}: the chosen levels, each L2-normalised per pixel.

        With several `scales` the image is also encoded resized by each factor, and each level's
        normalised features are averaged on the scale-1 grid (then normalised again).
        """
        # the stride-8 grid of scale 1 (positive floor division: ONNX exports it exactly)
        grid = ((images.shape[-2] + 7) // 8, (images.shape[-1] + 7) // 8)
        total: list[torch.Tensor] = []
        for scale in self.scales:
            x = images if scale == 1.0 else F.interpolate(images, scale_factor=scale, mode="bilinear",
                                                          align_corners=False)
            feats = dict(zip(LEVELS, self.backbone(x)))
            # normalise each level so a wide level (e.g. 2048 channels) does not drown the others
            now = [F.normalize(feats[name], dim=1) for name in self.levels]
            now = [f if f.shape[-2:] == grid else F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
                   for f in now]
            total = [a + f for a, f in zip(total, now)] if total else now
        if len(self.scales) > 1:
            total = [F.normalize(f, dim=1) for f in total]
        return {"guide": torch.cat(total, dim=1) if len(total) > 1 else total[0]}

    def encode_levels(self, levels: list[torch.Tensor], need_side: bool = True) -> dict[str, torch.Tensor]:
        """encode() from the backbone's outputs [low, mid, high] at scale 1 (e.g. read from a feature cache)."""
        if self.scales != (1.0,):
            raise ValueError("encode_levels needs a single-scale model (scales == (1.0,))")
        feats = dict(zip(LEVELS, levels))
        now = [F.normalize(feats[name], dim=1) for name in self.levels]
        return {"guide": torch.cat(now, dim=1) if len(now) > 1 else now[0]}

    def support_prototype(self, encoded: dict[str, torch.Tensor], masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """masks (B,H,W) -> {"vector": fg (B,C), "background": bg (B,C)}, plus
        "background_set": (B,N,C) k-means parts of the background when background_prototypes > 1
        and "foreground_set" likewise for the object."""
        guide = encoded["guide"]
        fg = ops.masked_average_pooling(guide, masks, mode="downsample", region="foreground")
        bg = ops.masked_average_pooling(guide, masks, mode="downsample", region="background")
        out = {"vector": fg, "background": bg}
        if self.background_prototypes > 1:
            weights = ops.region_weights(masks, guide.shape[-2:], "background")
            out["background_set"] = ops.region_prototypes(guide, weights, self.background_prototypes)
        if self.foreground_prototypes > 1:
            weights = ops.region_weights(masks, guide.shape[-2:], "foreground")
            out["foreground_set"] = ops.region_prototypes(guide, weights, self.foreground_prototypes)
        return out

    @staticmethod
    def fuse_prototypes(prototypes: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """k shots -> one: vectors averaged, sets of parts pooled (B, k*N, C)."""
        return ops.fuse_prototype_dicts(prototypes)

    def _score(self, guide: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor,
               fg_set: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """bg (B,C), or (B,N,C): a pixel's background score is its best match among the N parts;
        its object score is its cosine to fg (B,C), or its best match among fg and fg_set (B,M,C)."""
        sim_fg = ops.cosine_similarity_map(fg, guide)
        sim_bg = ops.cosine_similarity_map(bg, guide)
        if sim_bg.dim() == 4:
            sim_bg = sim_bg.amax(dim=1)
        score_fg = sim_fg
        if fg_set is not None:
            score_fg = torch.maximum(sim_fg, ops.cosine_similarity_map(fg_set, guide).amax(dim=1))
        logits = self.temperature * torch.stack([sim_bg, score_fg], dim=1)
        return logits, sim_fg

    def segment(self, encoded: dict[str, torch.Tensor], prototype: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """-> {"logits": (B,2,h,w), "similarity": (B,h,w) cosine to the object prototype}."""
        guide = encoded["guide"]
        fg, bg = prototype["vector"], prototype["background"]
        bg_set, fg_set = prototype.get("background_set"), prototype.get("foreground_set")
        logits, similarity = self._score(guide, fg, bg if bg_set is None else bg_set, fg_set)
        for _ in range(self.refine_steps):
            prob = logits.softmax(dim=1)[:, 1]
            confident_fg = (prob > self.refine_confidence).float()
            confident_bg = (prob < 1 - self.refine_confidence).float()
            q_fg = _weighted_mean(guide, confident_fg)
            q_bg = _weighted_mean(guide, confident_bg)
            w = self.refine_weight
            # keep the support's prototype where the query has no confident pixels of a region
            has_fg = (confident_fg.flatten(1).sum(1) > 0).float().unsqueeze(1)
            has_bg = (confident_bg.flatten(1).sum(1) > 0).float().unsqueeze(1)
            fg_new = (1 - w * has_fg) * fg + w * has_fg * q_fg
            bg_new = (1 - w * has_bg) * bg + w * has_bg * q_bg
            if bg_set is not None:  # the query's background joins the parts
                bg_new = torch.cat([bg_set, bg_new.unsqueeze(1)], dim=1)
            logits, _ = self._score(guide, fg_new, bg_new, fg_set)
        return {"logits": logits, "similarity": similarity}

    def forward(self, support_images: torch.Tensor, support_masks: torch.Tensor,
                query_images: torch.Tensor) -> dict[str, torch.Tensor]:
        """support_images (B,K,3,H,W), support_masks (B,K,H,W), query_images (B,3,H,W)."""
        return episode_forward(self, support_images, support_masks, query_images)


def episode_forward(model: nn.Module, support_images: torch.Tensor, support_masks: torch.Tensor,
                    query_images: torch.Tensor) -> dict[str, torch.Tensor]:
    """One batch of k-shot episodes through a training-free model's encode/support_prototype/segment."""
    b, k = support_images.shape[:2]
    support = model.encode(support_images.flatten(0, 1))
    protos = model.support_prototype(support, support_masks.flatten(0, 1))
    return model.segment(model.encode(query_images), ops.fuse_prototype_batch(protos, b, k))


def _weighted_mean(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """features (B,C,h,w), weights (B,h,w) -> (B,C)."""
    total = torch.einsum("bchw,bhw->bc", features, weights)
    return total / weights.flatten(1).sum(1).clamp_min(1e-6).unsqueeze(1)
