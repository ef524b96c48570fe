"""The maths of SG-One as small pure tensor functions.

Masks follow the project convention: 0 = background, 1 = object, 255 = ignore.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from sgone.options import FUSIONS  # noqa: F401  (re-exported)

IGNORE = 255
# k-shot fusions (`sgone.options.FUSIONS`): "avg" averages the k support prototypes (one prediction);
# "max" and "vote" fuse k one-shot predictions against one query encoding (`fuse_shots`)
VOTE_KEEP = 0.5  # a vote share keeps pixels with at least half the top vote (HSNet)


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


def region_prototypes(features: torch.Tensor, weights: torch.Tensor, k: int, iters: int = 10,
                      min_weight: float = 0.5) -> torch.Tensor:
    """k prototypes of a region by spherical k-means over its feature cells, per sample.

    features (B,C,h,w); weights (B,1,h,w) region cover in [0,1] (cells below `min_weight` are
    left out). Returns (B,k,C): weighted means of the clusters (the MAP vector of each part).
    Deterministic: farthest-point initialisation from the cell nearest the region's mean.
    A region with fewer than k cells repeats prototypes; an empty one gives zero vectors.
    """
    b, c = features.shape[:2]
    out = features.new_zeros(b, k, c)
    for i in range(b):
        w = weights[i].flatten()
        keep = w >= min_weight
        if not keep.any():
            continue
        x = features[i].flatten(1).t()[keep]  # (n, C)
        wx = w[keep].unsqueeze(1)
        xn = F.normalize(x, dim=1)
        mean = F.normalize((x * wx).sum(0, keepdim=True), dim=1)
        chosen = [int((xn @ mean.t()).argmax())]
        nearest = xn @ xn[chosen[0]]
        for _ in range(1, k):
            chosen.append(int(nearest.argmin()))
            nearest = torch.maximum(nearest, xn @ xn[chosen[-1]])
        centroids = xn[chosen]
        for _ in range(iters + 1):  # iters updates, then the assignment that gives the output
            onehot = F.one_hot((xn @ centroids.t()).argmax(dim=1), k).to(x.dtype) * wx  # (n, k)
            filled = (onehot.sum(0) > 0).unsqueeze(1)
            means = (onehot.t() @ x) / onehot.sum(0).clamp_min(1e-6).unsqueeze(1)  # (k, C)
            new = torch.where(filled, F.normalize(means, dim=1), centroids)
            if torch.equal(new, centroids):
                break
            centroids = new
        # an emptied cluster keeps its seed cell's vector rather than a zero
        out[i] = torch.where(filled, means, x[chosen])
    return out


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


def fuse_prototype_dicts(prototypes: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """k shots' prototypes -> one: vectors (B,C) averaged, sets of parts (keys ending "_set", (B,N,C)) pooled to (B,kN,C)."""
    return {key: torch.cat([p[key] for p in prototypes], dim=1) if key.endswith("_set")
            else fuse_vectors([p[key] for p in prototypes]) for key in prototypes[0]}


def fuse_prototype_batch(prototypes: dict[str, torch.Tensor], b: int, k: int) -> dict[str, torch.Tensor]:
    """The same for a batch whose B*K shots lie along dim 0 (shot-major within each episode) -> per episode."""
    return {key: value.reshape(b, -1, value.shape[-1]) if key.endswith("_set")
            else value.view(b, k, -1).mean(dim=1) for key, value in prototypes.items()}


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


def fuse_shots(prototypes: Sequence[dict[str, torch.Tensor]], segment: Callable[[dict], dict[str, torch.Tensor]],
               foreground: Callable[[torch.Tensor], torch.Tensor], fuse_prototypes: Callable[[list], dict],
               fusion: str = "avg", threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """One way's k-shot prediction -> (score (B,H,W), similarity (B,h,w)).

    prototypes: k per-shot prototypes; segment(prototype) -> {"logits": (B,2,h,w), "similarity":
    (B,h,w)}; foreground(logits) -> (B,H,W) foreground probability; fuse_prototypes: the model's
    averaging of k prototypes. "avg" (and any 1-shot) segments once against the averaged
    prototype and scores a probability; "max"/"vote" segment each shot and fuse the k
    probabilities (`fuse_predictions`; per-shot vote at `threshold`); their similarity is the mean
    over shots. Read the score with `keep_foreground`.
    """
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}: use one of {', '.join(FUSIONS)}")
    if fusion == "avg" or len(prototypes) == 1:
        out = segment(fuse_prototypes(list(prototypes)) if len(prototypes) > 1 else prototypes[0])
        return foreground(out["logits"]), out["similarity"]
    outs = [segment(p) for p in prototypes]
    probs = torch.stack([foreground(o["logits"]) for o in outs])  # (K,B,H,W)
    return fuse_predictions(probs, fusion, threshold), torch.stack([o["similarity"] for o in outs]).mean(dim=0)


def keep_foreground(score: torch.Tensor, fusion: str, shots: int, threshold: float = 0.5) -> torch.Tensor:
    """The keep rule for a `fuse_shots` score (any shape) -> bool of the same shape.

    A vote share (fusion "vote" over k > 1 shots) keeps pixels with at least half the top vote
    (>= 0.5: with 2 shots, pixels either shot marks); a probability keeps pixels above `threshold`.
    """
    if fusion == "vote" and shots > 1:
        return score >= VOTE_KEEP
    return score > threshold


def label_map(scores: torch.Tensor, fusion: str, shots: int | Sequence[int], threshold: float = 0.5) -> torch.Tensor:
    """N ways' scores (N,H,W) -> labels (H,W) long: 0 = background, c = the c-th way.

    Each way keeps pixels by `keep_foreground` (`shots`: one count for all ways or one per way);
    a pixel kept by several ways goes to the highest score among them.
    """
    counts = [shots] * scores.shape[0] if isinstance(shots, int) else list(shots)
    keep = torch.stack([keep_foreground(s, fusion, k, threshold) for s, k in zip(scores, counts)])
    best = scores.masked_fill(~keep, float("-inf")).argmax(dim=0)
    return torch.where(keep.any(dim=0), best + 1, torch.zeros_like(best))


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of (B,C,h,w) scores to (B,C,H,W)."""
    if logits.shape[-2:] == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def zoom_box(mask: torch.Tensor, margin: float, min_side: int = 1) -> tuple[int, int, int, int] | None:
    """(H,W) bool -> the object's bounding box grown by `margin` x its size on each side, made at
    least `min_side` pixels on each side and clipped to the image, as (top, left, bottom, right)
    with bottom/right exclusive; None when the mask is empty."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(ys) == 0:
        return None
    extent = (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)
    return _grown_box(extent, tuple(mask.shape), margin, min_side)


def _grown_box(extent: tuple[int, int, int, int], hw: tuple[int, int], margin: float,
               min_side: int) -> tuple[int, int, int, int]:
    """`zoom_box`'s rule on a box (top, left, bottom, right) in an image of size hw."""
    h, w = hw
    top, left, bottom, right = extent
    grow_y, grow_x = margin * (bottom - top), margin * (right - left)
    grow_y, grow_x = max(grow_y, (min_side - (bottom - top)) / 2), max(grow_x, (min_side - (right - left)) / 2)
    top, bottom = max(0, int(top - grow_y)), min(h, int(bottom + grow_y + 0.999))
    left, right = max(0, int(left - grow_x)), min(w, int(right + grow_x + 0.999))
    return top, left, bottom, right


def paste_box(full: torch.Tensor, part: torch.Tensor, box: tuple[int, int, int, int], weight: float = 1.0,
              inplace: bool = False) -> torch.Tensor:
    """(..., H,W) `full` whose `box` (top, left, bottom, right) holds (..., h,w) `part`, resized
    bilinearly to the box's size: the crop-and-paste step's way back to full-image pixels.

    weight < 1 blends instead: (1 - weight) * full + weight * part inside the box. A copy, or
    `full` itself with inplace (a big image pasted into several times is not copied each time).
    """
    top, left, bottom, right = box
    out = full if inplace else full.clone()
    part = part.to(full.dtype)
    if part.shape[-2:] != (bottom - top, right - left):
        lead = part.shape[:-2]
        part = F.interpolate(part.reshape(1, -1, *part.shape[-2:]), size=(bottom - top, right - left),
                             mode="bilinear", align_corners=False).reshape(*lead, bottom - top, right - left)
    region = out[..., top:bottom, left:right]
    region.copy_(part if weight >= 1.0 else (1.0 - weight) * region + weight * part)
    return out


def connected_components(mask: torch.Tensor) -> torch.Tensor:
    """(h,w) bool -> (h,w) long: 0 off the mask, 1..K one label per 8-connected component (numbered
    in raster order of their last pixel). Label propagation by max-pooling, for the small grids
    `candidate_boxes` uses (at most `CANDIDATE_GRID` a side)."""
    h, w = mask.shape
    on = mask.view(1, 1, h, w)
    labels = torch.where(on, torch.arange(1, h * w + 1, dtype=torch.float64).view(1, 1, h, w), 0.0)
    while True:  # each round spreads the largest index one pixel further; stops when nothing changes
        spread = torch.where(on, F.max_pool2d(labels, 3, stride=1, padding=1), labels)
        if torch.equal(spread, labels):
            break
        labels = spread
    flat = labels.view(-1).long()
    _, inverse = torch.unique(torch.cat([flat.new_zeros(1), flat]), return_inverse=True)  # 0 stays 0
    return inverse[1:].view(h, w)


CANDIDATE_GRID = 128  # candidate regions are found on a grid of at most this many cells a side


def candidate_boxes(score: torch.Tensor, low: float, margin: float, max_boxes: int, max_fraction: float = 0.5,
                    min_side: int = 32) -> list[tuple[int, int, int, int]]:
    """The zoom step's crops: (H,W) first-pass score -> up to `max_boxes` boxes (top, left, bottom,
    right) in (H,W) pixels, clipped to the image.

    Candidate regions are the connected components of score > `low` (found on a max-pooled grid of
    at most CANDIDATE_GRID cells a side, so a 100-megapixel image costs no more than a small one),
    strongest first (the sum of their scores); each box is `zoom_box`'s (grown by `margin`, at least
    `min_side` pixels). Boxes covering more than `max_fraction` of the image gain nothing from a
    zoom and are dropped, as are boxes inside an earlier one.
    """
    h, w = score.shape
    step = max(1, -(-max(h, w) // CANDIDATE_GRID))
    pooled = F.max_pool2d(score.float()[None, None], step, stride=step, ceil_mode=True)[0, 0]
    labels = connected_components(pooled > low)
    count = int(labels.max())
    if count == 0:
        return []
    strength = torch.zeros(count + 1, dtype=torch.float64).index_add_(0, labels.flatten(), pooled.flatten().double())
    boxes: list[tuple[int, int, int, int]] = []
    for k in torch.argsort(strength[1:], descending=True, stable=True).tolist():
        cells = zoom_box(labels == k + 1, 0.0)
        if cells is None:
            continue
        t, l, b, r = cells  # grid cells -> pixels, then grown and clipped as the video's zoom
        box = _grown_box((t * step, l * step, min(h, b * step), min(w, r * step)), (h, w), margin, min_side)
        if (box[2] - box[0]) * (box[3] - box[1]) > max_fraction * h * w:
            continue
        if any(box[0] >= o[0] and box[1] >= o[1] and box[2] <= o[2] and box[3] <= o[3] for o in boxes):
            continue
        boxes.append(box)
        if len(boxes) == max_boxes:
            break
    return boxes


def zoom_refine(scores: torch.Tensor, image, score_crop: Callable[[object], torch.Tensor], low: float,
                margin: float, max_boxes: int, weight: float = 1.0, max_fraction: float = 0.5,
                min_side: int = 32) -> torch.Tensor:
    """The zoom step: (N,H,W) first-pass scores of an (H,W,3) image -> the same with each candidate
    region (`candidate_boxes` of the ways' highest score) read again from its crop.

    score_crop(crop (h,w,3) array) -> (N,h,w) scores of the crop at its own size (the caller
    segments it at the network input size, with its cached support). Each crop is pasted back with
    `paste_box(weight)` into one copy of `scores`. No candidate: `scores` itself is returned.
    """
    boxes = candidate_boxes(scores.amax(dim=0), low, margin, max_boxes, max_fraction, min_side)
    if not boxes:
        return scores
    out = scores.clone()
    for top, left, bottom, right in boxes:
        part = score_crop(image[top:bottom, left:right])
        paste_box(out, part, (top, left, bottom, right), weight, inplace=True)
    return out
