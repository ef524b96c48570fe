"""The web app's "Export COCO": the masks of a run as one COCO file named after the queries."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sgone.app.core import Result, export_coco, unique_stems
from sgone.errors import SgoneError


def test_export_coco_from_a_runs_masks(tmp_path):
    pycoco = pytest.importorskip("pycocotools.coco")
    queries = [tmp_path / "up" / "cat.jpg", tmp_path / "up2" / "cat.png", tmp_path / "up" / "dog.webp"]
    masks = []
    for i, stem in enumerate(unique_stems([q.name for q in queries])):  # as Session.segment names them
        mask = np.zeros((20 + i, 30), np.uint8)
        mask[3:9, 4 + i:12] = 255 if i < 2 else 0  # the third mask is empty
        masks.append(tmp_path / f"{stem}.png")
        Image.fromarray(mask).save(masks[-1])
    path = export_coco(Result(names=[q.name for q in queries], masks=masks), tmp_path)
    api = pycoco.COCO(str(path))
    assert [i["file_name"] for i in api.dataset["images"]] == ["cat.jpg", "cat.png", "dog.webp"]
    assert [i["height"] for i in api.dataset["images"]] == [20, 21, 22]
    anns = api.loadAnns(api.getAnnIds())
    assert [a["image_id"] for a in anns] == [1, 2] and [a["area"] for a in anns] == [48, 42]
    for ann, mask in zip(anns, masks):
        assert np.array_equal(api.annToMask(ann) * 255, np.asarray(Image.open(mask)))
    with pytest.raises(SgoneError, match="press Segment first"):
        export_coco(Result(), tmp_path)
