"""`propagate` mode: the first frame's prototypes, updated online from confident predictions."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sgone.errors import SgoneError


@dataclass
class PropagationConfig:
    """Online prototype update of `propagate` mode (after OnAVOS's online adaptation).

    After a frame is predicted, its object core and its far background give a new pair of
    prototypes (`Predictor.update_support`); the band between them is ignored:
    - core: the confident object (probability >= `high`) eroded by r, the larger of the depth
      that keeps `core` of its area and the depth that leaves at most `core` x the first mask's
      area (so a prediction that spilled well beyond the object still yields a core inside it);
    - background: every pixel farther than `margin` x r from the confident object. Taking
      "probability <= 0.2" as background instead leaves out exactly the pixels around the
      object where stride-8 features mix object and background; the background prototype then
      drifts away from them and the mask grows frame after frame (measured: J fell 8-14 points
      below `independent` on the generated clips).
    A frame is learnt from only when its confident object covers at least `min_area` of the
    first mask's area (the object was not lost or hidden) and its mask area is within a factor
    `max_growth` of the last frame learnt from (initially the first mask): self-training on a
    mask that spilled onto the background makes it spill further, so such frames are skipped.
    The prototypes are blended in with `weight`; schedule "average" lowers it over time
    (weight / (1 + weight * t)) so the first frame keeps a share 1 / (1 + weight * t) instead of
    fading exponentially ("ema": constant weight).

    Measured with the default training-free model on generated clips (benchmarks and tests):
    without the `max_growth` gate the update gained 2.5-4 J points at 96x128 but lost 1-8 at
    larger sizes (480p: -0.6 at native size, -5.6 at --size 473), because that model's masks
    are 1.4-3.9x too large there; with the gate those frames are not learnt from and the result
    equals `independent`. Area units are frame fractions, so every size compares.
    """

    high: float = 0.8
    core: float = 0.5
    margin: float = 1.0
    weight: float = 0.2
    schedule: str = "average"
    min_area: float = 0.25
    max_growth: float = 1.5

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def confident_mask(
    probability: np.ndarray, high: float = 0.8, core: float = 0.5, margin: float = 1.0, expected_area: float | None = None
) -> np.ndarray:
    """HxW uint8 update mask: 1 = object core, 0 = far background, 255 = ignored band.

    The confident object (probability >= high) is eroded by r, the larger of: the depth that
    keeps `core` of its area, and (with `expected_area`, the object's size known from the first
    frame) the depth that leaves at most `core` * expected_area pixels - so that a prediction
    which spilled well beyond the object still yields a core inside it. Background is every
    pixel farther than margin * r (Chebyshev) from the confident object.
    """
    obj = probability >= high
    out = np.full(probability.shape, 255, dtype=np.uint8)
    r = erosion_depth(obj, core)
    if expected_area is not None:
        r = max(r, erosion_to_area(obj, core * expected_area))
    band = int(round(margin * r))
    out[erode_square(~obj, band) if band > 0 else ~obj] = 0
    out[erode_square(obj, r) if r > 0 else obj] = 1
    return out


def erosion_depth(mask: np.ndarray, keep: float) -> int:
    """Largest square-erosion radius that keeps at least `keep` of the mask's area (0 if empty)."""
    area = int(np.count_nonzero(mask))
    if area == 0 or keep >= 1.0:
        return 0
    lo, hi = 0, max(1, min(mask.shape) // 2)
    while lo < hi:  # area after erosion falls as the radius grows: binary search
        mid = (lo + hi + 1) // 2
        if np.count_nonzero(erode_square(mask, mid)) >= keep * area:
            lo = mid
        else:
            hi = mid - 1
    return lo


def erosion_to_area(mask: np.ndarray, max_area: float) -> int:
    """Smallest square-erosion radius that leaves at most `max_area` pixels."""
    if np.count_nonzero(mask) <= max_area:
        return 0
    lo, hi = 1, max(1, max(mask.shape))
    while lo < hi:
        mid = (lo + hi) // 2
        if np.count_nonzero(erode_square(mask, mid)) <= max_area:
            hi = mid
        else:
            lo = mid + 1
    return lo


def erode_square(mask: np.ndarray, radius: int, border: bool = True) -> np.ndarray:
    """Binary erosion by a (2r+1) x (2r+1) square; `border` is the value assumed outside the image
    (True: only pixels of the other class inside the image erode, so the image edge does not)."""
    m = np.asarray(mask, dtype=bool)
    if radius <= 0:
        return m.copy()
    width = 2 * radius + 1
    for axis in (0, 1):
        n = m.shape[axis]
        pad = [(radius + 1, radius) if a == axis else (0, 0) for a in range(2)]
        c = np.cumsum(np.pad(m.astype(np.int32), pad, constant_values=int(border)), axis=axis)
        # window sums over [i - r, i + r] as differences of the running sum (views, no copies)
        hi = c[width:width + n] if axis == 0 else c[:, width:width + n]
        lo = c[:n] if axis == 0 else c[:, :n]
        m = (hi - lo) == width
    return m


UPDATE_MAX_SIDE = 256  # the update mask is built at most this large: the network sees it at stride 8


def update_mask(probability: np.ndarray, config: PropagationConfig, expected_area: float) -> np.ndarray:
    """`confident_mask` at the probability's size, built on a grid of at most UPDATE_MAX_SIDE
    pixels a side (the erosion searches cost ~20 passes over the image) and scaled back."""
    h, w = probability.shape
    step = max(1, -(-max(h, w) // UPDATE_MAX_SIDE))
    small = confident_mask(probability[::step, ::step], config.high, config.core, config.margin, expected_area / step**2)
    if step == 1:
        return small
    return np.repeat(np.repeat(small, step, axis=0), step, axis=1)[:h, :w]


class PropagateTracker:
    """After each frame, its confident pixels update the prototype (`PropagationConfig`).

    `stats` counts "updates" and "skipped_updates"."""

    name = "propagate"

    def __init__(self, predictor: Any, config: PropagationConfig | None = None) -> None:
        self.predictor = predictor
        self.config = config or PropagationConfig()
        if self.config.schedule not in ("average", "ema"):
            raise SgoneError(f"{self.config.schedule}: unknown update schedule (use average or ema)")
        self.stats: dict[str, int] = {"updates": 0, "skipped_updates": 0}

    def start(self, first_image: np.ndarray, first_mask: np.ndarray) -> None:
        self.predictor.set_support([first_image], [first_mask])
        self.first_size = np.asarray(first_mask).size
        self.first_area = int(np.count_nonzero(np.asarray(first_mask) == 1))
        self.reference_area = float(self.first_area)  # object area of the last frame learnt from, in first-frame pixels

    def step(self, image: np.ndarray) -> Any:
        config, counts = self.config, self.stats
        pred = self.predictor.predict(image)
        confident_obj = int(np.count_nonzero(pred.probability >= config.high))
        area = int(np.count_nonzero(pred.mask == 1))
        # areas compare across sizes as fractions of the frame
        scale = pred.probability.size / max(1, self.first_size)
        usable = (
            confident_obj >= config.min_area * self.first_area * scale  # the object was not lost
            # nor did the mask jump in size since the last frame learnt from (a spill)
            and self.reference_area / config.max_growth <= area / scale <= self.reference_area * config.max_growth
        )
        if usable:
            conf = update_mask(pred.probability, config, self.first_area * scale)
            usable = bool((conf == 1).any() and (conf == 0).any())
        if usable:
            t = counts["updates"]
            weight = config.weight / (1 + config.weight * t) if config.schedule == "average" else config.weight
            self.predictor.update_support(conf, weight=weight)
            counts["updates"] += 1
            self.reference_area = area / scale
        else:
            counts["skipped_updates"] += 1
        return pred
