"""Few-shot segmentation scores: per-class mIoU and FB-IoU, as the community computes them.

Definitions (HSNet / PFENet protocol, REFERENCE.md section 2). Pixels labelled 255 are left
out of every count, in the prediction as well as in the label.

- For one episode and one region r (background = 0, or the foreground of way c), with
  P = predicted pixels of r and G = labelled pixels of r, both over the valid (non-255)
  pixels: I_r = |P & G| and U_r = |P | G|.
- mIoU: for each class, IoU_class = (sum of foreground I over the episodes of that class) /
  (sum of foreground U over the same episodes); mIoU = mean of IoU_class over the classes.
  A class whose summed union is 0 over the run (nothing labelled, nothing predicted in any of
  its episodes) counts as IoU 0 and stays in the mean, as HSNet computes it (I / max(U, 1)),
  so that such a class cannot raise the mean by being left out.
- FB-IoU: IoU_bg = (sum of background I over ALL episodes) / (sum of background U over all
  episodes), IoU_fg likewise with the foreground counts; FB-IoU = (IoU_bg + IoU_fg) / 2.
  For an N-way episode "foreground" is any object (label 1..N vs prediction 1..N).

The counts are integers, so merging accumulators (across ranks or runs) is exact and the
result does not depend on how the episodes were split.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

IGNORE = 255


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def area_counts(pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor,
                region: int, ignore: int = IGNORE) -> tuple[int, int]:
    """(intersection, union) pixel counts of label value `region` in one episode.

    pred, label: (H,W) integer maps of the same shape; label pixels equal to `ignore` count for
    nothing (a prediction there is neither right nor wrong).
    """
    pred, label = _as_numpy(pred), _as_numpy(label)
    if pred.shape != label.shape:
        raise ValueError(f"prediction {pred.shape} and label {label.shape} differ in shape")
    valid = label != ignore
    p = (pred == region) & valid
    g = (label == region) & valid
    return int((p & g).sum()), int((p | g).sum())


@dataclass
class IoUAccumulator:
    """Intersection and union pixel counts, summed per class and over all episodes.

    `intersection[c]` / `union[c]`: foreground counts of class id c over its episodes;
    `episodes[c]`: how many episodes (ways) of class c were added; `fb_intersection` /
    `fb_union`: [background, foreground] counts over all episodes.
    """

    intersection: dict[int, int] = field(default_factory=dict)
    union: dict[int, int] = field(default_factory=dict)
    episodes: dict[int, int] = field(default_factory=dict)
    fb_intersection: list[int] = field(default_factory=lambda: [0, 0])
    fb_union: list[int] = field(default_factory=lambda: [0, 0])

    # ---- adding ----------------------------------------------------------------------------
    def add(self, pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor,
            class_ids: int | list[int]) -> float:
        """Add one episode: pred and label (H,W) with 0 = background, c = way c (1-based), 255 = ignore.

        class_ids: the class id of each way (an int for 1-way). Returns the episode's
        foreground IoU (mean over its ways; 1.0 when a way has nothing labelled and nothing
        predicted) for ranking episodes.
        """
        pred, label = _as_numpy(pred), _as_numpy(label)
        ids = [int(class_ids)] if np.isscalar(class_ids) or isinstance(class_ids, (int, np.integer)) \
            else [int(c) for c in class_ids]
        ious = []
        for way, class_id in enumerate(ids, start=1):
            inter, uni = area_counts(pred, label, way)
            self.intersection[class_id] = self.intersection.get(class_id, 0) + inter
            self.union[class_id] = self.union.get(class_id, 0) + uni
            self.episodes[class_id] = self.episodes.get(class_id, 0) + 1
            ious.append(inter / uni if uni else 1.0)
        inter, uni = area_counts(pred, label, 0)
        self.fb_intersection[0] += inter
        self.fb_union[0] += uni
        # "foreground" of FB-IoU = any object; for 1-way this is exactly the way's counts
        inter, uni = area_counts(np.where(pred > 0, 1, 0), np.where((label > 0) & (label != IGNORE), 1, label), 1)
        self.fb_intersection[1] += inter
        self.fb_union[1] += uni
        return float(np.mean(ious))

    def merge(self, other: "IoUAccumulator") -> "IoUAccumulator":
        """Add another accumulator's counts into this one (in place); returns self."""
        for c in other.intersection:
            self.intersection[c] = self.intersection.get(c, 0) + other.intersection[c]
            self.union[c] = self.union.get(c, 0) + other.union[c]
            self.episodes[c] = self.episodes.get(c, 0) + other.episodes[c]
        for i in range(2):
            self.fb_intersection[i] += other.fb_intersection[i]
            self.fb_union[i] += other.fb_union[i]
        return self

    # ---- scores ----------------------------------------------------------------------------
    def class_iou(self) -> dict[int, float]:
        """{class id: IoU in [0, 1]} of every class added; 0.0 where the summed union is 0 (HSNet)."""
        return {c: self.intersection[c] / max(self.union[c], 1) for c in sorted(self.intersection)}

    def miou(self, classes: list[int] | None = None) -> float:
        """Mean of the per-class IoUs over `classes` (default: every class added), in [0, 1].

        A class with episodes but a zero union counts as 0; a class with no episode at all has
        no measurement and is left out (callers report it). NaN when no class is left.
        """
        per_class = self.class_iou()
        wanted = sorted(per_class) if classes is None else classes
        values = [per_class[c] for c in wanted if per_class.get(c) is not None]
        return float(np.mean(values)) if values else float("nan")

    def fb_iou(self) -> float:
        """Mean over {background, foreground} of IoU summed over all episodes, in [0, 1]."""
        ious = [i / u for i, u in zip(self.fb_intersection, self.fb_union) if u]
        return float(np.mean(ious)) if ious else float("nan")

    # ---- serialising and gathering ---------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready counts (class ids as string keys, as JSON requires)."""
        return {
            "intersection": {str(c): v for c, v in sorted(self.intersection.items())},
            "union": {str(c): v for c, v in sorted(self.union.items())},
            "episodes": {str(c): v for c, v in sorted(self.episodes.items())},
            "fb_intersection": list(self.fb_intersection),
            "fb_union": list(self.fb_union),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "IoUAccumulator":
        return cls(
            intersection={int(c): int(v) for c, v in data["intersection"].items()},
            union={int(c): int(v) for c, v in data["union"].items()},
            episodes={int(c): int(v) for c, v in data["episodes"].items()},
            fb_intersection=[int(v) for v in data["fb_intersection"]],
            fb_union=[int(v) for v in data["fb_union"]],
        )

    def to_tensor(self, classes: list[int]) -> torch.Tensor:
        """Counts as one int64 vector over a fixed class list, for `all_reduce(SUM)`.

        Layout: [I per class, U per class, episodes per class, fb_I (2), fb_U (2)].
        Every rank must pass the same `classes`.
        """
        values = ([self.intersection.get(c, 0) for c in classes] + [self.union.get(c, 0) for c in classes]
                  + [self.episodes.get(c, 0) for c in classes] + self.fb_intersection + self.fb_union)
        return torch.tensor(values, dtype=torch.int64)

    @classmethod
    def from_tensor(cls, tensor: torch.Tensor, classes: list[int]) -> "IoUAccumulator":
        values = [int(v) for v in tensor.cpu().tolist()]
        n = len(classes)
        acc = cls()
        for i, c in enumerate(classes):
            if values[2 * n + i]:  # keep only classes that had episodes somewhere
                acc.intersection[c] = values[i]
                acc.union[c] = values[n + i]
                acc.episodes[c] = values[2 * n + i]
        acc.fb_intersection = values[3 * n:3 * n + 2]
        acc.fb_union = values[3 * n + 2:3 * n + 4]
        return acc


# the object's share of the query's labelled pixels: small, medium, large
SIZE_BINS = ((0.0, 0.02, "< 2 %"), (0.02, 0.10, "2-10 %"), (0.10, 1.01, ">= 10 %"))


def object_share(label: np.ndarray | torch.Tensor) -> float:
    """Share of the labelled pixels (255 excluded) that belong to a way (label > 0) of a 1-way episode's query."""
    label = _as_numpy(label)
    valid = label != IGNORE
    return float(((label > 0) & valid).sum() / max(int(valid.sum()), 1))


def by_object_size(pairs: list[tuple[float, float]]) -> dict[str, dict[str, float]]:
    """(object share, episode foreground IoU) pairs -> {bin: {"episodes", "fg_iou" (mean x100, nan if none)}}."""
    out = {}
    for low, high, name in SIZE_BINS:
        ious = [iou for share, iou in pairs if low <= share < high]
        out[name] = {"episodes": len(ious), "fg_iou": 100 * float(np.mean(ious)) if ious else float("nan")}
    return out
