"""Reading images and masks of every mode, and writing results atomically.

Every reader raises `SgoneError("path: problem")` for a missing, unreadable or truncated file.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from sgone.errors import SgoneError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
IGNORE = 255


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


# Larger images are refused unless the caller allows them (`max_pixels`, CLI `--max-pixels`):
# PIL's own limit for a decompression-bomb error (2 x Image.MAX_IMAGE_PIXELS's default).
MAX_PIXELS = 178_956_970
_PIL_LIMIT_LOCK = threading.Lock()
# EXIF Orientation -> the transpose that turns the stored pixels upright
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
# modes that PIL resizes directly; others are converted to RGB(A) first
_RESIZABLE = ("RGB", "RGBA", "L", "LA", "CMYK", "YCbCr")


@contextlib.contextmanager
def _own_pixel_limit() -> Iterator[None]:
    """Lift PIL's decompression-bomb limit while sgone applies its own (`_check_pixels`)."""
    with _PIL_LIMIT_LOCK:
        before = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = before


def _check_pixels(path: Path, size: tuple[int, int], max_pixels: int | None) -> None:
    w, h = size
    if max_pixels and w * h > max_pixels:
        raise SgoneError(f"{path}: {w}x{h} is {w * h:,} pixels, above the limit of {max_pixels:,} that guards "
                         f"against decompression bombs; allow it with --max-pixels {w * h} (0 = no limit)")


def _load(path: str | Path, max_pixels: int | None = MAX_PIXELS,
          max_side: int | None = None) -> tuple[Image.Image, str | None, tuple[int, int]]:
    """Open, fully decode and EXIF-rotate an image file -> (image, format, full upright (H, W)).

    Decoding happens here so that truncated or corrupt files fail with one clear message
    instead of later inside numpy or the model. The file is closed before returning.
    `max_side`: shrink the image (aspect kept) so its longer side is at most this; JPEGs are then
    decoded at a reduced scale, so a 100-megapixel photo never exists in memory at full size.
    """
    path = Path(path)
    if not path.exists():
        raise SgoneError(f"{path}: file not found")
    if path.is_dir():
        raise SgoneError(f"{path}: is a folder, expected an image file")
    try:
        with _own_pixel_limit():
            opened = Image.open(path)
        with opened:
            fmt = opened.format
            _check_pixels(path, opened.size, max_pixels)
            turn = _UPRIGHT.get(_orientation(opened))
            w, h = opened.size[::-1] if turn in _SWAPS else opened.size
            image: Image.Image = opened
            if max_side and max(opened.size) > max_side:
                if opened.mode not in _RESIZABLE:
                    opened.load()
                    image = Image.fromarray(_to_rgb(opened))
                image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)  # decodes, reduced
            image.load()  # decode now so truncated files fail here, not later
            if turn is not None:
                image = image.transpose(turn)
    except SgoneError:
        raise
    except UnidentifiedImageError:
        raise SgoneError(f"{path}: not an image file, or in a format that cannot be read") from None
    except PermissionError:
        raise SgoneError(f"{path}: permission denied") from None
    except MemoryError:
        raise SgoneError(f"{path}: not enough memory to decode the image") from None
    except Exception as exc:  # decoders raise OSError, SyntaxError, EOFError, struct.error, ...
        raise SgoneError(f"{path}: cannot read image ({_one_line(exc)})") from None
    return image, fmt, (h, w)


_SWAPS = (Image.Transpose.TRANSPOSE, Image.Transpose.ROTATE_270, Image.Transpose.TRANSVERSE,
          Image.Transpose.ROTATE_90)


def _orientation(image: Image.Image) -> int:
    """The EXIF Orientation tag (1 = upright); a broken EXIF block counts as upright."""
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block should not make a readable image unusable
        return 1


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # high bit depth greys: stretch to the image's own maximum
        arr = np.asarray(image, dtype=np.float64)
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        top = arr.max()
        arr = arr / top * 255.0 if top > 0 else arr
        grey = np.clip(arr + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "RGB":
        return np.asarray(image)  # no converted copy: big images stay one copy
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        # composite transparent pixels on white, as viewers show them
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def read_image(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB, EXIF orientation applied.

    Accepts JPEG/PNG/BMP/TIFF/WebP in modes RGB, L, LA, RGBA, P, CMYK, I;16, ...
    Transparent pixels are shown on white; 16-bit greys are stretched to their maximum.
    Images above `max_pixels` (None or 0 = no limit) are refused with a one-line error.
    """
    return read_image_fit(path, None, max_pixels)[0]


def read_image_fit(path: str | Path, max_side: int | None,
                   max_pixels: int | None = MAX_PIXELS) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an image shrunk (aspect kept) so its longer side is at most `max_side` (None = full size).

    -> (hxwx3 uint8 RGB, the full upright (H, W)). Memory stays near the small image's for
    JPEGs (decoded at 1/2..1/8 scale) and near one decoded copy for other formats.
    """
    path = Path(path)
    image, _, full_hw = _load(path, max_pixels, max_side)
    try:
        rgb = _to_rgb(image)
    except (ValueError, OSError) as exc:
        raise SgoneError(f"{path}: cannot convert image mode {image.mode} to RGB ({_one_line(exc)})") from None
    return np.ascontiguousarray(rgb), full_hw


def read_label(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read a label map as HxW uint8 raw values (palette indices for P-mode PNGs)."""
    path = Path(path)
    image, _, _ = _load(path, max_pixels)
    if image.mode == "P" or image.mode == "L":
        return np.asarray(image, dtype=np.uint8).copy()
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image)
        if arr.size and (arr.max() > 255 or arr.min() < 0):
            raise SgoneError(f"{path}: label values outside 0..255 are not supported")
        return arr.astype(np.uint8)
    if image.mode in ("1",):
        return np.asarray(image, dtype=np.uint8)
    # RGB(A) label maps: keep the first channel only if the image is grey in disguise
    rgb = np.asarray(image.convert("RGB"))
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0].copy()
    raise SgoneError(f"{path}: colour label map; expected a palette or single-channel PNG")


# Lossy formats blur black into near-black around a mask's edges; below this is still "black".
_LOSSY_FORMATS = ("JPEG", "MPO", "WEBP")
_LOSSY_BLACK = 48


def read_mask(path: str | Path, class_id: int | None = None, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read a binary object mask as HxW uint8 with 0 = background, 1 = object, 255 = ignore.

    - palette PNGs (VOC style: class ids, 255 = ignore): with `class_id` that class is the
      object; without it every non-zero class is the object;
    - 0/1 and 0/255 single-channel masks; values all below 128 apart from 255 (class ids, 255 =
      ignore): every non-zero id is the object; other grey values: >= 128 is the object
      (16-bit and float masks: above half their maximum); the same rule reads array masks given
      to the Python API (`mask_from_values`);
    - RGB(A) masks: any non-black pixel is the object (JPEG/WebP: channel max above 48, as
      compression smears black); fully or mostly transparent pixels (alpha < 128) are background;
    - `class_id` (1..254, or above 255 in 16-bit label maps) also works on single-channel label
      maps and grey RGB ones; a class absent from the mask is an error.
    """
    path = Path(path)
    if class_id is not None and (class_id <= 0 or class_id == IGNORE):
        raise SgoneError(f"{path}: class id {class_id} is not an object class "
                         f"(0 is background, 255 is ignore; use 1..254)")
    image, fmt, _ = _load(path, max_pixels)
    mode = image.mode
    if mode in ("P", "PA"):  # palette indices are the labels; a palette alpha does not matter
        labels = np.asarray(image.getchannel("P") if mode == "PA" else image, dtype=np.uint8)
        return _binary_from_labels(labels, class_id, path)
    if mode in ("RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV"):
        alpha = np.asarray(image.getchannel("A")) if "A" in image.getbands() else None
        try:
            rgb = np.asarray(image.convert("RGB"))
        except (ValueError, OSError) as exc:
            raise SgoneError(f"{path}: cannot read mask mode {mode} ({_one_line(exc)})") from None
        grey = (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
        if class_id is not None:
            if not grey:
                raise SgoneError(f"{path}: --class-id needs a palette or single-channel label mask, got a colour mask")
            return _binary_from_labels(rgb[..., 0].copy(), class_id, path)
        black = _LOSSY_BLACK if fmt in _LOSSY_FORMATS else 0
        obj = rgb.max(axis=2) > black
        if alpha is not None:
            obj &= alpha >= 128
        return obj.astype(np.uint8)
    if mode == "LA":
        alpha = np.asarray(image.getchannel("A"))
        grey_mask = mask_from_values(np.asarray(image.getchannel("L")), path, class_id)
        if class_id is None:
            grey_mask[alpha < 128] = 0
        return grey_mask
    if mode == "1":
        return np.asarray(image, dtype=np.uint8)
    return mask_from_values(np.asarray(image), path, class_id)


def mask_from_values(values: np.ndarray, path: str | Path, class_id: int | None = None) -> np.ndarray:
    """A single-channel mask array (any dtype) -> HxW uint8 {0, 1, 255}; see `read_mask`. The one
    value rule of files (the CLI) and arrays (`sgone.inputs.check_mask`, the Python API); `path`
    names the mask in errors."""
    path = Path(path)
    values = np.asarray(values)
    if values.dtype.kind == "f":
        finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        integral = bool((finite == np.round(finite)).all())
        if class_id is not None or (integral and finite.min() >= 0 and finite.max() <= 255):
            if not integral:
                raise SgoneError(f"{path}: --class-id needs integer labels, the mask holds fractions")
            values = finite.astype(np.int64)
        else:
            top = finite.max()
            return (finite > (top / 2 if top > 1 else 0.5)).astype(np.uint8)
    if values.dtype != np.uint8:
        low, top = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if 0 <= low and top <= 255:
            values = values.astype(np.uint8)  # 16-bit file with 8-bit content
        elif class_id is not None:
            return _binary_from_labels(values.astype(np.int64), class_id, path)
        else:
            return (values > top / 2).astype(np.uint8)  # e.g. 0/65535
    if class_id is not None:
        return _binary_from_labels(values, class_id, path)
    unique = set(np.unique(values).tolist())
    if unique <= {0, 1}:
        return values.astype(np.uint8)
    if unique <= {0, 255}:
        return (values == 255).astype(np.uint8)
    if max(unique - {IGNORE}) < 128:
        # class ids, with or without a VOC boundary band (255): every non-zero class is the object
        return _binary_from_labels(values, None, path)
    return (values >= 128).astype(np.uint8)


def _binary_from_labels(labels: np.ndarray, class_id: int | None, path: Path) -> np.ndarray:
    out = np.zeros(labels.shape, dtype=np.uint8)
    if class_id is None:
        out[(labels > 0) & (labels != IGNORE)] = 1
    else:
        if not (labels == class_id).any():
            present = sorted(int(v) for v in np.unique(labels) if v not in (0, IGNORE))
            raise SgoneError(f"{path}: class id {class_id} does not occur in the mask "
                             f"(present: {present or 'no class ids besides 0 and 255'})")
        out[labels == class_id] = 1
    out[labels == IGNORE] = IGNORE
    return out


def user_cache_dir() -> Path:
    """Where caches go when the data folder is read-only: $SGONE_CACHE_DIR or ~/.cache/sgone."""
    env = os.environ.get("SGONE_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sgone"


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SgoneError(f"{folder}: folder not found")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())



def file_digest(path: str | Path, algorithm: str = "sha1") -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path` (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        # mkstemp makes the file private (0600); results get the usual permissions instead
        with contextlib.suppress(OSError):  # some file systems (FAT, SMB) refuse chmod
            os.chmod(tmp_path, 0o666 & ~_umask())
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map: 256 RGB entries flattened (index 255 = void, 224,224,192)."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):  # VOC interleaves the index bits over the three channels
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def write_label_png(path: str | Path, labels: np.ndarray) -> None:
    """Write class ids (HxW uint8, 255 = ignore) as a VOC-style palette PNG, atomically.

    `read_label` reads it back unchanged; viewers show VOC's colours.
    """
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    # built as P directly: converting an L image to P would re-quantise the ids
    image = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.tobytes())
    image.putpalette(voc_palette())
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")

