"""Shared fixtures of the backbone tests: a private hash cache and one-thread torch."""

from __future__ import annotations

import pytest
import torch

from sgone.backbones import weights as weights_mod


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path, monkeypatch):
    # Never touch the user's ~/.cache; start each test with an empty in-memory cache.
    monkeypatch.setenv("SGONE_CACHE_DIR", str(tmp_path / "sgone-cache"))
    monkeypatch.setattr(weights_mod, "_HASH_OK", {})


@pytest.fixture(scope="session", autouse=True)
def _few_threads():
    # The machine is shared: small tensors gain nothing from many threads.
    old = torch.get_num_threads()
    torch.set_num_threads(min(2, old))
    yield
    torch.set_num_threads(old)
