"""`sgone label --engine local`: outputs, COCO, resume after a crash, manifests, refusals, bad input."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from sgone.cli import main
from tests.label.conftest import MODEL, index, journal, label_args, scene

pytestmark = pytest.mark.usefixtures("need_model")


def test_outputs_and_coco(collection, capsys):
    """Masks at the image's size, one index line per input, a COCO file whose RLE is the PNG."""
    pycoco = pytest.importorskip("pycocotools.coco")
    out = collection / "out"
    assert main(label_args(collection, out, "--overlays")) == 0
    keys = sorted(f"{d}/q{i}.png" for i, d in enumerate("aaabbb"))
    lines = index(out)
    assert [line["path"] for line in lines] == keys and {line["status"] for line in lines} == {"done"}
    api = pycoco.COCO(str(out / "annotations.json"))
    assert [c["name"] for c in api.dataset["categories"]] == ["object"]
    assert len(api.dataset["images"]) == 6
    annotated = 0
    for image in api.dataset["images"]:
        png = np.asarray(Image.open(out / "masks" / f"{image['file_name']}.png"))
        source = Image.open(collection / "photos" / image["file_name"])
        assert png.shape == (source.height, source.width) == (image["height"], image["width"])
        assert set(np.unique(png)) <= {0, 255}
        anns = api.loadAnns(api.getAnnIds(imgIds=image["id"]))
        assert len(anns) == int(png.any())
        for ann in anns:
            annotated += 1
            assert np.array_equal(api.annToMask(ann) * 255, png)
            line = next(x for x in lines if x["path"] == image["file_name"])
            assert line["foreground_share"] == pytest.approx(ann["area"] / png.size, abs=1e-6)
            assert 0.5 < line["mean_probability"] <= 1.0
        assert (out / "overlays" / f"{image['file_name']}.png").is_file()
    assert annotated >= 5  # the red disc is found in (nearly) every query
    assert "6 left" in capsys.readouterr().out


def test_resume_after_crash_redoes_nothing_finished(collection, monkeypatch, capsys):
    """A crash after two batches: the rerun labels only the rest; finished masks are not rewritten."""
    from sgone.predictor import Predictor

    out = collection / "out"
    real = Predictor.predict_batch
    calls = {"n": 0}

    def crashing(self, images):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as Ctrl-C in the middle of the third batch
        return real(self, images)

    monkeypatch.setattr(Predictor, "predict_batch", crashing)
    assert main(label_args(collection, out, "--batch-size", "2")) == 130
    first = journal(out)
    finished = {r["key"] for r in first}
    assert len(finished) == 4  # two batches of two were stored, the third was in flight
    assert [line["status"] for line in index(out)].count("pending") == 2  # index.jsonl rebuilt on the way out
    stamps = {k: os.stat(out / "masks" / f"{k}.png").st_mtime_ns for k in finished}
    # a crash can also cut the journal's last line short and leave a temporary file behind
    with open(out / ".sgone-label" / "results.jsonl", "a") as f:
        f.write('{"key": "b/q5.png", "status": "do')
    (out / "masks" / "b" / ".q5.png.png.x.tmp.png").write_bytes(b"half")
    monkeypatch.setattr(Predictor, "predict_batch", real)
    capsys.readouterr()
    assert main(label_args(collection, out, "--batch-size", "2")) == 0
    assert "4 done before, 2 left" in capsys.readouterr().out
    second = journal(out)[len(first):]
    assert {r["key"] for r in second} == {"b/q4.png", "b/q5.png"}  # nothing finished was redone
    assert all(os.stat(out / "masks" / f"{k}.png").st_mtime_ns == v for k, v in stamps.items())
    assert [line["status"] for line in index(out)] == ["done"] * 6
    coco = json.loads((out / "annotations.json").read_text())
    assert len(coco["images"]) == 6
    # a third run has nothing to do, even with the folder given another way (the key names an image)
    monkeypatch.chdir(collection)
    argv = label_args(collection, out)
    argv[argv.index(str(collection / "photos"))] = "photos/"
    assert main(argv) == 0
    assert "6 done before, 0 left" in capsys.readouterr().out
    assert len(journal(out)) == len(first) + 2


def test_manifest_formats(collection):
    """.txt (one path per line, # comments), .csv and .jsonl with a path column: same keys, same masks."""
    names = ["a/q0.png", "b/q4.png"]
    photos = collection / "photos"
    (photos / "list.txt").write_text("# two photos\n" + "\n".join(names) + "\n\n")
    (photos / "list.csv").write_text("path,note\n" + "".join(f"{n},x\n" for n in names))
    (photos / "list.jsonl").write_text("".join(json.dumps({"path": n, "id": i}) + "\n" for i, n in enumerate(names)))
    results = {}
    for kind in ("txt", "csv", "jsonl"):
        out = collection / f"out-{kind}"
        assert main(label_args(collection, out, inputs=(f"photos/list.{kind}",))) == 0
        assert [line["path"] for line in index(out)] == names
        results[kind] = [np.asarray(Image.open(out / "masks" / f"{n}.png")) for n in names]
    for kind in ("csv", "jsonl"):
        assert all(np.array_equal(a, b) for a, b in zip(results["txt"], results[kind]))


def test_glob_and_bad_inputs_are_recorded(collection, capsys):
    """A glob input; a missing manifest line and a corrupt file are recorded, the rest labelled."""
    photos = collection / "photos"
    (photos / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (collection / "list.txt").write_text("photos/a/q0.png\nphotos/a/missing.png\nphotos/a/broken.png\n")
    out = collection / "out"
    assert main(label_args(collection, out, inputs=("list.txt", "photos/b/*.png"))) == 0
    lines = {line["path"]: line for line in index(out)}
    assert lines["photos/a/missing.png"]["status"] == "error" and "file not found" in lines["photos/a/missing.png"]["error"]
    assert lines["photos/a/broken.png"]["status"] == "error"
    assert lines["photos/a/q0.png"]["status"] == "done" and lines["q5.png"]["status"] == "done"
    assert (out / "masks" / "photos" / "a" / "q0.png.png").is_file()
    assert "2 failed" in capsys.readouterr().out
    # --on-bad-input stop: stops with one line naming the file; what was written stays valid
    out2 = collection / "out2"
    assert main(label_args(collection, out2, "--on-bad-input", "stop", inputs=("list.txt",))) == 2
    err = capsys.readouterr().err
    assert "missing.png: file not found" in err and len(err.strip().splitlines()) == 1
    assert json.loads((out2 / "annotations.json").read_text())["images"][0]["file_name"] == "photos/a/q0.png"


def test_refusals(collection, capsys):
    """Another model, support set or --size into an output is refused in one line; --overwrite restarts."""
    out = collection / "out"
    assert main(label_args(collection, out, inputs=("photos/a",))) == 0
    mask_file = out / "masks" / "q0.png.png"
    assert mask_file.is_file()
    capsys.readouterr()
    other = collection / "other_mask.png"
    _, disc = scene(64, 80, 34, 40, 12, seed=1)
    Image.fromarray(disc * 255).save(other)
    cases = {
        "another model (prototype-mobilenet_v2, now prototype-vgg16)":
            [a if a != MODEL else "prototype-vgg16" for a in label_args(collection, out, inputs=("photos/a",))],
        "another support set":
            [a if not a.endswith("support_mask.png") else str(other)
             for a in label_args(collection, out, inputs=("photos/a",))],
        "another --size (128, now 96)": label_args(collection, out, "--size", "96", inputs=("photos/a",)),
        "another --flip (None, now True)": label_args(collection, out, "--flip", inputs=("photos/a",)),
    }
    for words, argv in cases.items():
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "--overwrite" in err and len(err.splitlines()) == 1, err
    assert main(label_args(collection, out, "--size", "96", "--overwrite", inputs=("photos/b",))) == 0
    assert not mask_file.exists() and (out / "masks" / "q4.png.png").is_file()
    # someone else's masks/ folder is not taken over
    foreign = collection / "foreign"
    (foreign / "masks").mkdir(parents=True)
    assert main(label_args(collection, foreign)) == 2
    assert "did not write" in capsys.readouterr().err


def test_two_classes(collection):
    """--class groups supports; a --supports CSV gives the same classes; masks/<class>/..., one
    category per class, and the classes never overlap."""
    pycoco = pytest.importorskip("pycocotools.coco")
    root = collection
    image, disc = scene(64, 80, 30, 24, 14, seed=2, square=(20, 48, 24))
    Image.fromarray(image).save(root / "two.png")
    Image.fromarray(disc * 255).save(root / "disc.png")
    square = np.zeros(disc.shape, np.uint8)
    square[20:44, 48:72] = 255
    Image.fromarray(square).save(root / "square.png")
    queries = root / "queries"
    queries.mkdir()
    for i in range(3):
        q, _ = scene(64, 96, 30, 24 + 4 * i, 12, seed=20 + i, square=(16, 56 + 3 * i, 24))
        Image.fromarray(q).save(queries / f"s{i}.png")
    common = ["--input", str(queries), "--model", MODEL, "--size", "128", "--quiet"]
    out = root / "out"
    assert main(["label", "--class", "disc", "--support", str(root / "two.png"), "--support-mask", str(root / "disc.png"),
                 "--class", "square", "--support", str(root / "two.png"), "--support-mask", str(root / "square.png"),
                 "--output", str(out), *common]) == 0
    (root / "supports.csv").write_text("image,mask,class\ntwo.png,disc.png,disc\ntwo.png,square.png,square\n")
    out2 = root / "out2"
    assert main(["label", "--supports", str(root / "supports.csv"), "--output", str(out2), *common]) == 0
    api = pycoco.COCO(str(out / "annotations.json"))
    assert [c["name"] for c in api.dataset["categories"]] == ["disc", "square"]
    for i in range(3):
        a = np.asarray(Image.open(out / "masks" / "disc" / f"s{i}.png.png")) > 0
        b = np.asarray(Image.open(out / "masks" / "square" / f"s{i}.png.png")) > 0
        assert a.any() and b.any() and not (a & b).any()
        assert np.array_equal(a, np.asarray(Image.open(out2 / "masks" / "disc" / f"s{i}.png.png")) > 0)
    assert {a["category_id"] for a in api.dataset["annotations"]} == {1, 2}
    assert "classes" in index(out)[0]


def test_argument_errors(collection, capsys):
    """Problems found before any model loads: one line each."""
    out = collection / "out"
    bad = [
        (label_args(collection, out, inputs=("nowhere",)), "nowhere: no such file, folder or glob match"),
        (label_args(collection, out, inputs=("photos/*.jpg",)), "matches no image files"),
        (label_args(collection, out, "--address", "127.0.0.1:1"), "--address: only with --engine ray"),
        (label_args(collection, out, "--workers", "0"), "--workers 0: must be at least 1"),
        (["label", "--input", str(collection / "photos"), "--output", str(out)], "no support"),
        (["label", "--class", "x", "--input", str(collection / "photos"), "--output", str(out)],
         "--class x: no --support"),
    ]
    (collection / "p.csv").write_text("file\nx.png\n")
    bad.append((label_args(collection, out, inputs=("p.csv",)), "needs a header with a 'path' column"))
    for argv, words in bad:
        assert main(argv) == 2, words
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, err
    assert not (out / "masks").exists()


def test_csv_manifest_header_with_spaces_around_path(tmp_path):
    from sgone.label.inputs import read_manifest

    manifest = tmp_path / "list.csv"
    manifest.write_text("note , path \nx, a.png\ny,b.png \n")
    assert read_manifest(manifest) == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]  # beside the manifest
