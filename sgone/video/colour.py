"""Pure maths of the temporal and memory modes: location prior from the previous mask and colour models.
The guided filter that lifts a coarse probability map to the frame's edges lives in `sgone.boundary`
(still images use it too)."""
from __future__ import annotations

import math

import numpy as np
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


def colour_index(image: torch.Tensor, bins: int) -> torch.Tensor:
    """(H,W,3) uint8 -> (H,W) long: the pixel's cell in a bins^3 RGB histogram."""
    q = (image.to(torch.int32) * bins) >> 8  # = value * bins // 256; int32 and a shift: 6x faster per frame
    return ((q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]).long()


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


class ColourModel:
    """Object and background RGB histograms (from the first mask, then following the clip's
    confident pixels), giving each pixel's colour log-likelihood ratio.

    bins: per channel; rate: share of each frame's confident pixels (>= 0.9 object, <= 0.1
    background) blended into the histograms (0 = frozen at the first frame).
    """

    def __init__(self, image: np.ndarray, mask: np.ndarray, bins: int = 16, rate: float = 0.1) -> None:
        self.bins, self.rate = bins, rate
        index = self.index(image)
        m = torch.from_numpy(np.asarray(mask, dtype=np.uint8))
        self.histograms = [colour_histogram(index, (m == k).float(), bins) for k in (1, 0)]

    def index(self, image: np.ndarray) -> torch.Tensor:
        """HxWx3 uint8 -> (H,W) colour cells."""
        return colour_index(torch.from_numpy(np.array(image, dtype=np.uint8)), self.bins)

    def log_ratio(self, index: torch.Tensor) -> torch.Tensor:
        """(H,W) colour cells -> (H,W) log p(colour | object) / p(colour | background), clipped."""
        return colour_log_ratio(index, *self.histograms)

    def apply(self, prob: torch.Tensor, image: np.ndarray, weight: float) -> torch.Tensor:
        """(H,W) probability of HxWx3 `image` -> its logit shifted by `weight` x the colour log ratio,
        as a probability; the models then follow this frame's confident pixels."""
        index = self.index(image)
        shifted = torch.sigmoid(torch.logit(prob.clamp(1e-4, 1 - 1e-4)) + weight * self.log_ratio(index))
        self.follow(index, shifted)
        return shifted

    def follow(self, index: torch.Tensor, prob: torch.Tensor) -> None:
        """Blend the confident pixels of (H,W) `prob` in; a side with no confident pixel keeps its model."""
        if self.rate <= 0:
            return
        self.histograms = [
            (1 - self.rate) * old + self.rate * colour_histogram(index, sel.float(), self.bins) if bool(sel.any()) else old
            for old, sel in zip(self.histograms, (prob >= 0.9, prob <= 0.1))
        ]
