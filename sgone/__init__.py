"""sgone: one-shot and few-shot semantic segmentation (SG-One and a training-free mode).

`from sgone import Predictor` works; torch is imported only when `Predictor` is first used,
so `import sgone` stays light.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Prediction", "Predictor", "SgoneError", "__version__"]

if TYPE_CHECKING:
    from sgone.errors import SgoneError
    from sgone.predictor import Prediction, Predictor

_LAZY = {"Predictor": "sgone.predictor", "Prediction": "sgone.predictor", "SgoneError": "sgone.errors"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sgone' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
