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


def resize_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """The taps of torch's antialiased bilinear resize along one axis (`F.interpolate(mode="bilinear",
    align_corners=False, antialias=True)`), with its float32 steps so the weights equal torch's bit for bit.

    -> first source index of each output (n_out,) int64, weights (n_out, K) float32 (zero past a window).
    Shrinking, the triangle filter spans `n_in / n_out` source pixels; enlarging, it is plain bilinear.
    """
    f32, f64 = np.float32, np.float64
    scale = f32(n_in) / f32(n_out)
    support = max(scale, f32(1.0))
    invscale = f32(1.0 / f64(scale)) if scale >= 1 else f32(1.0)
    centre = (f64(scale) * (np.arange(n_out) + 0.5)).astype(f32)
    low = np.maximum(((centre - support).astype(f64) + 0.5).astype(np.int64), 0)  # C casts truncate
    high = np.minimum(((centre + support).astype(f64) + 0.5).astype(np.int64), n_in)
    j = low[:, None] + np.arange(int((high - low).max()))
    x = np.abs((((j.astype(f32) - centre[:, None]).astype(f64) + 0.5) * invscale).astype(f32))
    w = np.where((x < 1) & (j < high[:, None]), f32(1) - x, f32(0))
    total = np.zeros(n_out, f32)
    for column in w.T:  # summed in order in float32, as torch
        total += column
    return low, w / total[:, None]


def resize_images(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(..., H, W) float32 -> (..., h, w): sgone's image resize (network inputs, DINOv2's canvas).

    torch's antialiased bilinear resize (`resize_taps`), height then width, each output the sum of
    its taps in order in float64 rounded once to float32, so any runtime that follows these steps
    gets the same bits (torch's own kernel differs by about 1 float32 ulp, in an order that depends
    on how it was compiled). examples/onnx_segment.py repeats it: DINOv2 in int8 turns a 1-ulp
    difference in its input into other features, so a deployment must reproduce it exactly.
    """
    x = np.asarray(x, dtype=np.float32)
    for axis, n_out in ((-2, hw[0]), (-1, hw[1])):  # rows first: they gather whole rows (fast)
        n_in = x.shape[axis]
        if n_in == n_out:
            continue
        low, w = resize_taps(n_in, n_out)
        weights = w.astype(np.float64).T.reshape(w.shape[1], -1, *[1] * (-1 - axis))  # (K, n_out[, 1])
        shape = list(x.shape)
        shape[axis] = n_out
        out, part = np.zeros(shape), np.empty(shape)
        for k in range(w.shape[1]):
            np.multiply(np.take(x, np.minimum(low + k, n_in - 1), axis=axis), weights[k], out=part)  # exact
            out += part
        x = out.astype(np.float32)
    return x
