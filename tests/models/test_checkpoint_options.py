"""scripts/checkpoint_options.py: a checkpoint copy with other inference options, same weights."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from sgone.models.registry import build_model, load_model

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "checkpoint_options.py"


def script():
    spec = importlib.util.spec_from_file_location("checkpoint_options", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_copy_carries_new_options_and_the_same_weights(tmp_path, capsys):
    model = build_model("sgone-prior", "mobilenet_v2", weights=None, backbone_options={"high_stride": 16})
    torch.save({"model": model.state_dict(), "model_config": model.config}, tmp_path / "m.pt")
    rc = script().main([str(tmp_path / "m.pt"), str(tmp_path / "copy.pt"), "--backbone-options",
                        '{"high_stride": 8}', "--head-weight", "0.5"])
    assert rc == 0 and "copy.pt" in capsys.readouterr().out
    copy = load_model(str(tmp_path / "copy.pt"))
    assert copy.config["backbone_options"] == {"high_stride": 8} and copy.head_weight == 0.5
    assert all(torch.equal(v, copy.state_dict()[k]) for k, v in model.state_dict().items())


def test_options_that_do_not_build_write_nothing(tmp_path, capsys):
    model = build_model("sgone-prior", "mobilenet_v2", weights=None)
    torch.save({"model": model.state_dict(), "model_config": model.config}, tmp_path / "m.pt")
    rc = script().main([str(tmp_path / "m.pt"), str(tmp_path / "copy.pt"), "--backbone-options", '{"high_stride": 3}'])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "high_stride" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "copy.pt").exists()
    assert script().main([str(tmp_path / "absent.pt"), str(tmp_path / "c.pt")]) == 2
