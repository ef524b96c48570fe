"""The one place where the video commands (`sgone video`, `sgone evaluate --dataset davis2016`)
create their predictor, so that both run the same model by default and a new Predictor option
(e.g. a runtime) is wired once."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from sgone.models.registry import TRAINING_FREE_MODEL
from sgone.options import DEFAULT_SIZE

# the training-free model, not the registry's default (the SG-One trained on DINOv2 features): on 17
# DAVIS clips that no trained model saw, the temporal mode (tuned with this model) scored J&F 73.6
# with it and 73.4-73.9 with the DINOv2 head as shipped, at ~5x its frame rate (docs/results.md,
# "The default model")
DEFAULT_VIDEO_MODEL = TRAINING_FREE_MODEL
DEFAULT_VIDEO_SIZE = DEFAULT_SIZE  # longer side fed to the network


def video_predictor(model: Any = None, *, device: Any = "auto", size: int | None = DEFAULT_VIDEO_SIZE,
                    threshold: float = 0.5, **predictor_options: Any) -> Any:
    """A `sgone.predictor.Predictor` for video: `model` None = the video default; size 0/None =
    frames at their own size; `predictor_options` go to Predictor unchanged."""
    from sgone.predictor import Predictor

    return Predictor(model if model is not None else DEFAULT_VIDEO_MODEL, device=device, size=size or None,
                     threshold=threshold, **predictor_options)


def default_threads() -> int:
    """Torch threads of the video commands: one less than the usable CPU cores, at least 1 (the
    spare core decodes frames and encodes the MP4; on a busy 2-core machine two model threads
    ran 5-8x slower than one, docs/results.md section 6)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1)


@contextlib.contextmanager
def video_threads(threads: int | None = None) -> Iterator[None]:
    """Torch threads as `sgone video` sets them (`threads`, else `default_threads()`: one core left
    for decoding and the MP4 encoder) while a clip runs, the earlier count afterwards; for callers
    that live on after the clip (the web app: with every core on the model a clip ran several
    times slower than the CLI on the 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)
