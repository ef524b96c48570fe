"""The COCO module alone: pycocotools reads what `CocoBuilder` writes, masks round-trip."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sgone.data.coco import decode_segmentation
from sgone.label.coco import CocoBuilder, encode_mask, write_coco

pycoco = pytest.importorskip("pycocotools.coco")


def test_builder_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.zeros((30, 40), np.uint8)
    labels[5:12, 3:20] = 1
    labels[20:28, 25:39] = 2
    labels[0, 0] = 255  # ignore is neither class
    noise = rng.random((17, 23)) > 0.5
    coco = CocoBuilder(["cat", "dog"])
    coco.add_labels("a.jpg", labels)
    coco.add_masks("dir/b.png", [noise.astype(np.uint8) * 255, np.zeros((17, 23), np.uint8)])  # dog empty
    path = tmp_path / "annotations.json"
    write_coco(path, coco.to_dict())
    api = pycoco.COCO(str(path))
    assert [c["name"] for c in api.loadCats(api.getCatIds())] == ["cat", "dog"]
    assert {i["file_name"]: (i["width"], i["height"]) for i in api.dataset["images"]} == {"a.jpg": (40, 30),
                                                                                          "dir/b.png": (23, 17)}
    anns = api.loadAnns(api.getAnnIds())
    assert len(anns) == 3  # the empty dog mask of b.png has no annotation
    for ann in anns:
        expected = labels == ann["category_id"] if ann["image_id"] == 1 else noise
        assert np.array_equal(api.annToMask(ann).astype(bool), expected)
        assert ann["area"] == int(expected.sum())
    cat = next(a for a in anns if a["image_id"] == 1 and a["category_id"] == 1)
    assert cat["bbox"] == [3.0, 5.0, 17.0, 7.0]


def test_encode_mask_accepts_0_1_and_0_255():
    mask = np.zeros((9, 7), np.uint8)
    mask[2:5, 1:4] = 1
    one, full = encode_mask(mask), encode_mask(mask * 255)
    assert one == full and one["area"] == 9
    assert np.array_equal(decode_segmentation(one["segmentation"], *one["segmentation"]["size"]), mask)
    json.dumps(one)  # plain JSON types


def test_predictions_to_coco(tmp_path):
    """The API route for Predictor users: `add_prediction` takes Prediction objects."""
    from sgone.predictor import Prediction

    mask = np.zeros((10, 12), np.uint8)
    mask[2:6, 3:9] = 1
    coco = CocoBuilder(["object"])
    coco.add_prediction("q.jpg", Prediction(mask=mask, probability=mask.astype(np.float32),
                                            similarity=mask.astype(np.float32)))
    data = coco.to_dict()
    assert data["annotations"][0]["area"] == 24 and data["images"][0]["height"] == 10
