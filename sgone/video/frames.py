"""Frame reading (a folder of images or a video file, decoded one at a time) and the writers of
`sgone video`'s outputs (H.264 overlay video, animated preview).

`prefetch` decodes frames in a background thread so the model and the encoder never wait for
the decoder."""
from __future__ import annotations

import math
import os
import queue
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from sgone.errors import SgoneError

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


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
            raise SgoneError(f"{self.path}: cannot decode video ({first_line(exc)})") from None
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
                    yield Frame(index, f"{index:0{width}d}", None, f"{self.path}: cannot decode frame {index} ({first_line(exc)}); the rest of the video is unreadable")
                    return
                image = np.frombuffer(buffer, dtype=np.uint8).reshape(self.height, self.width, 3)
                self.decoded = index + 1
                yield Frame(index, f"{index:0{width}d}", image)
                index += 1
        finally:
            reader.close()


def first_line(exc: BaseException) -> str:
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
            raise SgoneError(f"{self.partial}: ffmpeg could not finish the video ({first_line(exc)})") from None
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
                # fast octree: ~100x faster than median cut (0.46 s a frame on the shared machine), previews only
                images = [im.quantize(colors=255, method=Image.Quantize.FASTOCTREE) for im in images]
                options["append_images"] = images[1:]
                options["disposal"] = 1
            images[0].save(tmp, format=fmt, **options)
        self.frames = []
        return self.path


def prefetch(items: Iterator[Any], depth: int = 4, stop_wait: float = 2.0) -> Iterator[Any]:
    """Yield `items` as they are produced by a background thread, at most `depth` ahead.

    An exception raised while producing is re-raised here, in the consumer's thread; when the
    consumer stops early, the producer stops too (and its generator is closed in its thread).
    The consumer waits at most `stop_wait` seconds for that: a producer stuck inside a read
    (a hung decoder, a stalled network disk) must not hang Ctrl-C or an error exit; it is a
    daemon thread and ends with the process.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
        except BaseException as exc:  # handed over to the consumer
            buffer.put((done, exc))
            return
        finally:
            close = getattr(items, "close", None)
            if close is not None and stop.is_set():
                close()
        buffer.put((done, None))

    thread = threading.Thread(target=produce, name="sgone-frame-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = buffer.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        deadline = time.monotonic() + stop_wait
        while thread.is_alive() and time.monotonic() < deadline:  # unblock a producer waiting on a full buffer
            try:
                buffer.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)
