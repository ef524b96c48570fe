"""What the reports hold: the best/worst episode grid and the per-fold summary files; `--ways 2` from the CLI."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from sgone.data.sampler import TestEpisodes
from sgone.data.transforms import EvalTransform
from sgone.engine.episode_eval import evaluate_folds, save_episode_grid

from .helpers import TinySource, tiny_model


def test_episode_grid_has_one_row_per_chosen_episode_and_four_columns(tmp_path):
    source = TinySource()
    episodes = TestEpisodes(source, 0, shots=1, episodes=6, seed=0, transform=EvalTransform(40))
    ious = [0.9, 0.1, 0.5, 0.7, 0.3, 0.2]
    sizes = {}
    for count in (1, 2):
        path = tmp_path / f"grid{count}.png"
        save_episode_grid(tiny_model(), episodes, ious, "avg", "cpu", path, count=count)
        sizes[count] = Image.open(path).size  # (width, height)
    tile, gap, caption = 160, 4, 14
    assert sizes[1][0] == sizes[2][0] == 4 * (tile + gap) + gap            # support, truth, prediction, similarity
    assert sizes[1][1] == 2 * (tile + caption + gap) + gap                 # best 1 + worst 1
    assert sizes[2][1] == 4 * (tile + caption + gap) + gap                 # best 2 + worst 2


def test_fold_summary_files_agree_with_the_results(tmp_path):
    results = evaluate_folds(lambda fold: tiny_model(seed=fold), TinySource(), folds=[0, 1], shots=1, episodes=4,
                             size=40, out=tmp_path, progress=False, grid=1)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["miou"] == pytest.approx(np.mean([r["miou"] for r in saved["per_fold"]]))
    md = (tmp_path / "results.md").read_text()
    mious = [f"{r['miou']:.1f}" for r in saved["per_fold"]]
    assert f"| mIoU | {mious[0]} | {mious[1]} | {saved['miou']:.1f} |" in md
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    per_class = [row for row in rows if row["class_id"].isdigit()]
    assert len(per_class) == sum(len(r["classes"]) for r in saved["per_fold"]) == 8
    assert {row["fold"] for row in per_class} == {"0", "1"} and results["miou"] == pytest.approx(saved["miou"])
    for fold in saved["per_fold"]:
        ious = {int(row["class_id"]): float(row["iou"]) for row in per_class if row["fold"] == str(fold["fold"])}
        assert ious == {c["id"]: pytest.approx(c["iou"], abs=1e-4) for c in fold["classes"]}


def test_evaluate_command_two_ways(tmp_path, capsys):
    from sgone.cli import main

    out = tmp_path / "eval"
    assert main(["evaluate", "--dataset", "synthetic", "--fold", "0", "--ways", "2", "--episodes", "2", "--size",
                 "64", "--output", str(out), "--device", "cpu", "--quiet"]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["ways"] == 2 and sum(c["episodes"] for c in saved["classes"]) == 4  # 2 episodes x 2 ways
