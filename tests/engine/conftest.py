"""Engine test fixtures: one torch thread (2 shared cores thrash with more), a tiny source."""
from __future__ import annotations

import pytest
import torch

from .helpers import TinySource


@pytest.fixture(autouse=True)
def one_thread():
    # with several test processes on 2 cores, 2 intra-op threads make each step ~30x slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_source() -> TinySource:
    return TinySource()
