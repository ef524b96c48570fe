"""`independent` mode: every frame against the first frame's mask only (SG-One's DAVIS protocol)."""
from __future__ import annotations

from typing import Any

import numpy as np


class IndependentTracker:
    """The support is encoded once; each frame is segmented as a new photo."""

    name = "independent"

    def __init__(self, predictor: Any, config: Any = None) -> None:
        self.predictor = predictor
        self.config = config
        self.stats: dict[str, int] = {}

    def start(self, first_image: np.ndarray, first_mask: np.ndarray) -> None:
        self.predictor.set_support([first_image], [first_mask])

    def step(self, image: np.ndarray) -> Any:
        return self.predictor.predict(image)
