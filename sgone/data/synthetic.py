"""Procedural few-shot benchmark "synthetic": textured shapes composited onto real photos.

A class is a (shape family, appearance) pair, e.g. "star-brick". Each image shows one object of
its main class at random scale, rotation, aspect and position on a random crop of a real photo
(scikit-image's bundled sample images), often with distractor objects of *other classes of the
same fold* (a fold's images never show another fold's classes, so training images never contain
the unseen classes) and with an occluder (a distractor or a photo patch) covering part of the
target. Masks are exact, with a 255 band on every object boundary like VOC.

Classes and folds (40 classes, fold f tests classes 10f+1..10f+10):
    shapes       shared:  ellipse box triangle star ring cross heart hexagon  (each in 2 folds)
                 novel:   crescent (fold 0), arrow (1), elbow (2, an L), blob (3)
    appearances  shared:  brick grass fur tissue stripes checker dots gradient (each in 2 folds)
                 novel:   gravel (fold 0), starfield (1), zigzag (2), camo (3)
    Every fold holds, in this order: its novel shape with its novel appearance (1 class), its
    novel shape with 2 shared appearances, 2 shared shapes with its novel appearance, and 5
    combinations of shared shapes and appearances that occur in no other fold. So when fold f
    is the test fold, its classes are new combinations (5), new shapes (3: 10f+1..10f+3), new
    appearances (3: 10f+1, 10f+4, 10f+5), one entirely new class (10f+1), and every shared
    shape and appearance of the fold is seen in training through exactly one other fold.
    Within a fold many classes share a shape or an appearance, and distractors are drawn from
    those first, so a colour/texture prototype alone cannot tell target from distractor.

Appearances "brick", "grass", "gravel" recolour scikit-image's texture photos with a fixed
palette; "fur" (chelsea), "tissue" (ihc glands) and "starfield" (hubble_deep_field) are crops of colour
photos; "stripes", "checker", "dots", "gradient", "zigzag" are drawn, and "camo" is fixed
smooth noise. Patterns scale with the object and rotate with it. Backgrounds are crops of the
remaining photos (gray ones sometimes duotone-tinted).

Keys are "<split>/<class:02d>/<index:04d>"; the image of a key depends only on (seed, key,
image_size), through `numpy.random.default_rng([seed, split, class, index])`. A key is listed
only under its main class; `load(key, other)` gives other's mask in that image (all 0 where
the class is absent, 255 on the boundary band of every object).
"""
from __future__ import annotations

import functools
import importlib.util
import math
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from sgone.data.episode import IGNORE, Source, binary_from_labels
from sgone.errors import SgoneError

VERSION = 1  # bump when rendering changes: it names the on-disk cache folder

SHARED_SHAPES = ("ellipse", "box", "triangle", "star", "ring", "cross", "heart", "hexagon")
NOVEL_SHAPES = ("crescent", "arrow", "elbow", "blob")  # NOVEL_SHAPES[f] occurs only in fold f
SHARED_APPEARANCES = ("brick", "grass", "fur", "tissue", "stripes", "checker", "dots", "gradient")
NOVEL_APPEARANCES = ("gravel", "starfield", "zigzag", "camo")  # NOVEL_APPEARANCES[f]: fold f only
SHAPES = SHARED_SHAPES + NOVEL_SHAPES
APPEARANCES = SHARED_APPEARANCES + NOVEL_APPEARANCES

# Class id = position + 1; fold f = ids 10f+1..10f+10 (pattern explained in the module docstring).
CLASS_TABLE: tuple[str, ...] = (
    # fold 0: novel shape crescent, novel appearance gravel
    "crescent-gravel", "crescent-brick", "crescent-stripes", "ellipse-gravel", "star-gravel",
    "ellipse-fur", "star-brick", "box-stripes", "box-fur", "heart-dots",
    # fold 1: arrow, starfield
    "arrow-starfield", "arrow-grass", "arrow-checker", "ring-starfield", "triangle-starfield",
    "ring-tissue", "triangle-grass", "cross-checker", "cross-tissue", "hexagon-gradient",
    # fold 2: elbow, zigzag
    "elbow-zigzag", "elbow-tissue", "elbow-brick", "star-zigzag", "ellipse-zigzag",
    "star-dots", "ellipse-tissue", "cross-brick", "cross-dots", "ring-checker",
    # fold 3: blob, camo
    "blob-camo", "blob-gradient", "blob-fur", "hexagon-camo", "box-camo",
    "hexagon-grass", "box-gradient", "heart-fur", "heart-grass", "triangle-stripes",
)
NUM_FOLDS = 4
CLASSES_PER_FOLD = 10
SPLIT_IDS = {"train": 0, "val": 1}
KEY_RE = re.compile(r"^(train|val)/(\d{2})/(\d{4})$")

# Probabilities of the scene layout (rates measured by tests on a sample: >= half each).
P_DISTRACTORS = (0.25, 0.40, 0.25, 0.10)  # 0, 1, 2, 3 distractor objects
P_OCCLUSION = 0.65  # the target is partly covered by a distractor or a photo patch
P_HARD_DISTRACTOR = 0.6  # a distractor shares the target's shape or appearance (if the fold has one)
TARGET_AREA = (0.03, 0.22)  # fraction of the image, log-uniform (before occlusion)
DISTRACTOR_AREA = (0.02, 0.12)
OCCLUDED = (0.08, 0.45)  # accepted fraction of the target hidden by the occluder
SUPERSAMPLE = 3  # shapes are drawn at 3x and box-filtered: anti-aliased edges

# Photos (file names in skimage/data) used as backgrounds; appearance sources are left out so a
# background never shows an appearance's exact texture in its colours.
BACKGROUNDS = ("astronaut.png", "camera.png", "coffee.png", "coins.png", "motorcycle_left.png",
               "motorcycle_right.png", "rocket.jpg", "retina.jpg", "text.png", "moon.png",
               "brick.png", "grass.png")
TEXTURE_FILES = ("brick.png", "grass.png", "gravel.png", "chelsea.png", "ihc.png", "hubble_deep_field.jpg")

CREAM, RED, GREEN = (235, 220, 185), (190, 35, 40), (40, 120, 55)
NAVY, ORANGE, YELLOW, PURPLE = (35, 45, 110), (225, 135, 45), (230, 200, 60), (110, 40, 120)
# Two-colour patterns: (colour a, colour b); shared colours make distractors look alike.
PATTERN_COLOURS = {"stripes": (RED, CREAM), "checker": (GREEN, CREAM), "dots": (NAVY, ORANGE),
                   "gradient": (YELLOW, PURPLE), "zigzag": (NAVY, YELLOW)}
# Texture photos: (file, crop box or None, palette ramp for gray photos or None, object span in
# texture pixels = how much texture one object-size covers).
PHOTO_APPEARANCES: dict[str, tuple[str, tuple[int, int, int, int] | None, tuple | None, float]] = {
    "brick": ("brick.png", None, ((60, 25, 15), (150, 60, 35), (215, 125, 85)), 150.0),
    "grass": ("grass.png", None, ((20, 45, 10), (70, 120, 30), (190, 200, 90)), 120.0),
    "gravel": ("gravel.png", None, ((30, 35, 50), (95, 105, 130), (185, 190, 205)), 110.0),
    "fur": ("chelsea.png", (150, 0, 330, 72), None, 80.0),  # the forehead, above the eyes
    "tissue": ("ihc.png", (0, 0, 256, 208), None, 120.0),  # the stained glands, not the stroma
    "starfield": ("hubble_deep_field.jpg", None, None, 220.0),
    "camo": ("", None, None, 110.0),  # generated once per process, sampled like a photo
}
CAMO_COLOURS = ((85, 95, 45), (125, 85, 50), (200, 180, 130), (45, 50, 35))


def class_shape(class_id: int) -> str:
    return CLASS_TABLE[class_id - 1].split("-")[0]


def class_appearance(class_id: int) -> str:
    return CLASS_TABLE[class_id - 1].split("-")[1]


def fold_of(class_id: int) -> int:
    return (class_id - 1) // CLASSES_PER_FOLD


# ---------------------------------------------------------------------------------------------
# Shapes: polygons in a unit frame (y down), each (points Nx2, fill); fill False cuts a hole.


def _circle(n: int, rx: float = 1.0, ry: float = 1.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _regular(n: int, r: float = 1.0, start: float = -np.pi / 2) -> np.ndarray:
    t = start + np.arange(n) * 2 * np.pi / n
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _rounded_rect(hw: float, hh: float, r: float, per_corner: int = 6) -> np.ndarray:
    pts = []
    for cx, cy, a0 in ((hw - r, hh - r, 0.0), (-hw + r, hh - r, 0.5), (-hw + r, -hh + r, 1.0), (hw - r, -hh + r, 1.5)):
        t = (a0 + np.linspace(0.0, 0.5, per_corner)) * np.pi
        pts.append(np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1))
    return np.concatenate(pts)


def _raw_shape(name: str) -> list[tuple[np.ndarray, bool]]:
    if name == "ellipse":
        return [(_circle(40, 1.0, 0.62), True)]
    if name == "box":
        return [(_rounded_rect(1.0, 0.68, 0.28), True)]
    if name == "triangle":
        return [(_regular(3), True)]
    if name == "star":
        outer, inner = _regular(5, 1.0), _regular(5, 0.42, -np.pi / 2 + np.pi / 5)
        return [(np.stack([outer, inner], axis=1).reshape(-1, 2), True)]
    if name == "ring":
        return [(_circle(40), True), (_circle(32, 0.56, 0.56), False)]
    if name == "cross":
        a, b = 0.3, 1.0
        return [(np.array([(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b),
                           (-a, a), (-b, a), (-b, -a), (-a, -a)]), True)]
    if name == "heart":
        t = np.linspace(0.0, 2 * np.pi, 48, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [(np.stack([x, y], axis=1) / 16.0, True)]
    if name == "hexagon":
        return [(_regular(6, start=0.0), True)]
    if name == "crescent":
        return [(_circle(40), True), (_circle(40, 0.84, 0.84, 0.45, -0.12), False)]
    if name == "arrow":
        return [(np.array([(-1.0, -0.17), (0.2, -0.17), (0.2, -0.5), (1.0, 0.0), (0.2, 0.5), (0.2, 0.17),
                           (-1.0, 0.17)]), True)]
    if name == "elbow":
        return [(np.array([(-0.6, -1.0), (-0.15, -1.0), (-0.15, 0.55), (0.8, 0.55), (0.8, 1.0), (-0.6, 1.0)]), True)]
    if name == "blob":
        # One fixed smooth random outline (not seeded by the data set seed: it defines the family).
        t = np.linspace(0.0, 2 * np.pi, 48, endpoint=False)
        r = 1.0 + 0.22 * np.cos(2 * t + 0.7) + 0.16 * np.cos(3 * t + 2.1) + 0.09 * np.cos(5 * t + 4.0)
        return [(np.stack([r * np.cos(t), r * np.sin(t)], axis=1), True)]
    raise KeyError(name)


@functools.lru_cache(maxsize=None)
def _shape(name: str) -> tuple[tuple[np.ndarray, bool], ...]:
    """The shape centred on its area centroid and scaled to unit area (so sizes are comparable)."""
    polys = _raw_shape(name)
    n = 512  # rasterise once to measure area and centroid exactly, holes included
    img = Image.new("L", (n, n), 0)
    draw = ImageDraw.Draw(img)
    to_px = lambda p: ((p + 1.6) / 3.2 * n).ravel().tolist()  # noqa: E731 - frame [-1.6, 1.6]
    for pts, fill in polys:
        draw.polygon(to_px(pts), fill=255 if fill else 0)
    m = np.asarray(img) > 0
    ys, xs = np.nonzero(m)
    centre = np.array([(xs.mean() + 0.5) / n * 3.2 - 1.6, (ys.mean() + 0.5) / n * 3.2 - 1.6])
    area = m.sum() * (3.2 / n) ** 2
    return tuple(((pts - centre) / math.sqrt(area), fill) for pts, fill in polys)


# ---------------------------------------------------------------------------------------------
# Assets: photos read once per process from scikit-image's data folder (no download).


def skimage_data_dir() -> Path | None:
    """scikit-image's bundled data folder, found without importing scikit-image."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def missing_assets() -> list[str]:
    folder = skimage_data_dir()
    if folder is None:
        return ["synthetic: needs scikit-image's sample photos (pip install 'sgone[data]' or scikit-image)"]
    return [f"{folder / f}: sample photo not found (reinstall scikit-image)"
            for f in sorted(set(BACKGROUNDS + TEXTURE_FILES)) if not (folder / f).is_file()]


def _read_rgb(path: Path, max_side: int = 640) -> np.ndarray:
    img = Image.open(path)
    img = img.convert("RGB")
    if max(img.size) > max_side:  # big photos are shrunk once: crops get resized to <= 640 px anyway
        s = max_side / max(img.size)
        img = img.resize((round(img.width * s), round(img.height * s)), Image.LANCZOS)
    return np.asarray(img)


def _ramp(gray: np.ndarray, colours: tuple) -> np.ndarray:
    """Map a gray photo through a colour ramp (after a percentile stretch) -> uint8 RGB."""
    g = gray.astype(np.float32)
    lo, hi = np.percentile(g, (2, 98))
    t = np.clip((g - lo) / max(hi - lo, 1.0), 0, 1) * (len(colours) - 1)
    i = np.minimum(t.astype(np.int64), len(colours) - 2)
    f = (t - i)[..., None]
    c = np.asarray(colours, np.float32)
    return np.clip(c[i] * (1 - f) + c[i + 1] * f, 0, 255).astype(np.uint8)


def _camo(n: int = 256) -> np.ndarray:
    """Fixed smooth noise quantised to 4 colours (a constant texture: seed 12345, not the data seed)."""
    rng = np.random.default_rng(12345)
    spec = np.fft.rfft2(rng.standard_normal((n, n)))
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    field = np.fft.irfft2(spec * np.exp(-(fx ** 2 + fy ** 2) / (2 * 0.025 ** 2)), s=(n, n))
    q = np.digitize(field, np.quantile(field, (0.3, 0.6, 0.85)))
    return np.asarray(CAMO_COLOURS, np.uint8)[q]


def _pyramid(tex: np.ndarray, levels: int = 3) -> tuple[np.ndarray, ...]:
    """Texture at full, 1/2 and 1/4 size: sampling picks the level closest to 1 texel per pixel."""
    out = [tex]
    img = Image.fromarray(tex)
    for k in range(1, levels):
        out.append(np.asarray(img.resize((max(1, tex.shape[1] >> k), max(1, tex.shape[0] >> k)), Image.BOX)))
    return tuple(out)


class _Assets:
    """Background photos (PIL, for filtered crop+resize) and appearance textures (pyramids)."""

    def __init__(self) -> None:
        problems = missing_assets()
        if problems:
            raise SgoneError(problems[0])
        folder = skimage_data_dir()
        # Per photo: (name, PIL pyramid at 1, 1/2, 1/4 size, is gray); crops are resized from the
        # level nearest the output size, which keeps the filtered resize cheap.
        self.backgrounds: list[tuple[str, tuple[Image.Image, ...], bool]] = []
        self.photos: list[tuple[np.ndarray, ...]] = []  # the same pyramids as arrays, for occluder patches
        for name in BACKGROUNDS:
            gray = Image.open(folder / name).mode in ("L", "I", "I;16", "1")
            pyr = _pyramid(_read_rgb(folder / name))
            self.backgrounds.append((name, tuple(Image.fromarray(a) for a in pyr), gray))
            self.photos.append(pyr)
        self.textures: dict[str, tuple[np.ndarray, ...]] = {}
        for app, (file, box, ramp, _) in PHOTO_APPEARANCES.items():
            if app == "camo":
                tex = _camo()
            else:
                img = Image.open(folder / file)
                if box is not None:
                    img = img.crop(box)
                if ramp is not None:
                    tex = _ramp(np.asarray(img.convert("L")), ramp)
                else:
                    tex = np.asarray(img.convert("RGB"))
                    if app == "starfield":  # lift the faint galaxies and the black (to deep blue)
                        lift = np.array((25, 30, 75), np.float32)
                        tex = (lift + (255 * (tex / 255.0) ** 0.55) * (1 - lift / 255)).astype(np.uint8)
            self.textures[app] = _pyramid(np.ascontiguousarray(tex))


@functools.lru_cache(maxsize=1)
def _assets() -> _Assets:
    return _Assets()


# ---------------------------------------------------------------------------------------------
# Rendering helpers


class _Raster:
    """An object's coverage: alpha (h, w) float32 in [0, 1] at image rows y0.., columns x0.."""

    __slots__ = ("y0", "x0", "alpha", "inside")

    def __init__(self, y0: int, x0: int, alpha: np.ndarray) -> None:
        self.y0, self.x0, self.alpha = y0, x0, alpha
        self.inside = alpha >= 0.5  # the pixels the label gives to this object

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.y0, self.x0, self.y0 + self.alpha.shape[0], self.x0 + self.alpha.shape[1]


def _transform(shape: str, cx: float, cy: float, size: float, angle: float,
               aspect: float) -> list[tuple[np.ndarray, bool]]:
    """Shape polygons in image coordinates: unit area -> size**2 pixels, stretched, rotated, moved."""
    c, s = math.cos(angle), math.sin(angle)
    sx, sy = size * math.sqrt(aspect), size / math.sqrt(aspect)
    rot = np.array([[c * sx, s * sx], [-s * sy, c * sy]], np.float64)  # row vectors: p @ rot
    return [(pts @ rot + (cx, cy), fill) for pts, fill in _shape(shape)]


def _extent(shape: str, size: float, angle: float, aspect: float) -> tuple[float, float]:
    """Half width and half height of the transformed outline (outer polygon)."""
    pts = _transform(shape, 0.0, 0.0, size, angle, aspect)[0][0]
    return float(np.abs(pts[:, 0]).max()), float(np.abs(pts[:, 1]).max())


def _rasterise(polys: list[tuple[np.ndarray, bool]], image_size: int) -> _Raster | None:
    """Draw polygons at SUPERSAMPLE x inside their bounding box, box-filter -> coverage."""
    outer = polys[0][0]
    x0 = max(0, int(math.floor(outer[:, 0].min())))
    y0 = max(0, int(math.floor(outer[:, 1].min())))
    x1 = min(image_size, int(math.ceil(outer[:, 0].max())) + 1)
    y1 = min(image_size, int(math.ceil(outer[:, 1].max())) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    w, h, ss = x1 - x0, y1 - y0, SUPERSAMPLE
    img = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(img)
    for pts, fill in polys:
        # pixel x covers [x, x+1); sub-pixel k of it has PIL centre k, i.e. x + (k + 0.5) / ss
        draw.polygon(((pts - (x0, y0)) * ss - 0.5).ravel().tolist(), fill=255 if fill else 0)
    a = np.asarray(img.reduce(ss), dtype=np.float32) * np.float32(1.0 / 255)  # box filter, in C
    if not a.any():
        return None
    return _Raster(y0, x0, a)


def _overlap(a: _Raster, b: _Raster) -> int:
    """Pixels labelled inside both rasters."""
    ay0, ax0, ay1, ax1 = a.box
    by0, bx0, by1, bx1 = b.box
    y0, x0, y1, x1 = max(ay0, by0), max(ax0, bx0), min(ay1, by1), min(ax1, bx1)
    if y1 <= y0 or x1 <= x0:
        return 0
    ia = a.inside[y0 - ay0:y1 - ay0, x0 - ax0:x1 - ax0]
    ib = b.inside[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0]
    return int(np.count_nonzero(ia & ib))


def _soft_square(t: np.ndarray, period_px: float) -> np.ndarray:
    """Anti-aliased square wave of `t` (in periods), 50% duty: 1 in the first half-period."""
    d = (np.abs(t - np.floor(t) - 0.5) - 0.25) * period_px  # signed distance (px) to an edge
    return np.clip(d + 0.5, 0.0, 1.0)


def _reflect(i: np.ndarray, n: int) -> np.ndarray:
    """Mirror-tile indices into 0..n-1 (no seams when a crop runs past the texture edge)."""
    m = np.mod(i, 2 * n)
    return np.where(m < n, m, 2 * n - 1 - m)


def _sample(pyr: tuple[np.ndarray, ...], u: np.ndarray, v: np.ndarray, k: float, ox: float, oy: float) -> np.ndarray:
    """Nearest-texel lookup at (u, v) * k + offset, from the pyramid level nearest 1 texel/pixel."""
    level = min(len(pyr) - 1, max(0, int(math.floor(math.log2(max(k, 1.0))))))
    tex = pyr[level]
    f = 1.0 / (1 << level)
    h, w = tex.shape[:2]
    ix = _reflect(np.floor((u * k + ox) * f).astype(np.int32), w)
    iy = _reflect(np.floor((v * k + oy) * f).astype(np.int32), h)
    return tex[iy, ix].astype(np.float32)


def _lerp(a: tuple, b: tuple, s: np.ndarray) -> np.ndarray:
    a_ = np.asarray(a, np.float32)
    b_ = np.asarray(b, np.float32)
    return a_ + s[..., None] * (b_ - a_)


def _appearance(app: str, ras: _Raster, cx: float, cy: float, size: float, angle: float,
                params: dict[str, Any], assets: _Assets) -> np.ndarray:
    """RGB float32 (h, w, 3) of appearance `app` over the raster's box, in the object's frame."""
    h, w = ras.alpha.shape
    dx = (np.arange(ras.x0, ras.x0 + w, dtype=np.float32) + 0.5 - cx)[None, :]
    dy = (np.arange(ras.y0, ras.y0 + h, dtype=np.float32) + 0.5 - cy)[:, None]
    c, s = math.cos(angle), math.sin(angle)
    u = c * dx - s * dy  # object frame: the pattern turns with the object
    v = s * dx + c * dy
    if app in PHOTO_APPEARANCES:
        pyr = assets.textures[app]
        k = PHOTO_APPEARANCES[app][3] / size * params["scale"]
        th, tw = pyr[0].shape[:2]
        rgb = _sample(pyr, u, v, k, params["ox"] * tw, params["oy"] * th)
    else:
        a, b = PATTERN_COLOURS[app]
        period = size * 0.32 * params["scale"]
        if app == "stripes":
            t = _soft_square(u / period + params["phase"], period)
        elif app == "checker":
            s1 = _soft_square(u / period + params["phase"], period)
            s2 = _soft_square(v / period + params["phase2"], period)
            t = s1 + s2 - 2 * s1 * s2  # soft xor
        elif app == "dots":
            pu = (u / period + params["phase"]) % 1.0 - 0.5
            pv = (v / period + params["phase2"]) % 1.0 - 0.5
            t = np.clip(0.27 * period - np.sqrt(pu * pu + pv * pv) * period + 0.5, 0.0, 1.0)
            t = 1.0 - t  # navy dots on orange
        elif app == "gradient":
            t = np.clip(0.5 + v / (1.3 * size) + params["phase"] * 0.2 - 0.1, 0.0, 1.0)
        elif app == "zigzag":
            wave = np.abs((u / (1.2 * period) + params["phase2"]) % 1.0 - 0.5) * (0.9 * period)
            t = _soft_square((v + wave) / period + params["phase"], period)
        else:
            raise KeyError(app)
        rgb = _lerp(a, b, np.broadcast_to(t, (h, w)).astype(np.float32))
    # Per-instance photometric jitter and a lighting gradient across the object.
    light = 1.0 + params["light"] * (u if params["light_axis"] else v) / size
    return rgb * (params["gain"] * params["brightness"])[None, None, :] * light[..., None].astype(np.float32)


def _appearance_params(rng: np.random.Generator) -> dict[str, Any]:
    return {"scale": float(rng.uniform(0.85, 1.2)), "ox": float(rng.random()), "oy": float(rng.random()),
            "phase": float(rng.random()), "phase2": float(rng.random()),
            "gain": rng.normal(1.0, 0.05, 3).clip(0.88, 1.12).astype(np.float32),
            "brightness": float(rng.uniform(0.82, 1.15)), "light": float(rng.uniform(-0.25, 0.25)),
            "light_axis": bool(rng.random() < 0.5)}


def _boundary_band(owner: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within `radius` of a change of owner (object/object or object/background)."""
    band = np.zeros(owner.shape, bool)
    dh = owner[:, 1:] != owner[:, :-1]
    dv = owner[1:, :] != owner[:-1, :]
    band[:, 1:] |= dh
    band[:, :-1] |= dh
    band[1:, :] |= dv
    band[:-1, :] |= dv
    for _ in range(radius - 1):  # wider bands for bigger images (VOC: ~5 px at 500 px)
        grown = band.copy()
        grown[1:, :] |= band[:-1, :]
        grown[:-1, :] |= band[1:, :]
        grown[:, 1:] |= band[:, :-1]
        grown[:, :-1] |= band[:, 1:]
        band = grown
    return band


# ---------------------------------------------------------------------------------------------


class SyntheticSource(Source):
    """The procedural benchmark: 40 classes, 4 folds of 10, images rendered from their key.

    seed: changes every image (not the class definitions). image_size: square side in pixels.
    images_per_class / val_images_per_class: keys listed per class in splits "train" / "val".
    cache_dir: optional folder; rendered scenes are kept there as .npy (image + label map).
    root: the same as cache_dir (for `build_source("synthetic", root)`); cache_dir wins.
    memory_cache: scenes kept in memory (LRU), so the N-way loads of one query render once.
    """

    name = "synthetic"
    class_names = {i + 1: n for i, n in enumerate(CLASS_TABLE)}
    folds = NUM_FOLDS

    def __init__(self, seed: int = 0, image_size: int = 160, images_per_class: int = 60,
                 val_images_per_class: int = 20, cache_dir: str | Path | None = None,
                 root: str | Path | None = None, memory_cache: int = 32, strict: bool = True) -> None:
        if int(seed) < 0:
            raise SgoneError(f"synthetic: seed must be >= 0, got {seed}")
        if int(image_size) < 32:
            raise SgoneError(f"synthetic: image_size must be at least 32, got {image_size}")
        if images_per_class < 1 or val_images_per_class < 1 or max(images_per_class, val_images_per_class) > 9999:
            raise SgoneError("synthetic: images per class must be in 1..9999")
        self.seed, self.image_size = int(seed), int(image_size)
        self.counts = {"train": int(images_per_class), "val": int(val_images_per_class)}
        folder = cache_dir if cache_dir is not None else root
        self.cache_dir = Path(folder) if folder is not None else None
        # `root` names the source in messages ("synthetic: ...") and is the cache folder when set.
        self.root = self.cache_dir if self.cache_dir is not None else Path("synthetic")
        self.band_radius = max(1, round(self.image_size / 160))
        self.memory_cache = int(memory_cache)
        self._scenes: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.problems = missing_assets()
        self.notes = []
        self.finish_init(strict)

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers get a copy without the in-memory scenes (each fills its own).
        state = self.__dict__.copy()
        state["_scenes"] = OrderedDict()
        return state

    # -- Source protocol -----------------------------------------------------------------------

    def classes(self, fold: int, role: str) -> list[int]:
        self.check_fold(fold, role)
        test = list(range(CLASSES_PER_FOLD * fold + 1, CLASSES_PER_FOLD * (fold + 1) + 1))
        if role == "test":
            return test
        return [c for c in range(1, len(CLASS_TABLE) + 1) if c not in test]

    def items(self, split: str, class_id: int) -> list[str]:
        self.check_split(split)
        self._check_class(class_id)
        return [f"{split}/{class_id:02d}/{i:04d}" for i in range(self.counts[split])]

    def load(self, key: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        image, labels = self.scene(key)
        self._check_class(class_id)
        return image.copy(), binary_from_labels(labels, class_id)

    def load_mask(self, key: str, class_id: int) -> np.ndarray:
        self._check_class(class_id)
        return binary_from_labels(self.scene(key)[1], class_id)

    # -- extras ----------------------------------------------------------------------------------

    def scene(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(image HxWx3 uint8, label map HxW uint8: class id per pixel, 0 = background, 255 = band).

        Read-only arrays, shared with an in-memory LRU so the N-way loads of one query render once.
        """
        hit = self._scenes.get(key)
        if hit is not None:
            self._scenes.move_to_end(key)
            return hit
        path = self._cache_path(key)
        result = None
        if path is not None and path.is_file():
            try:
                arr = np.load(path)
                if arr.shape == (self.image_size, self.image_size, 4) and arr.dtype == np.uint8:
                    result = (arr[..., :3], arr[..., 3])
            except (OSError, ValueError):
                result = None  # a damaged file is rendered and written again
        if result is None:
            image, labels, _ = self.render(key)
            result = (image, labels)
            if path is not None:
                self._write_cache(path, image, labels)
        for a in result:
            a.flags.writeable = False
        self._scenes[key] = result
        while len(self._scenes) > self.memory_cache:
            self._scenes.popitem(last=False)
        return result

    def describe(self, key: str) -> dict[str, Any]:
        """What `key`'s image holds: background, and per object role/class/shape/appearance/areas.

        "occluded": the target is partly hidden; "distractors": objects of other classes;
        areas are pixels labelled to the object (before/after occlusion); fractions of the image.
        """
        return self.render(key)[2]

    def render(self, key: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Render `key` from scratch: (image, label map, description); no caches involved."""
        split, class_id, index = self._parse(key)
        rng = np.random.default_rng([self.seed, SPLIT_IDS[split], class_id, index])
        return _Scene(self, rng, class_id, key).render()

    # -- internals -------------------------------------------------------------------------------

    def _check_class(self, class_id: int) -> None:
        if not 1 <= int(class_id) <= len(CLASS_TABLE):
            raise SgoneError(f"synthetic: class ids are 1..{len(CLASS_TABLE)}, got {class_id}")

    def _parse(self, key: str) -> tuple[str, int, int]:
        m = KEY_RE.match(key)
        if m is None:
            raise SgoneError(f"synthetic: bad key '{key}' (expected '<train|val>/<class:02d>/<index:04d>')")
        split, class_id, index = m.group(1), int(m.group(2)), int(m.group(3))
        self._check_class(class_id)
        if index >= self.counts[split]:
            raise SgoneError(f"synthetic: key '{key}' is past the {self.counts[split]} images per class "
                             f"of split '{split}'")
        return split, class_id, index

    def _cache_path(self, key: str) -> Path | None:
        if self.cache_dir is None:
            return None
        self._parse(key)
        tag = f"v{VERSION}-seed{self.seed}-px{self.image_size}"
        return self.cache_dir / tag / f"{key}.npy"

    def _write_cache(self, path: Path, image: np.ndarray, labels: np.ndarray) -> None:
        from sgone.io import atomic_path

        try:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, np.concatenate([image, labels[..., None]], axis=2))
        except OSError as err:  # a read-only cache is not fatal: scenes are rendered each time
            note = f"{self.cache_dir}: cannot write the synthetic cache ({err.strerror or err})"
            if note not in self.notes:
                self.notes.append(note)


class _Scene:
    """One image being planned and painted (kept apart so SyntheticSource stays small)."""

    def __init__(self, source: SyntheticSource, rng: np.random.Generator, class_id: int, key: str) -> None:
        self.src, self.rng, self.class_id, self.key = source, rng, class_id, key
        self.S = source.image_size
        self.assets = _assets()

    # Object planning: a dict per object with its geometry and raster.

    def _object(self, class_id: int | None, shape: str, app: str | None, area_frac: float,
                role: str, inside: bool) -> dict[str, Any]:
        rng, S = self.rng, self.S
        size = math.sqrt(area_frac) * S
        angle = float(rng.uniform(0.0, 2 * np.pi))
        aspect = float(np.exp(rng.uniform(-0.25, 0.25)))
        hx, hy = _extent(shape, size, angle, aspect)
        margin = 2.0
        limit = S / 2 - margin
        if inside and max(hx, hy) > limit:  # elongated shapes: shrink until they fit
            shrink = limit / max(hx, hy)
            size, hx, hy = size * shrink, hx * shrink, hy * shrink
        if inside:
            cx = float(rng.uniform(hx + margin, S - hx - margin))
            cy = float(rng.uniform(hy + margin, S - hy - margin))
        else:  # distractors may be cut by the image border, up to about a third of their width
            cx = float(rng.uniform(hx * 0.35, S - hx * 0.35))
            cy = float(rng.uniform(hy * 0.35, S - hy * 0.35))
        return {"role": role, "class_id": class_id, "shape": shape, "appearance": app, "size": size,
                "angle": angle, "aspect": aspect, "cx": cx, "cy": cy, "hx": hx, "hy": hy,
                "params": _appearance_params(rng) if app is not None else None}

    def _raster(self, obj: dict[str, Any]) -> _Raster | None:
        polys = _transform(obj["shape"], obj["cx"], obj["cy"], obj["size"], obj["angle"], obj["aspect"])
        return _rasterise(polys, self.S)

    def _patch(self, area_frac: float) -> dict[str, Any]:
        """An occluding photo patch: an irregular polygon cut from a background photo (label 0)."""
        rng = self.rng
        n = int(rng.integers(4, 8))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(0.7, 1.3, n)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
        area = 0.5 * abs(np.dot(pts[:, 0], np.roll(pts[:, 1], 1)) - np.dot(pts[:, 1], np.roll(pts[:, 0], 1)))
        pts /= math.sqrt(max(area, 1e-3))
        size = math.sqrt(area_frac) * self.S
        return {"role": "occluder", "class_id": None, "shape": "patch", "appearance": None, "size": size,
                "angle": 0.0, "aspect": 1.0, "cx": 0.0, "cy": 0.0, "pts": pts,
                "photo": int(rng.integers(len(self.assets.backgrounds))),
                "k": float(rng.uniform(1.0, 2.0)), "ox": float(rng.random()), "oy": float(rng.random())}

    def _patch_raster(self, obj: dict[str, Any]) -> _Raster | None:
        return _rasterise([(obj["pts"] * obj["size"] + (obj["cx"], obj["cy"]), True)], self.S)

    def _place_occluder(self, obj: dict[str, Any], target: dict[str, Any], t_ras: _Raster) -> _Raster | None:
        """Move `obj` onto the target's edge so that it hides OCCLUDED of the target (best of 8 tries).

        Each try centres the occluder on a random edge pixel of the target, pushed outwards by
        `reach` occluder radii; `reach` grows when too much is hidden and shrinks when too little.
        """
        rng = self.rng
        inside = t_ras.inside
        t_px = max(1, int(np.count_nonzero(inside)))
        edge = inside.copy()  # target pixels with a non-target 4-neighbour (or on the box border)
        edge[1:-1, 1:-1] &= ~(inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:])
        ys, xs = np.nonzero(edge)
        if len(ys) == 0:
            return None
        r_o = obj["size"] / math.sqrt(np.pi)
        lo, hi = OCCLUDED
        best, best_err, best_xy = None, None, (obj["cx"], obj["cy"])
        reach = float(rng.uniform(0.0, 0.5))
        for _ in range(8):
            j = int(rng.integers(len(ys)))
            px, py = t_ras.x0 + xs[j] + 0.5, t_ras.y0 + ys[j] + 0.5
            dx, dy = px - target["cx"], py - target["cy"]
            norm = math.hypot(dx, dy) or 1.0
            obj["cx"] = px + dx / norm * reach * r_o
            obj["cy"] = py + dy / norm * reach * r_o
            ras = self._patch_raster(obj) if obj["shape"] == "patch" else self._raster(obj)
            if ras is None:
                continue
            frac = _overlap(t_ras, ras) / t_px
            err = 0.0 if lo <= frac <= hi else (lo - frac if frac < lo else frac - hi)
            if best_err is None or err < best_err:
                best, best_err, best_xy = ras, err, (obj["cx"], obj["cy"])
            if err == 0.0:
                break
            reach += -0.3 if frac < lo else 0.3
        obj["cx"], obj["cy"] = best_xy
        if best is None or best_err > 0.05:  # could not cover a sensible part: no occlusion
            return None
        return best

    def _pick_distractors(self, n: int) -> list[int]:
        """Classes of the target's fold other than the target; look-alikes first with P_HARD_DISTRACTOR."""
        rng, c = self.rng, self.class_id
        fold = fold_of(c)
        pool = [d for d in range(CLASSES_PER_FOLD * fold + 1, CLASSES_PER_FOLD * (fold + 1) + 1) if d != c]
        chosen: list[int] = []
        for _ in range(n):
            left = [d for d in pool if d not in chosen]
            hard = [d for d in left if class_shape(d) == class_shape(c) or class_appearance(d) == class_appearance(c)]
            options = hard if hard and rng.random() < P_HARD_DISTRACTOR else left
            chosen.append(options[int(rng.integers(len(options)))])
        return chosen

    # Painting

    def _background(self) -> tuple[np.ndarray, str]:
        rng, S = self.rng, self.S
        name, pyr, gray = self.assets.backgrounds[int(rng.integers(len(self.assets.backgrounds)))]
        W, H = pyr[0].size
        side = float(rng.uniform(0.3, 0.9)) * min(W, H)
        x0 = float(rng.uniform(0, W - side))
        y0 = float(rng.uniform(0, H - side))
        level = min(len(pyr) - 1, max(0, int(math.floor(math.log2(max(side / S, 1.0))))))
        f = 1.0 / (1 << level)
        img = pyr[level]
        box = (x0 * f, y0 * f, min(img.width, (x0 + side) * f), min(img.height, (y0 + side) * f))
        bg = np.asarray(img.resize((S, S), Image.BILINEAR, box=box)).astype(np.float32)
        if rng.random() < 0.5:
            bg = bg[:, ::-1]
        tint = rng.random() < 0.5
        if gray and tint:  # duotone: gray photos get colours, so colour alone does not find objects
            dark = rng.uniform(0, 90, 3).astype(np.float32)
            light = rng.uniform(150, 255, 3).astype(np.float32)
            bg = dark + (bg[..., :1] / 255.0) * (light - dark)
        gain = rng.normal(1.0, 0.06, 3).clip(0.85, 1.15).astype(np.float32) * np.float32(rng.uniform(0.7, 1.2))
        return np.ascontiguousarray(bg * gain), name

    def _paint(self, image: np.ndarray, owner: np.ndarray, obj: dict[str, Any], ras: _Raster, label: int) -> None:
        y0, x0, y1, x1 = ras.box
        if obj["shape"] == "patch":
            pyr = self.assets.photos[obj["photo"]]
            h, w = ras.alpha.shape
            u = np.arange(x0, x1, dtype=np.float32)[None, :] - obj["cx"]
            v = np.arange(y0, y1, dtype=np.float32)[:, None] - obj["cy"]
            th, tw = pyr[0].shape[:2]
            rgb = _sample(pyr, np.broadcast_to(u, (h, w)), np.broadcast_to(v, (h, w)), obj["k"],
                          obj["ox"] * tw, obj["oy"] * th) * np.float32(self.rng.uniform(0.7, 1.1))
        else:
            rgb = _appearance(obj["appearance"], ras, obj["cx"], obj["cy"], obj["size"], obj["angle"],
                              obj["params"], self.assets)
        region = image[y0:y1, x0:x1]
        region += ras.alpha[..., None] * (rgb - region)
        owner[y0:y1, x0:x1][ras.inside] = label

    def render(self) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        rng, S, c = self.rng, self.S, self.class_id
        image, bg_name = self._background()
        lo, hi = TARGET_AREA
        area = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        target = self._object(c, class_shape(c), class_appearance(c), area, "target", inside=True)
        t_ras = self._raster(target)
        n_dis = int(rng.choice(len(P_DISTRACTORS), p=P_DISTRACTORS))
        lo, hi = DISTRACTOR_AREA
        distractors = [self._object(d, class_shape(d), class_appearance(d),
                                    float(np.exp(rng.uniform(np.log(lo), np.log(hi)))), "distractor", inside=False)
                       for d in self._pick_distractors(n_dis)]
        occluder: dict[str, Any] | None = None
        o_ras: _Raster | None = None
        if rng.random() < P_OCCLUSION:
            if distractors and rng.random() < 0.6:
                occluder = distractors.pop(int(rng.integers(len(distractors))))
                occluder["role"] = "occluder"
            else:
                t_area = t_ras.inside.sum() / S ** 2
                occluder = self._patch(float(t_area * rng.uniform(0.35, 0.8)))
            o_ras = self._place_occluder(occluder, target, t_ras)
            if o_ras is None:
                if occluder["class_id"] is not None:  # keep it as an ordinary distractor
                    occluder["role"] = "distractor"
                    distractors.append(occluder)
                occluder = None
        # Distractors behind the target: re-placed (up to 4 tries) so the target hides < 30% of them.
        behind: list[tuple[dict[str, Any], _Raster]] = []
        for obj in distractors:
            best = None
            for attempt in range(4):
                if attempt:
                    fresh = self._object(obj["class_id"], obj["shape"], obj["appearance"], (obj["size"] / S) ** 2,
                                         "distractor", inside=False)
                    obj.update({k: fresh[k] for k in ("cx", "cy", "angle", "aspect", "size")})
                ras = self._raster(obj)
                if ras is None:
                    continue
                hidden = _overlap(ras, t_ras) / max(1, int(np.count_nonzero(ras.inside)))
                if best is None or hidden < best[0]:
                    best = (hidden, dict(obj), ras)
                if hidden < 0.3:
                    break
            if best is not None:
                behind.append((best[1], best[2]))
        # Paint back to front; owner = index into `objects` (-1 = background, photo patches included).
        objects = [o for o, _ in behind] + [target] + ([occluder] if occluder is not None else [])
        rasters = [r for _, r in behind] + [t_ras] + ([o_ras] if o_ras is not None else [])
        owner = np.full((S, S), -1, np.int16)
        for i, (obj, ras) in enumerate(zip(objects, rasters)):
            self._paint(image, owner, obj, ras, i if obj["class_id"] is not None else -1)
        image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
        # Label map: class id per owner, 255 on every object boundary (VOC-style ignore band).
        lut = np.zeros(len(objects) + 1, np.uint8)  # index -1 -> last entry = background 0
        for i, obj in enumerate(objects):
            lut[i] = obj["class_id"] or 0
        labels = lut[owner]
        labels[_boundary_band(owner, self.src.band_radius)] = IGNORE
        return image, labels, self._describe(bg_name, objects, rasters, owner, c)

    def _describe(self, bg_name: str, objects: list[dict[str, Any]], rasters: list[_Raster],
                  owner: np.ndarray, c: int) -> dict[str, Any]:
        S2 = float(self.S ** 2)
        out = []
        for i, (obj, ras) in enumerate(zip(objects, rasters)):
            drawn = int(np.count_nonzero(ras.inside))
            visible = int(np.count_nonzero(owner == i)) if obj["class_id"] is not None else 0
            out.append({"role": obj["role"], "class_id": obj["class_id"],
                        "class_name": CLASS_TABLE[obj["class_id"] - 1] if obj["class_id"] else None,
                        "shape": obj["shape"], "appearance": obj["appearance"],
                        "centre": (round(obj["cx"], 2), round(obj["cy"], 2)), "size": round(obj["size"], 2),
                        "angle_deg": round(math.degrees(obj["angle"]), 1),
                        "drawn_area": drawn / S2, "visible_area": visible / S2})
        target = next(o for o in out if o["role"] == "target")
        hidden = 1.0 - target["visible_area"] / max(target["drawn_area"], 1e-9)
        return {"key": self.key, "class_id": c, "class_name": CLASS_TABLE[c - 1], "background": bg_name,
                "objects": out, "target_area": target["visible_area"], "target_hidden": hidden,
                "occluded": any(o["role"] == "occluder" for o in out),
                "distractors": sum(o["class_id"] is not None and o["role"] != "target" for o in out)}
