"""The video modes by name, and `track`: a clip's frames through one of them.

A mode is one module holding a tracker class with `name`, `__init__(predictor, config)`,
`start(first_image, first_mask)`, `step(image) -> Prediction` and a `stats` dict; register it
in `TRACKERS` and its name in `sgone.video.options.MODES`.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np

from sgone.lazy import lookup
from sgone.video.independent import IndependentTracker
from sgone.video.options import DEFAULT_MODE, MODES
from sgone.video.propagate import PropagateTracker
from sgone.video.temporal import TemporalTracker

TRACKERS = {t.name: t for t in (IndependentTracker, PropagateTracker, TemporalTracker)}
assert tuple(TRACKERS) == MODES, "register a new mode in sgone.video.options.MODES too"


def check_mode(mode: str) -> None:
    lookup(TRACKERS, mode, "video mode")


def make_tracker(predictor: Any, mode: str = DEFAULT_MODE, config: Any = None) -> Any:
    """The tracker of `mode` around `predictor`; `config` is that mode's config (None = its defaults)."""
    check_mode(mode)
    return TRACKERS[mode](predictor, config)


def track(
    predictor: Any,
    first_image: np.ndarray,
    first_mask: np.ndarray,
    frames: Iterable[tuple[str, np.ndarray]],
    mode: str = DEFAULT_MODE,
    config: Any = None,
    stats: dict[str, int] | None = None,
) -> Iterator[tuple[str, Any]]:
    """Segment each (name, image) of `frames` from the first frame's mask; yields (name, Prediction).

    `stats` (if given) receives the mode's counters (e.g. propagate's "updates") as they change.
    """
    return run_tracker(make_tracker(predictor, mode, config), first_image, first_mask, frames, stats)


def run_tracker(
    tracker: Any,
    first_image: np.ndarray,
    first_mask: np.ndarray,
    frames: Iterable[tuple[str, np.ndarray]],
    stats: dict[str, int] | None = None,
) -> Iterator[tuple[str, Any]]:
    """`track` with a tracker already made (see `make_tracker`)."""
    tracker.start(first_image, first_mask)
    for name, image in frames:
        pred = tracker.step(image)
        if stats is not None:
            stats.update(tracker.stats)
        yield name, pred
