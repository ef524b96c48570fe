"""`temporal` mode: the first frame's prototypes plus a memory of past frames, a location prior
from the previous mask, and an edge-aware upsampling of the probability to the frame.

Per frame (network grid = stride 8 of the input at `--size`):
1. prototype probability: the frame's features against the first frame's object and background
   prototypes (what `independent` computes);
2. matching probability: every cell's best matches among the object and background cells of the
   memory (`FrameMemory`: the first frame anywhere, confident past frames anywhere, the previous
   frame within a window), sigmoid(temperature x (object score - background score));
3. their weighted mean, times the location prior of the previous mask (`colour.location_prior`),
   which is dropped (reset) when the previous mask lost the object;
4. upsampled to the frame (bilinear), its logit shifted by the colour log-likelihood ratio of
   object and background colour models (RGB histograms from the first mask, then following the
   clip's confident pixels), filtered by the guided filter on the frame's grey levels, and
   thresholded at the predictor's threshold.
The memory keeps frames by the rule of `FrameMemory` (confidence, area, spacing, capacity); every
kept frame counts alike (best match over all), without weights by age.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sgone.errors import SgoneError
from sgone.inputs import check_image
from sgone.video.memory import FrameMemory, MemoryEntry, entry_from_probability, frame_confidence, match, window_mask
from sgone.boundary import grey_image, guided_filter
from sgone.video.colour import ColourModel, location_prior


@dataclass
class TemporalConfig:
    """Settings of the temporal mode; defaults chosen on the tuning clips (docs/splits/davis2016-tune.txt)."""

    match_weight: float = 0.3  # share of the matching probability (the rest: prototypes)
    temperature: float = 20.0  # of the matching score difference
    match_cells: int = 600  # the network grid is pooled by the smallest factor leaving at most this many cells to match (speed)
    window: float = 0.3  # previous-frame matching radius, fraction of the grid's longer side
    capacity: int = 0  # confident past frames kept besides the first and the previous (0: tuning found no gain)
    every: int = 5  # at least this many frames between two kept frames
    min_confidence: float = 0.8
    max_growth: float = 2.0
    prior_sigma: float = 1.0  # location prior width, x the previous object's size; 0 = no prior
    prior_floor: float = 0.0
    lost_area: float = 0.05  # previous mask under this share of the first mask's area: prior reset
    guided_radius: float = 0.005  # guided filter window radius, fraction of the frame diagonal; 0 = bilinear only
    guided_eps: float = 1e-2
    guided_scale: int = 4  # the filter's coefficients are fitted this many times coarser
    colour_weight: float = 1.0  # weight of the colour log-likelihood ratio added to the logit; 0 = off
    colour_bins: int = 16  # per RGB channel
    colour_rate: float = 0.1  # share of each frame's confident pixels in the colour models

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode_frame(predictor: Any, image: np.ndarray) -> dict[str, torch.Tensor]:
    """A frame (HxWx3 uint8) through the predictor's model at its input size: the costly part of a video step."""
    from sgone.inputs import image_tensor, input_size

    hw = input_size(*image.shape[:2], predictor.size)
    return predictor.model.encode(image_tensor(image, hw).to(predictor.device))


def grid_features(encoded: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B,C,h,w) features on the grid of the model's logits: its "guide", or for a fused model
    (parts' features keyed "<part>.guide") the finest part's, the grid its fused logits come at."""
    if "guide" in encoded:
        return encoded["guide"]
    guides = [v for k, v in encoded.items() if k.endswith(".guide")]
    if not guides:
        raise SgoneError(f"the temporal video mode needs a model with guide features (it got {', '.join(encoded)}); "
                         "use --mode independent")
    return max(guides, key=lambda g: g.shape[-2] * g.shape[-1])


def match_stride(grid: tuple[int, int], max_cells: int) -> int:
    """Smallest pooling factor s with ceil(h/s) * ceil(w/s) <= max_cells (at least 1)."""
    h, w = grid
    s = 1
    while -(-h // s) * -(-w // s) > max_cells and s < max(h, w):
        s += 1
    return s


class TemporalTracker:
    """First-frame prototypes + memory matching + location prior + guided upsampling (module docstring).

    predictor: a `sgone.predictor.Predictor` (its model, input size, device and threshold are used).
    `stats` counts "long_term" (frames kept in memory) and "prior_resets" (frames with the object lost).
    """

    name = "temporal"

    def __init__(self, predictor: Any, config: TemporalConfig | None = None) -> None:
        self.predictor = predictor
        self.model = predictor.model
        self.config = config or TemporalConfig()
        self.stats: dict[str, int] = {"long_term": 0, "prior_resets": 0}

    @torch.inference_mode()
    def _encode(self, image: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        encoded = encode_frame(self.predictor, image)
        return encoded, F.normalize(grid_features(encoded)[0].float(), dim=0).cpu()

    @torch.inference_mode()
    def start(self, first_image: np.ndarray, first_mask: np.ndarray) -> None:
        from sgone.inputs import input_size, mask_tensor

        first_image = check_image(first_image, "first frame")
        hw = input_size(*first_image.shape[:2], self.predictor.size)
        encoded, feats = self._encode(first_image)
        mask = mask_tensor(np.asarray(first_mask, dtype=np.uint8), hw).to(self.predictor.device)
        self.prototype = self.model.support_prototype(encoded, mask)
        feats = self._match_features(feats)
        grid = feats.shape[-2:]
        m = torch.from_numpy(np.asarray(first_mask, dtype=np.uint8))[None, None]
        fg = F.adaptive_avg_pool2d((m == 1).float(), grid)[0, 0]
        valid = F.adaptive_avg_pool2d((m != 255).float(), grid)[0, 0] > 0.5  # cells mostly of ignored (255) pixels stay out
        c = self.config
        self.memory = FrameMemory(c.capacity, c.every, c.min_confidence, c.max_growth)
        self.memory.set_first(entry_from_probability(feats, fg, 0, low=0.5 - 1e-6, high=0.5, valid=valid))
        self.memory.first.confidence = 1.0
        on_net = F.adaptive_avg_pool2d((m == 1).float(), grid_features(encoded).shape[-2:])[0, 0] >= 0.5
        self.first_area = max(1.0, float(on_net.sum()))  # object cells on the network grid
        self.previous_mask: torch.Tensor | None = on_net
        if c.colour_weight > 0:
            self.colour = ColourModel(first_image, first_mask, c.colour_bins, c.colour_rate)
        self.frame = 0
        self._windows: dict[tuple[int, int], torch.Tensor] = {}

    def _window(self, h: int, w: int) -> torch.Tensor:
        if (h, w) not in self._windows:
            self._windows[(h, w)] = window_mask(h, w, self.config.window * max(h, w))
        return self._windows[(h, w)]

    def _match_features(self, feats: torch.Tensor) -> torch.Tensor:
        """(C,h,w) -> the coarser matching grid (C,h',w'), unit vectors."""
        s = match_stride(feats.shape[-2:], self.config.match_cells)
        if s <= 1:
            return feats
        return F.normalize(F.avg_pool2d(feats[None], s, ceil_mode=True)[0], dim=0)

    @torch.inference_mode()
    def network(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The costly part of a step, which no setting below changes: (prototype probability (h,w)
        on the network grid, unit features (C,h',w') on the matching grid)."""
        encoded, feats = self._encode(image)
        logits = self.model.segment(encoded, self.prototype)["logits"]
        return logits.float().softmax(dim=1)[0, 1].cpu(), self._match_features(feats)

    @torch.inference_mode()
    def grid_probability(self, p_proto: torch.Tensor, mfeats: torch.Tensor) -> torch.Tensor:
        """(h,w) object probability on the network grid, before the location prior, from the
        prototype probability and the frame's features on the matching grid."""
        c = self.config
        if c.match_weight <= 0:
            return p_proto
        h, w = mfeats.shape[-2:]
        entries: list[tuple[MemoryEntry, torch.Tensor | None]] = [(e, None) for e in self.memory.global_entries()]
        if self.memory.previous is not None:
            entries.append((self.memory.previous, self._window(h, w)))
        fg, bg = match(mfeats.flatten(1), entries)
        p_match = torch.sigmoid(c.temperature * (fg - bg)).view(1, 1, h, w)
        if p_match.shape[-2:] != p_proto.shape:
            p_match = F.interpolate(p_match, size=p_proto.shape, mode="bilinear", align_corners=False)
        p_match = p_match[0, 0]
        return (1 - c.match_weight) * p_proto + c.match_weight * p_match

    @torch.inference_mode()
    def step(self, image: np.ndarray) -> Any:
        from sgone.predictor import Prediction

        c = self.config
        self.frame += 1
        image = check_image(image, "frame")
        p_proto, mfeats = self.network(image)
        prob = self.grid_probability(p_proto, mfeats)
        prior = self.prior(prob.shape)
        if prior is not None:
            prob = prob * prior
        # memory update on the matching grid (what the next frame matches against)
        mprob = prob if mfeats.shape[-2:] == prob.shape else F.adaptive_avg_pool2d(prob[None, None], mfeats.shape[-2:])[0, 0]
        entry = entry_from_probability(mfeats, mprob, self.frame)
        entry.confidence = frame_confidence(prob)
        area = float((prob > 0.5).sum())
        if self.memory.remember(entry, area, self.first_area):
            self.stats["long_term"] += 1
        self.previous_mask = prob > 0.5
        full = self.upsample(prob, image)
        mask = (full > self.predictor.threshold).numpy().astype(np.uint8)
        return Prediction(mask=mask, probability=full.numpy(), similarity=full.numpy())

    def prior(self, shape: tuple[int, int]) -> torch.Tensor | None:
        """The location prior of the previous mask at `shape`, or None (disabled, or reset: object lost)."""
        c = self.config
        if c.prior_sigma <= 0 or self.previous_mask is None:
            return None
        prev = self.previous_mask
        if prev.shape != shape:
            prev = F.interpolate(prev[None, None].float(), size=shape, mode="nearest")[0, 0] > 0.5
        if float(prev.sum()) < c.lost_area * self.first_area:
            self.stats["prior_resets"] += 1
            return None
        return location_prior(prev, c.prior_sigma, c.prior_floor)

    def upsample(self, prob: torch.Tensor, image: np.ndarray) -> torch.Tensor:
        """(h,w) grid probability -> (H,W) at the frame's size: bilinear, shifted by the colour
        models (which then learn from this frame), guided by the frame's edges."""
        h, w = image.shape[:2]
        full = F.interpolate(prob[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        c = self.config
        if c.colour_weight > 0:
            full = self.colour.apply(full, image, c.colour_weight)
        radius = int(round(c.guided_radius * (h * h + w * w) ** 0.5))
        if radius <= 0:
            return full
        grey = grey_image(image)
        return guided_filter(grey, full, radius, c.guided_eps, c.guided_scale).clamp(0, 1)
