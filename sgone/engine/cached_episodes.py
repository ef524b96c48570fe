"""Training batches and test episodes read from a `FeatureCache` instead of images.

Training (`CachedTrainBatches`): the episode of step s, item j is `TrainEpisodes.spec` of the
same index as the image path uses, so a run is deterministic and resumable step for step.
Masks come from the label maps at the cached input size. Pixels of the fold's TEST classes are
set to 255 in every training mask (support and query): nothing is learnt from them, as object
or as background, even where their images are used for other classes.

Augmentation works on the cached feature grid, so it costs nothing: each image is flipped
left-right with probability 1/2 (the features of a flipped image are close to, not exactly, the
flipped features), and the query is cropped to a random window of 60-100 % of each side of its
grid, at most `max_cells` (32) cells a side, which also bounds a step's cost (the head runs on the
query at stride 8). What is given up against image-level augmentation: scale jitter (each image is cached at
one size), colour jitter and rotation. Images of a batch are padded to one grid with zero
features and 255 labels.

Testing (`predict_cached`): the steps of `sgone evaluate`'s `predict_batch` (prototypes per
shot, k-shot fusion, logits upsampled to the ORIGINAL label size, the same keep rule) on
cached levels; each support keeps its own grid.
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sgone.data.episode import IGNORE, binary_from_labels
from sgone.data.sampler import TrainEpisodes, episode_rng
from sgone.engine.feature_cache import FeatureCache
from sgone.errors import SgoneError


class LabelMaps:
    """Label maps of a MixSource's images, resized (nearest) to the cache's input size; kept in memory."""

    def __init__(self, source, size: int | None, keep_originals: int = 64) -> None:
        self.source, self.size = source, size
        self._memo: dict[str, np.ndarray] = {}
        self._originals: dict[str, np.ndarray] = {}  # the last `keep_originals` read (a k-shot episode reuses them)
        self.keep_originals = keep_originals

    def original(self, key: str) -> np.ndarray:
        if key not in self._originals:
            if len(self._originals) >= self.keep_originals:
                self._originals.pop(next(iter(self._originals)))
            self._originals[key] = self.source.read_labels(key)
        return self._originals[key]

    def resized(self, key: str) -> np.ndarray:
        if key not in self._memo:
            from sgone.inputs import input_size, mask_tensor

            labels = self.original(key)
            hw = input_size(labels.shape[0], labels.shape[1], self.size)
            self._memo[key] = mask_tensor(labels, hw)[0].numpy().astype(np.uint8)
        return self._memo[key]


class CachedTrainBatches:
    """Step -> batch of cached levels for `fold`'s seen classes of a MixSource (see module docstring)."""

    def __init__(self, source, fold: int, cache: FeatureCache, shots: int = 1, batch_size: int = 8,
                 seed: int = 0, augment: bool = True, min_crop: float = 0.6, max_cells: int = 32,
                 balance: str = "pairs") -> None:
        for method in ("image_path", "label_path", "read_labels", "own_id", "own_ids"):
            if not hasattr(source, method):
                raise SgoneError(f"{getattr(source, 'root', source)}: training on cached features needs a "
                                 "data set that names its image files (dataset 'mix')")
        self.source, self.fold, self.cache = source, fold, cache
        self.shots, self.batch_size, self.seed, self.augment, self.min_crop = shots, batch_size, seed, augment, min_crop
        self.max_cells = max_cells
        self.episodes = TrainEpisodes(source, fold, shots=shots, ways=1, seed=seed, balance=balance)
        seen = set(source.classes(fold, "train"))
        self.test_ids = [c for c in source.classes(fold, "test") if c not in seen]  # none when nothing is held out
        self.labels = LabelMaps(source, cache.size)
        self.grid = -(-cache.size // 8)

    def image_keys(self) -> list[str]:
        """Every image the training stream can draw."""
        return sorted({key for keys in self.episodes.lists.values() for key in keys})

    def _mask(self, key: str, class_id: int) -> np.ndarray:
        name, own = self.source.own_id(class_id)
        return binary_from_labels(self.labels.resized(key), own, self.source.own_ids(name, self.test_ids))

    def _item(self, key: str, class_id: int, rng: np.random.Generator, crop: bool):
        levels = self.cache.levels(self.source.image_path(key))  # float16 memmaps: cut before converting
        mask = self._mask(key, class_id)
        gh, gw = levels[0].shape[-2:]
        if mask.shape[0] > 8 * gh or mask.shape[1] > 8 * gw or -(-mask.shape[0] // 8) != gh or -(-mask.shape[1] // 8) != gw:
            raise SgoneError(f"{self.source.label_path(key)}: label map {mask.shape[1]}x{mask.shape[0]} at the cache size "
                             f"does not fit its image's {gw}x{gh} feature grid (rotated photo? other size?)")
        mask = np.pad(mask, ((0, 8 * gh - mask.shape[0]), (0, 8 * gw - mask.shape[1])), constant_values=IGNORE)
        flip = self.augment and rng.random() < 0.5
        y, x, ch, cw = 0, 0, gh, gw
        if crop:
            scale = (rng.uniform(self.min_crop, 1.0), rng.uniform(self.min_crop, 1.0)) if self.augment else (1.0, 1.0)
            ch = min(self.max_cells, max(1, int(round(gh * scale[0]))))
            cw = min(self.max_cells, max(1, int(round(gw * scale[1]))))
            y, x = int(rng.integers(0, gh - ch + 1)), int(rng.integers(0, gw - cw + 1))
            if flip:  # the window was drawn on the flipped grid
                x = gw - x - cw
        g = min(self.grid, self.max_cells) if crop else self.grid
        out = []
        for lv in levels:
            part = np.asarray(lv[:, y:y + ch, x:x + cw], dtype=np.float32)
            if flip:
                part = part[:, :, ::-1]
            padded = np.zeros((part.shape[0], g, g), np.float32)
            padded[:, :ch, :cw] = part
            out.append(torch.from_numpy(padded))
        mask = mask[8 * y:8 * (y + ch), 8 * x:8 * (x + cw)]
        if flip:
            mask = mask[:, ::-1]
        full = np.full((8 * g, 8 * g), IGNORE, np.int64)
        full[:mask.shape[0], :mask.shape[1]] = mask
        return out, torch.from_numpy(full)

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> dict[str, Any]:
        """The batch of optimiser step `step` (1-based) for process `rank`: support_levels [(B,K,C,G,G)] x L,
        support_masks (B,K,8G,8G), query_levels [(B,C,Q,Q)] x L (L = the cache's levels, 3 or 4), query_mask (B,8Q,8Q); Q = min(G, max_cells)."""
        first = ((step - 1) * world_size + rank) * self.batch_size
        s_levels, s_masks, q_levels, q_masks = [], [], [], []
        for index in range(first, first + self.batch_size):
            spec = self.episodes.spec(index)
            rng = episode_rng(self.seed, index, 1)
            class_id = spec["class_ids"][0]
            shots = [self._item(key, class_id, rng, crop=False) for key in spec["supports"][0]]
            n = len(shots[0][0])  # levels: 3, or 4 with a semantic one
            s_levels.append([torch.stack([lv[i] for lv, _ in shots]) for i in range(n)])
            s_masks.append(torch.stack([m for _, m in shots]))
            levels, mask = self._item(spec["query"], class_id, rng, crop=True)
            q_levels.append(levels)
            q_masks.append(mask)
        return {"support_levels": [torch.stack([s[i] for s in s_levels]) for i in range(n)],
                "support_masks": torch.stack(s_masks),
                "query_levels": [torch.stack([q[i] for q in q_levels]) for i in range(n)],
                "query_mask": torch.stack(q_masks)}


@torch.no_grad()
def predict_cached(model: nn.Module, source, spec: dict, cache: FeatureCache, labels: LabelMaps,
                   fusion: str = "avg", with_prior: bool = False) -> dict[str, torch.Tensor]:
    """Predict a 1-way test episode from cached levels, as `predict_batch` does from images.

    model: any model with encode_levels (SG-One, PriorGuidedSGOne, single-scale PrototypeModel).
    Each support keeps its own grid (shots of different sizes need no padding). Returns {"pred":
    (H,W) long {0,1} at the query label's ORIGINAL size, "prob": (1,H,W), "similarity": (1,h,w),
    "label": (H,W) long {0,1,255}}; with_prior and a PriorGuidedSGOne, also "prior_pred": the
    training-free model's mask from the same prototypes (its "prior_logits").
    """
    from sgone.engine.episode_eval import _foreground
    from sgone.ops import fuse_shots, keep_foreground

    if len(spec["class_ids"]) != 1:
        raise SgoneError("cached evaluation is 1-way only")
    name, own = source.own_id(spec["class_ids"][0])
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    label = torch.from_numpy(binary_from_labels(labels.original(spec["query"]), own).astype(np.int64))
    query = model.encode_levels(cache.tensors(source.image_path(spec["query"]), device))
    prototypes = []
    for key in spec["supports"][0]:
        mask = torch.from_numpy(binary_from_labels(labels.resized(key), own).astype(np.int64))[None].to(device)
        encoded = model.encode_levels(cache.tensors(source.image_path(key), device), need_side=False)
        prototypes.append(model.support_prototype(encoded, mask))
    size = tuple(label.shape)
    prob, similarity = fuse_shots(prototypes, lambda p: model.segment(query, p), lambda lg: _foreground(lg, size),
                                  model.fuse_prototypes, fusion)
    keep = keep_foreground(prob, fusion, len(prototypes))
    result = {"pred": keep[0].long().cpu(), "prob": prob.float().cpu(), "similarity": similarity.float().cpu(),
              "label": label}
    if with_prior and getattr(model, "config", {}).get("arch") == "sgone-prior":
        # the training-free model's answer, which PriorGuidedSGOne computes on the way
        prior = lambda p: {"logits": model.prior_logits(query, p), "similarity": similarity}
        prior_prob, _ = fuse_shots(prototypes, prior, lambda lg: _foreground(lg, size), model.fuse_prototypes, fusion)
        result["prior_pred"] = keep_foreground(prior_prob, fusion, len(prototypes))[0].long().cpu()
    return result


def score_cached(model: nn.Module, source, specs: list[dict], cache: FeatureCache, labels: LabelMaps,
                 fusion: str = "avg", progress: bool = True, desc: str = "evaluate (cached)"):
    """Score test episodes (`TestEpisodes.specs`) from cached features.

    Returns (IoUAccumulator, foreground IoU per episode in list order).
    """
    from tqdm import tqdm

    from sgone.engine.metrics import IoUAccumulator

    acc = IoUAccumulator()
    ious = []
    for spec in tqdm(specs, desc=desc, disable=not progress, dynamic_ncols=True, leave=False):
        out = predict_cached(model, source, spec, cache, labels, fusion)
        ious.append(acc.add(out["pred"], out["label"], spec["class_ids"]))
    return acc, ious
