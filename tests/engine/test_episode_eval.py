"""Evaluation: reports are written, scoring is at the original label size, fusions behave."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from sgone.data.episode import collate
from sgone.data.sampler import TestEpisodes
from sgone.data.transforms import EvalTransform
from sgone.engine.episode_eval import evaluate, evaluate_folds, predict_batch
from sgone.engine.metrics import IoUAccumulator

from .helpers import TinySource, tiny_model


def test_evaluate_writes_reports_and_grid(tmp_path):
    source = TinySource()
    results = evaluate(tiny_model(), source, fold=1, shots=1, episodes=10, seed=0, size=40, out=tmp_path,
                       progress=False, grid=2)
    for name in ("results.json", "results.md", "results.csv", "episodes.png"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["miou"] == pytest.approx(results["miou"])
    assert saved["input_size"] == 40 and saved["scored_at"] == "original label size"
    assert [c["id"] for c in saved["classes"]] == source.classes(1, "test")
    assert len(saved["episode_iou"]) == 10
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [r["class_id"] for r in rows][-2:] == ["mean", "fb"]
    assert "mIoU" in (tmp_path / "results.md").read_text()
    # mIoU is the mean of the per-class IoUs (percent)
    ious = [c["iou"] for c in saved["classes"] if c["iou"] is not None]
    assert results["miou"] == pytest.approx(np.mean(ious))


def test_scores_at_the_original_label_size_with_any_input_size():
    source = TinySource()
    episodes = TestEpisodes(source, 0, shots=1, episodes=3, transform=EvalTransform(32))
    model = tiny_model().eval()
    for i in range(3):
        batch = collate([episodes[i]])
        out = predict_batch(model, batch, "avg")
        original = batch["query_mask_original"][0]
        assert out["pred"].shape == original.shape != batch["query_mask"][0].shape
        # independent recomputation: upsample the logits, argmax, count
        with torch.no_grad():
            enc_q = model.encode(batch["query_image"])
            proto = model.support_prototype(model.encode(batch["support_images"][:, 0, 0]), batch["support_masks"][:, 0, 0])
            logits = model.segment(enc_q, proto)["logits"]
        up = torch.nn.functional.interpolate(logits, size=original.shape, mode="bilinear", align_corners=False)
        assert torch.equal(out["pred"], up.argmax(1)[0])


class CountingModel(torch.nn.Module):
    """Wraps a model and counts encode() calls (the public code re-encodes the query k times)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.encodes = inner, 0
        self.config = inner.config

    def encode(self, images, need_side=True):
        self.encodes += 1
        return self.inner.encode(images, need_side=need_side)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)


@pytest.mark.parametrize("fusion", ["avg", "max", "vote"])
def test_k_shot_encodes_the_query_once(fusion):
    episodes = TestEpisodes(TinySource(), 0, shots=3, episodes=1, transform=EvalTransform(32))
    model = CountingModel(tiny_model().eval())
    out = predict_batch(model, collate([episodes[0]]), fusion)
    assert model.encodes == 1 + 3
    assert out["pred"].dtype == torch.long and set(out["pred"].unique().tolist()) <= {0, 1}


def test_one_shot_fusions_agree():
    source = TinySource()
    runs = [evaluate(tiny_model(), source, 0, shots=1, episodes=6, fusion=f, size=32, progress=False)
            for f in ("avg", "max", "vote")]
    assert runs[0]["counts"] == runs[1]["counts"] == runs[2]["counts"]


def test_max_fusion_is_the_union_of_one_shot_masks():
    episodes = TestEpisodes(TinySource(), 0, shots=2, episodes=2, transform=EvalTransform(32))
    model = tiny_model(seed=4).eval()
    for i in range(2):
        batch = collate([episodes[i]])
        fused = predict_batch(model, batch, "max")["pred"]
        singles = []
        for k in range(2):
            one = {**batch, "support_images": batch["support_images"][:, :, k:k + 1],
                   "support_masks": batch["support_masks"][:, :, k:k + 1]}
            singles.append(predict_batch(model, one, "avg")["pred"])
        assert torch.equal(fused, singles[0] | singles[1])


def test_all_folds_report_the_mean(tmp_path):
    source = TinySource()
    summary = evaluate_folds(lambda fold: tiny_model(seed=fold), source, [0, 1], out=tmp_path, shots=1,
                             episodes=4, size=32, progress=False, grid=1)
    assert summary["miou"] == pytest.approx(np.mean([r["miou"] for r in summary["per_fold"]]))
    for name in ("results.json", "results.md", "results.csv", "fold0/results.json", "fold1/episodes.png"):
        assert (tmp_path / name).is_file(), name
    assert "| mIoU |" in (tmp_path / "results.md").read_text()


def test_counts_match_a_recount_of_the_predictions():
    source = TinySource()
    results = evaluate(tiny_model(seed=5), source, 1, shots=1, episodes=8, size=None, progress=False)
    episodes = TestEpisodes(source, 1, shots=1, episodes=8, transform=EvalTransform(None))
    model = tiny_model(seed=5).eval()
    acc = IoUAccumulator()
    for i in range(8):
        batch = collate([episodes[i]])
        acc.add(predict_batch(model, batch)["pred"], batch["query_mask_original"][0], batch["class_ids"][0].tolist())
    assert IoUAccumulator.from_dict(results["counts"]) == acc
    assert results["input_size"] == "original"


def test_two_way_episodes_score_every_way():
    results = evaluate(tiny_model(), TinySource(), 0, shots=1, ways=2, episodes=4, size=32, progress=False)
    assert sum(c["episodes"] for c in results["classes"]) == 8   # 4 episodes x 2 ways
    assert results["ways"] == 2 and 0.0 <= results["miou"] <= 100.0


class ShapeRecorder(CountingModel):
    """Records the (h, w) of every image batch the model encodes."""

    def __init__(self, inner):
        super().__init__(inner)
        self.shapes = []

    def encode(self, images, need_side=True):
        self.shapes.append(tuple(images.shape[-2:]))
        return super().encode(images, need_side=need_side)


def test_size_is_the_longer_side_with_the_aspect_kept():
    """--size means what it means in `sgone segment`: the longer side, not N x N."""
    source = TinySource()
    model = ShapeRecorder(tiny_model())
    evaluate(model, source, 0, shots=1, episodes=4, size=40, progress=False)
    episodes = TestEpisodes(source, 0, shots=1, episodes=4)
    queries = [source.load(spec["query"], spec["class_ids"][0])[0].shape[:2] for spec in episodes.specs]
    fed = model.shapes[::2]  # query, then support, per episode
    assert all(max(hw) == 40 for hw in fed)
    assert [round(40 * h / max(h, w)) for h, w in queries] == [h for h, _ in fed]
    assert any(h != w for h, w in fed)


def test_k_shot_with_supports_of_other_shapes():
    """Supports of one episode differ in shape after the resize (and at the original size): they
    are padded with ignored pixels instead of failing to stack."""
    source = TinySource()
    for size in (40, None):
        results = evaluate(tiny_model(), source, 1, shots=3, episodes=4, size=size, progress=False)
        assert len(results["episode_iou"]) == 4 and results["input_size"] == (size or "original")


def test_every_class_is_covered_or_the_results_say_so(tmp_path):
    source = TinySource()  # 4 test classes per fold
    covered = evaluate(tiny_model(), source, 0, shots=1, episodes=4, size=32, progress=False)
    assert covered["uncovered_classes"] == [] and all(c["episodes"] == 1 for c in covered["classes"])
    short = evaluate(tiny_model(), source, 0, shots=1, episodes=2, size=32, progress=False, out=tmp_path, grid=0)
    assert short["uncovered_classes"] == [3, 4]
    assert [c["iou"] is None for c in short["classes"]] == [False, False, True, True]
    assert short["miou"] == pytest.approx(np.mean([c["iou"] for c in short["classes"][:2]]))
    assert json.loads((tmp_path / "results.json").read_text())["uncovered_classes"] == [3, 4]
    assert "2 of 4 test classes got no episode" in (tmp_path / "results.md").read_text()
