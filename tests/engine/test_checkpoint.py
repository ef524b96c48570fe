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


def test_export_for_inference_keeps_only_what_loading_needs(tmp_path):
    from sgone.engine.checkpoint import export_for_inference

    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(tmp_path / "last.pt", model, optimizer=optimizer, step=7, config={"recipe": "real"})
    out = export_for_inference(tmp_path / "last.pt", tmp_path / "ship.pt", card={"data": "tiny"})
    slim = torch.load(out, weights_only=False)
    assert set(slim) == {"model", "model_config", "step", "config", "card"} and slim["card"] == {"data": "tiny"}
    assert out.stat().st_size < (tmp_path / "last.pt").stat().st_size
    for key, value in model.state_dict().items():
        assert torch.equal(slim["model"][key], value)
    assert "head_weight" not in slim["model_config"]
    tuned = export_for_inference(tmp_path / "last.pt", tmp_path / "tuned.pt", inference={"head_weight": 0.25})
    assert torch.load(tuned, weights_only=False)["model_config"]["head_weight"] == 0.25  # inference options
