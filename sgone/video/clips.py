"""Generated test clips with exact masks (tests and benchmarks)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from sgone.errors import SgoneError


def synthetic_clip(
    n_frames: int = 12,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
    scale_range: tuple[float, float] = (0.8, 1.3),
    drift: float = 0.0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (frame HxWx3 uint8, exact mask HxW uint8 {0,1}) of a generated clip.

    A textured object (an elliptical crop of scikit-image's cat photo, "chelsea") moves along a
    seeded path and changes scale over a slowly panning real photo background ("coffee").
    The object is pasted with its binary mask, so the mask is exact. `drift` (0..1) fades the
    object's colours over the clip (an appearance change, for testing online updates).
    Needs scikit-image (the `data` extra); frames are produced one at a time.
    """
    try:
        from skimage import data as skdata
    except ImportError:
        raise SgoneError("synthetic_clip needs scikit-image (pip install 'sgone[data]')") from None
    from PIL import Image

    h, w = size
    rng = np.random.default_rng(seed)
    background = skdata.coffee()  # 400x600
    cat = skdata.chelsea()  # 300x451; the face sits around rows 30..230, cols 120..330
    texture = cat[30:230, 120:330]
    th, tw = texture.shape[:2]
    yy, xx = np.mgrid[0:th, 0:tw]
    ellipse = (((yy - th / 2) / (th / 2)) ** 2 + ((xx - tw / 2) / (tw / 2)) ** 2) <= 1.0
    # background: a crop window that pans across the photo, resized to the frame
    bh = min(background.shape[0], int(round(background.shape[1] * h / w)))
    bw = int(round(bh * w / h))
    pan = max(0, background.shape[1] - bw)
    base = 0.4 * min(h, w)  # object height at scale 1
    # path: from one side to the other with a seeded vertical wobble
    x0, x1 = rng.uniform(0.25, 0.35), rng.uniform(0.65, 0.75)
    if rng.random() < 0.5:
        x0, x1 = x1, x0
    y0, y1 = rng.uniform(0.35, 0.65, size=2)
    phase = rng.uniform(0, 2 * np.pi)
    for t in range(n_frames):
        u = t / max(1, n_frames - 1)
        left = int(round(u * pan * 0.5))
        bg = np.asarray(Image.fromarray(background[:bh, left:left + bw]).resize((w, h), Image.BILINEAR))
        scale = scale_range[0] + (scale_range[1] - scale_range[0]) * u
        oh = max(4, int(round(base * scale)))
        ow = max(4, int(round(oh * tw / th)))
        tex = texture.astype(np.float32)
        if drift:
            grey = tex.mean(axis=2, keepdims=True)
            tex = (1 - drift * u) * tex + drift * u * (0.6 * grey + 0.4 * np.array([60, 90, 160], np.float32))
        obj = np.asarray(Image.fromarray(np.clip(tex, 0, 255).astype(np.uint8)).resize((ow, oh), Image.BILINEAR))
        obj_mask = np.asarray(Image.fromarray(ellipse.astype(np.uint8) * 255).resize((ow, oh), Image.NEAREST)) > 127
        cy = (y0 + (y1 - y0) * u + 0.05 * np.sin(2 * np.pi * u + phase)) * h
        cx = (x0 + (x1 - x0) * u) * w
        top, lft = int(round(cy - oh / 2)), int(round(cx - ow / 2))
        frame = bg.copy()
        mask = np.zeros((h, w), dtype=np.uint8)
        # clip the object to the frame
        ys, xs = max(0, top), max(0, lft)
        ye, xe = min(h, top + oh), min(w, lft + ow)
        if ye > ys and xe > xs:
            sub_m = obj_mask[ys - top:ye - top, xs - lft:xe - lft]
            sub_o = obj[ys - top:ye - top, xs - lft:xe - lft]
            region = frame[ys:ye, xs:xe]
            region[sub_m] = sub_o[sub_m]
            mask[ys:ye, xs:xe][sub_m] = 1
        yield frame, mask


def write_clip(
    folder: str | Path,
    clip: Iterable[tuple[np.ndarray, np.ndarray]],
    image_format: str = "jpg",
    masks_folder: str | Path | None = None,
) -> int:
    """Write a clip as <folder>/00000.<fmt> ... (and masks as 0/255 PNGs); returns the frame count."""
    from sgone.io import save_image, write_mask_png

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for n, (frame, mask) in enumerate(clip, start=1):
        save_image(folder / f"{n - 1:05d}.{image_format}", frame)
        if masks_folder is not None:
            write_mask_png(Path(masks_folder) / f"{n - 1:05d}.png", mask)
    return n
