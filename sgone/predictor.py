"""Predictor: encode the support once (`set_support`), answer many cheap queries (`predict`).

    predictor = Predictor()                           # the default model (SG-One trained on real photos)
    predictor.set_support("cat.jpg", "cat_mask.png")  # or lists of k images/masks for k-shot
    result = predictor.predict("query.jpg")           # mask, probability, similarity at query size

Images and masks: file paths, PIL images or arrays, checked by `sgone.inputs` (its docstring has
the mask value rule). The model runs under a runtime (`sgone.runtimes`: auto, torch, onnx or openvino).
N-way: `set_support([[cat1, cat2], [dog1]], [[m1, m2], [m3]], class_names=["cat", "dog"])`
gives one label per pixel (0 = background, c = c-th class).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from sgone import ops
from sgone.boundary import boundary_settings, refine_probability
from sgone.errors import SgoneError, SgoneWarning
from sgone.inputs import (ImageLike, check_image, check_pair, image_tensor, input_size, is_path, is_single, mask_tensor,
                          small_input_note)
from sgone.models.inference import prepare_for_inference  # noqa: F401  (re-exported)
from sgone.options import (BOUNDARIES, DEFAULT_FUSION, DEFAULT_PRECISION, DEFAULT_RUNTIME, DEFAULT_SIZE,
                           DEFAULT_THRESHOLD, FUSIONS, RUNTIMES)
from sgone.runtimes import Loaded, resolve_device, runtime as runtime_module
from sgone.self_support import second_look

# the zoom step (`sgone.ops.zoom_refine`): candidate regions are where any way's first-pass score is above
# ZOOM_LOW, boxes grown by ZOOM_MARGIN x their size (at least a quarter of the longer side), at most
# ZOOM_CROPS crops (each one more encode), pasted back with ZOOM_WEIGHT (set by hand, not tuned: docs/results.md)
ZOOM_LOW, ZOOM_MARGIN, ZOOM_CROPS, ZOOM_WEIGHT = 0.3, 0.5, 3, 1.0

__all__ = ["BOUNDARIES", "FUSIONS", "RUNTIMES", "ImageLike", "Prediction", "Predictor", "image_tensor", "input_size",
           "mask_tensor", "prepare_for_inference", "resolve_device"]


@dataclass
class Prediction:
    """Result at the query's original resolution.

    mask: HxW uint8, 1-way {0, 1}; N-way labels 0..N. probability / similarity: HxW float32
    for 1-way, (N,H,W) for N-way (foreground probability and cosine similarity per class).
    """

    mask: np.ndarray
    probability: np.ndarray
    similarity: np.ndarray


class Predictor:
    """Few-shot segmentation of many queries against one cached support set.

    model: a registered name, a shipped checkpoint name, a checkpoint path, a runtime's `Loaded`, or a module (copied
    when `fuse` folds its BatchNorm layers for inference); None = `registry.DEFAULT_MODEL`, SG-One
    trained on real photos (DINOv2 + MobileNetV2; "prototype-mobilenet_v2" is ~5x faster). size: the longer input side (None =
    original size). fusion: k-shot rule, "avg" (average the support prototypes), "max" (union of
    the k one-shot predictions) or "vote" (pixels with at least half the top vote; each shot votes
    where its probability is above `threshold`); see `sgone.ops.fuse_shots`. allow_untrained:
    accept a registered SG-One whose head is untrained (benchmarks only: its masks are meaningless).
    runtime: "auto" (the installed runtime measured fastest for the model on this CPU; torch on CUDA),
    "torch", "onnx" (ONNX Runtime on the CPU: the model is exported once when the Predictor is made,
    or `model` is a folder written by `sgone export --dynamic`) or "openvino" (the same graphs run by
    OpenVINO); same outputs to float rounding, see `sgone.runtimes`. precision: "auto" (the model as
    it ships), "fp32" or "bf16" (openvino). threads: ONNX Runtime's / OpenVINO's threads (default torch's).
    self_support: a second look at each query, matched again against its support blended with the
    query's own prototypes from the first pass's confident cells (`sgone.self_support`; no re-encode).
    zoom: each candidate region of the first pass (at most `ZOOM_CROPS`) is cropped from the
    full-resolution query, segmented again at `size` and pasted back (`sgone.ops.zoom_refine`).
    flip: the query is also read mirrored (one more encode) and the two readings' scores and
    similarities are averaged, before the other steps. All three off by default (docs/results.md,
    "Small objects": measured, not a default).
    """

    def __init__(self, model: str | Path | nn.Module | None = None, device: str | torch.device | None = "cpu",
                 size: int | None = DEFAULT_SIZE, threshold: float = DEFAULT_THRESHOLD, fusion: str = DEFAULT_FUSION,
                 batch_size: int = 4, fuse: bool = True, allow_untrained: bool = False,
                 runtime: str = DEFAULT_RUNTIME, threads: int | None = None, boundary: str = "none",
                 weights: str | Path | None = "auto", precision: str = DEFAULT_PRECISION,
                 self_support: bool = False, zoom: bool = False, flip: bool = False) -> None:
        if boundary not in BOUNDARIES:
            raise SgoneError(f"{boundary}: unknown boundary step (use {', '.join(BOUNDARIES)})")
        self.boundary = boundary
        if fusion not in FUSIONS:
            raise SgoneError(f"{fusion}: unknown k-shot fusion (use {', '.join(FUSIONS)})")
        if isinstance(model, Loaded):  # what a runtime loaded already (the app's model cache shares it)
            loaded = model
        else:
            loaded = runtime_module(runtime).load(model, device=device, size=size, threads=threads, fuse=fuse,
                                                  allow_untrained=allow_untrained, weights=weights, precision=precision)
        self.runtime, self.precision = loaded.runtime or runtime, loaded.precision  # what "auto" chose
        self.model, self.model_name, self.device = loaded.model, loaded.name, loaded.device
        self.size = size
        self.threshold = threshold
        self.fusion = fusion
        self.batch_size = batch_size
        self.self_support, self.zoom, self.flip = bool(self_support), bool(zoom), bool(flip)
        self.class_names: list[str] = []
        self._shots: list[list[dict[str, torch.Tensor]]] = []  # [way][shot] prototypes
        self._last: dict[str, Any] | None = None  # the last predicted query's encoding

    def __repr__(self) -> str:
        if not self._shots:
            support = "none"
        else:
            support = ", ".join(f"{name}: {len(s)} shot{'s' if len(s) > 1 else ''}"
                                for name, s in zip(self.class_names, self._shots))
        return (f"Predictor(model={self.model_name!r}, device='{self.device}', size={self.size}, "
                f"fusion={self.fusion!r}, threshold={self.threshold}, support=[{support}]"
                + (f", runtime={self.runtime!r}" if self.runtime != "torch" else "")
                + (f", precision={self.precision!r})" if self.precision != "auto" else ")"))

    # ----------------------------------------------------------------- support
    @torch.inference_mode()
    def set_support(self, images: ImageLike | Sequence, masks: ImageLike | Sequence,
                    class_names: Sequence[str] | None = None) -> None:
        """Encode the support set once.

        1-way: one image and one mask, or lists of k of each (k-shot). N-way: lists of N lists.
        Accepted images and masks (and the mask value rule): see `sgone.inputs`. Masks must
        have their image's size and contain object pixels.
        """
        images, masks = ([x] if is_single(x) else x for x in (images, masks))
        nested = len(images) > 0 and isinstance(images[0], (list, tuple))
        ways_images = [list(w) for w in images] if nested else [list(images)]
        ways_masks = [list(w) for w in masks] if nested else [list(masks)]
        if not ways_images or not ways_images[0]:
            raise SgoneError("support: no support image given")
        if len(ways_images) != len(ways_masks) or any(len(a) != len(b) for a, b in zip(ways_images, ways_masks)):
            raise SgoneError("support: the number of masks does not match the number of support images")
        class_names = list(class_names) if class_names else [f"class {i + 1}" for i in range(len(ways_images))]
        if len(class_names) != len(ways_images):
            raise SgoneError(f"support: {len(class_names)} class names for {len(ways_images)} classes")
        shots = []
        for way, (imgs, msks) in enumerate(zip(ways_images, ways_masks)):
            protos = []
            for shot, (image, mask) in enumerate(zip(imgs, msks)):
                where = f"support {shot + 1}" + (f" of {class_names[way]}" if nested else "")
                image, mask = check_pair(image, mask, where)
                hw = input_size(*image.shape[:2], self.size)
                m = mask_tensor(mask, hw).to(self.device)
                if not (m == 1).any():
                    raise SgoneError(f"{where}: the object is too thin to survive resizing to {hw[1]}x{hw[0]}; use a larger --size")
                encoded = self.model.encode(image_tensor(image, hw).to(self.device), need_side=False)
                protos.append(self.model.support_prototype(encoded, m))
            shots.append(protos)
        self._shots, self.class_names, self._last = shots, class_names, None

    @torch.inference_mode()
    def update_support(self, mask: np.ndarray, weight: float = 0.2) -> None:
        """Blend a prototype taken from the last predicted query under `mask` into every support shot.

        mask: HxW uint8 {0,1,255} (255 = ignore) at the last query's resolution (1-way only).
        Nothing is re-encoded: the query's cached encoding is reused (online update for video).
        Each of the k shots is blended, so "max"/"vote" keep k predictions and "avg" (the mean of
        the shots) moves by the same `weight`.
        """
        if self._last is None:
            raise SgoneError("update_support: predict a query first")
        if len(self._shots) != 1:
            raise SgoneError("update_support: only for 1-way supports")
        hw = self._last["input_hw"]
        m = mask_tensor(np.asarray(mask, dtype=np.uint8), hw).to(self.device)
        if not (m == 1).any() or not (m == 0).any():
            return  # nothing confident to learn from this frame
        new = self.model.support_prototype(self._last["encoded"], m)
        # sets of prototypes (B,N,C), the support's background parts, stay: blending them with
        # their best matches in the frame lost 0.10 J on the generated clip (tests/test_video.py)
        self._shots = [[{k: v if v.dim() == 3 else (1 - weight) * v + weight * new[k] for k, v in shot.items()}
                        for shot in self._shots[0]]]

    @property
    def ways(self) -> int:
        return len(self._shots)

    @property
    def shots(self) -> list[int]:
        """Support images per way."""
        return [len(s) for s in self._shots]

    # ----------------------------------------------------------------- queries
    def predict(self, image: ImageLike) -> Prediction:
        """Segment one query image (path, PIL image, HxWx3 or HxW uint8 array); see `Prediction`."""
        return self.predict_batch([image])[0]

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[ImageLike]) -> list[Prediction]:
        """Segment several queries; same-size queries share a batched encoding."""
        if not self._shots:
            raise SgoneError("predict: call set_support() first")
        if is_single(images):
            images = [images]
        names = [str(image) if is_path(image) else f"query {i + 1}" for i, image in enumerate(images)]
        images = [check_image(image, name) for name, image in zip(names, images)]
        for name, image in zip(names, images):
            note = small_input_note(image.shape[:2], name)
            if note:
                warnings.warn(note, SgoneWarning, stacklevel=3)
        results: list[Prediction | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(tuple(image.shape[:2]), []).append(i)
        for (h, w), indices in groups.items():
            hw = input_size(h, w, self.size)
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                batch = torch.cat([image_tensor(images[i], hw) for i in chunk]).to(self.device)
                encoded = self.model.encode(batch)
                probs, sims = self._score(encoded, (h, w))
                if self.flip:
                    probs, sims = mirror_average((probs, sims), self._score(self.model.encode(batch.flip(-1)), (h, w)))
                for j, i in enumerate(chunk):
                    prob = probs[j]
                    if self.self_support:
                        prob = self._second_look({k: v[j:j + 1] for k, v in encoded.items()}, prob, hw)
                    if self.zoom:
                        prob = self._zoom(images[i], prob)
                    if self.boundary == "guided":
                        prob = refine_probability(prob, images[i], self.size or max(h, w),
                                                  *boundary_settings(self.model))
                    results[i] = self._finish(prob, sims[j])
                    if i == len(images) - 1:  # update_support learns from the last image given
                        self._last = {"encoded": {k: v[j:j + 1] for k, v in encoded.items()}, "input_hw": hw}
        return results  # type: ignore[return-value]

    def _score(self, encoded: dict[str, torch.Tensor], out_hw: tuple[int, int],
               shots: list[list[dict[str, torch.Tensor]]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> foreground score (probability or vote share) and similarity, each (B,N,H,W) at the original
        size; shots: prototypes per way and shot (default the support's)."""
        b = next(iter(encoded.values())).shape[0]
        probs, sims = [], []
        for protos in self._shots if shots is None else shots:
            prob, sim = ops.fuse_shots(protos, lambda p: self.model.segment(encoded, _expand(p, b)),
                                       lambda logits: ops.upsample_logits(logits, out_hw).softmax(dim=1)[:, 1],
                                       self.model.fuse_prototypes, self.fusion, self.threshold)
            probs.append(prob)
            sims.append(ops.upsample_logits(sim.unsqueeze(1), out_hw)[:, 0])
        return torch.stack(probs, dim=1), torch.stack(sims, dim=1)

    def _second_look(self, encoded: dict[str, torch.Tensor], prob: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """One query's (N,H,W) first-pass scores -> the self-support step's, from its cached encoding
        (batch 1); a way whose first pass found no confident object or background keeps its scores."""
        return second_look(lambda shots: self._score(encoded, tuple(prob.shape[-2:]), shots)[0][0],
                           self.model.support_prototype, encoded, self._shots, prob, hw)

    def _zoom(self, image: np.ndarray, prob: torch.Tensor) -> torch.Tensor:
        """One query's (N,H,W) scores -> the zoom step's: candidate regions read again from their crops,
        each segmented at `size` against the cached support (with the self-support step when on)."""
        def score_crop(crop: np.ndarray) -> torch.Tensor:
            hw = input_size(*crop.shape[:2], self.size)
            encoded = self.model.encode(image_tensor(np.ascontiguousarray(crop), hw).to(self.device))
            part, _ = self._score(encoded, crop.shape[:2])
            return self._second_look(encoded, part[0], hw) if self.self_support else part[0]

        h, w = prob.shape[-2:]
        return ops.zoom_refine(prob, image, score_crop, ZOOM_LOW, ZOOM_MARGIN, ZOOM_CROPS, ZOOM_WEIGHT,
                               min_side=max(h, w) // 4)

    def _finish(self, prob: torch.Tensor, sim: torch.Tensor) -> Prediction:
        """(N,H,W) scores and similarities of one query -> Prediction (keep rule: `sgone.ops.label_map`)."""
        mask = ops.label_map(prob.float(), self.fusion, self.shots, self.threshold).cpu().numpy().astype(np.uint8)
        prob_np = prob.float().cpu().numpy()
        sim_np = sim.float().cpu().numpy()
        if prob_np.shape[0] == 1:
            return Prediction(mask=mask, probability=prob_np[0], similarity=sim_np[0])
        return Prediction(mask=mask, probability=prob_np, similarity=sim_np)


def mirror_average(first: tuple[torch.Tensor, ...], mirrored: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Readings (each (B,N,H,W)) of the queries and of their mirror images -> their averages, the
    mirrored ones flipped back first."""
    return tuple((a + b.flip(-1)) / 2 for a, b in zip(first, mirrored))


def _expand(proto: dict[str, torch.Tensor], b: int) -> dict[str, torch.Tensor]:
    return {k: v.expand(b, *v.shape[1:]) for k, v in proto.items()}
