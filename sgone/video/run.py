"""`run_video`: a clip and its first frame's mask in, masks, overlay video, preview and summary out."""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from sgone.errors import SgoneError
from sgone.video.frames import Frame, FrameFolder, Mp4Writer, PreviewWriter, VideoFile, first_line, open_frames, prefetch
from sgone.video.options import DEFAULT_MODE, ON_BAD_FRAME, PREVIEWS
from sgone.video.tracker import check_mode, make_tracker, run_tracker

DEFAULT_FOLDER_FPS = 24.0  # DAVIS frame rate; only used for the overlay video of a frame folder


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
    settings: dict[str, Any] = field(default_factory=dict)  # the mode's config and counters
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


OUTPUT_FILES = ("overlay.mp4", "overlay.partial.mp4", "preview.gif", "preview.webp", "summary.json")


def stale_outputs(folder: str | Path) -> list[Path]:
    """The files of an earlier `sgone video` run in `folder` (known by its summary.json), which a
    new run replaces so that masks of two clips never mix; SgoneError when folder/masks holds
    PNGs that no summary.json accounts for (someone else's files: never deleted)."""
    folder = Path(folder)
    masks = sorted((folder / "masks").glob("*.png")) if (folder / "masks").is_dir() else []
    summary = folder / "summary.json"
    if not summary.is_file():
        if masks:
            raise SgoneError(f"{folder / 'masks'}: holds {len(masks)} PNG file(s) but {folder} has no summary.json of an "
                             "earlier sgone video run; empty it or choose another --output")
        return []
    try:
        data = json.loads(summary.read_text())
    except (OSError, ValueError):
        data = None
    if not (isinstance(data, dict) and {"mode", "masks_written", "outputs"} <= set(data)):
        raise SgoneError(f"{summary}: not the summary of a sgone video run; choose another --output")
    return masks + [folder / name for name in OUTPUT_FILES if (folder / name).is_file()]


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
    mode: str = DEFAULT_MODE,
    every: int = 1,
    on_bad_frame: str = "stop",
    preview: str = "gif",
    write_video: bool = True,
    fps: float | None = None,
    config: Any = None,
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
    An earlier run's outputs in `output_dir` are removed first (`stale_outputs`), so masks of two
    clips never mix.
    """
    from tqdm import tqdm

    from sgone.io import atomic_write, write_mask_png
    from sgone.viz import overlay

    check_mode(mode)
    if on_bad_frame not in ON_BAD_FRAME:
        raise SgoneError(f"{on_bad_frame}: unknown bad-frame policy (use {', '.join(ON_BAD_FRAME)})")
    if preview not in PREVIEWS:
        raise SgoneError(f"{preview}: unknown preview format (use {', '.join(PREVIEWS)})")
    if every < 1:
        raise SgoneError(f"--every {every}: must be at least 1")
    say = report or (lambda msg: print(msg, file=sys.stderr))
    tracker = make_tracker(predictor, mode, config)
    source = open_frames(input_path)
    out = Path(output_dir)
    mask_dir = out / "masks"
    if isinstance(source, FrameFolder) and mask_dir.resolve() == source.path.resolve():
        raise SgoneError(f"{mask_dir}: is the input frame folder; masks would overwrite frames (choose another --output)")
    frames = iter(source)
    first, mask0 = first_frame(frames, input_path, mask_path, resize_mask)
    stale = stale_outputs(out)
    prepare_output(out)
    prepare_output(mask_dir)
    for path in stale:  # an earlier run's outputs: replaced, not mixed with this run's
        path.unlink(missing_ok=True)
    frames = prefetch(frames)  # decoding overlaps the model and the encoder
    summary = VideoSummary(
        input=str(input_path), output=str(out), mode=mode, every=every, frames_in_input=source.count,
        propagation=tracker.config.as_dict() if mode == "propagate" else None,
    )

    height, width = first.image.shape[:2]
    out_fps = (fps or source.fps or DEFAULT_FOLDER_FPS) / every

    current: list[np.ndarray | None] = [None]  # the frame being predicted, for its overlay
    read_seconds = [0.0]  # time spent reading/decoding queries, kept out of the predict rate

    def bad(frame: Frame) -> None:
        if on_bad_frame == "stop":
            raise SgoneError(f"{frame.error} (--on-bad-input skip goes on without it)")
        summary.skipped.append({"frame": frame.name, "reason": frame.error or ""})
        say(f"warning: skipped frame {frame.name}: {frame.error}")

    def good_frames() -> Iterator[tuple[str, np.ndarray]]:
        """The queries: every N-th frame after the first, bad ones reported."""
        while True:
            t0 = time.perf_counter()
            frame = _next_frame(frames, input_path)
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

    def emit(name: str, image: np.ndarray, mask: np.ndarray) -> None:
        """A frame's mask PNG, overlay, video and preview frame (on the output thread, in frame order)."""
        write_mask_png(mask_dir / f"{name}.png", mask == 1)
        view = overlay(image, mask)
        if writer:
            writer.write(view)
        if previewer:
            previewer.add(view)

    outputs = FrameOutputs(emit)
    try:
        outputs.submit(first.name, first.image, (mask0 == 1).astype(np.uint8))  # frame 0: its mask is the given one
        summary.masks_written += outputs.done()
        bar.update(1)
        tick, read_before = time.perf_counter(), read_seconds[0]
        for name, pred in run_tracker(tracker, first.image, mask0, good_frames(), stats=stats):
            predict_seconds += time.perf_counter() - tick - (read_seconds[0] - read_before)
            outputs.submit(name, current[0], pred.mask)
            summary.masks_written += outputs.done()
            summary.frames_processed += 1
            bar.update(1)
            if summary.skipped:
                bar.set_postfix(skipped=len(summary.skipped))
            tick, read_before = time.perf_counter(), read_seconds[0]
        summary.masks_written += outputs.finish()
        ok = True
    except OSError as exc:  # e.g. the disk filled up or the folder became read-only mid-run
        raise SgoneError(f"{_write_target(exc, out)}: cannot write the output there ({exc.strerror or exc})") from None
    finally:
        summary.masks_written += outputs.close()  # the output thread stops before the writers close
        frames.close()  # stops the reader thread (and ffmpeg) on an error or Ctrl-C too
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
            summary.propagation = dict(tracker.config.as_dict(), **stats)
        summary.settings = dict(getattr(tracker.config, "as_dict", dict)(), **stats)
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


class FrameOutputs:
    """Runs `emit(*frame)` for each submitted frame on one background thread, in order, so that
    writing a frame's outputs overlaps the model's work on the next. At most `ahead` frames wait;
    an error of `emit` (e.g. OSError: disk full) is raised in the caller's thread by the next call."""

    def __init__(self, emit: Callable[..., None], ahead: int = 2) -> None:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self.emit, self.ahead = emit, ahead
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sgone-video-out")
        self.pending: Any = deque()

    def submit(self, *frame: Any) -> None:
        self.pending.append(self.pool.submit(self.emit, *frame))

    def done(self) -> int:
        """Wait until at most `ahead` frames are pending; -> how many finished (errors raised)."""
        finished = 0
        while self.pending and (len(self.pending) > self.ahead or self.pending[0].done()):
            self.pending.popleft().result()
            finished += 1
        return finished

    def finish(self) -> int:
        """Wait for every pending frame; -> how many finished."""
        finished = 0
        while self.pending:
            self.pending.popleft().result()
            finished += 1
        return finished

    def close(self) -> int:
        """Write what is still pending (a run stopped by a bad input frame keeps the masks of the
        frames before it), stop the thread; -> how many were written. Errors are not raised here:
        the run has already failed, or `finish` saw every frame."""
        self.pool.shutdown(wait=True)
        written = sum(1 for future in self.pending if future.exception() is None)
        self.pending.clear()
        return written


def _next_frame(frames: Iterator[Frame], input_path: str | Path) -> Frame | None:
    """The next frame, or None at the end. An unexpected error of the reader (raised in its
    thread, e.g. an I/O error on the input's disk) becomes a one-line SgoneError naming the
    input, so that it is neither a traceback nor taken for a failure to write the output."""
    try:
        return next(frames, None)
    except SgoneError:
        raise
    except Exception as exc:
        where = getattr(exc, "filename", None) or input_path
        raise SgoneError(f"{where}: cannot read the input ({first_line(exc)})") from None


def _write_target(exc: OSError, out: Path) -> Path:
    """The folder a failed write was aimed at (temp files are named after their target)."""
    return Path(exc.filename).parent if exc.filename else out
