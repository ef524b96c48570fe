"""Fixtures shared across test folders: what is missing skips locally and fails under CI
(`tests.helpers.missing`)."""
from __future__ import annotations

import pytest

from tests.helpers import dinov2_reason, missing, mobilenet_weights, onnxruntime_reason, openvino_reason


@pytest.fixture(scope="session")
def ort():
    """onnxruntime (a core dependency), or `missing`."""
    reason = onnxruntime_reason()
    if reason is not None:
        missing(reason)
    import onnxruntime

    return onnxruntime


@pytest.fixture(scope="session")
def imagenet(ort):
    """The MobileNetV2 ImageNet file (for the ONNX tests, which need onnxruntime too), or `missing`."""
    return mobilenet_weights()


@pytest.fixture(scope="session")
def dinov2(imagenet):
    """The DINOv2 ONNX file (with onnxruntime and the MobileNetV2 file, for the joint models), or `missing`."""
    from tests.helpers import dinov2_file

    reason = dinov2_reason()
    if reason is not None:
        missing(reason)
    return dinov2_file()


@pytest.fixture(scope="session")
def openvino(ort):
    """openvino (the `openvino` extra, which setup.sh installs), or `missing`."""
    reason = openvino_reason()
    if reason is not None:
        missing(reason)
    import openvino

    return openvino


@pytest.fixture(autouse=True)
def _auto_runtime_is_torch(request, monkeypatch):
    """`--runtime auto` (the default) picks PyTorch in tests, except in those marked `real_auto`
    (tests/runtimes): they check OpenVINO's parity with PyTorch and auto's choice; elsewhere an export
    and a compile per model and size would add minutes and test the same predictor code."""
    if request.node.get_closest_marker("real_auto"):
        return
    from sgone.runtimes import auto_runtime

    monkeypatch.setattr(auto_runtime, "FASTEST", {})
    monkeypatch.setattr(auto_runtime, "DEFAULT_CHOICES", [])
