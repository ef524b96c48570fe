"""`sgone train` and `sgone evaluate` from the command line, on the synthetic data set."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from sgone.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores thrash with more
    code = main(["train", "--dataset", "synthetic", "--fold", "0", "--steps", "2", "--batch-size", "2",
                 "--size", "64", "--weights", "none", "--val-every", "2", "--val-episodes", "2",
                 "--ckpt-every", "2", "--out", str(out), "--device", "cpu", "--quiet"])
    torch.set_num_threads(threads)
    assert code == 0
    return out


def test_train_command_writes_a_loadable_checkpoint(trained, capsys):
    for name in ("last.pt", "best.pt", "log.jsonl", "config.json", "training_curve.png"):
        assert (trained / name).is_file(), name
    from sgone.models.registry import load_model

    model = load_model(str(trained / "last.pt"))          # the registry reads "model" + "model_config"
    saved = torch.load(trained / "last.pt", weights_only=False)
    assert saved["config"]["backbone"] == "mobilenet_v2" and saved["step"] == 2
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved["model"][key])


def test_evaluate_command_one_fold_and_all_folds(trained, tmp_path, capsys):
    out = tmp_path / "one"
    assert main(["evaluate", "--checkpoint", str(trained / "last.pt"), "--dataset", "synthetic", "--fold", "0",
                 "--episodes", "2", "--size", "64", "--out", str(out), "--device", "cpu", "--quiet",
                 "--grid", "1"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["episodes"] == 2 and results["input_size"] == 64 and len(results["classes"]) == 10
    assert "fold 0: mIoU" in capsys.readouterr().out

    # one checkpoint for every fold is refused: its training classes are other folds' test classes
    code = main(["evaluate", "--checkpoint", str(trained / "last.pt"), "--dataset", "synthetic", "--fold", "all",
                 "--episodes", "1", "--size", "64", "--out", str(tmp_path / "bad"), "--device", "cpu", "--quiet"])
    assert code == 2 and "{fold}" in capsys.readouterr().err

    for fold in range(4):  # stand-ins for four per-fold checkpoints
        shutil.copy(trained / "last.pt", tmp_path / f"f{fold}.pt")
    out = tmp_path / "all"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "f{fold}.pt"), "--dataset", "synthetic", "--fold", "all",
                 "--episodes", "1", "--size", "64", "--out", str(out), "--device", "cpu", "--quiet",
                 "--grid", "0"]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert summary["folds"] == [0, 1, 2, 3] and len(summary["per_fold"]) == 4
    assert (out / "fold3" / "results.md").is_file()
    captured = capsys.readouterr()
    assert "mean: mIoU" in captured.out and "trained on fold 0" in captured.err


def test_user_errors_exit_2(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt"), "--dataset", "synthetic"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["train", "--dataset", "synthetic", "--steps", "0", "--out", str(tmp_path)]) == 2
    assert main(["evaluate", "--model", "prototype-mobilenet_v2", "--dataset", "synthetic", "--fold", "9"]) == 2
    assert "folds 0..3" in capsys.readouterr().err


def test_davis_is_delegated(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(3)), raising=False)  # default: 2 threads
    before = torch.get_num_threads()
    try:
        _check_davis_delegation(monkeypatch, tmp_path, capsys)
    finally:
        torch.set_num_threads(before)


def _check_davis_delegation(monkeypatch, tmp_path, capsys):
    """--model/--mode/--size reach the predictor and evaluate_davis; without them it runs what
    `sgone video` runs by default (model, size and mode)."""
    from sgone.video.model import DEFAULT_VIDEO_MODEL, DEFAULT_VIDEO_SIZE, default_threads
    from sgone.video.tracker import DEFAULT_MODE
    from tests.engine.test_video_metrics import make_davis

    make_davis(tmp_path, ["bear"], n_frames=3)  # the sequences are checked before the model loads
    calls = {}

    class FakePredictor:
        def __init__(self, model, device=None, size=None, threshold=0.5, fusion="avg", boundary="none"):
            calls["predictor"] = (model, size, fusion)
            calls["boundary"] = boundary

    def fake_evaluate_davis(predictor, root, output_dir, mode=None, sequences=None, split="val", **kw):
        calls["davis"] = (root, str(output_dir), mode, sequences, split)
        stats = {"mean": 0.5, "recall": 1.0, "decay": 0.0}
        return {"overall": {"J": stats, "F": dict(stats, mean=0.25), "J&F": 0.375}, "sequences": {"bear": {}},
                "split": "custom", "fps": 2.0}

    monkeypatch.setattr("sgone.predictor.Predictor", FakePredictor)
    monkeypatch.setattr("sgone.engine.video_metrics.evaluate_davis", fake_evaluate_davis)
    assert main(["evaluate", "--model", "prototype-mobilenet_v2", "--dataset", "davis2016", "--root", str(tmp_path),
                 "--mode", "propagate", "--size", "320", "--sequences", "bear", "--out", str(tmp_path / "o"),
                 "--device", "cpu"]) == 0
    assert calls["predictor"] == ("prototype-mobilenet_v2", 320, "avg")
    assert calls["boundary"] == "none"  # video figures are measured without the still-image boundary step
    assert calls["davis"] == (str(tmp_path), str(tmp_path / "o"), "propagate", ["bear"], "val")
    assert "mode propagate: J&F 37.5  J mean 50.0" in capsys.readouterr().out
    assert main(["evaluate", "--dataset", "davis2016", "--root", str(tmp_path), "--sequences", "bear",
                 "--split", "train", "--out", str(tmp_path / "o2"), "--device", "cpu"]) == 0
    assert calls["predictor"] == (DEFAULT_VIDEO_MODEL, DEFAULT_VIDEO_SIZE, "avg")
    assert calls["davis"][2:] == (DEFAULT_MODE, ["bear"], "train")
    assert torch.get_num_threads() == default_threads()  # the thread count `sgone video` uses


def test_evaluate_defaults_to_the_training_free_model_at_size_473(tmp_path, capsys):
    """No --model / --checkpoint scores the training-free model (not `segment`'s default, which was
    trained on classes the benchmarks test); too few episodes for the fold's 10 classes is said on
    stderr and in results.json."""
    from sgone.models.registry import TRAINING_FREE_MODEL, load_model

    out = tmp_path / "default"
    assert main(["evaluate", "--dataset", "synthetic", "--fold", "1", "--episodes", "2", "--out", str(out),
                 "--device", "cpu", "--quiet", "--grid", "0"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == json.loads(json.dumps(load_model(TRAINING_FREE_MODEL).config))
    assert results["input_size"] == 473 and results["input_size_rule"] == "longer side, aspect kept"
    assert len(results["uncovered_classes"]) == 8
    err = capsys.readouterr().err
    assert "warning: fold 1: 8 of 10 test classes got no episode" in err and "--episodes 10" in err


def test_evaluate_all_folds_checks_every_checkpoint_first(trained, tmp_path, capsys):
    for fold in range(3):  # fold 3's checkpoint is missing
        shutil.copy(trained / "last.pt", tmp_path / f"f{fold}.pt")
    out = tmp_path / "all"
    args = ["evaluate", "--checkpoint", str(tmp_path / "f{fold}.pt"), "--dataset", "synthetic", "--fold", "all",
            "--episodes", "1", "--size", "64", "--out", str(out), "--device", "cpu", "--quiet", "--grid", "0"]
    assert main(args) == 2
    assert f"{tmp_path / 'f3.pt'}: checkpoint not found" in capsys.readouterr().err
    assert not out.exists()  # no fold was evaluated before the missing one was found
    (tmp_path / "f3.pt").write_bytes(b"not a checkpoint")
    assert main(args) == 2
    assert "f3.pt" in capsys.readouterr().err and not out.exists()


TRAIN_ARGS = ["train", "--dataset", "synthetic", "--fold", "0", "--steps", "2", "--batch-size", "2", "--size", "64",
              "--weights", "none", "--val-every", "2", "--val-episodes", "2", "--ckpt-every", "2", "--device", "cpu"]


def test_resuming_a_finished_run_says_so_without_nan(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    capsys.readouterr()
    assert main(TRAIN_ARGS + ["--out", str(run), "--quiet", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "already trained to step 2" in out and "nan" not in out


def test_a_run_folder_is_refused_and_validation_shows_progress(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert main(TRAIN_ARGS + ["--out", str(run), "--quiet"]) == 2
    assert "holds a run" in capsys.readouterr().err
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(TRAIN_ARGS + ["--out", str(run), "--overwrite"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert "validate" in capsys.readouterr().err  # the validation pass has its own progress bar


def test_train_backbone_options_update_the_recipes_and_reach_the_checkpoint(tmp_path, capsys):
    from sgone.cli import build_parser
    from sgone.commands.train import config_from_args

    parser = build_parser()
    args = parser.parse_args(["train", "--dataset", "synthetic", "--recipe", "real", "--backbone-options",
                              '{"high_stride": 8}'])
    assert config_from_args(args)["backbone_options"] == {"high_stride": 8}
    args = parser.parse_args(["train", "--dataset", "synthetic", "--recipe", "modern", "--backbone-options", "{}"])
    assert config_from_args(args)["backbone_options"] == {}
    assert config_from_args(parser.parse_args(["train", "--dataset", "synthetic"]))["backbone_options"] is None
    for bad in ("[1]", "{high_stride: 8}"):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "--dataset", "synthetic", "--backbone-options", bad])
        assert "--backbone-options" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(["train", "--dataset", "synthetic", "--steps", "1", "--batch-size", "1", "--size", "64",
                 "--weights", "none", "--val-every", "0", "--out", str(out), "--device", "cpu", "--quiet",
                 "--backbone-options", '{"high_stride": 16}']) == 0
    saved = torch.load(out / "last.pt", weights_only=False)
    assert saved["model_config"]["backbone_options"] == {"high_stride": 16}
