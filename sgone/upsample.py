"""Score maps and previews to the image's pixels without a full-size float array: `full_size_mask`
upsamples bilinearly (as torch, align_corners=False) in bands of rows, so a 100-megapixel query
costs ~16 MB at a time. Numpy only (`sgone segment` writes its full-size masks with it)."""
from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image

BAND_PIXELS = 1 << 22  # pixels per band of the full-size mask: ~16 MB of float32 at a time


def fit_hw(hw: tuple[int, int], side: int | None) -> tuple[int, int]:
    """(H, W) shrunk, aspect kept, so the longer side is at most `side` (None = unchanged)."""
    h, w = hw
    if side is None or max(h, w) <= side:
        return h, w
    scale = side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def taps(n_in: int, n_out: int):
    """Source indices and weights of a bilinear resize along one axis (align_corners=False, as torch)."""
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    return low, high, (src - low).astype(np.float32)


def full_size_mask(score, full_hw: tuple[int, int], keep: Callable):
    """Upsample an hxw float score map bilinearly to full_hw (H, W) in bands of rows and apply `keep`.

    -> (HxW uint8 mask, 255 = object; object pixel count; sum of the score over the object).
    No full-size float array exists: each band is about BAND_PIXELS floats.
    """
    score = np.asarray(score, dtype=np.float32)
    (h, w), (big_h, big_w) = score.shape, full_hw
    y0, y1, fy = taps(h, big_h)
    x0, x1, fx = taps(w, big_w)
    mask = np.zeros((big_h, big_w), np.uint8)
    count, total = 0, 0.0
    band = max(1, BAND_PIXELS // big_w)
    for top in range(0, big_h, band):
        rows = slice(top, min(top + band, big_h))
        half = score[y0[rows]]  # (band, w), then (band, W): in place, two band arrays at a time
        half += (score[y1[rows]] - half) * fy[rows, None]
        full = np.take(half, x0, axis=1)
        step = np.take(half, x1, axis=1)
        step -= full
        step *= fx
        full += step
        del step
        kept = keep(full)
        mask[rows][kept] = 255
        count += int(kept.sum())
        total += float(np.sum(full, where=kept, dtype=np.float64))
    return mask, count, total


def resize(array, hw: tuple[int, int], nearest: bool = False):
    """An HxW(x3) uint8 or HxW float32 array resized to hw with PIL (bilinear or nearest)."""
    if array.shape[:2] == tuple(hw):
        return array
    resample = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(array).resize((hw[1], hw[0]), resample))
