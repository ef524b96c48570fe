"""The web app's work without a browser: masks from the editor, limits, errors, the session's
support cache, result files, video, and `sgone app` without Gradio."""
from __future__ import annotations

import importlib.util
import zipfile

import numpy as np
import pytest
from PIL import Image

from sgone.app.core import (Limits, ModelCache, Session, editor_support, first_frame, load_image, load_mask,
                            unique_stems)
from sgone.errors import SgoneError
from sgone.predictor import Predictor

SIZE = 96  # network input side: keeps each model call to a few milliseconds


def scene(h: int, w: int, cy: float, cx: float, r: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A red disc on a noisy striped background -> (HxWx3 uint8, HxW {0,1})."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([np.sin(x / 3.0 + seed) * 40 + 100, np.cos(y / 4.0) * 40 + 110, (x + y) % 16 * 6 + 60.0], axis=2)
    image += rng.normal(0, 10, image.shape)
    disc = (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    image[disc] = (230, 40, 40)
    return np.clip(image, 0, 255).astype(np.uint8), disc.astype(np.uint8)


@pytest.fixture(scope="module")
def models():
    return ModelCache("cpu")


@pytest.fixture
def session(models, tmp_path):
    s = Session(models, size=SIZE, root=tmp_path)
    yield s
    s.close()


# ----------------------------------------------------------------------------- editor and inputs
def test_editor_mask_is_painted_strokes_plus_the_uploaded_mask():
    image, disc = scene(40, 50, 20, 25, 8, seed=1)
    layer = np.zeros((40, 50, 4), dtype=np.uint8)
    layer[2:5, 2:6] = (255, 0, 0, 200)  # a stroke
    uploaded = np.zeros((40, 50), dtype=np.uint8)
    uploaded[30:33, 40:44] = 1
    value = {"background": np.dstack([image, np.full((40, 50), 255, np.uint8)]), "layers": [layer]}
    got_image, mask = editor_support(value, uploaded)
    assert np.array_equal(got_image, image)
    expected = np.zeros((40, 50), dtype=np.uint8)
    expected[2:5, 2:6] = 1
    expected[30:33, 40:44] = 1
    assert np.array_equal(mask, expected)


@pytest.mark.parametrize("value, message", [
    (None, "no support image"),
    ({"background": np.zeros((8, 8, 4), np.uint8), "layers": [np.zeros((8, 8, 4), np.uint8)]}, "is empty"),
    ({"background": np.zeros((8, 8, 4), np.uint8), "layers": [np.full((9, 8, 4), 255, np.uint8)]}, "8x9"),
])
def test_editor_problems_are_one_sentence(value, message):
    with pytest.raises(SgoneError, match=message):
        editor_support(value)


def test_uploaded_files_are_named_as_the_person_named_them(tmp_path):
    upload = tmp_path / "gradio" / "3f2a9c" / "holiday.jpg"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"not a picture")
    with pytest.raises(SgoneError) as info:
        load_image(upload, Limits())
    assert str(info.value).startswith("holiday.jpg: ") and str(tmp_path) not in str(info.value)


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((100, 120, 3), np.uint8)).save(path)
    with pytest.raises(SgoneError, match=r"big.png: 120x100 .* limit of 0 megapixels"):
        load_image(path, Limits(max_pixels=10_000))
    assert load_image(path, Limits(max_pixels=12_000)).shape == (100, 120, 3)


def test_mask_of_another_size_and_empty_mask(tmp_path):
    path = tmp_path / "m.png"
    Image.fromarray(np.full((30, 40), 255, np.uint8)).save(path)
    with pytest.raises(SgoneError, match=r"m.png: mask size 40x30 differs from the support image's size 50x30"):
        load_mask(path, (30, 50))
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(path)
    with pytest.raises(SgoneError, match="m.png: the mask is empty"):
        load_mask(path, (30, 40))


def test_unique_stems():
    assert unique_stems(["q.jpg", "q.png", "r.jpg", "q.webp"]) == ["q", "q_2", "r", "q_3"]


# ----------------------------------------------------------------------------- the session
def test_support_is_encoded_once_while_queries_and_threshold_change(session, monkeypatch):
    calls = []
    real = Predictor.set_support
    monkeypatch.setattr(Predictor, "set_support", lambda self, *a, **k: calls.append(self) or real(self, *a, **k))
    support, disc = scene(64, 80, 30, 36, 16, seed=1)
    q1, _ = scene(90, 120, 50, 70, 22, seed=2)
    q2, _ = scene(50, 70, 24, 30, 12, seed=3)
    model = "prototype-mobilenet_v2"

    first = session.segment(model, [(support, disc)], [("a.jpg", q1)], 0.5)
    second = session.segment(model, [(support.copy(), disc.copy())], [("b.jpg", q2), ("b.png", q1)], 0.3)
    assert (first.encoded_support, second.encoded_support, calls) == (True, False, [session.predictor])
    # the masks are the Predictor's own, as 0/255 PNGs at each query's size
    reference = Predictor(model, size=SIZE, threshold=0.3)
    reference.set_support([support], [disc])
    assert [p.name for p in second.masks] == ["b.png", "b_2.png"]
    for path, query in zip(second.masks, (q2, q1)):
        written = np.asarray(Image.open(path))
        assert written.shape == query.shape[:2] and set(np.unique(written)) <= {0, 255}
        assert np.array_equal(written == 255, reference.predict(query).mask == 1)
    with zipfile.ZipFile(second.archive) as archive:
        assert sorted(archive.namelist()) == sorted(p.name for p in (*second.masks, *second.overlays, *second.heatmaps))
    assert not first.masks[0].exists()  # the previous run's files are gone
    changed = disc.copy()
    changed[0, 0] = 1
    assert session.segment(model, [(support, changed)], [("c.jpg", q2)], 0.5).encoded_support
    assert calls.count(session.predictor) == 2


def test_a_failed_support_leaves_no_stale_cache(session):
    support, disc = scene(200, 240, 100, 120, 50, seed=1)
    query, _ = scene(50, 70, 24, 30, 12, seed=3)
    model = "prototype-mobilenet_v2"
    session.segment(model, [(support, disc)], [("q.jpg", query)], 0.5)
    speck = np.zeros_like(disc)
    speck[6, 6] = 1  # falls between the pixels sampled by the resize to the network input
    with pytest.raises(SgoneError, match="too thin"):
        session.segment(model, [(support, speck)], [("q.jpg", query)], 0.5)
    # the predictor lost its old support: asking for it again must encode it again
    assert session.segment(model, [(support, disc)], [("q.jpg", query)], 0.5).encoded_support


def test_close_removes_every_temporary_file(models, tmp_path):
    s = Session(models, size=SIZE, root=tmp_path)
    (s.new_run_dir() / "x.png").write_bytes(b"x")
    s.close()
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- video
def test_video_from_frames_and_the_frame_limit(session, tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    frames = []
    for i in range(4):
        image, disc = scene(48, 64, 24, 20 + 6 * i, 10, seed=10 + i)
        path = tmp_path / f"f{i}.png"
        Image.fromarray(image).save(path)
        frames.append(path)
        if i == 0:
            first_mask = disc
    with pytest.raises(SgoneError, match="4 frames, over this app's limit of 3"):
        first_frame(frames, Limits(max_frames=3), tmp_path / "clip")
    clip, first = first_frame(list(reversed(frames)), Limits(), tmp_path / "clip")  # frames sort by name
    assert np.array_equal(first, np.asarray(Image.open(frames[0])))
    result = session.segment_video("prototype-mobilenet_v2", clip, first_mask, 0.5, Limits())
    assert result.video is not None and result.video.stat().st_size > 0
    with zipfile.ZipFile(result.archive) as archive:
        assert sorted(archive.namelist()) == ["f0.png", "f1.png", "f2.png", "f3.png"]
    assert session.support_key is None  # the image support must be encoded again


# ----------------------------------------------------------------------------- the command
def test_app_without_gradio_says_how_to_get_it(monkeypatch, capsys):
    from sgone.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["app"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install 'sgone[app]'" in err


def test_app_rejects_a_bad_port_before_serving(capsys):
    from sgone.cli import main

    if importlib.util.find_spec("gradio") is None:
        pytest.skip("gradio not installed: the missing extra is reported first")
    assert main(["app", "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err


def test_serve_takes_a_fractional_upload_limit_and_removes_its_files(tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    import socket
    import tempfile

    from sgone.app import serve

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the app's folder goes under tmp_path
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))  # restored afterwards
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seen = []

    class Stop(Exception):
        pass

    def ready(url):
        seen.append((url, sorted(p.name[:10] for p in tmp_path.iterdir())))
        raise Stop

    with pytest.raises(Stop):
        serve(port=port, limits=Limits(max_upload_mb=0.5), ready=ready)
    assert seen == [(f"http://127.0.0.1:{port}/", ["sgone-app-"])]
    assert list(tmp_path.iterdir()) == []


def test_extra_supports_pair_images_and_masks_by_file_name(tmp_path):
    from sgone.app.core import extra_supports

    (tmp_path / "u1").mkdir()
    (tmp_path / "u2").mkdir()
    images, masks = [], []
    for name, (h, w) in (("b", (30, 40)), ("a", (20, 24))):
        image, disc = scene(h, w, h / 2, w / 2, 6, seed=len(name))
        Image.fromarray(image).save(tmp_path / "u1" / f"{name}.png")
        Image.fromarray(disc * 255).save(tmp_path / "u2" / f"{name}_mask.png")
        images.append(tmp_path / "u1" / f"{name}.png")
        masks.append(tmp_path / "u2" / f"{name}_mask.png")
    pairs = extra_supports(images, list(reversed(masks)), Limits())  # upload order does not matter
    assert [p[0].shape[:2] for p in pairs] == [(20, 24), (30, 40)]
    assert all(p[1].shape == p[0].shape[:2] and p[1].any() for p in pairs)
    with pytest.raises(SgoneError, match=r"2 extra support image\(s\) but 1 mask\(s\)"):
        extra_supports(images, masks[:1], Limits())
    with pytest.raises(SgoneError, match=r"b_mask.png: mask size 40x30 differs from support a.png's size 24x20"):
        extra_supports(images[1:], masks[:1], Limits())


def test_the_video_tab_has_its_own_menu_on_the_video_model(tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    from sgone.app import ui
    from sgone.models.registry import DEFAULT_MODEL
    from sgone.video.model import DEFAULT_VIDEO_MODEL

    monkeypatch.setattr(ui, "_warm", lambda cache, name: None)  # no model load: only the page is built

    def menus(app) -> dict:
        return {b.elem_id: b.value for b in app.blocks.values() if getattr(b, "elem_id", None) in ("model", "video-model")}

    assert menus(ui.build_app(workdir=tmp_path)) == {"model": DEFAULT_MODEL, "video-model": DEFAULT_VIDEO_MODEL}
    chosen = "prototype-mobilenet_v2-multiscale"
    assert menus(ui.build_app(model=chosen, workdir=tmp_path)) == {"model": chosen, "video-model": chosen}


def test_one_bad_query_is_listed_and_the_others_are_segmented(session, tmp_path):
    from sgone.app.core import load_queries

    support, disc = scene(64, 80, 30, 36, 16, seed=1)
    portrait, _ = scene(90, 50, 50, 25, 14, seed=2)
    Image.fromarray(portrait).save(tmp_path / "tall.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a picture")
    images, problems = load_queries([tmp_path / "tall.png", tmp_path / "broken.jpg"], Limits())
    assert [name for name, _ in images] == ["tall.png"] and len(problems) == 1
    assert problems[0].startswith("broken.jpg: ")
    with pytest.raises(SgoneError, match="^broken.jpg: "):
        load_queries([tmp_path / "broken.jpg"], Limits())
    result = session.segment("prototype-mobilenet_v2", [(support, disc)], images, 0.5)
    assert result.names == ["tall.png"] and result.errors == []
    # the heat map carries its colour bar: as tall as the query, wider by the bar
    heat = Image.open(result.heatmaps[0])
    assert heat.height == 90 and heat.width > 50


def test_the_video_tabs_empty_mask_message_offers_no_upload():
    blank = {"background": np.zeros((8, 8, 4), np.uint8), "layers": []}
    with pytest.raises(SgoneError, match="the mask of the first frame is empty: paint the object with the brush$"):
        editor_support(blank, what="first frame", can_upload=False)
    with pytest.raises(SgoneError, match="or upload its mask$"):
        editor_support(blank)


def test_the_small_object_steps_are_the_predictors_and_off_unless_asked(session):
    from sgone.app.core import SMALL_OBJECT_STEPS

    support, disc = scene(64, 80, 30, 36, 16, seed=1)
    query, _ = scene(90, 120, 50, 70, 22, seed=2)
    model = "prototype-mobilenet_v2"
    session.segment(model, [(support, disc)], [("q.jpg", query)], 0.5)
    assert (session.predictor.self_support, session.predictor.zoom, session.predictor.flip) == (False, False, False)
    both = session.segment(model, [(support, disc)], [("q.jpg", query)], 0.5, steps=list(SMALL_OBJECT_STEPS.values()))
    assert (session.predictor.self_support, session.predictor.zoom, session.predictor.flip) == (True, True, True)
    reference = Predictor(model, size=SIZE, self_support=True, zoom=True, flip=True)
    reference.set_support([support], [disc])
    assert np.array_equal(np.asarray(Image.open(both.masks[0])) == 255, reference.predict(query).mask == 1)
    with pytest.raises(SgoneError, match="^sharpen: unknown step"):
        session.segment(model, [(support, disc)], [("q.jpg", query)], 0.5, steps=["sharpen"])
