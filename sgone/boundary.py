"""Edge-aware refinement shared by still images and video: the guided filter (He et al. 2013).

`refine_probability` is the boundary step of `Predictor(boundary="guided")` (off by default): the probability map,
upsampled bilinearly from the stride-8 grid, is smoothed by a guided filter steered by the image's
grey levels, so mask edges move onto the image's edges. Its window is given in feature strides at
the output resolution, so it scales with the image.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def box_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """(B,C,H,W) mean over a (2r+1)^2 window clipped at the image border (running sums, O(HW))."""
    if radius <= 0:
        return x
    ones = torch.ones(1, 1, *x.shape[-2:], dtype=x.dtype, device=x.device)
    return _box_sum(x, radius) / _box_sum(ones, radius)


def _box_sum(x: torch.Tensor, r: int) -> torch.Tensor:
    for dim in (-2, -1):
        n = x.shape[dim]
        c = F.pad(x.cumsum(dim), (0, 0, 1, 0) if dim == -2 else (1, 0))
        at = torch.arange(n, device=x.device)
        hi = c.index_select(dim, torch.clamp(at + r + 1, max=n))
        lo = c.index_select(dim, torch.clamp(at - r, min=0))
        x = hi - lo
    return x


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float, scale: int = 1) -> torch.Tensor:
    """Edge-aware smoothing of `src` (H,W) steered by `guide` (H,W), both in [0,1] (He et al. 2013).

    The local linear model src ~ a * guide + b is fitted in (2r+1)^2 windows; `scale` > 1 fits
    it on a grid `scale` times coarser and upsamples a and b (the "fast guided filter"), which
    keeps the guide's full-resolution edges at a fraction of the cost.
    """
    h, w = guide.shape
    g_full = guide[None, None]
    g, p = g_full, src[None, None]
    if scale > 1:
        size = (max(1, h // scale), max(1, w // scale))
        g = F.interpolate(g_full, size=size, mode="bilinear", align_corners=False)
        p = F.interpolate(p, size=size, mode="bilinear", align_corners=False)
        radius = max(1, radius // scale)
    mean_g, mean_p = box_filter(g, radius), box_filter(p, radius)
    var_g = box_filter(g * g, radius) - mean_g * mean_g
    cov = box_filter(g * p, radius) - mean_g * mean_p
    a = cov / (var_g + eps)
    b = mean_p - a * mean_g
    a, b = box_filter(a, radius), box_filter(b, radius)
    if scale > 1:
        a = F.interpolate(a, size=(h, w), mode="bilinear", align_corners=False)
        b = F.interpolate(b, size=(h, w), mode="bilinear", align_corners=False)
    return (a * g_full + b)[0, 0]


def grey_image(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> (H,W) float32 grey level in [0,1], the mean of the channels (integer sum first: a
    float mean over the last axis of a frame took 7x longer)."""
    image = np.asarray(image, dtype=np.uint8)
    total = image[..., 0].astype(np.uint16)
    total += image[..., 1]
    total += image[..., 2]
    return torch.from_numpy(total).float().mul_(1.0 / 765.0)


# Chosen on fold 0 of the real corpora (300 1-shot episodes, default model: 23.1 -> 25.0 mIoU), confirmed
# on folds 1-3 (18.9 -> 20.3): benchmarks/boundary_check.py, docs/results.md section 3.
BOUNDARY_RADIUS = 2.0
BOUNDARY_EPS = 0.01
# Models with a DINOv2 part take a finer filter: with 2.0/0.01 the default's fold models lost 1.7-2.7 mIoU
# on every held-out fold. 1.0/0.001 chosen on fold 0 of them (200 1-shot episodes: 34.5 -> 35.7; folds 1-3
# +0.4/+0.3/+0.0): benchmarks/small_objects.py --choose, docs/results.md "Small objects".
SEMANTIC_BOUNDARY_RADIUS = 1.0
SEMANTIC_BOUNDARY_EPS = 0.001


def boundary_settings(model) -> tuple[float, float]:
    """(radius, eps) of `refine_probability` for a model of any runtime: the finer pair when it has a
    DINOv2 part (a torch model's `backbone.semantic`, an exported model's `semantic` session), else the
    CNN models' pair."""
    if hasattr(getattr(model, "backbone", None), "semantic") or getattr(model, "semantic", None) is not None:
        return SEMANTIC_BOUNDARY_RADIUS, SEMANTIC_BOUNDARY_EPS
    return BOUNDARY_RADIUS, BOUNDARY_EPS


def refine_probability(prob: torch.Tensor, image: np.ndarray, input_size: int, radius: float = BOUNDARY_RADIUS,
                       eps: float = BOUNDARY_EPS) -> torch.Tensor:
    """(N,H,W) probabilities at the image's size, `image` HxWx3 uint8 -> (N,H,W) in [0,1].

    radius: the filter's window radius in feature strides (8 input pixels, here measured at the
    output's resolution, whose longer side the network saw as `input_size`); eps: the guided filter's
    regulariser (larger = smoother, less edge-following). The coefficients are fitted on a grid about
    a quarter stride coarse (the fast guided filter), so big images stay cheap.
    """
    h, w = prob.shape[-2:]
    if image.shape[:2] != (h, w):
        raise ValueError(f"refine_probability: image {image.shape[:2]} and probability {(h, w)} differ in size")
    stride = 8.0 * max(h, w) / max(1, input_size)
    pixels = int(round(radius * stride))
    if pixels <= 0:
        return prob
    scale = max(1, int(stride // 4))
    grey = grey_image(image).to(prob.device)
    return torch.stack([guided_filter(grey, p.float(), pixels, eps, scale) for p in prob]).clamp(0, 1)
