"""Predictor: encode the support once (`set_support`), answer many cheap queries (`predict`).

    predictor = Predictor()                           # the default model (SG-One trained on real photos)
    predictor.set_support("cat.jpg", "cat_mask.png")  # or lists of k images/masks for k-shot
    result = predictor.predict("query.jpg")           # mask, probability, similarity at query size

Images: file paths, PIL images, HxWx3 uint8 or HxW (grey) arrays. Masks: file paths (read by
`sgone.io.read_mask`), PIL images or HxW arrays whose values are {0,1} (1 = object), exactly
{0,255} (255 = object, as a 0/255 PNG) or {0,1,255} (1 = object, 255 = ignore: such pixels count
as neither object nor background); bool arrays are object/background.
N-way: `set_support([[cat1, cat2], [dog1]], [[m1, m2], [m3]], class_names=["cat", "dog"])`
gives one label per pixel (0 = background, c = c-th class).
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from sgone import ops
from sgone.errors import SgoneError
from sgone.refine import refine_probability

FUSIONS = ops.FUSIONS
RUNTIMES = ("torch", "onnx")  # onnx: ONNX Runtime on the CPU (`pip install 'sgone[onnx]'`)
# the step from the stride-8 grid to the image's pixels: "none" = bilinear only (default); "guided" =
# bilinear, then a guided filter on the image's grey levels (`sgone.refine.refine_probability`): +1.4
# mIoU on held-out classes at 473 px, but worse at small input sizes and with the DINOv2 models
# (docs/results.md section 3), so it is not the default
BOUNDARIES = ("guided", "none")
# what set_support / predict take as one image or one mask
ImageLike = Union[str, "os.PathLike[str]", Image.Image, np.ndarray]
# Backbones whose CPU convolutions run faster in channels-last layout (EfficientNet-Lite0's
# dilated 5x5 depthwise convs get much slower, so it is not listed).
CHANNELS_LAST = ("mobilenet_v2", "resnet50")


def prepare_for_inference(model: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    """Fold BatchNorm into the convolutions and pick the faster memory layout, in place.

    For inference only (the folded model cannot be trained). Returns `model`, in eval mode on
    `device`. Measured on 2 CPU cores (`benchmarks/predictor_episode.py`): MobileNetV2 query at
    473x473 282 -> 150 ms.
    """
    from sgone.backbones.base import Backbone, fuse_batchnorm

    device = torch.device(device)
    model = model.to(device).eval()
    fuse_batchnorm(model)
    if device.type == "cpu":  # every backbone of the model (a fused model has two)
        for backbone in model.modules():
            if isinstance(backbone, Backbone) and backbone.name in CHANNELS_LAST:
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

    model: a registered name, a shipped checkpoint name, a checkpoint path, or a module (copied
    when `fuse` folds its BatchNorm layers for inference); None = `registry.DEFAULT_MODEL`, SG-One
    trained on real photos (DINOv2 + MobileNetV2; "prototype-mobilenet_v2" is ~5x faster). size: the longer input side (None =
    original size). fusion: k-shot rule, "avg" (average the support prototypes), "max" (union of
    the k one-shot predictions) or "vote" (pixels with at least half the top vote; each shot votes
    where its probability is above `threshold`); see `sgone.ops.fuse_shots`. allow_untrained:
    accept a registered SG-One whose head is untrained (benchmarks only: its masks are meaningless).
    runtime: "torch", or "onnx" (ONNX Runtime on the CPU: the model is exported once when the
    Predictor is made, or `model` is a folder written by `sgone export --dynamic`); same outputs
    to float rounding, see `sgone.onnx`. threads: ONNX Runtime's intra-op threads (default torch's).
    """

    def __init__(self, model: str | Path | nn.Module | None = None, device: str | torch.device | None = "cpu",
                 size: int | None = 473, threshold: float = 0.5, fusion: str = "avg",
                 batch_size: int = 4, fuse: bool = True, allow_untrained: bool = False,
                 runtime: str = "torch", threads: int | None = None, boundary: str = "none") -> None:
        from sgone.models.registry import DEFAULT_MODEL, load_model

        if boundary not in BOUNDARIES:
            raise SgoneError(f"{boundary}: unknown boundary step (use {', '.join(BOUNDARIES)})")
        self.boundary = boundary
        if fusion not in FUSIONS:
            raise SgoneError(f"{fusion}: unknown k-shot fusion (use {', '.join(FUSIONS)})")
        if runtime not in RUNTIMES:
            raise SgoneError(f"{runtime}: unknown runtime (use {', '.join(RUNTIMES)})")
        self.runtime = runtime
        if runtime == "onnx":
            from sgone.onnx.runtime import require_onnxruntime

            require_onnxruntime(export=not (_is_path(model) and Path(model).is_dir()))  # before loading anything
        self.device = resolve_device("cpu" if runtime == "onnx" and device in (None, "auto") else device)
        if runtime == "onnx" and self.device.type != "cpu":
            raise SgoneError(f"{device}: the onnx runtime runs on the CPU (use --device cpu or auto)")
        if runtime == "onnx" and _is_path(model) and Path(model).is_dir():
            from sgone.onnx.runtime import OnnxModel

            self.model, self.model_name = OnnxModel.from_folder(model, threads), str(model)
            if not self.model.dynamic:
                raise SgoneError(f"{model}: exported with a fixed input size; export with --dynamic for the Predictor")
            fuse = False
        elif _is_path(model) and (Path(model) / "manifest.json").is_file():
            raise SgoneError(f"{model}: an exported ONNX model; run it with runtime='onnx' (--runtime onnx)")
        elif isinstance(model, nn.Module):
            # fold BatchNorm into a private copy: the caller's module stays trainable
            model = copy.deepcopy(model) if fuse else model
            self.model = model.to(self.device).eval()
            config = getattr(model, "config", {}) or {}
            self.model_name = f"{type(model).__name__}({config.get('backbone', '?')})"
        else:
            self.model = load_model(model, self.device, allow_untrained=allow_untrained)
            self.model_name = str(model or DEFAULT_MODEL)
        if fuse:
            prepare_for_inference(self.model, self.device)
        if runtime == "onnx" and isinstance(self.model, nn.Module):
            from sgone.onnx.runtime import onnx_model

            # traced at the input size; other sizes and batches run through the dynamic axes
            self.model = onnx_model(self.model, size or 473, threads)
        self.size = size
        self.threshold = threshold
        self.fusion = fusion
        self.batch_size = batch_size
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
                + (f", runtime={self.runtime!r})" if self.runtime != "torch" else ")"))

    # ----------------------------------------------------------------- support
    @torch.inference_mode()
    def set_support(self, images: ImageLike | Sequence, masks: ImageLike | Sequence,
                    class_names: Sequence[str] | None = None) -> None:
        """Encode the support set once.

        1-way: one image and one mask, or lists of k of each (k-shot). N-way: lists of N lists.
        Accepted images and masks (and the mask value rule): see the module docstring. Masks must
        have their image's size and contain object pixels.
        """
        images, masks = ([x] if _is_single(x) else x for x in (images, masks))
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
                image, mask = _check_pair(image, mask, where)
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
        if _is_single(images):
            images = [images]
        images = [_check_image(image, f"query {i + 1}") for i, image in enumerate(images)]
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
                for j, i in enumerate(chunk):
                    prob = probs[j]
                    if self.boundary == "guided":
                        prob = refine_probability(prob, images[i], self.size or max(h, w))
                    results[i] = self._finish(prob, sims[j])
                    if i == len(images) - 1:  # update_support learns from the last image given
                        self._last = {"encoded": {k: v[j:j + 1] for k, v in encoded.items()}, "input_hw": hw}
        return results  # type: ignore[return-value]

    def _score(self, encoded: dict[str, torch.Tensor], out_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> foreground score (probability or vote share) and similarity, each (B,N,H,W) at the original size."""
        b = next(iter(encoded.values())).shape[0]
        probs, sims = [], []
        for protos in self._shots:
            prob, sim = ops.fuse_shots(protos, lambda p: self.model.segment(encoded, _expand(p, b)),
                                       lambda logits: ops.upsample_logits(logits, out_hw).softmax(dim=1)[:, 1],
                                       self.model.fuse_prototypes, self.fusion, self.threshold)
            probs.append(prob)
            sims.append(ops.upsample_logits(sim.unsqueeze(1), out_hw)[:, 0])
        return torch.stack(probs, dim=1), torch.stack(sims, dim=1)

    def _finish(self, prob: torch.Tensor, sim: torch.Tensor) -> Prediction:
        """(N,H,W) scores and similarities of one query -> Prediction (keep rule: `sgone.ops.label_map`)."""
        mask = ops.label_map(prob.float(), self.fusion, self.shots, self.threshold).cpu().numpy().astype(np.uint8)
        prob_np = prob.float().cpu().numpy()
        sim_np = sim.float().cpu().numpy()
        if prob_np.shape[0] == 1:
            return Prediction(mask=mask, probability=prob_np[0], similarity=sim_np[0])
        return Prediction(mask=mask, probability=prob_np, similarity=sim_np)


def _expand(proto: dict[str, torch.Tensor], b: int) -> dict[str, torch.Tensor]:
    return {k: v.expand(b, *v.shape[1:]) for k, v in proto.items()}


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def _is_single(x: Any) -> bool:
    """One image or mask (a path, a PIL image, an HxW or HxWxC array), not a list of them."""
    return _is_path(x) or isinstance(x, Image.Image) or (isinstance(x, np.ndarray) and x.ndim in (2, 3))


def _check_image(image: ImageLike, where: str) -> np.ndarray:
    """Any accepted image -> HxWx3 uint8 RGB (grey arrays repeated)."""
    from sgone.io import read_image

    if _is_path(image):
        return read_image(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise SgoneError(f"{where}: expected an HxWx3 or HxW uint8 image, got shape {image.shape} {image.dtype}")
    return image


def _check_mask(mask: ImageLike, where: str) -> np.ndarray:
    """Any accepted mask -> HxW uint8 {0,1,255}: the value rule of the module docstring."""
    from sgone.io import read_mask

    if _is_path(mask):
        return read_mask(mask)
    if isinstance(mask, Image.Image):
        if mask.mode not in ("1", "L", "P", "I", "I;16", "F"):
            raise SgoneError(f"{where}: a {mask.mode} PIL mask; pass a single-channel mask or its file path")
        mask = np.asarray(mask)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise SgoneError(f"{where}: expected an HxW mask, got shape {mask.shape}")
    if mask.dtype == bool:
        return mask.astype(np.uint8)
    values = set(np.unique(mask).tolist())
    if values <= {0, 1} or values <= {0, 1, ops.IGNORE} and 1 in values:
        return mask.astype(np.uint8)
    if values <= {0, ops.IGNORE}:
        return (mask == ops.IGNORE).astype(np.uint8)  # a 0/255 mask: 255 is the object
    shown = ", ".join(str(v) for v in sorted(values)[:6]) + (", ..." if len(values) > 6 else "")
    raise SgoneError(f"{where}: mask values {{{shown}}}; expected {{0,1}}, {{0,255}} (255 = object) "
                     "or {0,1,255} (255 = ignore)")


def _check_pair(image: ImageLike, mask: ImageLike, where: str) -> tuple[np.ndarray, np.ndarray]:
    image_where = str(image) if _is_path(image) else where
    mask_where = str(mask) if _is_path(mask) else where
    image, mask = _check_image(image, image_where), _check_mask(mask, mask_where)
    if mask.shape != image.shape[:2]:
        raise SgoneError(f"{mask_where}: mask size {mask.shape[1]}x{mask.shape[0]} differs from image size "
                         f"{image.shape[1]}x{image.shape[0]}" + (f" ({image_where})" if image_where != mask_where else ""))
    if not (mask == 1).any():
        raise SgoneError(f"{mask_where}: the mask is empty (no object pixels)")
    return image, mask
