"""Predictor: encode the support once (`set_support`), answer many cheap queries (`predict`).

    predictor = Predictor()                       # training-free default, ImageNet weights
    predictor.set_support([image], [mask])        # k images for k-shot
    result = predictor.predict(query)             # mask, probability, similarity at query size

N-way: `set_support([[cat1, cat2], [dog1]], [[m1, m2], [m3]], class_names=["cat", "dog"])`
gives one label per pixel (0 = background, c = c-th class).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from sgone import ops
from sgone.errors import SgoneError

FUSIONS = ("avg", "max", "vote")
# Backbones whose CPU convolutions run faster in channels-last layout (EfficientNet-Lite0's
# dilated 5x5 depthwise convs get much slower, so it is not listed).
CHANNELS_LAST = ("mobilenet_v2", "resnet50")


def prepare_for_inference(model: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    """Fold BatchNorm into the convolutions and pick the faster memory layout, in place.

    For inference only (the folded model cannot be trained). Returns `model`, in eval mode on
    `device`. Measured on 2 CPU cores (`benchmarks/predictor_episode.py`): MobileNetV2 query at
    473x473 282 -> 150 ms.
    """
    from sgone.backbones.base import fuse_batchnorm

    device = torch.device(device)
    model = model.to(device).eval()
    fuse_batchnorm(model)
    backbone = getattr(model, "backbone", None)
    if device.type == "cpu" and getattr(backbone, "name", "") in CHANNELS_LAST:
        backbone.to(memory_format=torch.channels_last)
    return model


@dataclass
class Prediction:
    """Result at the query's original resolution.

    mask: HxW uint8, 1-way {0, 1}; N-way labels 0..N. probability / similarity: HxW float32
    for 1-way, (N,H,W) for N-way (foreground probability and cosine similarity per class).
    """

    mask: np.ndarray
    probability: np.ndarray
    similarity: np.ndarray


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise SgoneError(f"{device}: not a device name (use cpu, cuda, cuda:0, auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SgoneError(f"{device}: CUDA is not available on this machine")
    return dev


def input_size(height: int, width: int, size: int | None) -> tuple[int, int]:
    """Network input size: the longer side scaled to `size` (None keeps the image size)."""
    if size is None:
        return height, width
    scale = size / max(height, width)
    return max(8, round(height * scale)), max(8, round(width * scale))


def image_tensor(image: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
    """HxWx3 uint8 -> (1,3,h,w) float in [0,1], resized with antialiasing."""
    t = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    if tuple(t.shape[-2:]) != tuple(hw):
        t = F.interpolate(t, size=hw, mode="bilinear", align_corners=False, antialias=True)
    return t


def mask_tensor(mask: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
    """HxW uint8 {0,1,255} -> (1,h,w) long, nearest resize (labels stay labels)."""
    t = torch.from_numpy(np.array(mask, dtype=np.uint8, copy=True)).unsqueeze(0).unsqueeze(0).float()
    if tuple(t.shape[-2:]) != tuple(hw):
        t = F.interpolate(t, size=hw, mode="nearest")
    return t[0].long()


class Predictor:
    """Few-shot segmentation of many queries against one cached support set.

    model: a registered name, a checkpoint path, or a module (copied when `fuse` folds its
    BatchNorm layers for inference). size: the longer input side (None = original size).
    """

    def __init__(self, model: str | Path | nn.Module | None = None, device: str | torch.device | None = "cpu",
                 size: int | None = 473, threshold: float = 0.5, fusion: str = "avg",
                 batch_size: int = 4, fuse: bool = True) -> None:
        from sgone.models.registry import load_model

        if fusion not in FUSIONS:
            raise SgoneError(f"{fusion}: unknown k-shot fusion (use {', '.join(FUSIONS)})")
        self.device = resolve_device(device)
        if isinstance(model, nn.Module):
            # fold BatchNorm into a private copy: the caller's module stays trainable
            model = copy.deepcopy(model) if fuse else model
            self.model = model.to(self.device).eval()
        else:
            self.model = load_model(model, self.device)
        if fuse:
            prepare_for_inference(self.model, self.device)
        self.size = size
        self.threshold = threshold
        self.fusion = fusion
        self.batch_size = batch_size
        self.class_names: list[str] = []
        self._shots: list[list[dict[str, torch.Tensor]]] = []  # [way][shot] prototypes
        self._fused: list[dict[str, torch.Tensor]] = []  # [way] averaged prototype
        self._last: dict[str, torch.Tensor] | None = None

    # ----------------------------------------------------------------- support
    @torch.inference_mode()
    def set_support(self, images: Sequence, masks: Sequence, class_names: Sequence[str] | None = None) -> None:
        """Encode the support set once.

        1-way k-shot: `images` and `masks` are lists of k arrays (HxWx3 uint8, HxW uint8 {0,1,255}).
        N-way: lists of N lists. Masks must have their image's size and contain object pixels.
        """
        nested = len(images) > 0 and isinstance(images[0], (list, tuple))
        ways_images = [list(w) for w in images] if nested else [list(images)]
        ways_masks = [list(w) for w in masks] if nested else [list(masks)]
        if not ways_images or not ways_images[0]:
            raise SgoneError("support: no support image given")
        if len(ways_images) != len(ways_masks) or any(len(a) != len(b) for a, b in zip(ways_images, ways_masks)):
            raise SgoneError("support: the number of masks does not match the number of support images")
        self.class_names = list(class_names) if class_names else [f"class {i + 1}" for i in range(len(ways_images))]
        if len(self.class_names) != len(ways_images):
            raise SgoneError(f"support: {len(self.class_names)} class names for {len(ways_images)} classes")
        self._shots = []
        for way, (imgs, msks) in enumerate(zip(ways_images, ways_masks)):
            protos = []
            for shot, (image, mask) in enumerate(zip(imgs, msks)):
                where = f"support {shot + 1}" + (f" of {self.class_names[way]}" if nested else "")
                image, mask = _check_pair(image, mask, where)
                hw = input_size(*image.shape[:2], self.size)
                m = mask_tensor(mask, hw).to(self.device)
                if not (m == 1).any():
                    raise SgoneError(f"{where}: the object is too thin to survive resizing to {hw[1]}x{hw[0]}; use a larger --size")
                encoded = self.model.encode(image_tensor(image, hw).to(self.device), need_side=False)
                protos.append(self.model.support_prototype(encoded, m))
            self._shots.append(protos)
        self._fused = [self.model.fuse_prototypes(p) if len(p) > 1 else p[0] for p in self._shots]
        self._last = None

    @torch.inference_mode()
    def update_support(self, mask: np.ndarray, weight: float = 0.2) -> None:
        """Blend a prototype taken from the last predicted query under `mask` into the support.

        mask: HxW uint8 {0,1,255} at the last query's resolution (1-way only). Nothing is
        re-encoded: the query's cached encoding is reused (online update for video).
        """
        if self._last is None:
            raise SgoneError("update_support: predict a query first")
        if len(self._fused) != 1:
            raise SgoneError("update_support: only for 1-way supports")
        hw = self._last["input_hw"]
        m = mask_tensor(np.asarray(mask, dtype=np.uint8), hw).to(self.device)
        if not (m == 1).any() or not (m == 0).any():
            return  # nothing confident to learn from this frame
        new = self.model.support_prototype(self._last["encoded"], m)
        # sets of prototypes (B,N,C), the support's background parts, stay: blending them with
        # their best matches in the frame lost 0.10 J on the generated clip (tests/test_video.py)
        self._fused = [{k: v if v.dim() == 3 else (1 - weight) * v + weight * new[k]
                        for k, v in self._fused[0].items()}]
        self._shots = [[self._fused[0]]]

    @property
    def ways(self) -> int:
        return len(self._fused)

    # ----------------------------------------------------------------- queries
    def predict(self, image: np.ndarray) -> Prediction:
        """Segment one query image (HxWx3 uint8); see `Prediction`."""
        return self.predict_batch([image])[0]

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Segment several queries; same-size queries share a batched encoding."""
        if not self._fused:
            raise SgoneError("predict: call set_support() first")
        results: list[Prediction | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            image = _check_image(image, f"query {i + 1}")
            groups.setdefault(tuple(image.shape[:2]), []).append(i)
        for (h, w), indices in groups.items():
            hw = input_size(h, w, self.size)
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                batch = torch.cat([image_tensor(images[i], hw) for i in chunk]).to(self.device)
                encoded = self.model.encode(batch)
                probs, sims = self._score(encoded, (h, w))
                for j, i in enumerate(chunk):
                    results[i] = self._finish(probs[j], sims[j])
                self._last = {"encoded": {k: v[-1:] for k, v in encoded.items()}, "input_hw": hw}
        return results  # type: ignore[return-value]

    def _score(self, encoded: dict[str, torch.Tensor], out_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> foreground probability and similarity, each (B,N,H,W) at the original size."""
        b = next(iter(encoded.values())).shape[0]
        probs, sims = [], []
        for way, fused in enumerate(self._fused):
            if self.fusion == "avg" or len(self._shots[way]) == 1:
                out = self.model.segment(encoded, _expand(fused, b))
                prob = ops.upsample_logits(out["logits"], out_hw).softmax(dim=1)[:, 1]
                sim = out["similarity"]
            else:
                shot_probs, shot_sims = [], []
                for proto in self._shots[way]:  # k one-shot predictions, one query encoding
                    out = self.model.segment(encoded, _expand(proto, b))
                    shot_probs.append(ops.upsample_logits(out["logits"], out_hw).softmax(dim=1)[:, 1])
                    shot_sims.append(out["similarity"])
                prob = ops.fuse_predictions(torch.stack(shot_probs), self.fusion, self.threshold)
                sim = torch.stack(shot_sims).max(dim=0).values
            probs.append(prob)
            sims.append(ops.upsample_logits(sim.unsqueeze(1), out_hw)[:, 0])
        return torch.stack(probs, dim=1), torch.stack(sims, dim=1)

    def _finish(self, prob: torch.Tensor, sim: torch.Tensor) -> Prediction:
        prob_np = prob.float().cpu().numpy().astype(np.float32)
        sim_np = sim.float().cpu().numpy().astype(np.float32)
        if prob_np.shape[0] == 1:
            mask = (prob_np[0] > self.threshold).astype(np.uint8)
            return Prediction(mask=mask, probability=prob_np[0], similarity=sim_np[0])
        best = prob_np.argmax(axis=0)
        mask = np.where(prob_np.max(axis=0) > self.threshold, best + 1, 0).astype(np.uint8)
        return Prediction(mask=mask, probability=prob_np, similarity=sim_np)


def _expand(proto: dict[str, torch.Tensor], b: int) -> dict[str, torch.Tensor]:
    return {k: v.expand(b, *v.shape[1:]) for k, v in proto.items()}


def _check_image(image: np.ndarray, where: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise SgoneError(f"{where}: expected an HxWx3 uint8 image, got shape {image.shape} {image.dtype}")
    return image


def _check_pair(image: np.ndarray, mask: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    image = _check_image(image, where)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise SgoneError(f"{where}: expected an HxW mask, got shape {mask.shape}")
    if mask.shape != image.shape[:2]:
        raise SgoneError(f"{where}: mask size {mask.shape[1]}x{mask.shape[0]} differs from image size "
                         f"{image.shape[1]}x{image.shape[0]}")
    if not (mask == 1).any():
        raise SgoneError(f"{where}: the mask is empty (no object pixels)")
    return image, mask.astype(np.uint8)
