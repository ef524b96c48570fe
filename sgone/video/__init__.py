"""One-shot video object segmentation: the first frame's mask is the support, every later frame
is a query.

    predictor = Predictor()
    summary = run_video(predictor, "clip.mp4", "first_mask.png", "out/")   # mode "temporal"

Modes (one module each, registered in `sgone.video.tracker.TRACKERS`):
    independent  every frame against the first frame only (SG-One's DAVIS protocol)
    propagate    the first frame's prototypes updated online from confident predictions
    temporal     first-frame prototypes + a memory of past frames matched cell by cell, a location
                 prior from the previous mask, guided-filter upsampling (the default)

Frames stream one at a time from a folder (sorted by name, numbers compared as numbers) or a
video file (decoded by imageio-ffmpeg, in a background thread); masks are written atomically as
they come, so memory does not grow with the length of the clip and an interrupted run leaves
only valid masks.

Outputs in the output folder:
    masks/<frame stem>.png   single-channel uint8, 0 = background, 255 = object, frame size
    overlay.mp4              H.264 (yuv420p) video of the masks over the frames
    preview.gif | .webp      small animated preview (bounded number of frames)
    summary.json             mode and its settings, frame counts, skipped frames and why, speed

Layout: io.py (reading, writing), tracker.py (modes by name, `track`), independent.py,
propagate.py, temporal.py (+ memory.py, refine.py: its maths), run.py (`run_video`), clips.py
(generated test clips).
"""
from __future__ import annotations

from sgone.video.clips import synthetic_clip, write_clip
from sgone.video.io import (
    FRAME_SUFFIXES,
    Frame,
    FrameFolder,
    Mp4Writer,
    PreviewWriter,
    VideoFile,
    even_pad,
    open_frames,
    prefetch,
)
from sgone.video.memory import FrameMemory, MemoryEntry
from sgone.video.propagate import (
    UPDATE_MAX_SIDE,
    PropagateTracker,
    PropagationConfig,
    confident_mask,
    erode_square,
    erosion_depth,
    erosion_to_area,
    update_mask,
)
from sgone.video.run import (
    DEFAULT_FOLDER_FPS,
    ON_BAD_FRAME,
    PREVIEWS,
    VideoSummary,
    check_first_frame,
    first_frame,
    prepare_output,
    run_video,
)
from sgone.video.temporal import TemporalConfig, TemporalTracker
from sgone.video.tracker import DEFAULT_MODE, MODES, TRACKERS, make_tracker, track

__all__ = [
    "DEFAULT_FOLDER_FPS", "DEFAULT_MODE", "FRAME_SUFFIXES", "MODES", "ON_BAD_FRAME", "PREVIEWS", "TRACKERS",
    "UPDATE_MAX_SIDE", "Frame", "FrameFolder", "FrameMemory", "MemoryEntry", "Mp4Writer", "PreviewWriter",
    "PropagateTracker", "PropagationConfig", "TemporalConfig", "TemporalTracker", "VideoFile", "VideoSummary",
    "check_first_frame", "confident_mask", "erode_square", "erosion_depth", "erosion_to_area", "even_pad",
    "first_frame", "make_tracker", "open_frames", "prefetch", "prepare_output", "run_video", "synthetic_clip",
    "track", "update_mask", "write_clip",
]
