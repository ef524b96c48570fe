"""`--runtime auto` (the default): what it picks, its silent fallback when OpenVINO is missing or
cannot take the model, and the one line a forced runtime gives instead."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from sgone.errors import SgoneError
from sgone.predictor import Predictor

pytestmark = pytest.mark.real_auto
SIZE = 97


@pytest.fixture()
def no_openvino(monkeypatch):
    """`import openvino` raises ImportError, as on a machine without the package."""
    from sgone.runtimes import openvino_runtime as ovr

    monkeypatch.setitem(sys.modules, "openvino", None)
    ovr.core.cache_clear()
    ovr.cpu_capabilities.cache_clear()
    yield
    ovr.core.cache_clear()
    ovr.cpu_capabilities.cache_clear()


def test_the_table_names_known_runtimes_and_precisions():
    from sgone.options import PRECISIONS, RUNTIMES
    from sgone.runtimes import auto_runtime

    choices = [c for kinds in auto_runtime.FASTEST.values() for row in kinds.values() for c in row]
    for runtime, precision in choices + auto_runtime.DEFAULT_CHOICES:
        assert runtime in RUNTIMES and runtime != "auto" and precision in PRECISIONS
    # only the shipped precision is a default until another passes the accuracy rule (issue 24)
    assert {precision for _, precision in choices} == {"auto"}
    assert auto_runtime.candidates("avx512", "cnn")[-1] == ("torch", "auto")  # PyTorch ends every list
    assert auto_runtime.cpu_kind({"AVX-512": False}) == "other"


def test_auto_picks_openvino_where_installed(openvino, imagenet, samples):
    from sgone.runtimes import auto_runtime

    want = auto_runtime.candidates(auto_runtime.cpu_kind(), "cnn")[0]
    p = Predictor("prototype-mobilenet_v2", size=SIZE)
    assert (p.runtime, p.precision) == want
    torch_p = Predictor("prototype-mobilenet_v2", size=SIZE, runtime="torch")
    support, mask, query, _ = samples
    for q in (p, torch_p):
        q.set_support(support, mask)
    assert np.abs(p.predict(query).probability - torch_p.predict(query).probability).max() < 1e-4


def test_auto_falls_back_silently_without_openvino(imagenet, no_openvino, recwarn):
    p = Predictor("prototype-mobilenet_v2", size=SIZE)
    assert p.runtime in ("torch", "onnx") and not recwarn.list


def test_auto_falls_back_when_openvino_cannot_take_the_model(openvino, imagenet, monkeypatch):
    from sgone.runtimes import auto_runtime, openvino_runtime

    def refuse(*args, **kwargs):
        raise SgoneError("this model: not exportable")

    monkeypatch.setattr(openvino_runtime, "openvino_model", refuse)
    monkeypatch.setattr(auto_runtime, "FASTEST", {auto_runtime.cpu_kind(): {"cnn": [("openvino", "auto")]}})
    assert Predictor("prototype-mobilenet_v2", size=SIZE).runtime == "torch"


def test_forced_openvino_without_it_is_one_line_before_loading(no_openvino, monkeypatch):
    from sgone.models import registry

    monkeypatch.setattr(registry, "load_model", lambda *a, **k: pytest.fail("model loaded first"))
    hint = r'^the openvino runtime needs the openvino package \(about 60 MB\): pip install "sgone\[openvino\]"'
    with pytest.raises(SgoneError, match=hint):
        Predictor(runtime="openvino")
    with pytest.raises(SgoneError, match=hint):  # a precision only OpenVINO runs is a forced choice too
        Predictor(precision="bf16")


def test_cli_forced_runtime_missing_exits_with_one_line(no_openvino, tmp_path, capsys):
    from sgone.cli import main
    from sgone.samples import sample_paths

    paths = sample_paths()
    code = main(["segment", "--model", "prototype-mobilenet_v2", "--runtime", "openvino", "--support",
                 str(paths["support"]), "--support-mask", str(paths["support_mask"]), "--input", str(paths["query"]),
                 "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pip install" in err[0] and "openvino" in err[0]


def test_cli_segment_default_records_what_auto_chose(openvino, imagenet, tmp_path):
    from sgone.cli import main
    from sgone.samples import sample_paths

    paths = sample_paths()
    assert main(["segment", "--model", "prototype-mobilenet_v2", "--size", str(SIZE), "--support",
                 str(paths["support"]), "--support-mask", str(paths["support_mask"]), "--input", str(paths["query"]),
                 "--output", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["runtime"], summary["precision"]) == ("openvino", "auto")
