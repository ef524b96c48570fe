"""One image's labelling, shared by both engines: decode, predict (the caller batches), and turn
a prediction into what is stored (mask PNG bytes per class, COCO RLE, statistics).

Everything here is a pure function of its arguments, so a Ray worker and the local engine's
threads produce byte-identical outputs for the same image.
"""
from __future__ import annotations

import io
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from sgone.errors import SgoneError


@dataclass(frozen=True)
class LabelSpec:
    """What every worker needs to rebuild the same predictor and outputs (picklable).

    supports: per class, the (image HxWx3 uint8, mask HxW {0,1,255}) pairs as checked by the driver.
    work_side: longer side images are decoded at (larger ones are shrunk; their masks upsampled).
    """

    model: str
    classes: tuple[str, ...]
    supports: tuple[tuple[tuple[np.ndarray, np.ndarray], ...], ...]
    size: int | None = 473
    threshold: float = 0.5
    fusion: str = "avg"
    boundary: str = "none"
    runtime: str = "auto"
    precision: str = "auto"
    self_support: bool = False
    zoom: bool = False
    flip: bool = False
    device: str = "auto"
    work_side: int | None = 2048
    max_pixels: int | None = None
    overlays: bool = False
    threads: int | None = None


@dataclass
class Encoded:
    """One image's stored results: `record` (the journal line) and the files' bytes."""

    record: dict[str, Any]
    masks: list[bytes] = field(default_factory=list)  # one 0/255 PNG per class
    overlay: bytes = b""


def build_predictor(spec: LabelSpec):
    """The spec's Predictor with its support set encoded (once per worker)."""
    import torch

    from sgone.predictor import Predictor

    if spec.threads:
        torch.set_num_threads(spec.threads)
    predictor = Predictor(spec.model, device=spec.device, size=spec.size, threshold=spec.threshold,
                          fusion=spec.fusion, runtime=spec.runtime, boundary=spec.boundary,
                          precision=spec.precision, self_support=spec.self_support, zoom=spec.zoom,
                          flip=spec.flip)
    nested = len(spec.classes) > 1
    images = [[pair[0] for pair in shots] for shots in spec.supports]
    masks = [[pair[1] for pair in shots] for shots in spec.supports]
    predictor.set_support(images if nested else images[0], masks if nested else masks[0],
                          class_names=list(spec.classes))
    return predictor


def decode(path: str, spec: LabelSpec) -> tuple[np.ndarray, tuple[int, int]]:
    """-> (hxwx3 uint8 image at most `work_side`, full (H, W)); SgoneError for a bad file."""
    from sgone.io import MAX_PIXELS, read_image_fit

    return read_image_fit(path, spec.work_side, MAX_PIXELS if spec.max_pixels is None else spec.max_pixels)


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def full_size_masks(image: np.ndarray, full_hw: tuple[int, int], prediction, spec: LabelSpec,
                    shots: Sequence[int]) -> tuple[list[np.ndarray], list[float | None]]:
    """Per class: the HxW 0/255 mask at the image's full size and the mean probability on it.

    Predicted at full size: the predictor's own labels. Decoded shrunk (one class): the score is
    upsampled in bands (`sgone.upsample.full_size_mask`, as `sgone segment`); several classes: the label map is
    resized by nearest neighbour.
    """
    from sgone import ops
    from sgone.upsample import full_size_mask, resize

    n = len(spec.classes)
    prob = prediction.probability if n > 1 else prediction.probability[None]
    labels = prediction.mask
    if image.shape[:2] != tuple(full_hw) and n == 1:
        def keep(score):  # numpy bands: the rule only compares
            return ops.keep_foreground(score, spec.fusion, shots[0], spec.threshold)

        mask, count, total = full_size_mask(prediction.probability, full_hw, keep)
        return [mask], [total / count if count else None]
    means = []
    for c in range(1, n + 1):
        region = labels == c
        means.append(float(prob[c - 1][region].mean(dtype=np.float64)) if region.any() else None)
    if image.shape[:2] != tuple(full_hw):
        labels = resize(labels, full_hw, nearest=True)
    return [np.where(labels == c, 255, 0).astype(np.uint8) for c in range(1, n + 1)], means


def encode_result(key: str, path: str, image: np.ndarray, full_hw: tuple[int, int], prediction,
                  spec: LabelSpec, shots: Sequence[int], seconds: float) -> Encoded:
    """A prediction -> the PNG bytes of its masks (and overlay) and its journal record."""
    from sgone.label.coco import encode_mask

    start = time.perf_counter()
    masks, means = full_size_masks(image, full_hw, prediction, spec, shots)
    h, w = full_hw
    classes = []
    for mask, mean in zip(masks, means):
        encoded = encode_mask(mask)
        classes.append({"foreground_share": round(encoded["area"] / (h * w), 6),
                        "mean_probability": None if mean is None or not encoded["area"] else round(mean, 4),
                        **encoded})
    overlay = b""
    if spec.overlays:
        from sgone.viz import overlay as draw

        overlay = _png(draw(image, prediction.mask))
    record = {"key": key, "file": path, "status": "done", "width": w, "height": h,
              "seconds": round(seconds + time.perf_counter() - start, 4), "error": None, "classes": classes,
              "worker": f"{socket.gethostname()}:{os.getpid()}"}
    return Encoded(record, [_png(m) for m in masks], overlay)


def failed(key: str, path: str, error: BaseException | str, seconds: float = 0.0) -> Encoded:
    """The record of an image that could not be read (or labelled)."""
    return Encoded({"key": key, "file": path, "status": "error", "seconds": round(seconds, 4),
                    "error": str(error), "worker": f"{socket.gethostname()}:{os.getpid()}"})


def label_batch(predictor, rows: Sequence[tuple[str, str]], spec: LabelSpec) -> list[Encoded]:
    """Label (key, path) rows with one batched prediction (a Ray worker's batch: decoded here);
    bad files become error records."""
    decoded: list[tuple[np.ndarray, tuple[int, int]] | BaseException] = []
    decode_seconds: list[float] = []
    for _, path in rows:
        start = time.perf_counter()
        try:
            decoded.append(decode(path, spec))
        except SgoneError as exc:
            decoded.append(exc)
        decode_seconds.append(time.perf_counter() - start)
    good = [i for i, d in enumerate(decoded) if not isinstance(d, BaseException)]
    start = time.perf_counter()
    predictions = predictor.predict_batch([decoded[i][0] for i in good]) if good else []
    share = (time.perf_counter() - start) / max(1, len(good))  # the batch's model time, split evenly
    out: list[Encoded | None] = [None] * len(rows)
    for i, prediction in zip(good, predictions):
        image, full_hw = decoded[i]
        out[i] = encode_result(rows[i][0], rows[i][1], image, full_hw, prediction, spec, predictor.shots,
                               decode_seconds[i] + share)
    for i, d in enumerate(decoded):
        if isinstance(d, BaseException):
            out[i] = failed(rows[i][0], rows[i][1], d, decode_seconds[i])
    return out  # type: ignore[return-value]
