"""Own data: FolderSource (<class>/images + masks) and VocLikeSource (VOC folders + class names)."""
from __future__ import annotations

import numpy as np
import pytest

from sgone.data.folder import FolderSource, VocLikeSource
from sgone.errors import SgoneError


def test_folder_classes_and_test_choice(folder_root):
    source = FolderSource(folder_root, test_classes="kettle, cup")
    assert source.class_names == {1: "cup", 2: "duck", 3: "kettle"}
    assert source.classes(0, "test") == [1, 3] and source.classes(0, "train") == [2]
    assert source.items("train", 2) == source.items("val", 2) == ["duck/img0", "duck/img1", "duck/img2"]
    assert FolderSource(folder_root).classes(0, "test") == [1, 2, 3]
    with pytest.raises(SgoneError, match="folds 0..0"):
        source.classes(1, "test")
    image, mask = source.load("duck/img1", 2)
    assert image.shape == (40, 56, 3) and set(np.unique(mask)) == {0, 1}
    assert not source.load_mask("duck/img1", 1).any()


def test_folder_unknown_class_lists_known_ones(folder_root):
    with pytest.raises(SgoneError) as info:
        FolderSource(folder_root, test_classes=["teapot"])
    assert str(info.value) == f"{folder_root}: unknown class name 'teapot' (known: cup, duck, kettle)"


def test_folder_problems(folder_root):
    (folder_root / "cup" / "masks" / "img2.png").unlink()
    (folder_root / "duck" / "masks" / "stray.png").write_bytes((folder_root / "duck" / "masks" / "img0.png").read_bytes())
    (folder_root / "kettle" / "masks").rename(folder_root / "kettle" / "labels")
    with pytest.raises(SgoneError, match="cup/images/img2.jpg: image has no mask"):
        FolderSource(folder_root)
    problems = FolderSource(folder_root, strict=False).check(shots=2)
    assert any("cup/images/img2.jpg: image has no mask" in p for p in problems)
    assert any("duck/masks/stray.png: mask has no image" in p for p in problems)
    assert any("kettle/masks: folder not found" in p for p in problems)
    assert any("class 1 'cup' has 2 image(s)" in p for p in problems)


def test_voclike_lists_and_masks(voclike_root):
    source = VocLikeSource(voclike_root, "classes.txt", test_classes=["banana"])
    assert source.class_names == {1: "apple", 2: "banana", 3: "cherry"}
    assert source.classes(0, "test") == [2] and source.classes(0, "train") == [1, 3]
    assert source.items("val", 2) == ["img001", "img004", "img005", "img006"]  # img001 has a small banana
    strict_small = VocLikeSource(voclike_root, "classes.txt", drop_small=True, min_pixels=100)
    assert strict_small.items("val", 2) == ["img004", "img005", "img006"]
    _, mask = source.load("img001", 2)
    assert (mask == 1).sum() == 9 and (mask == 255).any()
    assert source.cache_path is not None


def test_voclike_problems(voclike_root):
    with pytest.raises(SgoneError, match="unknown class name 'durian'"):
        VocLikeSource(voclike_root, "classes.txt", test_classes="durian")
    with pytest.raises(SgoneError, match="class-name file not found"):
        VocLikeSource(voclike_root, "names.txt")
    (voclike_root / "JPEGImages" / "img002.jpg").unlink()
    problems = VocLikeSource(voclike_root, "classes.txt", strict=False).check(shots=3)
    assert any("img002.png: label map has no image" in p for p in problems)
    assert any("class 1 'apple' has 3 image(s) in split 'val', 3-shot episodes need 4" in p for p in problems)
