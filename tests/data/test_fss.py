"""FssSource: seeded class split written out and reused, split files, fold ignored, checks."""
from __future__ import annotations

import numpy as np
import pytest

from sgone.data.fss import FssSource, draw_split
from sgone.errors import SgoneError


def test_seeded_split_is_written_and_reused(fss_root):
    source = FssSource(fss_root)
    folder = fss_root / ".sgone-cache" / "fss-split-seed0"
    assert source.split_dir == folder and "wrote a class split" in source.notes[0]
    names = {part: (folder / f"{part}.txt").read_text().split() for part in ("train", "val", "test")}
    assert [len(names[p]) for p in ("train", "val", "test")] == [5, 2, 3]  # 520/240/240 of 10
    assert sorted(sum(names.values(), [])) == sorted(source.class_names.values())
    again = FssSource(fss_root)
    assert "reused" in again.notes[0]
    assert again.classes(0, "test") == source.classes(0, "test")
    assert FssSource(fss_root, seed=1).split_dir.name == "fss-split-seed1"
    assert draw_split(list("abcdefghij"), 3) == draw_split(list("abcdefghij"), 3)


def test_fold_is_ignored_and_roles_map_to_the_split(fss_root):
    source = FssSource(fss_root)
    assert source.classes(0, "train") == source.classes(3, "train")
    assert not set(source.classes(0, "train")) & set(source.classes(0, "test"))
    c = source.classes(0, "test")[0]
    assert source.items("train", c) == source.items("val", c) == [f"{source.class_names[c]}/{n}" for n in (1, 2, 3)]


def test_split_files_and_unknown_names(fss_root, tmp_path):
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "train.txt").write_text("abacus\nbee\ncactus\ndolphin\n")
    (splits / "val.txt").write_text("eagle\n")
    (splits / "test.txt").write_text("fox\ngazelle\nunicorn\n")
    with pytest.raises(SgoneError) as info:
        FssSource(fss_root, split_files=splits)
    assert str(info.value).startswith(f"{splits / 'test.txt'}: unknown class name 'unicorn'")
    source = FssSource(fss_root, split_files=splits, strict=False)
    assert [source.class_names[c] for c in source.classes(0, "test")] == ["fox", "gazelle"]


def test_masks_are_binary_and_empty_for_other_classes(fss_root):
    source = FssSource(fss_root)
    ids = {n: c for c, n in source.class_names.items()}
    image, mask = source.load("bee/2", ids["bee"])
    assert image.shape == (40, 56, 3) and set(np.unique(mask)) == {0, 1}
    assert not source.load_mask("bee/2", ids["fox"]).any()


def test_unpaired_and_mismatched_files_are_all_reported(fss_root):
    from PIL import Image

    (fss_root / "bee" / "3.png").unlink()
    (fss_root / "fox" / "1.jpg").unlink()
    Image.new("L", (10, 10)).save(fss_root / "hammer" / "2.png")
    with pytest.raises(SgoneError, match="bee/3.jpg: image has no mask"):
        FssSource(fss_root)
    problems = FssSource(fss_root, strict=False).check(shots=2)
    assert any("bee/3.jpg: image has no mask" in p for p in problems)
    assert any("fox/1.png: mask has no image" in p for p in problems)
    assert any("hammer/2.png: mask is 10x10 but its image is 56x40" in p for p in problems)
    assert any("class" in p and "'bee' has 2 image(s)" in p for p in problems)
