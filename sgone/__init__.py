"""sgone: one-shot and few-shot semantic segmentation (SG-One and a training-free mode).

`from sgone import Predictor` works; torch is imported only when `Predictor` is first used,
so `import sgone` stays light.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from sgone.lazy import lazy_exports

__version__ = "0.1.0"
__all__ = ["Prediction", "Predictor", "SgoneError", "__version__"]

if TYPE_CHECKING:
    from sgone.errors import SgoneError
    from sgone.predictor import Prediction, Predictor

_LAZY = {"Predictor": "sgone.predictor", "Prediction": "sgone.predictor", "SgoneError": "sgone.errors"}

__getattr__, __dir__ = lazy_exports("sgone", _LAZY, globals())
