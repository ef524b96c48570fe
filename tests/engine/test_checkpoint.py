"""Checkpoints: atomic files with the keys the model registry reads, RNG states restored."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from sgone.engine.checkpoint import load_checkpoint, restore_training_state, rng_state, save_checkpoint
from sgone.errors import SgoneError

from .helpers import tiny_model


def test_round_trip_and_rng(tmp_path):
    model = tiny_model(seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(1, 1, 3, 16, 16), torch.ones(1, 1, 16, 16, dtype=torch.long), torch.rand(1, 3, 16, 16))["logits"].sum().backward()
    optimizer.step()
    random.seed(1); np.random.seed(2); torch.manual_seed(3)
    path = save_checkpoint(tmp_path / "c.pt", model, optimizer=optimizer, step=7, config={"fold": 2},
                           best_metric=12.5, rng=[rng_state()])
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]   # no temp file left behind
    state = load_checkpoint(path)
    assert state["model_config"]["arch"] == "sgone" and state["step"] == 7 and state["best_metric"] == 12.5
    other = tiny_model(seed=5)
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-3)
    assert restore_training_state(state, other, other_opt) == 7
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    for key, value in model.state_dict().items():
        assert torch.equal(value, other.state_dict()[key])
    assert other_opt.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]


def test_unreadable_checkpoints_are_user_errors(tmp_path):
    with pytest.raises(SgoneError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SgoneError, match="cannot read"):
        load_checkpoint(tmp_path / "bad.pt")
