"""`memory` mode: label propagation over a memory of frames (the training-free form of
space-time memory reading, as in DINO/CRW video propagation), backed by the first frame's
prototypes for re-detection.

Per frame (features on the network grid, stride 8 of the input at `--size`):
1. read: every cell of the new frame takes a soft, top-k weighted vote of the labels of its most
   similar cells in the memory (`propagate_labels`): the first frame with its given mask (matched
   anywhere) and the `recent` previous frames with their predicted soft masks (matched within a
   window around the cell, since objects move little between frames);
2. blend with the prototype probability of the first frame's prototypes (what `independent`
   computes; `proto_weight`), times a location prior around the previous mask; when the object was lost (predicted area under `lost_area` of
   the first mask's), read the first frame only and lean on the prototypes (`redetect_weight`):
   the recent frames' labels would only repeat the loss;
3. small objects: when the predicted object's box is small, the box (grown by `zoom_margin`) is
   cropped from the full frame, run through the network at the input size and read against the
   memory again; its probability replaces the frame's inside the crop (`sgone.ops` crop maths),
   so a far car keeps enough cells;
4. upsampled to the frame, shifted by colour models of the first mask, filtered by the guided
   filter on the frame's grey levels (edges at full resolution), thresholded at the predictor's threshold;
5. the frame's probability, pooled back to the grid, joins the memory as its newest frame (the
   oldest recent frame leaves), so memory is bounded: (1 + recent) frames of cells at any time.
"""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sgone.errors import SgoneError
from sgone.inputs import check_image
from sgone.ops import paste_box, zoom_box
from sgone.boundary import grey_image, guided_filter
from sgone.video.memory import pca_basis, propagate_labels, read_dtype, window_mask
from sgone.video.colour import ColourModel, location_prior
from sgone.video.readout import EVIDENCE, load_keys, load_readout, memory_evidence
from sgone.video.temporal import encode_frame, grid_features


FEATURES = ("finest", "semantic", "both")


def memory_features(encoded: dict[str, torch.Tensor], which: str) -> torch.Tensor:
    """The unit features (C,h,w) the memory reads, on the grid of the model's finest guide features."""
    finest = F.normalize(grid_features(encoded)[0].float(), dim=0)
    if which == "finest":
        return finest
    if which not in FEATURES:
        raise SgoneError(f"memory mode: features must be one of {', '.join(FEATURES)}, not {which!r}")
    if "semantic.guide" not in encoded:
        raise SgoneError(f"memory mode: features={which} needs a fused model with a semantic part "
                         "(e.g. --model prototype-dinov2_s14-mobilenet_v2-whole-int8)")
    semantic = F.interpolate(encoded["semantic.guide"].float(), size=finest.shape[-2:], mode="bilinear", align_corners=False)
    semantic = F.normalize(semantic[0], dim=0)
    return semantic if which == "semantic" else torch.cat([semantic, finest]) / 2 ** 0.5


@dataclass
class LabelMemoryConfig:
    """Settings of the memory mode, chosen by 3-fold clip cross-validation on the 30 DAVIS-2016 train
    clips at two frame steps (docs/video.md; benchmarks/davis_memory_tune.py)."""

    recent: int = 3  # previous frames kept in memory besides the first
    features: str = "finest"  # read on: "finest" (the model's finest guide features), "semantic" (a fused
    # model's DINOv2 part, resized to that grid) or "both" (the two, equally weighted)
    dims: int = 64  # features projected on the first frame's main directions (speed); 0 = all channels
    precision: str = "auto"  # of the read's scores: fp32, bf16, or auto (bf16 where the CPU has it natively)
    topk: int = 10  # memory cells voting for each cell
    temperature: float = 0.05  # of the softmax over the top-k cosine similarities
    window: float = 0.2  # recent frames matched within this radius, fraction of the grid's longer side
    long_term: int = 0  # confident past frames kept besides the recent ones (read anywhere, as XMem's long-term memory); 0 = off
    long_every: int = 5  # a frame may join the long-term memory this many frames after the last one that did
    long_confidence: float = 0.8  # ... when the mean object probability of its object cells is at least this
    long_weight: float = 1.0  # weight of the long-term frames' cells in the vote
    long_pool: int = 2  # their cells pooled by this factor (fewer cells to read: speed)
    certainty_weight: float = 0.0  # recent/long-term cells weighted by their label's certainty |2p-1| to this power; 0 = off
    first_weight: float = 2.0  # weight of the first frame's cells in the vote (x their similarity)
    proto_weight: float = 0.2  # share of the prototype probability in the blend
    lost_area: float = 0.05  # predicted area under this share of the first mask's: object lost
    redetect_weight: float = 0.5  # share of the prototype probability while the object is lost
    zoom_below: float = 0.03  # zoom when the previous object covers under this share of the frame; 0 = off
    zoom_margin: float = 1.0  # the box grown by this x its size on each side
    prior_sigma: float = 1.0  # location prior of the previous mask, width x the object's size; 0 = off
    colour_weight: float = 0.5  # colour log-likelihood ratio added to the logit; 0 = off
    colour_bins: int = 16
    colour_rate: float = 0.0  # share of each frame's confident pixels blended in (0: the first mask's; following drifted)
    guided_radius: float = 0.005  # guided filter window radius, fraction of the frame diagonal; 0 = bilinear
    guided_eps: float = 1e-2
    guided_scale: int = 4
    keys: str = ""  # a learnt key projection's file (benchmarks/davis_keys.py) in place of the first frame's PCA; "" = PCA
    readout: str = ""  # a learnt read-out head's file (benchmarks/davis_readout.py) in place of the blend above; "" = the blend

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class LabelMemoryTracker:
    """Label propagation over the first and recent frames + first-frame prototypes (module docstring).

    predictor: a `sgone.predictor.Predictor` (its model, input size, device and threshold are used).
    `stats` counts "lost" (frames read with the object lost) and "zoomed" (frames with a zoom step).
    """

    name = "memory"

    def __init__(self, predictor: Any, config: LabelMemoryConfig | None = None) -> None:
        self.predictor = predictor
        self.model = predictor.model
        self.config = config or LabelMemoryConfig()
        self.stats: dict[str, int] = {"lost": 0, "zoomed": 0}
        self.head = load_readout(self.config.readout) if self.config.readout else None
        self.keys = load_keys(self.config.keys) if self.config.keys else None  # (basis (C,D), temperature)
        self.temperature = self.keys[1] if self.keys else self.config.temperature
        if self.head is not None and (self.config.long_term > 0 or self.config.certainty_weight > 0):
            raise SgoneError("memory mode: a learnt read-out reads the first and recent frames only "
                             "(long_term and certainty_weight must be 0)")
        self.record: list[torch.Tensor] | None = None  # set to a list to collect each frame's evidence (training)

    # --- the network part (what replays of settings can cache) ---------------------------------
    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """image HxWx3 -> (the model's encoding, unit features (C,h,w) on the network grid)."""
        encoded = encode_frame(self.predictor, image)
        return encoded, memory_features(encoded, self.config.features).cpu()

    @torch.inference_mode()
    def network(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(prototype probability (h,w), unit features (C,h,w)) of a frame; no setting changes them."""
        encoded, feats = self.encode(image)
        logits = self.model.segment(encoded, self.prototype)["logits"]
        prob = logits.float().softmax(dim=1)[0, 1].cpu()
        if prob.shape != feats.shape[-2:]:
            prob = F.interpolate(prob[None, None], size=feats.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        return prob, feats

    # --- tracking --------------------------------------------------------------------------------
    @torch.inference_mode()
    def start(self, first_image: np.ndarray, first_mask: np.ndarray) -> None:
        from sgone.inputs import input_size, mask_tensor

        first_image = check_image(first_image, "first frame")
        hw = input_size(*first_image.shape[:2], self.predictor.size)
        encoded, feats = self.encode(first_image)
        if self.keys is not None and self.keys[0].shape[0] != feats.shape[0]:
            raise SgoneError(f"{self.config.keys}: key projection for {self.keys[0].shape[0]}-channel features, "
                             f"the model gives {feats.shape[0]}")
        self.basis = self.keys[0] if self.keys is not None else pca_basis(feats.flatten(1), self.config.dims)
        feats = self.project(feats)
        mask = np.asarray(first_mask, dtype=np.uint8)
        self.prototype = self.model.support_prototype(encoded, mask_tensor(mask, hw).to(self.predictor.device))
        m = torch.from_numpy(mask)[None, None]
        grid = feats.shape[-2:]
        labels = F.adaptive_avg_pool2d((m == 1).float(), grid)[0, 0]
        valid = F.adaptive_avg_pool2d((m != 255).float(), grid)[0, 0] > 0.5  # cells of mostly ignored pixels stay out
        self.first = (feats.flatten(1)[:, valid.flatten()], labels.flatten()[valid.flatten()])
        self.first_area = max(1.0, float((m == 1).sum()))  # object pixels of the given mask
        self.recent: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=max(0, self.config.recent))
        if self.config.recent > 0:
            self.recent.append((feats.flatten(1), labels.flatten()))
        # zoomed crops read cells at their own scale: the first frame's crop (when the object starts
        # small) and the recent crops with their read labels
        self.zoomed: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=max(1, self.config.recent + 1))
        self.long: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=max(1, self.config.long_term))
        self.since_long = 0  # frames since the last one kept long-term
        self.lost = False
        self.previous = torch.from_numpy(mask == 1)  # (H,W) bool at the frame's size
        box = self.zoom_region(mask.shape)
        if box is not None:
            t, l, b, r = box
            crop_feats = self.project(self.encode(np.ascontiguousarray(first_image[t:b, l:r]))[1])
            crop = torch.from_numpy(mask[t:b, l:r])[None, None]
            crop_labels = F.adaptive_avg_pool2d((crop == 1).float(), crop_feats.shape[-2:])[0, 0]
            self.zoomed.append((crop_feats.flatten(1), crop_labels.flatten()))
        self.colour = ColourModel(first_image, mask, self.config.colour_bins, self.config.colour_rate) \
            if self.config.colour_weight > 0 else None
        self._windows: dict[tuple[int, int], torch.Tensor] = {}

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        """(C,h,w) unit features -> (dims,h,w) unit features on the first frame's basis (as is without one)."""
        if self.basis is None:
            return feats
        return F.normalize(torch.einsum("chw,cd->dhw", feats, self.basis), dim=0)

    def _window(self, h: int, w: int) -> torch.Tensor:
        if (h, w) not in self._windows:
            self._windows[(h, w)] = window_mask(h, w, self.config.window * max(h, w))
        return self._windows[(h, w)]

    def read(self, feats: torch.Tensor, p_proto: torch.Tensor, local: bool = True) -> torch.Tensor:
        """(C,h,w) unit features and (h,w) prototype probability -> (h,w) object probability.
        local: the features are on the frame's own grid (recent frames read within the window);
        False for a zoomed crop, whose cells are read against the whole memory."""
        c = self.config
        h, w = feats.shape[-2:]
        keys, labels, allowed, bias = [self.first[0]], [self.first[1]], [None], [np.log(max(c.first_weight, 1e-6))]
        for k, lab in self.long:
            keys.append(k)
            labels.append(lab)
            allowed.append(None)
            bias.append(self.certainty_bias(lab) + np.log(max(c.long_weight, 1e-6)))
        if not local:
            for k, lab in self.zoomed:
                keys.append(k)
                labels.append(lab)
                allowed.append(None)
                bias.append(0.0)
        if not self.lost:
            for k, lab in self.recent:
                if local and k.shape[1] != h * w:
                    continue  # frames of another grid (a resized clip) are not read locally
                keys.append(k)
                labels.append(lab)
                allowed.append(self._window(h, w) if local else None)
                bias.append(self.certainty_bias(lab))
        p = propagate_labels(feats.flatten(1), keys, labels, c.topk, self.temperature, allowed, bias,
                             read_dtype(c.precision)).view(h, w)
        return self.blend(p, p_proto)

    def blend(self, vote: torch.Tensor, p_proto: torch.Tensor) -> torch.Tensor:
        """The memory's vote (h,w) blended with the prototype probability (h,w); leaning on the
        prototypes while the object is lost."""
        share = self.config.redetect_weight if self.lost else self.config.proto_weight
        return (1 - share) * vote + share * p_proto

    def prior(self, grid: tuple[int, int]) -> torch.Tensor | float:
        """The location prior (h,w) around the previous mask, or 1 (off, lost, or an object under one cell)."""
        if self.config.prior_sigma <= 0 or self.lost:
            return 1.0
        previous = self.previous_on(grid)
        if not bool(previous.any()):
            return 1.0
        return location_prior(previous, self.config.prior_sigma)

    def evidence(self, feats: torch.Tensor, p_proto: torch.Tensor) -> torch.Tensor:
        """(C,h,w) projected unit features, (h,w) prototype probability -> (len(EVIDENCE),h,w): what
        the learnt read-out reads (sgone.video.readout); its "blend" is the training-free read."""
        c = self.config
        h, w = feats.shape[-2:]
        recent = [] if self.lost else [(k, lab, self._window(h, w)) for k, lab in self.recent if k.shape[1] == h * w]
        ev = memory_evidence(feats.flatten(1), self.first, recent, c.topk, self.temperature,
                             float(np.log(max(c.first_weight, 1e-6))), read_dtype(c.precision))
        prior = self.prior((h, w))
        maps = {k: v.view(h, w) for k, v in ev.items()}
        maps["prototype"] = p_proto
        maps["prior"] = prior if torch.is_tensor(prior) else torch.ones(h, w)
        maps["previous"] = F.adaptive_avg_pool2d(self.previous[None, None].float(), (h, w))[0, 0]
        maps["lost"] = torch.full((h, w), float(self.lost))
        maps["blend"] = self.blend(maps["vote"], p_proto) * maps["prior"]
        return torch.stack([maps[k].float() for k in EVIDENCE])

    def certainty_bias(self, labels: torch.Tensor) -> torch.Tensor | float:
        """(M,) soft labels -> the log weight of each cell in the vote: certainty_weight x log |2p-1|
        (a cell whose label the frame was unsure of says less; a given or sure label is unchanged)."""
        w = self.config.certainty_weight
        if w <= 0:
            return 0.0
        return w * torch.log((2 * labels.float() - 1).abs().clamp(min=0.05))

    def remember_long(self, feats: torch.Tensor, grid_prob: torch.Tensor) -> None:
        """Keep a confident frame (features (C,h,w), labels (h,w)) in the long-term memory, pooled by
        `long_pool`, at most every `long_every` frames; the oldest leaves beyond `long_term`."""
        c = self.config
        self.since_long += 1
        if c.long_term <= 0 or self.lost or self.since_long < c.long_every:
            return
        obj = grid_prob > 0.5
        if not bool(obj.any()) or float(grid_prob[obj].mean()) < c.long_confidence:
            return
        if c.long_pool > 1:
            feats = F.normalize(F.avg_pool2d(feats[None], c.long_pool, ceil_mode=True)[0], dim=0)
            grid_prob = F.avg_pool2d(grid_prob[None, None], c.long_pool, ceil_mode=True)[0, 0]
        self.long.append((feats.flatten(1), grid_prob.flatten()))
        self.since_long = 0

    @torch.inference_mode()
    def step(self, image: np.ndarray) -> Any:
        image = check_image(image, "frame")
        p_proto, feats = self.network(image)
        return self.step_from(image, p_proto, feats)

    @torch.inference_mode()
    def step_from(self, image: np.ndarray, p_proto: torch.Tensor, feats: torch.Tensor) -> Any:
        """`step` with the network part given (p_proto (h,w), feats (C,h,w) unit)."""
        from sgone.predictor import Prediction

        feats = self.project(feats)
        if self.lost:
            self.stats["lost"] += 1
        if self.head is not None or self.record is not None:
            evidence = self.evidence(feats, p_proto)
            if self.record is not None:
                self.record.append(evidence.half())
            prob = evidence[EVIDENCE.index("blend")] if self.head is None else self.head(evidence[None])[0]
        else:
            prob = self.read(feats, p_proto) * self.prior(feats.shape[-2:])
        full = F.interpolate(prob[None, None], size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
        box = self.zoom_region(image.shape[:2])
        if box is not None:
            full = self.zoom(image, full, box)
        full = self.refine(full, image)
        # the frame joins the memory with its refined labels, pooled back to the grid
        grid_prob = F.adaptive_avg_pool2d(full[None, None], feats.shape[-2:])[0, 0]
        if self.config.recent > 0:
            self.recent.append((feats.flatten(1), grid_prob.flatten()))
        self.previous = full > self.predictor.threshold
        self.lost = float(self.previous.sum()) < self.config.lost_area * self.first_area
        self.remember_long(feats, grid_prob)
        probability = full.numpy()
        return Prediction(mask=self.previous.numpy().astype(np.uint8), probability=probability, similarity=probability)

    def zoom_region(self, frame_hw: tuple[int, int]) -> tuple[int, int, int, int] | None:
        """The crop (top, left, bottom, right) in frame pixels for the zoom step, or None: zoom is off,
        the previous object is missing or not small (under `zoom_below` of the frame), or the grown
        box would cover most of the frame anyway."""
        c = self.config
        previous = self.previous
        if c.zoom_below <= 0 or self.lost or previous.shape != tuple(frame_hw) or float(previous.float().mean()) >= c.zoom_below:
            return None
        box = zoom_box(previous, c.zoom_margin, min_side=max(frame_hw) // 6)
        if box is None or (box[2] - box[0]) * (box[3] - box[1]) > 0.5 * frame_hw[0] * frame_hw[1]:
            return None
        return box

    def previous_on(self, shape: tuple[int, int]) -> torch.Tensor:
        """The previous mask (H,W) bool, area-pooled onto a (h,w) grid (a cell is object when half is)."""
        return F.adaptive_avg_pool2d(self.previous[None, None].float(), shape)[0, 0] >= 0.5

    def zoom(self, image: np.ndarray, full: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
        """(H,W) frame probability -> the same with `box` replaced by the crop's own reading: the crop
        runs through the network at the input size (more cells on the object) and reads the memory."""
        top, left, bottom, right = box
        crop = np.ascontiguousarray(image[top:bottom, left:right])
        p_proto, feats = self.network(crop)
        feats = self.project(feats)
        self.stats["zoomed"] += 1
        part = self.read(feats, p_proto, local=False)
        self.zoomed.append((feats.flatten(1), part.flatten()))
        return paste_box(full, part, box)

    def refine(self, full: torch.Tensor, image: np.ndarray) -> torch.Tensor:
        """(H,W) probability at the frame's size, shifted by the colour models (which then learn from
        this frame), then the guided filter on the frame's edges."""
        h, w = image.shape[:2]
        c = self.config
        if self.colour is not None:
            full = self.colour.apply(full, image, c.colour_weight)
        radius = int(round(c.guided_radius * (h * h + w * w) ** 0.5))
        if radius <= 0:
            return full
        return guided_filter(grey_image(image), full, radius, c.guided_eps, c.guided_scale).clamp(0, 1)
