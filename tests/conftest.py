"""Fixtures shared across test folders."""
from __future__ import annotations

import pytest

from sgone.errors import SgoneError


@pytest.fixture(scope="session")
def ort():
    """onnxruntime, or skip (it is the optional extra sgone[onnx])."""
    return pytest.importorskip("onnxruntime")


@pytest.fixture(scope="session")
def imagenet(ort):
    """The MobileNetV2 ImageNet file (for the ONNX tests, which need onnxruntime too), or skip."""
    from sgone.backbones.weights import find_weights

    try:
        return find_weights("mobilenet_v2", None)
    except SgoneError as exc:
        pytest.skip(f"MobileNetV2 ImageNet weights not installed: {exc}")


@pytest.fixture(scope="session")
def dinov2(imagenet):
    """The DINOv2 ONNX file (with onnxruntime and the MobileNetV2 file, for the joint models), or skip."""
    from tests.helpers import dinov2_file

    path = dinov2_file()
    if path is None:
        pytest.skip("the DINOv2 ONNX file is absent (see README setup)")
    return path

