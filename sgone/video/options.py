"""Names of the video modes and of `run_video`'s choices, importable without torch: the CLI
builds `sgone video` and `sgone evaluate` from them, and `sgone --help` must stay instant."""
from __future__ import annotations

from sgone.options import ON_BAD_INPUT

MODES = ("independent", "propagate", "temporal", "memory")  # one tracker module each (sgone.video.tracker.TRACKERS)
DEFAULT_MODE = "memory"  # chosen over temporal by clip cross-validation (docs/video.md)
ON_BAD_FRAME = ON_BAD_INPUT  # every command's --on-bad-input choices
PREVIEWS = ("gif", "webp", "none")
