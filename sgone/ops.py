"""The maths of SG-One as small pure tensor functions.

Masks follow the project convention: 0 = background, 1 = object, 255 = ignore.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = 255


def region_weights(mask: torch.Tensor, size: tuple[int, int], region: str = "foreground") -> torch.Tensor:
    """Fraction of each feature cell covered by the region, (B,H,W) mask -> (B,1,h,w) in [0, 1].

    Area downsampling (adaptive average pooling) so every mask pixel counts once; ignore
    pixels count for neither region.
    """
    target = 1 if region == "foreground" else 0
    m = (mask == target).float().unsqueeze(1)
    if m.shape[-2:] == tuple(size):
        return m
    return F.adaptive_avg_pool2d(m, size)


def masked_average_pooling(features: torch.Tensor, mask: torch.Tensor, mode: str = "downsample",
                           region: str = "foreground", denominator: str = "sample",
                           eps: float = 1e-6) -> torch.Tensor:
    """Mean feature vector inside the mask, per sample.

    features: (B,C,h,w); mask: (B,H,W) with 0/1/255 at any resolution. Returns (B,C).
    mode "upsample": features bilinearly upsampled to the mask's resolution (as published);
    mode "downsample": mask area-downsampled to the features' resolution (cheaper, same mean
    up to interpolation). region "background" pools the 0 pixels instead. denominator
    "batch" reproduces the public code's defect (area summed over the whole batch).
    A sample whose region is empty gets a zero vector; callers that face users check first.
    """
    if features.dim() != 4 or mask.dim() != 3 or features.shape[0] != mask.shape[0]:
        raise ValueError(f"expected features (B,C,h,w) and mask (B,H,W), got {tuple(features.shape)} and {tuple(mask.shape)}")
    if mode == "upsample":
        feats = F.interpolate(features, size=mask.shape[-2:], mode="bilinear", align_corners=False)
        weights = (mask == (1 if region == "foreground" else 0)).float().unsqueeze(1)
    elif mode == "downsample":
        feats = features
        weights = region_weights(mask, features.shape[-2:], region)
    else:
        raise ValueError(f"unknown MAP mode {mode!r}: use 'upsample' or 'downsample'")
    total = (feats * weights).sum(dim=(2, 3))
    area = weights.sum(dim=(1, 2, 3))
    if denominator == "batch":
        area = area.sum().expand_as(area)
    elif denominator != "sample":
        raise ValueError(f"unknown denominator {denominator!r}")
    return total / area.clamp_min(eps).unsqueeze(1)


def cosine_similarity_map(vectors: torch.Tensor, features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity between vector(s) and every pixel of a feature map.

    vectors: (B,C) or (B,N,C); features: (B,C,h,w). Returns (B,h,w) or (B,N,h,w) in [-1, 1].
    """
    f = F.normalize(features, dim=1, eps=eps)
    if vectors.dim() == 2:
        v = F.normalize(vectors, dim=1, eps=eps)
        return torch.einsum("bc,bchw->bhw", v, f)
    v = F.normalize(vectors, dim=2, eps=eps)
    return torch.einsum("bnc,bchw->bnhw", v, f)


def fuse_vectors(vectors: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """k-shot fusion by averaging support vectors: (K,B,C) or a list of (B,C) -> (B,C)."""
    if isinstance(vectors, (list, tuple)):
        vectors = torch.stack(list(vectors))
    return vectors.mean(dim=0)


def fuse_predictions(probs: torch.Tensor, mode: str = "max", threshold: float = 0.5) -> torch.Tensor:
    """k-shot fusion of k one-shot foreground probabilities (K,B,H,W) -> (B,H,W).

    "max": pixel-wise maximum (the union of the k masks at any threshold), as SG-One;
    "vote": HSNet's vote: count of shots above `threshold`, divided by the episode's largest
    count, so thresholding at 0.5 keeps pixels with at least half the top vote;
    "mean": the average probability.
    """
    if mode == "max":
        return probs.max(dim=0).values
    if mode == "mean":
        return probs.mean(dim=0)
    if mode == "vote":
        votes = (probs > threshold).float().sum(dim=0)
        top = votes.flatten(1).max(dim=1).values.clamp_min(1.0)
        return votes / top.view(-1, *([1] * (votes.dim() - 1)))
    raise ValueError(f"unknown fusion {mode!r}: use 'max', 'vote' or 'mean'")


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of (B,C,h,w) scores to (B,C,H,W)."""
    if logits.shape[-2:] == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
