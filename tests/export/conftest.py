"""Shared by the ONNX tests (`ort` and `imagenet` come from tests/conftest.py); small inputs (97-161 px)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def samples():
    """The bundled photos: support, its mask (0/1), query, its true mask (0/1)."""
    from sgone.samples import sample_paths
    from sgone.io import read_image, read_mask

    paths = sample_paths()
    return (read_image(paths["support"]), read_mask(paths["support_mask"]),
            read_image(paths["query"]), read_mask(paths["query_mask"]))
