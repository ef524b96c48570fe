"""The memory mode's learnt read-out: its evidence, the head, its file, and the tracker with it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sgone.errors import SgoneError
from sgone.video.label_memory import LabelMemoryConfig, LabelMemoryTracker
from sgone.video.memory import propagate_labels, window_mask
from sgone.video.readout import EVIDENCE, ReadoutHead, load_readout, memory_evidence, save_readout
from tests.video.test_label_memory import _fake_predictor, _frame, _unit_grid


def test_evidence_vote_is_the_training_free_vote_and_the_parts_read_their_own_frames():
    first, recent, query = _unit_grid(16, 5, 6, 0), _unit_grid(16, 5, 6, 1), _unit_grid(16, 5, 6, 2)
    g = torch.Generator().manual_seed(3)
    l0, l1 = torch.rand(30, generator=g), torch.rand(30, generator=g)
    allowed = window_mask(5, 6, 1)
    bias = float(np.log(2.0))
    ev = memory_evidence(query.flatten(1), (first.flatten(1), l0), [(recent.flatten(1), l1, allowed)], 4, 0.05, bias)
    whole = propagate_labels(query.flatten(1), [first.flatten(1), recent.flatten(1)], [l0, l1], 4, 0.05, [None, allowed], [bias, 0.0])
    assert torch.allclose(ev["vote"], whole, atol=1e-5)
    assert torch.allclose(ev["vote_first"], propagate_labels(query.flatten(1), [first.flatten(1)], [l0], 4, 0.05), atol=1e-5)
    assert torch.allclose(ev["vote_recent"], propagate_labels(query.flatten(1), [recent.flatten(1)], [l1], 4, 0.05, [allowed]), atol=1e-5)
    # a query identical to the first frame: its best object similarity is 1 on the object cells
    same = memory_evidence(first.flatten(1), (first.flatten(1), (l0 > 0.5).float()), [], 4, 0.05, bias)
    assert torch.allclose(same["first_fg"][l0 > 0.5], torch.ones(int((l0 > 0.5).sum())), atol=1e-5)
    assert float(same["recent_fg"].max()) == -1.0 and float(same["vote_recent"].abs().sum()) == 0.0


def test_untrained_head_returns_the_blend_and_a_trained_step_changes_it():
    head = ReadoutHead(width=8)
    ev = torch.rand(2, len(EVIDENCE), 4, 5)
    blend = ev[:, EVIDENCE.index("blend")]
    assert torch.allclose(head(ev), blend.clamp(1e-4, 1 - 1e-4), atol=1e-6)
    opt = torch.optim.SGD(head.parameters(), lr=1.0)
    F.binary_cross_entropy_with_logits(head.logits(ev), torch.zeros(2, 4, 5)).backward()
    opt.step()
    assert float(head(ev).detach().mean()) < float(blend.mean())


def test_readout_file_round_trip_and_one_line_errors(tmp_path):
    head = ReadoutHead(width=8)
    torch.nn.init.normal_(head.body[-1].weight)
    save_readout(head, tmp_path / "h.pt", {"clips": ["a"]})
    back = load_readout(tmp_path / "h.pt")
    ev = torch.rand(1, len(EVIDENCE), 3, 3)
    assert torch.equal(back(ev), head.eval()(ev))
    with pytest.raises(SgoneError, match="h2.pt: read-out head not found"):
        load_readout(tmp_path / "h2.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a file torch wrote")
    with pytest.raises(SgoneError, match="bad.pt: not a read-out head"):
        load_readout(tmp_path / "bad.pt")


def _run(config: LabelMemoryConfig, frames) -> list[np.ndarray]:
    tracker = LabelMemoryTracker(_fake_predictor(), config)
    tracker.start(*frames[0])
    return [tracker.step(f).probability for f, _ in frames[1:]]


def test_tracker_with_an_untrained_head_tracks_as_the_training_free_read(tmp_path):
    frames = [_frame(96, 128, (20, 20 + 3 * i, 52, 52 + 3 * i)) for i in range(5)]
    frames += [_frame(96, 128, None)] * 2 + [_frame(96, 128, (40, 70, 72, 102))] * 2  # lost, then back
    save_readout(ReadoutHead(width=8), tmp_path / "zero.pt")
    base = _run(LabelMemoryConfig(guided_radius=0.0), frames)
    learnt = _run(LabelMemoryConfig(guided_radius=0.0, readout=str(tmp_path / "zero.pt")), frames)
    for a, b in zip(base, learnt):  # the same masks; probabilities differ only where the blend is clamped to [1e-4, 1 - 1e-4]
        assert np.array_equal(a > 0.5, b > 0.5)
        assert np.abs(a - b).max() < 0.1
    assert (learnt[-1] > 0.5).sum() > 0  # re-detected through the learnt path too


def test_tracker_records_evidence_for_training_and_refuses_unread_memories(tmp_path):
    frames = [_frame(64, 64, (10, 10, 30, 30)), _frame(64, 64, (10, 12, 30, 32))]
    tracker = LabelMemoryTracker(_fake_predictor(64), LabelMemoryConfig(guided_radius=0.0))
    tracker.record = []
    tracker.start(*frames[0])
    tracker.step(frames[1][0])
    assert tracker.record[0].shape == (len(EVIDENCE), 8, 8)
    save_readout(ReadoutHead(width=8), tmp_path / "h.pt")
    with pytest.raises(SgoneError, match="long_term"):
        LabelMemoryTracker(_fake_predictor(64), LabelMemoryConfig(readout=str(tmp_path / "h.pt"), long_term=2))


def test_key_projection_file_replaces_the_pca_and_checks_its_channels(tmp_path):
    from sgone.video.readout import load_keys, save_keys

    frames = [_frame(96, 128, (20, 20 + 3 * i, 52, 52 + 3 * i)) for i in range(4)]
    save_keys(torch.eye(6), 0.05, tmp_path / "identity.pt")  # the stand-in model's 6 channels, as they are
    basis, temperature = load_keys(tmp_path / "identity.pt")
    assert basis.shape == (6, 6) and temperature == pytest.approx(0.05)
    base = _run(LabelMemoryConfig(guided_radius=0.0), frames)  # 6 channels < 64 dims: no PCA either
    keyed = _run(LabelMemoryConfig(guided_radius=0.0, keys=str(tmp_path / "identity.pt")), frames)
    for a, b in zip(base, keyed):
        assert np.allclose(a, b, atol=1e-5)
    save_keys(torch.eye(6), 5.0, tmp_path / "hot.pt")  # the file's temperature is the one read with
    hot = LabelMemoryTracker(_fake_predictor(), LabelMemoryConfig(guided_radius=0.0, keys=str(tmp_path / "hot.pt")))
    assert hot.temperature == 5.0
    save_keys(torch.eye(8)[:, :4], 0.05, tmp_path / "eight.pt")
    tracker = LabelMemoryTracker(_fake_predictor(), LabelMemoryConfig(keys=str(tmp_path / "eight.pt")))
    with pytest.raises(SgoneError, match="eight.pt: key projection for 8-channel features, the model gives 6"):
        tracker.start(*frames[0])
    with pytest.raises(SgoneError, match="nowhere.pt: key projection not found"):
        LabelMemoryTracker(_fake_predictor(), LabelMemoryConfig(keys=str(tmp_path / "nowhere.pt")))
    save_readout(ReadoutHead(width=8), tmp_path / "head.pt")
    with pytest.raises(SgoneError, match="head.pt: not a key projection"):
        load_keys(tmp_path / "head.pt")
