"""The web app's work, free of any web library: inputs and limits, a session's cached
predictor, result files and archives. `sgone.app.ui` only wires these to the page.

Images are HxWx3 uint8 RGB, masks HxW uint8 {0, 1} as everywhere in sgone.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from sgone.errors import SgoneError
from sgone.options import DEFAULT_SIZE

Progress = Callable[[float, str], None]  # (fraction done, what is happening)


@dataclass
class Limits:
    """What one request may ask of a shared machine."""

    max_upload_mb: float = 25.0
    max_pixels: int = 25_000_000
    max_queries: int = 32
    max_frames: int = 600


# the still-image steps for small objects and many instances (`Predictor(self_support=, zoom=, flip=)`): label -> step
SMALL_OBJECT_STEPS = {"second look at the query": "self_support", "zoom on the regions found": "zoom",
                      "mirrored reading averaged in": "flip"}


def usable_models() -> list[str]:
    """Model names the app offers: training-free registered models and shipped checkpoints."""
    from sgone.models.registry import DEFAULT_MODEL, MODELS, shipped_checkpoints

    shipped = shipped_checkpoints()
    names = [n for n in MODELS if n.startswith("prototype-")] + sorted(shipped)
    names.sort(key=lambda n: n != DEFAULT_MODEL)  # the default first, registry order otherwise
    return names


def display_name(path: str | Path) -> str:
    """The name a person gave the file (uploads live under random temp folders)."""
    return Path(path).name


def _renamed(exc: SgoneError, path: str | Path, name: str) -> SgoneError:
    """The same error with the temp path replaced by the file's own name."""
    return SgoneError(str(exc).replace(str(path), name))


def check_pixels(path: str | Path, limits: Limits, name: str | None = None) -> None:
    """Refuse an image whose header announces more than `limits.max_pixels` (before decoding it)."""
    from PIL import Image

    name = name or display_name(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:
        return  # unreadable: read_image gives the precise message
    if w * h > limits.max_pixels:
        raise SgoneError(f"{name}: {w}x{h} is {w * h / 1e6:.1f} megapixels, over this app's limit of "
                         f"{limits.max_pixels / 1e6:.0f} megapixels; downscale it first")


def load_image(path: str | Path, limits: Limits, name: str | None = None) -> np.ndarray:
    """An uploaded image as HxWx3 uint8; SgoneError naming the file as the person knows it."""
    from sgone.io import read_image

    name = name or display_name(path)
    check_pixels(path, limits, name)
    try:
        return read_image(path)
    except SgoneError as exc:
        raise _renamed(exc, path, name) from None


def load_queries(paths: Sequence[str | Path], limits: Limits) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """Uploaded queries -> ([(name, HxWx3 uint8)] of the readable ones, [one line per unreadable one]):
    one bad file is reported, the others are still segmented. SgoneError when none is readable."""
    if len(paths) > limits.max_queries:
        raise SgoneError(f"{len(paths)} query images, over this app's limit of {limits.max_queries} per run")
    images, problems = [], []
    for path in paths:
        try:
            images.append((display_name(path), load_image(path, limits)))
        except SgoneError as exc:
            problems.append(str(exc))
    if problems and not images:
        raise SgoneError("; ".join(problems))
    return images, problems


def load_mask(path: str | Path, image_hw: tuple[int, int], what: str = "the support image") -> np.ndarray:
    """An uploaded mask (any mode `read_mask` takes) checked against its image: HxW uint8 {0, 1}."""
    from sgone.io import read_mask

    name = display_name(path)
    try:
        mask = read_mask(path)
    except SgoneError as exc:
        raise _renamed(exc, path, name) from None
    if mask.shape != tuple(image_hw):
        raise SgoneError(f"{name}: mask size {mask.shape[1]}x{mask.shape[0]} differs from {what}'s size "
                         f"{image_hw[1]}x{image_hw[0]}")
    if not (mask == 1).any():
        raise SgoneError(f"{name}: the mask is empty (no object pixels)")
    return (mask == 1).astype(np.uint8)


def extra_supports(images: Sequence[str | Path] | None, masks: Sequence[str | Path] | None,
                   limits: Limits) -> list[tuple[np.ndarray, np.ndarray]]:
    """k-shot pairs from two uploads, images and masks paired in file-name order."""
    images = sorted(images or [], key=display_name)
    masks = sorted(masks or [], key=display_name)
    if len(images) != len(masks):
        raise SgoneError(f"{len(images)} extra support image(s) but {len(masks)} mask(s); give one mask per image "
                         f"(paired in file-name order)")
    pairs = []
    for image_path, mask_path in zip(images, masks):
        image = load_image(image_path, limits)
        pairs.append((image, load_mask(mask_path, image.shape[:2], f"support {display_name(image_path)}")))
    return pairs


# --------------------------------------------------------------------------- the mask editor
def rgb(image: np.ndarray) -> np.ndarray:
    """HxW, HxWx3 or HxWx4 uint8 -> HxWx3 uint8 (transparent pixels shown on white)."""
    image = np.asarray(image)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2).astype(np.uint8)
    if image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        return np.clip(image[:, :, :3] * alpha + 255.0 * (1 - alpha) + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)


def editor_image(value: dict | None, what: str = "support image") -> np.ndarray:
    """The background of an image editor value {"background": HxWx(3|4), ...} as HxWx3 uint8."""
    background = None if value is None else value.get("background")
    if background is None or np.asarray(background).size == 0:
        raise SgoneError(f"no {what}: upload one (or pick an example) first")
    return rgb(background)


def editor_support(value: dict | None, mask: np.ndarray | None = None, what: str = "support image",
                   can_upload: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Image editor value {"background": HxWx(3|4), "layers": [HxWx4, ...]} -> (image, mask HxW {0,1}).

    Every painted (non-transparent) layer pixel is object (the eraser makes pixels transparent),
    and so is every object pixel of `mask` (an uploaded mask of the image's size).
    """
    image = editor_image(value, what)
    out = np.zeros(image.shape[:2], dtype=np.uint8) if mask is None else (np.asarray(mask) == 1).astype(np.uint8)
    if out.shape != image.shape[:2]:
        raise SgoneError(f"the mask is {out.shape[1]}x{out.shape[0]} but the {what} is {image.shape[1]}x{image.shape[0]}")
    for layer in value.get("layers") or []:
        layer = np.asarray(layer)
        if layer.ndim != 3 or layer.shape[2] != 4:
            continue  # an opaque layer carries no brush strokes
        if layer.shape[:2] != out.shape:
            raise SgoneError(f"the painted mask is {layer.shape[1]}x{layer.shape[0]} but the {what} is "
                             f"{out.shape[1]}x{out.shape[0]}")
        out[layer[:, :, 3] > 0] = 1
    if not out.any():
        how = "paint the object with the brush" + (" or upload its mask" if can_upload else "")
        raise SgoneError(f"the mask of the {what} is empty: {how}")
    return image, out


# --------------------------------------------------------------------------- models and sessions
class ModelCache:
    """Models loaded once and shared by every session (read-only at inference), newest kept."""

    def __init__(self, device: str = "cpu", keep: int = 2) -> None:
        from sgone.runtimes import resolve_device

        self.device = resolve_device(device)
        self.keep = keep
        self._models: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str):
        """The model `name` as `Predictor(name)` loads it (`--runtime auto`: OpenVINO where installed and
        fastest, else PyTorch with BatchNorm folded), a `sgone.runtimes.Loaded` that Predictor takes as is."""
        from sgone.runtimes import runtime

        with self._lock:
            if name not in self._models:
                self._models[name] = runtime("auto").load(name, device=self.device)
                while len(self._models) > self.keep:
                    self._models.popitem(last=False)
            self._models.move_to_end(name)
            return self._models[name]


@dataclass
class Result:
    """Files of one run: per query (name, overlay, heat map, mask), and an archive of all."""

    names: list[str] = field(default_factory=list)
    overlays: list[Path] = field(default_factory=list)
    heatmaps: list[Path] = field(default_factory=list)
    masks: list[Path] = field(default_factory=list)
    archive: Path | None = None
    video: Path | None = None
    encoded_support: bool = False
    errors: list[str] = field(default_factory=list)  # one line per query that could not be segmented


def _fingerprint(model: str, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> str:
    digest = hashlib.blake2b(model.encode(), digest_size=16)
    for array in (*images, *masks):
        array = np.ascontiguousarray(array)
        digest.update(repr(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def unique_stems(names: Sequence[str]) -> list[str]:
    """File stems made unique (q.jpg, q.png -> q, q_2) so outputs do not overwrite each other."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        stem = Path(name).stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return out


class Session:
    """One browser session: its predictor (support encoded once), its temporary files.

    The support is re-encoded only when the model or the support images/masks change; the
    threshold and the queries can change freely.
    """

    def __init__(self, models: ModelCache, size: int | None = DEFAULT_SIZE, root: str | Path | None = None) -> None:
        self.models = models
        self.size = size
        self.root = Path(tempfile.mkdtemp(prefix="sgone-session-", dir=root))
        self.predictor = None
        self.model_name: str | None = None
        self.support_key: str | None = None
        self.last: Result | None = None  # the last image run (what "Export COCO" writes)
        self._run = 0

    def set_support(self, model: str, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> bool:
        """Encode the support unless it is the one already encoded; True when it was encoded."""
        from sgone.predictor import Predictor

        key = _fingerprint(model, images, masks)
        if key == self.support_key and model == self.model_name:
            return False
        if model != self.model_name or self.predictor is None:
            self.predictor = Predictor(self.models.get(model), size=self.size)
            self.model_name = model
        self.support_key = None  # a failure below leaves no stale support behind
        self.predictor.set_support(list(images), list(masks))
        self.support_key = key
        return True

    def new_run_dir(self) -> Path:
        """A fresh folder for this run's files; the previous run's folder is removed."""
        previous = self.root / f"run{self._run}"
        shutil.rmtree(previous, ignore_errors=True)
        self._run += 1
        folder = self.root / f"run{self._run}"
        folder.mkdir(parents=True)
        return folder

    def segment(self, model: str, supports: Sequence[tuple[np.ndarray, np.ndarray]],
                queries: Sequence[tuple[str, np.ndarray]], threshold: float,
                progress: Progress | None = None, steps: Sequence[str] = ()) -> Result:
        """Segment each (name, image) query against the supports; write overlays, heat maps,
        0/255 mask PNGs (query size) and `masks.zip` with all of them. steps: the Predictor's
        small-object steps to run, any of `SMALL_OBJECT_STEPS`' values (none by default)."""
        from sgone.io import save_image, write_mask_png
        from sgone.viz import heatmap, overlay

        if not queries:
            raise SgoneError("no query images: add the images to segment")
        say = progress or (lambda fraction, text: None)
        say(0.0, "encoding the support")
        result = Result(encoded_support=self.set_support(model, [s[0] for s in supports], [s[1] for s in supports]))
        self.predictor.threshold = float(threshold)
        known = tuple(SMALL_OBJECT_STEPS.values())
        unknown = set(steps) - set(known)
        if unknown:
            raise SgoneError(f"{', '.join(sorted(unknown))}: unknown step ({', '.join(known)})")
        for step in known:
            setattr(self.predictor, step, step in steps)
        out = self.new_run_dir()
        for i, (stem, (name, image)) in enumerate(zip(unique_stems([q[0] for q in queries]), queries)):
            say(i / len(queries), f"query {i + 1} of {len(queries)}: {name}")
            try:
                pred = self.predictor.predict(image)
            except SgoneError as exc:  # this query is reported; the others are still segmented
                result.errors.append(f"{name}: {exc}")
                continue
            paths = out / f"{stem}_overlay.png", out / f"{stem}_similarity.png", out / f"{stem}.png"
            save_image(paths[0], overlay(image, pred.mask))
            save_image(paths[1], heatmap(pred.similarity, image, colorbar=True))
            write_mask_png(paths[2], pred.mask)
            result.names.append(name)
            result.overlays.append(paths[0])
            result.heatmaps.append(paths[1])
            result.masks.append(paths[2])
        result.archive = write_zip(out / "sgone-masks.zip", [*result.masks, *result.overlays, *result.heatmaps])
        say(1.0, "done")
        self.last = result
        return result

    def segment_video(self, model: str, frames: str | Path, first_mask: np.ndarray, threshold: float,
                      limits: Limits, progress: bool = True) -> Result:
        """Segment a clip (video file or frame folder) from its first frame's mask (HxW {0,1}).

        Returns the overlay video (H.264 MP4) and a zip of the 0/255 frame masks. The session's
        image support is forgotten (the first frame becomes the support).
        """
        from sgone.io import write_mask_png
        from sgone.predictor import Predictor
        from sgone.video import open_frames, run_video
        from sgone.video.model import video_threads

        source = open_frames(frames)
        if source.count is not None and source.count > limits.max_frames:
            raise SgoneError(f"the clip has {source.count} frames, over this app's limit of {limits.max_frames}; "
                             f"trim it first")
        out = self.new_run_dir()
        mask_path = out / "first_mask.png"
        write_mask_png(mask_path, first_mask)
        if self.predictor is None or self.model_name != model:
            self.predictor = Predictor(self.models.get(model), size=self.size)
            self.model_name = model
        self.support_key = None  # track() replaces the support with the first frame
        self.predictor.threshold = float(threshold)
        self.predictor.self_support = self.predictor.zoom = self.predictor.flip = False  # still-image steps
        with video_threads():
            summary = run_video(self.predictor, frames, mask_path, out / "video", preview="none", progress=progress,
                                report=lambda msg: None)
        masks = sorted(Path(summary.outputs["masks"]).glob("*.png"))
        result = Result(names=[p.stem for p in masks], masks=masks)
        result.video = Path(summary.outputs["video"]) if "video" in summary.outputs else None
        result.archive = write_zip(out / "sgone-video-masks.zip", masks)
        return result

    def close(self) -> None:
        """Remove every temporary file of the session."""
        shutil.rmtree(self.root, ignore_errors=True)


def write_zip(path: Path, files: Sequence[Path]) -> Path:
    """Store `files` (by name, flat) in a zip archive, written atomically."""
    from sgone.io import atomic_path

    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for f in files:
            archive.write(f, arcname=Path(f).name)
    return path


def first_frame(paths: Sequence[str | Path], limits: Limits, folder: Path) -> tuple[Path, np.ndarray]:
    """Uploaded clip files -> (input for `open_frames`, its first frame HxWx3 uint8).

    One video file is used as it is; several images (or one) are copied into `folder` as frames.
    """
    from sgone.video import FRAME_SUFFIXES, open_frames

    paths = [Path(p) for p in paths]
    if not paths:
        raise SgoneError("no clip: upload a video file or its frames")
    if len(paths) == 1 and paths[0].suffix.lower() not in FRAME_SUFFIXES:
        clip: Path = paths[0]
    else:
        if len(paths) > limits.max_frames:
            raise SgoneError(f"{len(paths)} frames, over this app's limit of {limits.max_frames}")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for p in paths:
            if p.suffix.lower() not in FRAME_SUFFIXES:
                raise SgoneError(f"{p.name}: not an image frame; upload one video file or several images")
            check_pixels(p, limits)
            shutil.copyfile(p, folder / p.name)
        clip = folder
    try:
        frame = next(iter(open_frames(clip)), None)
    except SgoneError as exc:
        raise _renamed(exc, clip, display_name(clip)) from None
    if frame is None or frame.image is None:
        reason = frame.error if frame is not None else "no frames could be decoded"
        raise SgoneError(str(reason).replace(str(clip), display_name(clip)))
    h, w = frame.image.shape[:2]
    if h * w > limits.max_pixels:
        raise SgoneError(f"{display_name(clip)}: frames of {w}x{h} are over this app's limit of "
                         f"{limits.max_pixels / 1e6:.0f} megapixels")
    return clip, frame.image


def export_coco(result: Result | None, folder: Path) -> Path:
    """A run's 0/255 masks as `folder/annotations.json`, COCO instances with RLE masks
    (`sgone.label.coco`); file names are the queries' own names, as the run paired them."""
    from sgone.label.coco import coco_from_mask_files, write_coco

    if result is None or not result.masks:
        raise SgoneError("nothing to export: press Segment first")
    coco = coco_from_mask_files(list(zip(result.names, result.masks)))
    write_coco(folder / "annotations.json", coco)
    return folder / "annotations.json"
