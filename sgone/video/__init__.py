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

Layout: options.py (mode and option names, no torch), frames.py (reading, writing), tracker.py
(modes by name, `track`), independent.py, propagate.py, temporal.py (+ memory.py, colour.py: its
maths), run.py (`run_video`), clips.py (generated test clips). The names below are imported on
first use, so `import sgone.video` (and `sgone --help`) does not load torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from sgone.lazy import lazy_exports

if TYPE_CHECKING:
    from sgone.video.clips import synthetic_clip, write_clip
    from sgone.video.frames import FRAME_SUFFIXES, Frame, FrameFolder, Mp4Writer, PreviewWriter, VideoFile, even_pad, open_frames, prefetch
    from sgone.video.memory import FrameMemory, MemoryEntry
    from sgone.video.options import DEFAULT_MODE, MODES, ON_BAD_FRAME, PREVIEWS
    from sgone.video.propagate import UPDATE_MAX_SIDE, PropagateTracker, PropagationConfig, confident_mask, erode_square, erosion_depth, erosion_to_area, update_mask
    from sgone.video.run import DEFAULT_FOLDER_FPS, VideoSummary, check_first_frame, first_frame, prepare_output, run_video, stale_outputs
    from sgone.video.temporal import TemporalConfig, TemporalTracker
    from sgone.video.tracker import TRACKERS, make_tracker, track

_LAZY = {
    **dict.fromkeys(("synthetic_clip", "write_clip"), "sgone.video.clips"),
    **dict.fromkeys(("FRAME_SUFFIXES", "Frame", "FrameFolder", "Mp4Writer", "PreviewWriter", "VideoFile", "even_pad", "open_frames", "prefetch"), "sgone.video.frames"),
    **dict.fromkeys(("FrameMemory", "MemoryEntry"), "sgone.video.memory"),
    **dict.fromkeys(("DEFAULT_MODE", "MODES", "ON_BAD_FRAME", "PREVIEWS"), "sgone.video.options"),
    **dict.fromkeys(("UPDATE_MAX_SIDE", "PropagateTracker", "PropagationConfig", "confident_mask", "erode_square", "erosion_depth", "erosion_to_area", "update_mask"), "sgone.video.propagate"),
    **dict.fromkeys(("DEFAULT_FOLDER_FPS", "VideoSummary", "check_first_frame", "first_frame", "prepare_output", "run_video", "stale_outputs"), "sgone.video.run"),
    **dict.fromkeys(("TemporalConfig", "TemporalTracker"), "sgone.video.temporal"),
    **dict.fromkeys(("TRACKERS", "make_tracker", "track"), "sgone.video.tracker"),
}
__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports("sgone.video", _LAZY, globals())
