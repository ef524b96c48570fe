"""Reading images and masks of every mode, and writing results atomically.

Every reader raises `SgoneError("path: problem")` for a missing, unreadable or truncated file.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sgone.errors import SgoneError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
IGNORE = 255


def _open(path: str | Path) -> Image.Image:
    path = Path(path)
    if not path.exists():
        raise SgoneError(f"{path}: file not found")
    if path.is_dir():
        raise SgoneError(f"{path}: is a folder, expected an image file")
    try:
        image = Image.open(path)
        image.load()  # decode now so truncated files fail here, not later
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SgoneError(f"{path}: cannot read image ({exc.__class__.__name__}: {exc})".rstrip()) from None
    return image


def _exif_transpose(image: Image.Image, path: Path) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block should not make a readable image unusable
        return image


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = arr.max()
        arr = arr / top * 255.0 if top > 0 else arr
        grey = np.clip(arr + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # composite transparent pixels on white, as viewers show them
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB, EXIF orientation applied.

    Accepts JPEG/PNG/BMP/TIFF/WebP in modes RGB, L, LA, RGBA, P, CMYK, I;16, ...
    """
    path = Path(path)
    image = _exif_transpose(_open(path), path)
    return np.ascontiguousarray(_to_rgb(image))


def read_label(path: str | Path) -> np.ndarray:
    """Read a label map as HxW uint8 raw values (palette indices for P-mode PNGs)."""
    path = Path(path)
    image = _exif_transpose(_open(path), path)
    if image.mode == "P" or image.mode == "L":
        return np.asarray(image, dtype=np.uint8).copy()
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image)
        if arr.max() > 255:
            raise SgoneError(f"{path}: label values above 255 are not supported")
        return arr.astype(np.uint8)
    if image.mode in ("1",):
        return np.asarray(image, dtype=np.uint8)
    # RGB(A) label maps: keep the first channel only if the image is grey in disguise
    rgb = np.asarray(image.convert("RGB"))
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0].copy()
    raise SgoneError(f"{path}: colour label map; expected a palette or single-channel PNG")


def read_mask(path: str | Path, class_id: int | None = None) -> np.ndarray:
    """Read a binary object mask as HxW uint8 with 0 = background, 1 = object, 255 = ignore.

    - palette PNGs (VOC style: class ids, 255 = ignore): with `class_id` that class is the
      object; without it every non-zero class is the object;
    - 0/1 and 0/255 single-channel masks; other grey values: >= 128 is the object;
    - RGB(A) masks: any non-black pixel is the object.
    """
    path = Path(path)
    image = _exif_transpose(_open(path), path)
    mode = image.mode
    if mode == "P":
        labels = np.asarray(image, dtype=np.uint8)
        return _binary_from_labels(labels, class_id, path)
    if mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
        rgb = np.asarray(image.convert("RGB"))
        if class_id is not None:
            raise SgoneError(f"{path}: --class-id needs a palette or single-channel label mask, got an RGB mask")
        return (rgb.max(axis=2) > 0).astype(np.uint8)
    if mode == "LA":
        image = image.getchannel("L")
    if mode == "1":
        return np.asarray(image, dtype=np.uint8)
    values = np.asarray(image)
    if values.dtype != np.uint8:
        top = values.max()
        if class_id is None:
            return (values > (top / 2 if top > 1 else 0)).astype(np.uint8)
        values = values.astype(np.int64)
    if class_id is not None:
        return _binary_from_labels(values, class_id, path)
    unique = np.unique(values)
    if set(unique.tolist()) <= {0, 1}:
        return values.astype(np.uint8)
    if set(unique.tolist()) <= {0, 255}:
        return (values == 255).astype(np.uint8)
    if set(unique.tolist()) <= {0, 1, 255} or unique.max() < 128:
        # class ids with a VOC boundary band, or small ids: every non-zero class is the object
        return _binary_from_labels(values.astype(np.uint8), None, path)
    return (values >= 128).astype(np.uint8)


def _binary_from_labels(labels: np.ndarray, class_id: int | None, path: Path) -> np.ndarray:
    out = np.zeros(labels.shape, dtype=np.uint8)
    if class_id is None:
        out[(labels > 0) & (labels != IGNORE)] = 1
    else:
        if not (labels == class_id).any():
            present = sorted(int(v) for v in np.unique(labels) if v not in (0, IGNORE))
            raise SgoneError(f"{path}: class id {class_id} does not occur in the mask (present: {present})")
        out[labels == class_id] = 1
    out[labels == IGNORE] = IGNORE
    return out


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SgoneError(f"{folder}: folder not found")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path` (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write bytes (or text) to `path` through a temp file and a rename."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)


def save_image(path: str | Path, array: np.ndarray) -> None:
    """Write an HxW or HxWx3 uint8 array as an image (format from the suffix), atomically."""
    path = Path(path)
    image = Image.fromarray(np.ascontiguousarray(array))
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt.get(path.suffix.lower(), "PNG"))


def write_mask_png(path: str | Path, mask: np.ndarray) -> None:
    """Write a mask (HxW; 1 or True = object, 0 and 255 = not) as a single-channel 0/255 PNG, atomically."""
    mask = np.asarray(mask)
    obj = mask if mask.dtype == bool else mask == 1
    save_image(path, np.where(obj, 255, 0).astype(np.uint8))
