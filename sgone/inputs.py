"""What the predictor takes as one image or one mask, checked, and turned into network tensors.

Below the predictor and the runtimes: the ONNX exporter, the feature cache, the video modes and
the data pipeline resize exactly as `Predictor` does by calling these functions.

Images: file paths, PIL images, HxWx3 uint8 or HxW (grey) arrays. Masks: file paths, PIL images
or HxW arrays, all read by one rule (`sgone.io.mask_from_values`, the CLI's too): {0,1} as they are;
exactly {0,255}: 255 is the object (a 0/255 PNG); otherwise non-zero is the object and 255 is
ignore (pixels that count as neither object nor background), except grey masks with values of 128
and more besides 255 (anti-aliased), where >= 128 is the object; bool arrays are object/background.
"""
from __future__ import annotations

import os
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sgone.errors import SgoneError
from sgone.io import mask_from_values, read_image, read_mask
from sgone.options import SMALL_INPUT
from sgone.upsample import resize_images

# what set_support / predict take as one image or one mask
ImageLike = Union[str, "os.PathLike[str]", Image.Image, np.ndarray]


def input_size(height: int, width: int, size: int | None) -> tuple[int, int]:
    """Network input size: the longer side scaled to `size` (None keeps the image size)."""
    if size is None:
        return height, width
    scale = size / max(height, width)
    return max(8, round(height * scale)), max(8, round(width * scale))


def image_tensor(image: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
    """HxWx3 uint8 -> (1,3,h,w) float in [0,1], resized with antialiasing (`sgone.upsample.resize_images`:
    torch's bilinear resize made reproducible to the bit, which exported models need)."""
    x = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255.0)
    return torch.from_numpy(np.ascontiguousarray(resize_images(x, hw)))


def mask_tensor(mask: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
    """HxW uint8 {0,1,255} -> (1,h,w) long, nearest resize (labels stay labels)."""
    t = torch.from_numpy(np.array(mask, dtype=np.uint8, copy=True)).unsqueeze(0).unsqueeze(0).float()
    if tuple(t.shape[-2:]) != tuple(hw):
        t = F.interpolate(t, size=hw, mode="nearest")
    return t[0].long()


def is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def is_single(x: Any) -> bool:
    """One image or mask (a path, a PIL image, an HxW or HxWxC array), not a list of them."""
    return is_path(x) or isinstance(x, Image.Image) or (isinstance(x, np.ndarray) and x.ndim in (2, 3))


def check_image(image: ImageLike, where: str) -> np.ndarray:
    """Any accepted image -> HxWx3 uint8 RGB (grey arrays repeated)."""
    if is_path(image):
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


def check_mask(mask: ImageLike, where: str) -> np.ndarray:
    """Any accepted mask -> HxW uint8 {0,1,255}: the value rule of the module docstring."""
    if is_path(mask):
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
    return mask_from_values(mask, where)  # the rule `sgone.io.read_mask` applies to a grey file


def small_input_note(hw: tuple[int, int], where: str) -> str | None:
    """A one-line note when an image is under `SMALL_INPUT` pixels on a side, else None."""
    h, w = hw
    if min(h, w) >= SMALL_INPUT:
        return None
    return (f"{where}: {w}x{h} pixels is tiny (under {SMALL_INPUT} on a side); the network sees only a few "
            "cells of it, so its mask may mean little")


def check_pair(image: ImageLike, mask: ImageLike, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A support image and its mask, checked: same size, some object pixels."""
    image_where = str(image) if is_path(image) else where
    mask_where = str(mask) if is_path(mask) else where
    image, mask = check_image(image, image_where), check_mask(mask, mask_where)
    if mask.shape != image.shape[:2]:
        raise SgoneError(f"{mask_where}: mask size {mask.shape[1]}x{mask.shape[0]} differs from image size "
                         f"{image.shape[1]}x{image.shape[0]}" + (f" ({image_where})" if image_where != mask_where else ""))
    if not (mask == 1).any():
        raise SgoneError(f"{mask_where}: the mask is empty (no object pixels)")
    return image, mask
