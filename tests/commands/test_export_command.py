"""`sgone export` and `--runtime onnx` from the command line; the torch-free example script."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sgone.cli import main
from tests.export.helpers import run_example_without_torch

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sgone" / "samples"
SIZE = 161


def one_line_error(capsys, rc: int, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith(f"sgone {command}: error: ")
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def exported(imagenet, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx-model")
    assert main(["export", "--model", "prototype-mobilenet_v2", "--output", str(out), "--size", str(SIZE)]) == 0
    return out


def segment_argv(model: list[str], out: Path) -> list[str]:
    model = model if "--model" in model else ["--model", "prototype-mobilenet_v2", *model]  # the fast one
    return ["segment", *model, "--size", str(SIZE), "--support", str(SAMPLES / "support.jpg"), "--support-mask",
            str(SAMPLES / "support_mask.png"), "--input", str(SAMPLES / "query.jpg"), "--output", str(out)]


def test_export_prints_what_it_wrote_and_its_check(exported, capsys):
    info = json.loads((exported / "manifest.json").read_text())
    assert info["model"] == "prototype-mobilenet_v2" and info["input"]["dynamic"]
    assert info["check"]["mask_iou"] > 0.99


def test_segment_with_the_onnx_runtime_writes_the_torch_masks(exported, tmp_path, capsys):
    masks = {}
    for name, extra in (("torch", []), ("onnx", ["--runtime", "onnx"]), ("folder", ["--runtime", "onnx", "--model",
                                                                                 str(exported)])):
        assert main(segment_argv(extra, tmp_path / name)) == 0
        masks[name] = np.asarray(Image.open(tmp_path / name / "query.png")) == 255
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["runtime"] == ("torch" if name == "torch" else "onnx")
    for name in ("onnx", "folder"):
        assert (masks[name] & masks["torch"]).sum() / (masks[name] | masks["torch"]).sum() > 0.99
    assert masks["torch"].any()


def test_published_checkpoint_bad_values_and_missing_onnxruntime(imagenet, tmp_path, capsys, monkeypatch):
    from sgone.models.registry import build_model

    model = build_model("sgone", "mobilenet_v2", variant="published", weights=None)
    ckpt = tmp_path / "published.pt"  # a published-variant SG-One checkpoint exports too
    torch.save({"model": model.state_dict(), "model_config": model.config}, ckpt)
    assert main(["export", "--model", str(ckpt), "--output", str(tmp_path / "published"), "--size", "97"]) == 0
    assert "IoU of the masks 1.0000" in capsys.readouterr().out
    rc = main(["export", "--model", "nope", "--output", str(tmp_path / "out")])
    assert "nope: unknown model" in one_line_error(capsys, rc, "export")
    rc = main(["export", "--output", str(tmp_path / "out"), "--size", "16"])
    assert "--size 16: too small" in one_line_error(capsys, rc, "export")
    rc = main(["export", "--output", str(tmp_path / "out"), "--calibration", str(tmp_path)])
    assert "--calibration: only with --quantize int8" in one_line_error(capsys, rc, "export")
    assert not (tmp_path / "out").exists()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    rc = main(["export", "--output", str(tmp_path / "out")])
    assert "reinstall sgone or: pip install onnxruntime onnx" in one_line_error(capsys, rc, "export")
    rc = main(segment_argv(["--runtime", "onnx"], tmp_path / "seg"))
    assert "reinstall sgone or: pip install onnxruntime onnx" in one_line_error(capsys, rc, "segment")
    assert not (tmp_path / "seg").exists()


def test_example_script_segments_a_photo_without_torch(exported, tmp_path):
    """examples/onnx_segment.py with `import torch` made to fail: onnxruntime, numpy and pillow only."""
    out = tmp_path / "mask.png"
    done = run_example_without_torch(exported, out, "--truth", str(SAMPLES / "query_mask.png"), timeout=120)
    assert done.returncode == 0, done.stderr
    iou = float(done.stdout.strip().rsplit(" ", 1)[1])
    mask = np.asarray(Image.open(out)) == 255
    assert mask.shape == (375, 250) and iou > 0.2
    # the same photo through sgone's ONNX path
    from sgone.predictor import Predictor

    predictor = Predictor(exported, size=SIZE, runtime="onnx")
    predictor.set_support(SAMPLES / "support.jpg", SAMPLES / "support_mask.png")
    ours = predictor.predict(SAMPLES / "query.jpg").mask == 1
    assert (ours & mask).sum() / (ours | mask).sum() > 0.98
    args = ["--support", str(SAMPLES / "support.jpg"), "--support-mask", str(SAMPLES / "support_mask.png"),
            "--input", str(SAMPLES / "query.jpg"), "--output", str(out)]
    missing = subprocess.run([sys.executable, str(ROOT / "examples" / "onnx_segment.py"), str(tmp_path), *args],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and missing.stderr.strip().endswith("manifest.json: not found")
