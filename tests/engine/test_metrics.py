"""Scores against hand-computed values and an independent confusion-matrix computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sgone.engine.metrics import IoUAccumulator, area_counts, by_object_size, object_share


def confusion(pred: np.ndarray, label: np.ndarray, n: int = 2) -> np.ndarray:
    """Confusion matrix over the non-255 pixels via np.bincount: rows = label, columns = prediction."""
    valid = label != 255
    return np.bincount(n * label[valid].astype(np.int64) + pred[valid].astype(np.int64),
                       minlength=n * n).reshape(n, n)


def iou_from_confusion(cm: np.ndarray, c: int) -> float | None:
    union = cm[c, :].sum() + cm[:, c].sum() - cm[c, c]
    return cm[c, c] / union if union else None


def test_hand_computed_episode():
    label = np.array([[0, 0, 1, 1],
                      [0, 255, 1, 1],
                      [0, 0, 0, 255],
                      [0, 0, 0, 0]])
    pred = np.array([[0, 1, 1, 0],
                     [0, 1, 1, 1],   # the 1 on the 255 pixel does not count
                     [0, 0, 0, 1],   # neither does this one
                     [0, 0, 0, 0]])
    assert area_counts(pred, label, 1) == (3, 5)   # I = 3 of the 4 object pixels; U = 4 + 1 false positive
    assert area_counts(pred, label, 0) == (9, 11)  # 10 bg labels, 1 predicted fg -> I 9; U = 9 + 1 + 1
    acc = IoUAccumulator()
    iou = acc.add(torch.as_tensor(pred), torch.as_tensor(label), 7)
    assert iou == pytest.approx(3 / 5)
    assert acc.class_iou() == {7: pytest.approx(0.6)}
    assert acc.fb_iou() == pytest.approx((9 / 11 + 3 / 5) / 2)


def test_class_iou_sums_counts_over_episodes_not_ious():
    acc = IoUAccumulator()
    # episode 1: I = 1, U = 4 (IoU 0.25); episode 2: I = 4, U = 4 (IoU 1.0)
    label1 = np.array([[1, 1, 1, 1]]); pred1 = np.array([[1, 0, 0, 0]])
    label2 = np.array([[1, 1, 1, 1]]); pred2 = np.array([[1, 1, 1, 1]])
    acc.add(pred1, label1, 3)
    acc.add(pred2, label2, 3)
    assert acc.class_iou()[3] == pytest.approx(5 / 8)      # not (0.25 + 1) / 2
    acc.add(np.array([[0, 0]]), np.array([[1, 1]]), 4)      # class 4: empty prediction -> 0
    assert acc.miou() == pytest.approx((5 / 8 + 0) / 2)
    assert acc.miou([3]) == pytest.approx(5 / 8)


def test_empty_ground_truth_and_empty_prediction():
    acc = IoUAccumulator()
    # nothing labelled, something predicted: IoU 0 for the class
    assert acc.add(np.array([[1, 0]]), np.array([[0, 0]]), 1) == 0.0
    # nothing labelled, nothing predicted: union 0 -> the episode ranks as perfect, the class scores 0
    acc2 = IoUAccumulator()
    assert acc2.add(np.array([[0, 0]]), np.array([[0, 0]]), 2) == 1.0
    assert acc2.class_iou() == {2: 0.0}
    assert acc2.miou() == 0.0
    assert acc2.fb_iou() == pytest.approx(1.0)  # only background has a union
    assert acc.class_iou() == {1: 0.0}


def test_a_class_with_zero_union_counts_as_zero_in_the_mean():
    """HSNet's rule (I / max(U, 1)): leaving such a class out would raise the mean."""
    acc = IoUAccumulator()
    acc.add(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 0, 0]]), 3)   # class 3: I 1 / U 2
    acc.add(np.array([[0, 0]]), np.array([[0, 255]]), 4)             # class 4: union 0 over the run
    assert acc.class_iou() == {3: 0.5, 4: 0.0}
    assert acc.miou() == pytest.approx(0.25)
    assert acc.miou([3, 4, 9]) == pytest.approx(0.25)   # 9 had no episode: no measurement, left out


def test_all_ignore_episode_counts_nothing():
    acc = IoUAccumulator()
    acc.add(np.array([[1, 1]]), np.array([[255, 255]]), 5)
    assert acc.union == {5: 0} and acc.fb_union == [0, 0] and acc.episodes == {5: 1}


def test_against_confusion_matrix_random_episodes():
    rng = np.random.default_rng(0)
    acc = IoUAccumulator()
    per_class: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for _ in range(60):
        h, w = rng.integers(3, 20, size=2)
        label = (rng.random((h, w)) < rng.random()).astype(np.int64)
        label[rng.random((h, w)) < 0.15] = 255
        pred = (rng.random((h, w)) < rng.random()).astype(np.int64)
        if rng.random() < 0.1:
            pred[:] = 0                       # empty prediction
        if rng.random() < 0.1:
            label[label == 1] = 0             # empty ground truth
        class_id = int(rng.integers(1, 6))
        acc.add(pred, label, class_id)
        per_class.setdefault(class_id, []).append((pred.ravel(), label.ravel()))
    # per class: one confusion matrix over all pixels of that class's episodes
    expected = {}
    for c, pairs in per_class.items():
        cm = confusion(np.concatenate([p for p, _ in pairs]), np.concatenate([l for _, l in pairs]))
        expected[c] = iou_from_confusion(cm, 1)
    got = acc.class_iou()
    assert set(got) == set(expected)
    for c in expected:
        assert got[c] == pytest.approx(expected[c])
    assert acc.miou() == pytest.approx(np.mean([v for v in expected.values() if v is not None]))
    # FB-IoU: one confusion matrix over every pixel of every episode
    all_pairs = [pair for pairs in per_class.values() for pair in pairs]
    cm = confusion(np.concatenate([p for p, _ in all_pairs]), np.concatenate([l for _, l in all_pairs]))
    assert acc.fb_iou() == pytest.approx((iou_from_confusion(cm, 0) + iou_from_confusion(cm, 1)) / 2)


def test_n_way_counts_each_way_for_its_class():
    label = np.array([[1, 1, 2, 2, 0, 255]])
    pred = np.array([[1, 2, 2, 2, 1, 1]])
    acc = IoUAccumulator()
    acc.add(pred, label, [10, 20])
    assert acc.intersection == {10: 1, 20: 2} and acc.union == {10: 3, 20: 3}
    # FB: background I 0 / U 1; any-object I 4 / U 5
    assert acc.fb_iou() == pytest.approx((0 + 4 / 5) / 2)


def test_merge_serialise_and_tensor_round_trip():
    rng = np.random.default_rng(1)
    episodes = [(rng.integers(0, 2, (5, 6)), rng.choice([0, 1, 255], (5, 6)), int(rng.integers(1, 4)))
                for _ in range(12)]
    whole = IoUAccumulator()
    for p, l, c in episodes:
        whole.add(p, l, c)
    a, b = IoUAccumulator(), IoUAccumulator()
    for i, (p, l, c) in enumerate(episodes):
        (a if i % 2 else b).add(p, l, c)
    classes = [1, 2, 3, 9]  # 9 never occurs
    summed = a.to_tensor(classes) + b.to_tensor(classes)
    assert IoUAccumulator.from_tensor(summed, classes) == whole
    assert a.merge(b) == whole
    assert IoUAccumulator.from_dict(whole.to_dict()) == whole


def test_object_share_counts_labelled_pixels_only():
    label = np.zeros((4, 5), np.uint8)
    label[0, :2] = 1          # 2 object pixels
    label[3, :] = 255         # 5 ignored pixels
    assert object_share(label) == pytest.approx(2 / 15)
    assert object_share(np.full((2, 2), 255, np.uint8)) == 0.0


def test_by_object_size_bins_by_share_and_averages_the_ious():
    pairs = [(0.01, 0.2), (0.019, 0.4), (0.02, 0.5), (0.5, 1.0), (1.0, 0.8)]
    out = by_object_size(pairs)
    assert out["< 2 %"] == {"episodes": 2, "fg_iou": pytest.approx(30.0)}
    assert out["2-10 %"] == {"episodes": 1, "fg_iou": pytest.approx(50.0)}
    assert out[">= 10 %"] == {"episodes": 2, "fg_iou": pytest.approx(90.0)}
    assert np.isnan(by_object_size([])["< 2 %"]["fg_iou"])
