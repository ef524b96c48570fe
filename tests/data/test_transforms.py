"""Transforms: images and masks move together, labels stay exact (255 kept), rng-determined."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from sgone.data.episode import Episode
from sgone.data.transforms import EvalTransform, TrainTransform


def make_episode(h: int = 40, w: int = 56) -> Episode:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[10:20, 30:50] = 1
    mask[9, 29:51] = 255
    query = mask.copy()
    query[30:35, 5:10] = 2
    return Episode(support_images=[[image, image[::-1].copy()]], support_masks=[[mask, mask[::-1].copy()]],
                   query_image=image, query_mask=query, class_ids=[3], class_names=["cat"],
                   support_names=[["a", "b"]], query_name="q")


def labels(ep: Episode) -> set[int]:
    values = set(np.unique(ep.query_mask).tolist())
    for row in ep.support_masks:
        for m in row:
            values |= set(np.unique(m).tolist())
    return values


def test_eval_transform_resizes_the_longer_side_and_keeps_original():
    ep = make_episode()  # 40x56
    out = EvalTransform(size=33)(ep)
    assert out.query_image.shape == (24, 33, 3) and out.query_mask.shape == (24, 33)  # aspect kept, as segment
    assert out.support_images[0][1].shape == (24, 33, 3) and out.support_masks[0][0].shape == (24, 33)
    assert labels(out) <= {0, 1, 2, 255} and 255 in labels(out)
    assert out.query_mask_original is ep.query_mask
    assert EvalTransform().size == 473 and EvalTransform(size=0).size is None
    for size in (None, 0):
        same = EvalTransform(size=size)(ep)
        assert same.query_image.shape == (40, 56, 3) and same.query_mask_original is ep.query_mask


def test_eval_transform_pads_supports_of_other_shapes_with_ignore():
    ep = make_episode()
    tall = np.ascontiguousarray(ep.support_images[0][0].transpose(1, 0, 2))  # 56x40
    tall_mask = np.ascontiguousarray(ep.support_masks[0][0].T)
    ep = replace(ep, support_images=[[ep.support_images[0][0], tall]], support_masks=[[ep.support_masks[0][0], tall_mask]])
    out = EvalTransform(size=33)(ep)
    (wide_img, tall_img), (wide_m, tall_m) = out.support_images[0], out.support_masks[0]
    assert wide_img.shape == tall_img.shape == (33, 33, 3)       # they stack into one tensor
    assert (wide_m[24:] == 255).all() and (tall_m[:, 24:] == 255).all()  # padding is ignored
    assert (wide_img[24:] == 0).all() and (wide_m[:24] != 255).any()
    assert out.query_image.shape == (24, 33, 3)                   # the query is not padded
    assert (tall_m[:, :24] == 1).sum() == (EvalTransform(33).resize(tall, tall_mask)[1] == 1).sum()


def test_train_transform_is_rng_determined_and_keeps_labels():
    ep = make_episode()
    t = TrainTransform(size=24, scale=(0.5, 1.5), color_jitter=0.3)
    a = t(ep, np.random.default_rng(5))
    b = t(ep, np.random.default_rng(5))
    c = t(ep, np.random.default_rng(6))
    assert all((x == y).all() for x, y in zip(a.support_images[0] + [a.query_mask], b.support_images[0] + [b.query_mask]))
    assert any((x != y).any() for x, y in zip(a.support_images[0] + [a.query_image], c.support_images[0] + [c.query_image]))
    for seed in range(20):
        out = t(ep, np.random.default_rng(seed))
        assert out.query_image.shape == (24, 24, 3) and out.query_mask.shape == (24, 24)
        assert labels(out) <= {0, 1, 2, 255}  # nearest-neighbour masks: no blended label values
        assert all((m == 1).any() for m in out.support_masks[0])  # supports keep their object


def test_train_transform_pads_with_ignore_and_moves_masks_with_images():
    image = np.zeros((10, 12, 3), dtype=np.uint8)
    image[:, :6] = 200  # left half bright
    mask = np.zeros((10, 12), dtype=np.uint8)
    mask[:, :6] = 1
    t = TrainTransform(size=16, scale=(1.0, 1.0), color_jitter=0)
    for seed in range(10):
        img, m = t.pair(image, mask, np.random.default_rng(seed))
        assert img.shape == (16, 16, 3)
        assert (m == 255).any()  # padding is ignored, not background
        assert ((img[..., 0] == 200) == (m == 1)).all()  # flips and crops keep image and mask aligned
    img, m = TrainTransform(size=None, scale=(2.0, 2.0), color_jitter=0, flip=False).pair(image, mask, np.random.default_rng(0))
    assert img.shape == (20, 24, 3) and m.shape == (20, 24) and set(np.unique(m)) == {0, 1}
