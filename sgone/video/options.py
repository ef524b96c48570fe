"""Names of the video modes and of `run_video`'s choices, importable without torch: the CLI
builds `sgone video` and `sgone evaluate` from them, and `sgone --help` must stay instant."""
from __future__ import annotations

MODES = ("independent", "propagate", "temporal", "memory")  # one tracker module each (sgone.video.tracker.TRACKERS)
DEFAULT_MODE = "memory"  # chosen over temporal by clip cross-validation (docs/video.md)
ON_BAD_FRAME = ("stop", "skip")
PREVIEWS = ("gif", "webp", "none")
