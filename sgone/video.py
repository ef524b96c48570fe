"""One-shot video object segmentation: the first frame's mask is the support, every later
frame is a query (SG-One's DAVIS protocol, no temporal cues), optionally with an online
prototype update from earlier confident predictions ("propagate").

    predictor = Predictor()
    summary = run_video(predictor, "clip.mp4", "first_mask.png", "out/", mode="independent")

Frames stream one at a time from a folder (sorted by name, numbers compared as numbers) or a
video file (decoded by imageio-ffmpeg); masks are written atomically as they come, so memory
does not grow with the length of the clip and an interrupted run leaves only valid masks.

Outputs in the output folder:
    masks/<frame stem>.png   single-channel uint8, 0 = background, 255 = object, frame size
    overlay.mp4              H.264 (yuv420p) video of the masks over the frames
    preview.gif | .webp      small animated preview (bounded number of frames)
    summary.json             mode, frame counts, skipped frames and why, speed
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from sgone.errors import SgoneError

MODES = ("independent", "propagate")
ON_BAD_FRAME = ("stop", "skip")
PREVIEWS = ("gif", "webp", "none")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_FOLDER_FPS = 24.0  # DAVIS frame rate; only used for the overlay video of a frame folder


# --------------------------------------------------------------------------- frames
@dataclass
class Frame:
    """One input frame. `image` is None and `error` says why when the frame could not be read."""

    index: int
    name: str
    image: np.ndarray | None = None
    error: str | None = None


class FrameFolder:
    """Frames in a folder, sorted by name with numbers compared as numbers (frame2 < frame10).

    When every name is <prefix><number><suffix> with one prefix and suffix, frame indices follow
    the numbers, so a gap in the numbering is reported as a missing frame instead of passing
    unnoticed.
    """

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder)
        if not self.path.is_dir():
            raise SgoneError(f"{self.path}: frame folder not found")
        files = [p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES]
        if not files:
            raise SgoneError(f"{self.path}: no image frames ({', '.join(FRAME_SUFFIXES)}) in the folder")
        files.sort(key=lambda p: _natural_key(p.name))
        stems: dict[str, Path] = {}
        for p in files:
            if p.stem in stems:
                raise SgoneError(f"{p}: two frames share the name {p.stem!r} ({stems[p.stem].name}); their masks would collide")
            stems[p.stem] = p
        self.files = files
        self.fps: float | None = None
        self._slots = _numbered_slots(files)

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def count(self) -> int | None:
        return len(self._slots)

    def __iter__(self) -> Iterator[Frame]:
        from sgone.io import read_image

        for index, (name, path) in enumerate(self._slots):
            if path is None:
                yield Frame(index, name, None, f"{self.path / name}.*: frame missing (gap in the frame numbering)")
                continue
            try:
                image = read_image(path)
            except SgoneError as exc:
                yield Frame(index, name, None, str(exc))
                continue
            yield Frame(index, name, image)


def _natural_key(name: str) -> list[Any]:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", name) if t]


def _numbered_slots(files: list[Path]) -> list[tuple[str, Path | None]]:
    """(name, path or None for a gap) per frame slot; gaps only for uniformly numbered names."""
    plain = [(p.stem, p) for p in files]
    matches = [re.fullmatch(r"(.*?)(\d+)", p.stem) for p in files]
    if len(files) < 3 or not all(matches):
        return plain
    prefixes = {m.group(1) for m in matches}  # type: ignore[union-attr]
    if len(prefixes) != 1:
        return plain
    numbers = [int(m.group(2)) for m in matches]  # type: ignore[union-attr]
    steps = np.diff(numbers)
    if len(steps) == 0 or steps.min() <= 0:
        return plain
    step = int(np.gcd.reduce(steps))
    if steps.max() // step > 1000:  # not a frame numbering (e.g. timestamps): no gap reports
        return plain
    prefix = prefixes.pop()
    width = len(matches[0].group(2)) if all(len(m.group(2)) == len(matches[0].group(2)) for m in matches) else 0  # type: ignore[union-attr]
    by_number = dict(zip(numbers, files))
    return [
        (by_number[n].stem if n in by_number else f"{prefix}{n:0{width}d}", by_number.get(n))
        for n in range(numbers[0], numbers[-1] + 1, step)
    ]


class VideoFile:
    """Frames of a video file decoded one at a time by imageio-ffmpeg (RGB24), named 00000, 00001, ..."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SgoneError(f"{self.path}: video file not found")
        try:
            import imageio_ffmpeg
        except ImportError:
            raise SgoneError(f"{self.path}: reading video files needs imageio-ffmpeg (pip install 'sgone[video]')") from None
        self._ffmpeg = imageio_ffmpeg
        reader = self._open()
        try:
            meta = next(reader)
        except (RuntimeError, OSError, StopIteration) as exc:
            raise SgoneError(f"{self.path}: cannot decode video ({_first_line(exc)})") from None
        finally:
            reader.close()
        self.width, self.height = (int(v) for v in meta["size"])
        fps = meta.get("fps")
        self.fps = float(fps) if fps and math.isfinite(float(fps)) and float(fps) > 0 else None
        duration = meta.get("duration")
        # the container's own estimate: used for the progress bar and to spot truncated files
        self.count = int(round(float(duration) * self.fps)) if duration and self.fps else None
        self.decoded = 0

    def _open(self) -> Iterator[Any]:
        return self._ffmpeg.read_frames(str(self.path), pix_fmt="rgb24")

    def __len__(self) -> int:
        return self.count or 0

    def __iter__(self) -> Iterator[Frame]:
        width = max(5, len(str(self.count or 0)))
        reader = self._open()
        try:
            next(reader)  # metadata
            index = 0
            while True:
                try:
                    buffer = next(reader)
                except StopIteration:
                    break
                except (RuntimeError, OSError) as exc:
                    # the decoder cannot resume after a failure: report it and end the stream
                    yield Frame(index, f"{index:0{width}d}", None, f"{self.path}: cannot decode frame {index} ({_first_line(exc)}); the rest of the video is unreadable")
                    return
                image = np.frombuffer(buffer, dtype=np.uint8).reshape(self.height, self.width, 3)
                self.decoded = index + 1
                yield Frame(index, f"{index:0{width}d}", image)
                index += 1
        finally:
            reader.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def open_frames(path: str | Path) -> FrameFolder | VideoFile:
    """A frame folder or a video file (by what the path is)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return FrameFolder(path)
    if not path.exists():
        raise SgoneError(f"{path}: input not found (expected a folder of frames or a video file)")
    if path.suffix.lower() in FRAME_SUFFIXES and path.suffix.lower() != ".gif":
        raise SgoneError(f"{path}: a single image; give the folder of frames or a video file")
    return VideoFile(path)


# --------------------------------------------------------------------------- tracking
@dataclass
class PropagationConfig:
    """Online prototype update of `propagate` mode (after OnAVOS's online adaptation).

    After a frame is predicted, its object core and its far background give a new pair of
    prototypes (`Predictor.update_support`); the band between them is ignored:
    - core: the confident object (probability >= `high`) eroded by r, the larger of the depth
      that keeps `core` of its area and the depth that leaves at most `core` x the first mask's
      area (so a prediction that spilled well beyond the object still yields a core inside it);
    - background: every pixel farther than `margin` x r from the confident object. Taking
      "probability <= 0.2" as background instead leaves out exactly the pixels around the
      object where stride-8 features mix object and background; the background prototype then
      drifts away from them and the mask grows frame after frame (measured: J fell 8-14 points
      below `independent` on the generated clips).
    A frame is learnt from only when its confident object covers at least `min_area` of the
    first mask's area (the object was not lost or hidden) and its mask area is within a factor
    `max_growth` of the last frame learnt from (initially the first mask): self-training on a
    mask that spilled onto the background makes it spill further, so such frames are skipped.
    The prototypes are blended in with `weight`; schedule "average" lowers it over time
    (weight / (1 + weight * t)) so the first frame keeps a share 1 / (1 + weight * t) instead of
    fading exponentially ("ema": constant weight).

    Measured with the default training-free model on generated clips (benchmarks and tests):
    without the `max_growth` gate the update gained 2.5-4 J points at 96x128 but lost 1-8 at
    larger sizes (480p: -0.6 at native size, -5.6 at --size 473), because that model's masks
    are 1.4-3.9x too large there; with the gate those frames are not learnt from and the result
    equals `independent`. Area units are frame fractions, so every size compares.
    """

    high: float = 0.8
    core: float = 0.5
    margin: float = 1.0
    weight: float = 0.2
    schedule: str = "average"
    min_area: float = 0.25
    max_growth: float = 1.5

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def confident_mask(
    probability: np.ndarray, high: float = 0.8, core: float = 0.5, margin: float = 1.0, expected_area: float | None = None
) -> np.ndarray:
    """HxW uint8 update mask: 1 = object core, 0 = far background, 255 = ignored band.

    The confident object (probability >= high) is eroded by r, the larger of: the depth that
    keeps `core` of its area, and (with `expected_area`, the object's size known from the first
    frame) the depth that leaves at most `core` * expected_area pixels - so that a prediction
    which spilled well beyond the object still yields a core inside it. Background is every
    pixel farther than margin * r (Chebyshev) from the confident object.
    """
    obj = probability >= high
    out = np.full(probability.shape, 255, dtype=np.uint8)
    r = erosion_depth(obj, core)
    if expected_area is not None:
        r = max(r, erosion_to_area(obj, core * expected_area))
    band = int(round(margin * r))
    out[erode_square(~obj, band) if band > 0 else ~obj] = 0
    out[erode_square(obj, r) if r > 0 else obj] = 1
    return out


def erosion_depth(mask: np.ndarray, keep: float) -> int:
    """Largest square-erosion radius that keeps at least `keep` of the mask's area (0 if empty)."""
    area = int(np.count_nonzero(mask))
    if area == 0 or keep >= 1.0:
        return 0
    lo, hi = 0, max(1, min(mask.shape) // 2)
    while lo < hi:  # area after erosion falls as the radius grows: binary search
        mid = (lo + hi + 1) // 2
        if np.count_nonzero(erode_square(mask, mid)) >= keep * area:
            lo = mid
        else:
            hi = mid - 1
    return lo


def erosion_to_area(mask: np.ndarray, max_area: float) -> int:
    """Smallest square-erosion radius that leaves at most `max_area` pixels."""
    if np.count_nonzero(mask) <= max_area:
        return 0
    lo, hi = 1, max(1, max(mask.shape))
    while lo < hi:
        mid = (lo + hi) // 2
        if np.count_nonzero(erode_square(mask, mid)) <= max_area:
            hi = mid
        else:
            lo = mid + 1
    return lo


def erode_square(mask: np.ndarray, radius: int, border: bool = True) -> np.ndarray:
    """Binary erosion by a (2r+1) x (2r+1) square; `border` is the value assumed outside the image
    (True: only pixels of the other class inside the image erode, so the image edge does not)."""
    m = np.asarray(mask, dtype=bool)
    if radius <= 0:
        return m.copy()
    width = 2 * radius + 1
    for axis in (0, 1):
        n = m.shape[axis]
        pad = [(radius + 1, radius) if a == axis else (0, 0) for a in range(2)]
        c = np.cumsum(np.pad(m.astype(np.int32), pad, constant_values=int(border)), axis=axis)
        # window sums over [i - r, i + r] as differences of the running sum (views, no copies)
        hi = c[width:width + n] if axis == 0 else c[:, width:width + n]
        lo = c[:n] if axis == 0 else c[:, :n]
        m = (hi - lo) == width
    return m


UPDATE_MAX_SIDE = 256  # the update mask is built at most this large: the network sees it at stride 8


def update_mask(probability: np.ndarray, config: PropagationConfig, expected_area: float) -> np.ndarray:
    """`confident_mask` at the probability's size, built on a grid of at most UPDATE_MAX_SIDE
    pixels a side (the erosion searches cost ~20 passes over the image) and scaled back."""
    h, w = probability.shape
    step = max(1, -(-max(h, w) // UPDATE_MAX_SIDE))
    small = confident_mask(probability[::step, ::step], config.high, config.core, config.margin, expected_area / step**2)
    if step == 1:
        return small
    return np.repeat(np.repeat(small, step, axis=0), step, axis=1)[:h, :w]


def track(
    predictor: Any,
    first_image: np.ndarray,
    first_mask: np.ndarray,
    frames: Iterable[tuple[str, np.ndarray]],
    mode: str = "independent",
    config: PropagationConfig | None = None,
    stats: dict[str, int] | None = None,
) -> Iterator[tuple[str, Any]]:
    """Segment each (name, image) of `frames` against the first frame's mask; yields (name, Prediction).

    The support is encoded once. "independent": every frame against that support only (the
    paper's protocol). "propagate": after each frame, its confident pixels update the
    prototype (`PropagationConfig`); `stats` (if given) counts "updates" and "skipped_updates".
    """
    if mode not in MODES:
        raise SgoneError(f"{mode}: unknown video mode (use {', '.join(MODES)})")
    config = config or PropagationConfig()
    if config.schedule not in ("average", "ema"):
        raise SgoneError(f"{config.schedule}: unknown update schedule (use average or ema)")
    predictor.set_support([first_image], [first_mask])
    first_area = int(np.count_nonzero(np.asarray(first_mask) == 1))
    reference_area = float(first_area)  # object area of the last frame learnt from, in first-frame pixels
    counts = stats if stats is not None else {}
    counts.setdefault("updates", 0)
    counts.setdefault("skipped_updates", 0)
    for name, image in frames:
        pred = predictor.predict(image)
        if mode == "propagate":
            confident_obj = int(np.count_nonzero(pred.probability >= config.high))
            area = int(np.count_nonzero(pred.mask == 1))
            # areas compare across sizes as fractions of the frame
            scale = pred.probability.size / max(1, np.asarray(first_mask).size)
            usable = (
                confident_obj >= config.min_area * first_area * scale  # the object was not lost
                # nor did the mask jump in size since the last frame learnt from (a spill)
                and reference_area / config.max_growth <= area / scale <= reference_area * config.max_growth
            )
            if usable:
                conf = update_mask(pred.probability, config, first_area * scale)
                usable = bool((conf == 1).any() and (conf == 0).any())
            if usable:
                t = counts["updates"]
                weight = config.weight / (1 + config.weight * t) if config.schedule == "average" else config.weight
                predictor.update_support(conf, weight=weight)
                counts["updates"] += 1
                reference_area = area / scale
            else:
                counts["skipped_updates"] += 1
        yield name, pred


# --------------------------------------------------------------------------- writers
def even_pad(image: np.ndarray) -> np.ndarray:
    """Pad the bottom/right edge by one replicated pixel where a side is odd (yuv420p needs even sizes)."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class Mp4Writer:
    """H.264 / yuv420p MP4 written frame by frame through an ffmpeg pipe.

    Frames go to `<name>.partial.mp4`, renamed over the final path on `close(ok=True)`; after an
    interruption the partial file is finalised (a playable video of the frames so far) and kept.
    """

    def __init__(self, path: str | Path, size: tuple[int, int], fps: float) -> None:
        try:
            import imageio_ffmpeg
        except ImportError:
            raise SgoneError(f"{path}: writing MP4 needs imageio-ffmpeg (pip install 'sgone[video]'), or pass --no-video") from None
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.stem + ".partial" + self.path.suffix)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        width, height = size
        self.size = (width + width % 2, height + height % 2)
        self.frames = 0
        self._gen = imageio_ffmpeg.write_frames(
            str(self.partial), self.size, fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
            quality=None, macro_block_size=1, ffmpeg_log_level="error",
            output_params=["-crf", "23", "-preset", "veryfast", "-movflags", "+faststart"],
        )
        self._gen.send(None)

    def write(self, frame: np.ndarray) -> None:
        frame = even_pad(frame)
        if (frame.shape[1], frame.shape[0]) != self.size:
            raise SgoneError(f"{self.path}: frame size {frame.shape[1]}x{frame.shape[0]} differs from the video's {self.size[0]}x{self.size[1]}")
        self._gen.send(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self, ok: bool = True) -> Path | None:
        try:
            self._gen.close()
        except Exception as exc:  # ffmpeg failing to finalise is a user-facing problem
            raise SgoneError(f"{self.partial}: ffmpeg could not finish the video ({_first_line(exc)})") from None
        if ok and self.frames:
            os.replace(self.partial, self.path)
            return self.path
        if not self.frames and self.partial.exists():
            self.partial.unlink()
        return self.partial if self.partial.exists() else None


class PreviewWriter:
    """Animated GIF/WebP of at most `max_frames` frames, at most `max_side` pixels wide or high.

    Memory stays bounded for any clip length: when the buffer is full every other kept frame is
    dropped and the sampling stride doubles.
    """

    def __init__(self, path: str | Path, fps: float, max_side: int = 320, max_frames: int = 100) -> None:
        self.path = Path(path)
        self.fps = fps
        self.max_side = max_side
        self.max_frames = max(2, max_frames)
        self.frames: list[np.ndarray] = []
        self.stride = 1
        self.seen = 0

    def add(self, frame: np.ndarray) -> None:
        from PIL import Image

        keep = self.seen % self.stride == 0
        self.seen += 1
        if not keep:
            return
        h, w = frame.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            frame = np.asarray(Image.fromarray(frame).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR))
        self.frames.append(np.ascontiguousarray(frame))
        if len(self.frames) > self.max_frames:
            self.frames = self.frames[::2]
            self.stride *= 2

    def close(self) -> Path | None:
        from PIL import Image

        from sgone.io import atomic_path

        if not self.frames:
            return None
        images = [Image.fromarray(f) for f in self.frames]
        duration = max(20, round(1000.0 * self.stride / max(self.fps, 1e-3)))
        fmt = "WEBP" if self.path.suffix.lower() == ".webp" else "GIF"
        with atomic_path(self.path) as tmp:
            options: dict[str, Any] = {"save_all": True, "append_images": images[1:], "duration": duration, "loop": 0}
            if fmt == "WEBP":
                options.update(quality=80, method=4)
            else:
                images = [im.quantize(colors=255, method=Image.Quantize.MEDIANCUT) for im in images]
                options["append_images"] = images[1:]
                options["disposal"] = 1
            images[0].save(tmp, format=fmt, **options)
        self.frames = []
        return self.path


# --------------------------------------------------------------------------- the command
@dataclass
class VideoSummary:
    """What `run_video` did; also written to summary.json."""

    input: str
    output: str
    mode: str
    every: int
    frames_in_input: int | None
    frames_processed: int = 0
    masks_written: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    fps: float = 0.0  # masks written per second of the whole run (reading, model, writing, encoding)
    predict_fps: float = 0.0  # queries per second of model time (support encoding and I/O excluded)
    propagation: dict[str, Any] | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    completed: bool = False


def _load_first_mask(mask_path: str | Path, image: np.ndarray, resize: bool = False) -> np.ndarray:
    """The first frame's mask (HxW uint8 0/1/255); `resize` accepts another size (nearest)."""
    from sgone.data.transforms import resize_mask
    from sgone.io import read_mask

    mask = read_mask(mask_path)
    if mask.shape != image.shape[:2]:
        if not resize:
            raise SgoneError(
                f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but the first frame is "
                f"{image.shape[1]}x{image.shape[0]} (use --resize-masks to resize the mask)"
            )
        mask = resize_mask(mask, *image.shape[:2])
    if not (mask == 1).any():
        raise SgoneError(f"{mask_path}: the first-frame mask has no object pixels")
    return mask


def first_frame(frames: Iterator[Frame], input_path: str | Path, mask_path: str | Path,
                resize_mask: bool = False) -> tuple[Frame, np.ndarray]:
    """(first frame, its mask) from a frame iterator; SgoneError when either is unusable."""
    first = next(frames, None)
    if first is None:
        raise SgoneError(f"{input_path}: no frames could be decoded")
    if first.image is None:
        raise SgoneError(f"{first.error} (the first frame carries the given mask and cannot be skipped)")
    return first, _load_first_mask(mask_path, first.image, resize_mask)


def check_first_frame(input_path: str | Path, mask_path: str | Path, resize_mask: bool = False) -> None:
    """Fail early (before a model loads or a folder is made) on a bad input or first-frame mask."""
    first_frame(iter(open_frames(input_path)), input_path, mask_path, resize_mask)


def prepare_output(folder: str | Path) -> None:
    """Create `folder` and check that a file can be written there; one-line SgoneError if not."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".sgone-write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SgoneError(f"{folder}: cannot write the output there ({exc.strerror or exc})") from None


def run_video(
    predictor: Any,
    input_path: str | Path,
    mask_path: str | Path,
    output_dir: str | Path,
    *,
    mode: str = "independent",
    every: int = 1,
    on_bad_frame: str = "stop",
    preview: str = "gif",
    write_video: bool = True,
    fps: float | None = None,
    config: PropagationConfig | None = None,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    preview_frames: int = 100,
    resize_mask: bool = False,
) -> VideoSummary:
    """Segment a clip from its first frame's mask; write masks, overlay video, preview, summary.

    every: process frames 0, N, 2N, ... only. on_bad_frame: "stop" raises SgoneError at the first
    missing/corrupt frame (masks already written stay valid), "skip" reports it (via `report`,
    stderr by default) and goes on. Frames stream one at a time. resize_mask: accept a first-frame
    mask of another size (resized, nearest). Nothing is created before the first frame and its
    mask pass their checks; an output folder that cannot be written is a one-line SgoneError.
    """
    from tqdm import tqdm

    from sgone.io import atomic_write, write_mask_png
    from sgone.viz import overlay

    if mode not in MODES:
        raise SgoneError(f"{mode}: unknown video mode (use {', '.join(MODES)})")
    if on_bad_frame not in ON_BAD_FRAME:
        raise SgoneError(f"{on_bad_frame}: unknown bad-frame policy (use {', '.join(ON_BAD_FRAME)})")
    if preview not in PREVIEWS:
        raise SgoneError(f"{preview}: unknown preview format (use {', '.join(PREVIEWS)})")
    if every < 1:
        raise SgoneError(f"--every {every}: must be at least 1")
    say = report or (lambda msg: print(msg, file=sys.stderr))
    config = config or PropagationConfig()
    source = open_frames(input_path)
    out = Path(output_dir)
    mask_dir = out / "masks"
    if isinstance(source, FrameFolder) and mask_dir.resolve() == source.path.resolve():
        raise SgoneError(f"{mask_dir}: is the input frame folder; masks would overwrite frames (choose another --output)")
    frames = iter(source)
    first, mask0 = first_frame(frames, input_path, mask_path, resize_mask)
    prepare_output(out)
    prepare_output(mask_dir)
    summary = VideoSummary(
        input=str(input_path), output=str(out), mode=mode, every=every, frames_in_input=source.count,
        propagation=config.as_dict() if mode == "propagate" else None,
    )

    height, width = first.image.shape[:2]
    out_fps = (fps or source.fps or DEFAULT_FOLDER_FPS) / every

    current: list[np.ndarray | None] = [None]  # the frame being predicted, for its overlay
    read_seconds = [0.0]  # time spent reading/decoding queries, kept out of the predict rate

    def bad(frame: Frame) -> None:
        if on_bad_frame == "stop":
            raise SgoneError(f"{frame.error} (use --on-bad-frame skip to skip bad frames)")
        summary.skipped.append({"frame": frame.name, "reason": frame.error or ""})
        say(f"warning: skipped frame {frame.name}: {frame.error}")

    def good_frames() -> Iterator[tuple[str, np.ndarray]]:
        """The queries: every N-th frame after the first, bad ones reported."""
        while True:
            t0 = time.perf_counter()
            frame = next(frames, None)
            read_seconds[0] += time.perf_counter() - t0
            if frame is None:
                return
            if frame.index % every:
                continue
            if frame.image is not None and frame.image.shape[:2] != (height, width):
                frame = Frame(frame.index, frame.name, None,
                              f"{frame.name}: frame is {frame.image.shape[1]}x{frame.image.shape[0]}, the first frame is {width}x{height}")
            if frame.image is None:
                bad(frame)
                continue
            current[0] = frame.image
            yield frame.name, frame.image

    writer = Mp4Writer(out / "overlay.mp4", (width, height), out_fps) if write_video else None
    previewer = PreviewWriter(out / f"preview.{preview}", out_fps, max_frames=preview_frames) if preview != "none" else None
    total = None if source.count is None else (source.count + every - 1) // every
    ok = False
    start = time.perf_counter()
    predict_seconds = 0.0
    stats: dict[str, int] = {}
    bar = tqdm(total=total, unit="frame", desc=f"sgone video ({mode})", disable=not progress, dynamic_ncols=True)
    try:
        # frame 0: its mask is the given one
        write_mask_png(mask_dir / f"{first.name}.png", mask0 == 1)
        summary.masks_written += 1
        view = overlay(first.image, (mask0 == 1).astype(np.uint8))
        if writer:
            writer.write(view)
        if previewer:
            previewer.add(view)
        bar.update(1)
        tick, read_before = time.perf_counter(), read_seconds[0]
        for name, pred in track(predictor, first.image, mask0, good_frames(), mode=mode, config=config, stats=stats):
            predict_seconds += time.perf_counter() - tick - (read_seconds[0] - read_before)
            write_mask_png(mask_dir / f"{name}.png", pred.mask == 1)
            summary.masks_written += 1
            summary.frames_processed += 1
            view = overlay(current[0], pred.mask)
            if writer:
                writer.write(view)
            if previewer:
                previewer.add(view)
            bar.update(1)
            if summary.skipped:
                bar.set_postfix(skipped=len(summary.skipped))
            tick, read_before = time.perf_counter(), read_seconds[0]
        ok = True
    except OSError as exc:  # e.g. the disk filled up or the folder became read-only mid-run
        raise SgoneError(f"{_write_target(exc, out)}: cannot write the output there ({exc.strerror or exc})") from None
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
        summary.fps = summary.masks_written / summary.seconds if summary.seconds > 0 else 0.0
        summary.predict_fps = summary.frames_processed / predict_seconds if predict_seconds > 0 else 0.0
        if writer:
            path = writer.close(ok=ok)
            if path:
                summary.outputs["video"] = str(path)
        if previewer and ok:
            path = previewer.close()
            if path:
                summary.outputs["preview"] = str(path)
        summary.outputs["masks"] = str(mask_dir)
        if mode == "propagate":
            summary.propagation = dict(config.as_dict(), **stats)
        if isinstance(source, VideoFile) and ok and source.count and source.decoded < source.count - max(2, source.count // 50):
            msg = f"{input_path}: video ended after {source.decoded} frames; its header announces about {source.count} (truncated file?)"
            summary.warnings.append(msg)
            say(f"warning: {msg}")
        summary.completed = ok
        try:
            atomic_write(out / "summary.json", json.dumps(asdict(summary), indent=2) + "\n")
        except OSError as exc:
            if ok:  # otherwise the error already on its way says more
                raise SgoneError(f"{out / 'summary.json'}: cannot write ({exc.strerror or exc})") from None
    return summary


def _write_target(exc: OSError, out: Path) -> Path:
    """The folder a failed write was aimed at (temp files are named after their target)."""
    return Path(exc.filename).parent if exc.filename else out


# --------------------------------------------------------------------------- test clips
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
