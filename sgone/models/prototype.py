"""Training-free few-shot segmentation with ImageNet features alone.

Foreground and background prototypes come from masked average pooling of the support's
features; every query pixel is scored by its cosine similarity to both, and a softmax with a
fixed temperature turns the two scores into a foreground probability (a calibrated
decision: object where the pixel is closer to the object prototype than to the background
one). Optionally the query's own confident pixels give a second pair of prototypes that are
blended in (self-support refinement), which adapts the prototypes to the query's appearance.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from sgone import ops

LEVELS = ("low", "mid", "high")


class PrototypeModel(nn.Module):
    """Cosine prototypes on selected backbone levels; no trained parameters."""

    def __init__(self, backbone: nn.Module, levels: tuple[str, ...] = ("mid", "high"),
                 temperature: float = 10.0, refine_steps: int = 1, refine_confidence: float = 0.7,
                 refine_weight: float = 0.5, config: dict | None = None) -> None:
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
        self.variant = "fixed"
        self.config = dict(config or {}, arch="prototype", levels=list(levels), temperature=temperature,
                           refine_steps=refine_steps, refine_confidence=refine_confidence,
                           refine_weight=refine_weight)

    def encode(self, images: torch.Tensor, need_side: bool = True) -> dict[str, torch.Tensor]:
        """(B,3,H,W) in [0,1] -> {"guide": (B,C,h,w)}: the chosen levels, each L2-normalised per pixel."""
        feats = dict(zip(LEVELS, self.backbone(images)))
        # normalise each level so a wide level (e.g. 2048 channels) does not drown the others
        parts = [F.normalize(feats[name], dim=1) for name in self.levels]
        return {"guide": torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]}

    def support_prototype(self, encoded: dict[str, torch.Tensor], masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """masks (B,H,W) -> {"vector": fg (B,C), "background": bg (B,C)}."""
        guide = encoded["guide"]
        fg = ops.masked_average_pooling(guide, masks, mode="downsample", region="foreground")
        bg = ops.masked_average_pooling(guide, masks, mode="downsample", region="background")
        return {"vector": fg, "background": bg}

    @staticmethod
    def fuse_prototypes(prototypes: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {key: ops.fuse_vectors([p[key] for p in prototypes]) for key in prototypes[0]}

    def _score(self, guide: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sim_fg = ops.cosine_similarity_map(fg, guide)
        sim_bg = ops.cosine_similarity_map(bg, guide)
        logits = self.temperature * torch.stack([sim_bg, sim_fg], dim=1)
        return logits, sim_fg

    def segment(self, encoded: dict[str, torch.Tensor], prototype: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """-> {"logits": (B,2,h,w), "similarity": (B,h,w) cosine to the object prototype}."""
        guide = encoded["guide"]
        fg, bg = prototype["vector"], prototype["background"]
        logits, similarity = self._score(guide, fg, bg)
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
            logits, _ = self._score(guide, fg_new, bg_new)
        return {"logits": logits, "similarity": similarity}

    def forward(self, support_images: torch.Tensor, support_masks: torch.Tensor,
                query_images: torch.Tensor) -> dict[str, torch.Tensor]:
        """support_images (B,K,3,H,W), support_masks (B,K,H,W), query_images (B,3,H,W)."""
        b, k = support_images.shape[:2]
        support = self.encode(support_images.flatten(0, 1))
        protos = self.support_prototype(support, support_masks.flatten(0, 1))
        fused = {key: value.view(b, k, -1).mean(dim=1) for key, value in protos.items()}
        return self.segment(self.encode(query_images), fused)


def _weighted_mean(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """features (B,C,h,w), weights (B,h,w) -> (B,C)."""
    total = torch.einsum("bchw,bhw->bc", features, weights)
    return total / weights.flatten(1).sum(1).clamp_min(1e-6).unsqueeze(1)
