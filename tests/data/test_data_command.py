"""`sgone data` and the source registry."""
from __future__ import annotations

import pytest

from sgone.cli import main
from sgone.data.sources import SOURCES, build_source
from sgone.errors import SgoneError


def test_registry_builds_by_name(folder_root, voclike_root):
    assert {"pascal", "coco", "fss", "folder", "voclike", "synthetic", "davis2016"} <= set(SOURCES)
    assert build_source("folder", folder_root, test_classes="duck").classes(0, "test") == [2]
    assert build_source("voclike", voclike_root, class_names_file="classes.txt").name == "voclike"
    with pytest.raises(SgoneError, match="imagenet: unknown data set"):
        build_source("imagenet", folder_root)
    with pytest.raises(SgoneError, match="needs a root folder"):
        build_source("pascal", None)
    with pytest.raises(SgoneError, match="has no option split_style"):
        build_source("folder", folder_root, split_style="contiguous")


def test_data_command_lists_a_good_tree_and_draws_a_grid(voc_root, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    code = main(["data", "--dataset", "voclike", "--root", str(voc_root / "x"), "--class-names", "c.txt"])
    assert code == 2
    capsys.readouterr()
    # PASCAL lists need objects of 2*32*32 pixels by default; these tiny images pass with --keep-small
    code = main(["data", "--dataset", "pascal", "--root", str(voc_root), "--keep-small", "--fold", "1",
                 "--shots", "2", "--grid", str(grid), "--episodes", "3", "--seed", "4"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "fold 1: 15 train classes" in out and "test classes: bus, car, cat, chair, cow" in out
    assert "no problems found" in out and "aeroplane" in out
    from sgone.io import read_image
    picture = read_image(grid)
    assert picture.ndim == 3 and picture.shape[0] > 3 * 100  # three rows of tiles


def test_data_command_reports_every_problem(folder_root, capsys):
    (folder_root / "cup" / "masks" / "img2.png").unlink()
    (folder_root / "duck" / "images" / "img0.jpg").unlink()
    code = main(["data", "--dataset", "folder", "--root", str(folder_root), "--test-classes", "cup,teapot"])
    out = capsys.readouterr().out
    assert code == 2
    problem_lines = [line for line in out.splitlines() if line.startswith("  /")]
    assert len(problem_lines) >= 3
    assert "cup/images/img2.jpg: image has no mask" in out
    assert "duck/masks/img0.png: mask has no image" in out
    assert "unknown class name 'teapot' (known: cup, duck, kettle)" in out


def test_data_command_missing_root_is_one_line(tmp_path, capsys):
    code = main(["data", "--dataset", "coco", "--root", str(tmp_path / "none")])
    out = capsys.readouterr().out
    assert code == 2
    assert f"{tmp_path / 'none'}: folder not found" in out
    assert out.count("problem") == 1 and "1 problem(s)" in out
