"""Pictures people would rather look at: overlays, similarity heat maps, episode grids, curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sgone.io import save_image

# Distinct colours for N-way labels (index 0 is unused: background).
PALETTE = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
     [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128]],
    dtype=np.uint8,
)


def save_png(path: str | Path, array: np.ndarray) -> None:
    """Write an HxW or HxWx3 uint8 array as PNG, atomically."""
    save_image(Path(path).with_suffix(".png") if Path(path).suffix == "" else path, array)


# Overlay tints, preferred first: red unless the object itself is reddish (then the farthest).
OVERLAY_COLOURS = ((255, 0, 0), (0, 255, 255), (0, 255, 0), (0, 96, 255), (255, 0, 255), (255, 255, 0))
MIN_CONTRAST = 150.0  # RGB distance between the tint and the object's mean colour
# Fixed colour scale of every similarity heat map: cosine 0 (or below) -> coldest, 1 -> hottest,
# so a support that does not match the query shows cold whatever the image.
SIMILARITY_RANGE = (0.0, 1.0)


def overlay_colour(image: np.ndarray, region: np.ndarray) -> tuple[int, int, int]:
    """A tint that stands out on the object: the first of OVERLAY_COLOURS at least MIN_CONTRAST away
    from the mean colour of `image` (HxWx3) under `region` (HxW bool), else the farthest one."""
    if not region.any():
        return OVERLAY_COLOURS[0]
    mean = image[region].reshape(-1, 3).astype(np.float64).mean(axis=0)
    distances = [float(np.linalg.norm(np.asarray(c, dtype=np.float64) - mean)) for c in OVERLAY_COLOURS]
    for colour, distance in zip(OVERLAY_COLOURS, distances):
        if distance >= MIN_CONTRAST:
            return colour
    return OVERLAY_COLOURS[int(np.argmax(distances))]


def overlay(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] | None = None, alpha: float = 0.5,
            contour: bool = True) -> np.ndarray:
    """Tint the object pixels of `mask` (HxW, 1 = object; N-way labels use PALETTE) on `image` (HxWx3).

    `color` None picks one that stands out on the object (`overlay_colour`); the object gets a
    fill plus a solid outline about 1/400 of the image's longer side thick.
    """
    out = np.array(image, dtype=np.uint8, copy=True)  # only object pixels are touched: no float copy
    mask = np.asarray(mask)
    labels = [v for v in np.unique(mask) if v not in (0, 255)]
    width = max(1, round(max(mask.shape) / 400))
    for value in labels:
        region = mask == value
        if len(labels) == 1 and value == 1:
            chosen = color if color is not None else overlay_colour(image, region)
        else:
            chosen = PALETTE[int(value) % len(PALETTE)]
        tint = np.array(chosen, dtype=np.float32)
        out[region] = ((1 - alpha) * out[region].astype(np.float32) + alpha * tint + 0.5).clip(0, 255).astype(np.uint8)
        if contour:
            inner = region
            for _ in range(width):
                inner = _erode(inner)
            out[region & ~inner] = np.asarray(chosen, dtype=np.uint8)
    return out


def _erode(region: np.ndarray) -> np.ndarray:
    padded = np.pad(region, 1, mode="edge")
    out = region.copy()
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        out &= padded[dy:dy + region.shape[0], dx:dx + region.shape[1]]
    return out


_ANCHORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float32)


def _colour_table() -> np.ndarray:
    """256 colours of a perceptual blue-to-yellow map (viridis-like) -> 256x3 uint8."""
    pos = np.linspace(0, 1, 256, dtype=np.float32) * (len(_ANCHORS) - 1)
    low = np.floor(pos).astype(int).clip(0, len(_ANCHORS) - 2)
    frac = (pos - low)[:, None]
    return (_ANCHORS[low] * (1 - frac) + _ANCHORS[low + 1] * frac).astype(np.uint8)


_COLOUR_TABLE = _colour_table()


def _colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped) -> HxWx3 uint8 colours, 256 levels through a table (little memory)."""
    index = np.clip(np.asarray(values, dtype=np.float32) * 255 + 0.5, 0, 255).astype(np.uint8)
    return _COLOUR_TABLE[index]


def heatmap(similarity: np.ndarray, image: np.ndarray | None = None, alpha: float = 0.6,
            value_range: tuple[float, float] | None = SIMILARITY_RANGE, colorbar: bool = False) -> np.ndarray:
    """Colour a similarity map (HxW) as HxWx3 uint8, blended over `image` when given.

    The colour scale is fixed (`SIMILARITY_RANGE`, cosine 0..1; values outside are clipped) so that
    maps of different images compare; `value_range` None scales the map to its own min..max.
    `colorbar` appends the scale on the right (the result is then wider than the map).
    """
    sim = np.asarray(similarity, dtype=np.float32)
    lo, hi = value_range if value_range else (float(sim.min()), float(sim.max()))
    colours = _colormap((sim - lo) / max(hi - lo, 1e-6))
    if image is not None:
        shown = Image.fromarray(colours)
        if image.shape[:2] != sim.shape:
            shown = shown.resize((image.shape[1], image.shape[0]), Image.BILINEAR)
        colours = np.asarray(Image.blend(Image.fromarray(np.ascontiguousarray(image)), shown, alpha))
    if colorbar:
        colours = np.concatenate([colours, colour_bar(colours.shape[0], (lo, hi))], axis=1)
    return colours


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # PIL without FreeType: one bitmap size only
        return ImageFont.load_default()


def colour_bar(height: int, value_range: tuple[float, float] = SIMILARITY_RANGE) -> np.ndarray:
    """A vertical colour bar, high values on top, with tick labels -> height x width x 3 uint8 (white)."""
    lo, hi = value_range
    size = int(np.clip(height // 20, 8, 48))
    font = _font(size)
    labels = [f"{v:.3g}" for v in (hi, (lo + hi) / 2, lo)]
    pad, strip = max(2, size // 3), max(4, size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = int(max(measure.textlength(label, font=font) for label in labels)) + 1
    text_x = 2 * pad + strip + max(2, pad)  # a gap after the tick, so "1" does not read "-1"
    canvas = Image.new("RGB", (text_x + text_w + pad, height), (255, 255, 255))
    top, bottom = min(size // 2 + 1, height // 2), max(height - size // 2 - 1, height // 2 + 1)
    ramp = np.linspace(1.0, 0.0, bottom - top, dtype=np.float32)[:, None].repeat(strip, axis=1)
    canvas.paste(Image.fromarray(_colormap(ramp)), (pad, top))
    draw = ImageDraw.Draw(canvas)
    for label, y in zip(labels, (top, (top + bottom) / 2, bottom)):
        draw.line([pad + strip, y, pad + strip + pad, y], fill=(0, 0, 0))
        if isinstance(font, ImageFont.FreeTypeFont):
            draw.text((text_x, y), label, fill=(0, 0, 0), font=font, anchor="lm")
        else:  # the bitmap font knows no anchors
            draw.text((text_x, y - 5), label, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def _fit(tile_image: np.ndarray, tile: int) -> np.ndarray:
    if tile_image.ndim == 2:
        tile_image = np.repeat(tile_image[:, :, None], 3, axis=2)
    h, w = tile_image.shape[:2]
    scale = tile / max(h, w)
    resized = Image.fromarray(tile_image).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    canvas = Image.new("RGB", (tile, tile), (32, 32, 32))
    canvas.paste(resized, ((tile - resized.width) // 2, (tile - resized.height) // 2))
    return np.asarray(canvas)


def tile_grid(rows: list[list[np.ndarray]], labels: list[list[str]] | None = None, tile: int = 160,
              gap: int = 4) -> np.ndarray:
    """Lay images out in a grid of `tile` x `tile` cells (aspect kept), with optional captions."""
    ncols = max(len(r) for r in rows)
    caption = 14 if labels else 0
    height = len(rows) * (tile + caption + gap) + gap
    width = ncols * (tile + gap) + gap
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            x = gap + c * (tile + gap)
            y = gap + r * (tile + caption + gap)
            canvas.paste(Image.fromarray(_fit(np.asarray(cell), tile)), (x, y + caption))
            if labels and r < len(labels) and c < len(labels[r]) and labels[r][c]:
                draw.text((x + 2, y + 1), str(labels[r][c])[: tile // 6], fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def line_plot(series: dict[str, tuple[list[float], list[float]]], title: str = "", xlabel: str = "",
              ylabel: str = "", size: tuple[int, int] = (640, 400)) -> np.ndarray:
    """Draw named (xs, ys) curves on one set of axes; returns HxWx3 uint8."""
    width, height = size
    left, right, top, bottom = 60, 20, 30, 45
    canvas = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    points = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys) if np.isfinite(y)]
    if not points:
        draw.text((left, height // 2), "no data", fill=(0, 0, 0), font=font)
        return np.asarray(canvas)
    xs_all, ys_all = zip(*points)
    x0, x1 = min(xs_all), max(xs_all)
    y0, y1 = min(ys_all), max(ys_all)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x0) / (x1 - x0) * (width - left - right)
        py = height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)
        return px, py

    draw.rectangle([left, top, width - right, height - bottom], outline=(0, 0, 0))
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        _, py = to_px(x0, yv)
        draw.line([left - 4, py, left, py], fill=(0, 0, 0))
        draw.text((4, py - 6), f"{yv:.3g}", fill=(0, 0, 0), font=font)
        xv = x0 + (x1 - x0) * i / 4
        px, _ = to_px(xv, y0)
        draw.line([px, height - bottom, px, height - bottom + 4], fill=(0, 0, 0))
        draw.text((px - 12, height - bottom + 6), f"{xv:.4g}", fill=(0, 0, 0), font=font)
    for i, (name, (xs, ys)) in enumerate(series.items()):
        colour = tuple(int(v) for v in PALETTE[1 + i % (len(PALETTE) - 1)])
        pts = [to_px(x, y) for x, y in zip(xs, ys) if np.isfinite(y)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for px, py in pts if len(pts) <= 60 else []:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        draw.text((left + 8, top + 4 + 12 * i), name, fill=colour, font=font)
    draw.text((left, 8), title, fill=(0, 0, 0), font=font)
    draw.text((width // 2 - 3 * len(xlabel), height - 16), xlabel, fill=(0, 0, 0), font=font)
    draw.text((4, top - 14), ylabel, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)
