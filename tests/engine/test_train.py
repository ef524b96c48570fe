"""Training: the loss falls, a killed run resumes step for step, recipes set their groups."""
from __future__ import annotations

import json

import pytest
import torch

from sgone.engine.checkpoint import load_checkpoint
from sgone.engine.optimisation import freeze_backbone, lr_factor, parameter_groups, segmentation_loss
from sgone.engine.recipes import RECIPES, TrainConfig
from sgone.engine.trainer import train
from sgone.engine.training_data import StepBatches
from sgone.errors import SgoneError

from .helpers import TinySource, tiny_model


def config(out, **overrides) -> dict:
    base = {"recipe": "modern", "steps": 6, "batch_size": 2, "size": 40, "freeze": "none", "lr": 3e-3,
            "out": str(out), "val_every": 3, "val_episodes": 4, "ckpt_every": 3, "device": "cpu",
            "progress": False, "fold": 0, "seed": 3}
    base.update(overrides)
    return base


def test_training_lowers_the_loss(tmp_path):
    result = train(config(tmp_path, steps=40, batch_size=4, val_every=20, ckpt_every=20, warmup=0),
                   source=TinySource(), model=tiny_model())
    losses = [loss for _, loss in result["losses"]]
    assert len(losses) == 40 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-10:]) / 10 < sum(losses[:5]) / 5 - 0.1
    for name in ("last.pt", "best.pt", "log.jsonl", "config.json", "training_curve.png"):
        assert (tmp_path / name).is_file(), name
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 41))
    assert [r["step"] for r in records if "val_miou" in r] == [20, 40]
    assert result["validation"] == "seen classes, val split"
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["step"] == 40 and ckpt["model_config"]["arch"] == "sgone"
    assert set(ckpt) >= {"model", "model_config", "optimizer", "scheduler", "rng", "config", "best_metric"}


def test_killed_run_resumes_step_for_step(tmp_path):
    straight = train(config(tmp_path / "a"), source=TinySource(), model=tiny_model(seed=1))

    class Killed(Exception):
        pass

    def kill_at_5(step, record):
        if step == 5:  # after step 5 ran, past the checkpoint of step 3: steps 4-5 are lost
            raise Killed

    with pytest.raises(Killed):
        train(config(tmp_path / "b"), source=TinySource(), model=tiny_model(seed=1), on_step=kill_at_5)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 3
    # a fresh model with other weights: everything must come from the checkpoint
    resumed = train(config(tmp_path / "b", resume=True), source=TinySource(), model=tiny_model(seed=2))
    assert [s for s, _ in resumed["losses"]] == [4, 5, 6]
    expected = dict(straight["losses"])
    for step, loss in resumed["losses"]:
        assert loss == pytest.approx(expected[step], abs=1e-6)
    # the log was cut back to the checkpoint and continued: same records as the straight run
    log = lambda p: [(r["step"], round(r["loss"], 6)) for r in map(json.loads, p.read_text().splitlines()) if "loss" in r]
    assert log(tmp_path / "b" / "log.jsonl") == log(tmp_path / "a" / "log.jsonl")
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], atol=1e-6, rtol=0)
    assert a["best_metric"] == b["best_metric"]


def test_resume_refuses_changed_settings(tmp_path):
    train(config(tmp_path, steps=1, val_every=0), source=TinySource(), model=tiny_model())
    with pytest.raises(SgoneError, match="lr"):
        train(config(tmp_path, steps=1, val_every=0, lr=1.0, resume=True), source=TinySource(), model=tiny_model())


def test_published_recipe_groups_and_labels():
    model = tiny_model(variant="published")
    cfg = TrainConfig(recipe="published").resolved()
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.schedule) == \
        ("sgd", 1e-5, 0.99, 5e-4, 1, "constant")
    freeze_backbone(model, cfg.freeze)
    groups = parameter_groups(model, cfg)
    by_mult = {g["lr_mult"]: g for g in groups}
    assert set(by_mult) == {1.0, 2.0, 10.0, 20.0}
    assert {id(p) for p in by_mult[10.0]["params"]} == {id(model.guidance.weight)}
    assert {id(p) for p in by_mult[20.0]["params"]} == {id(model.guidance.bias)}
    assert all(g["weight_decay"] == 5e-4 for g in groups)
    # BatchNorm of the backbone stays fixed under "bn"
    assert not any(p.requires_grad for p in model.backbone.stem[1].parameters())
    assert lr_factor(0, cfg) == lr_factor(10_000, cfg) == 1.0
    # published labels: 255 counts as object; fixed: ignored
    logits = torch.zeros(1, 2, 2, 2)
    logits[:, 1] = 5.0
    masks = torch.tensor([[[1, 255], [1, 1]]])
    assert segmentation_loss(logits, masks, "published") < 0.01
    assert segmentation_loss(logits, torch.tensor([[[0, 255], [0, 0]]]), "fixed") > 4.0


def test_modern_recipe_schedule_and_freeze():
    cfg = TrainConfig(recipe="modern", steps=100).resolved()
    assert (cfg.optimizer, cfg.batch_size, cfg.freeze, cfg.size) == ("adamw", 8, "all", RECIPES["modern"]["size"])
    assert lr_factor(0, cfg) == pytest.approx(1 / 5)                   # warm-up over 5 steps
    assert lr_factor(4, cfg) == pytest.approx(1.0)
    assert lr_factor(99, cfg) < 0.01                                   # cosine to ~0
    model = tiny_model()
    freeze_backbone(model, "all")
    groups = parameter_groups(model, cfg)
    trained = {id(p) for g in groups for p in g["params"]}
    assert not trained & {id(p) for p in model.backbone.parameters()}
    assert all(g["weight_decay"] == 0 for g in groups if any(p.ndim == 1 for p in g["params"]))


def test_step_batches_give_each_rank_its_own_episodes():
    r0 = list(StepBatches(0, 3, 2, rank=0, world_size=2))
    r1 = list(StepBatches(0, 3, 2, rank=1, world_size=2))
    assert r0 == [[0, 1], [4, 5], [8, 9]] and r1 == [[2, 3], [6, 7], [10, 11]]
    assert list(StepBatches(2, 3, 2, rank=1, world_size=2)) == r1[2:]   # resuming at step 3


def test_training_free_model_is_refused(tmp_path):
    from sgone.models.prototype import PrototypeModel

    from .helpers import TinyBackbone

    with pytest.raises(SgoneError, match="nothing to train"):
        train(config(tmp_path), source=TinySource(), model=PrototypeModel(TinyBackbone()))


def test_tensorboard_events_when_available(tmp_path, monkeypatch):
    import sys
    import types

    scalars = []

    class FakeWriter:
        def __init__(self, logdir, purge_step=None):
            self.logdir = logdir

        def add_scalar(self, tag, value, step):
            scalars.append((tag, step))

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    train(config(tmp_path, steps=2, val_every=2, ckpt_every=2), source=TinySource(), model=tiny_model())
    assert ("loss", 1) in scalars and ("val_miou", 2) in scalars
    assert (tmp_path / "log.jsonl").is_file()  # the JSONL log is written either way
