"""Pure maths of the temporal mode: location prior from the previous mask, and the guided filter
that lifts a coarse probability map to the frame's edges."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def distance_to_mask(mask: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """(h,w) bool -> (h,w) Euclidean distance (in cells) of every cell to the nearest mask cell; inf if empty.

    Only the mask's edge cells (a 4-neighbour outside the mask) are candidates: the nearest mask
    cell of an outside cell is always one (a step from it towards the outside cell would be
    nearer), so the cost is cells x edge cells, not cells x object cells (at --size 0 on a
    1080p frame that was 32k x 10k distances at once). Rows go `chunk` at a time.
    """
    h, w = mask.shape
    if not bool(mask.any()):
        return torch.full((h, w), math.inf, device=mask.device)
    pad = F.pad(mask[None, None].float(), (1, 1, 1, 1), value=1.0)[0, 0] > 0.5  # the image border is no edge
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=mask.device),
                            torch.arange(w, dtype=torch.float32, device=mask.device), indexing="ij")
    cells = torch.stack([ys.flatten(), xs.flatten()], dim=1)
    edge = cells[(mask & ~inner).flatten()]
    nearest = torch.cat([torch.cdist(part, edge).amin(dim=1) for part in cells.split(chunk)])
    return nearest.masked_fill(mask.flatten(), 0.0).view(h, w)


def location_prior(previous: torch.Tensor, sigma: float, floor: float = 0.0) -> torch.Tensor:
    """(h,w) bool previous mask -> (h,w) weights in [floor, 1]: 1 on and near the object, falling
    as a Gaussian of the distance beyond it, with a width of `sigma` x the object's size
    (the square root of its area in cells), so a large object may move further between frames."""
    size = math.sqrt(max(1.0, float(previous.sum())))
    d = distance_to_mask(previous)
    return floor + (1.0 - floor) * torch.exp(-0.5 * (d / (sigma * size)) ** 2)


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


def colour_index(image: torch.Tensor, bins: int) -> torch.Tensor:
    """(H,W,3) uint8 -> (H,W) long: the pixel's cell in a bins^3 RGB histogram."""
    q = image.long() * bins // 256
    return (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]


def colour_histogram(index: torch.Tensor, weights: torch.Tensor, bins: int) -> torch.Tensor:
    """(H,W) colour cells, (H,W) weights -> (bins^3,) normalised histogram (uniform when the weights are 0)."""
    hist = torch.bincount(index.flatten(), weights=weights.flatten().double(), minlength=bins ** 3).float()
    total = float(hist.sum())
    return hist / total if total > 0 else torch.full_like(hist, 1.0 / hist.numel())


def colour_log_ratio(index: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor, clip: float = 3.0,
                     eps: float = 1e-4) -> torch.Tensor:
    """(H,W) log(p(colour | object) / p(colour | background)), clipped to [-clip, clip]."""
    ratio = torch.log((fg + eps) / (bg + eps))
    return ratio[index].clamp(-clip, clip)
