"""sgone.io: images of every format and mode, masks of every kind, bad files, atomic writes."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from PIL import Image

from sgone.errors import SgoneError
from sgone.io import (atomic_path, read_image, read_image_fit, read_label, read_mask, save_image, voc_palette,
                      write_label_png, write_mask_png)

H, W = 48, 64  # height, width of the generated test images (not square, to catch transposes)


def _rgb() -> np.ndarray:
    """Smooth colour gradients: survive lossy compression well enough to compare loosely."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([x * 255 // (W - 1), y * 255 // (H - 1), np.full_like(x, 96)], axis=2).astype(np.uint8)


def _disc(h: int = H, w: int = W, cy: float | None = None, cx: float | None = None, r: float = 12) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    cy = h / 2 if cy is None else cy
    cx = w / 2 if cx is None else cx
    return ((y - cy) ** 2 + (x - cx) ** 2 <= r * r).astype(np.uint8)


def _assert_one_line(exc: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


# ----------------------------------------------------------------------------------- images
LOSSLESS = {"png": "PNG", "bmp": "BMP", "tif": "TIFF"}
FORMAT_MODES = [
    # (suffix, save kwargs, mode)
    *[(s, {}, m) for s in ("png", "tif") for m in ("RGB", "L", "LA", "RGBA", "P", "I;16")],
    ("png", {}, "1"),
    *[("bmp", {}, m) for m in ("RGB", "L", "P", "1")],
    ("tif", {}, "CMYK"),
    *[("jpg", {"quality": 95}, m) for m in ("RGB", "L", "CMYK")],
    ("webp", {"lossless": True}, "RGB"),
    ("webp", {"lossless": True}, "RGBA"),
    ("webp", {"quality": 90}, "RGB"),
]


def _make(mode: str, rgb: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """An image of `mode` and the RGB array read_image should return for it."""
    base = Image.fromarray(rgb)
    if mode == "RGB":
        return base, rgb
    if mode == "L":
        grey = base.convert("L")
        return grey, np.repeat(np.asarray(grey)[:, :, None], 3, axis=2)
    if mode in ("LA", "RGBA"):
        alpha = np.full((H, W), 255, np.uint8)
        alpha[:, : W // 4] = 0  # left quarter transparent -> shown on white
        img = base.convert(mode[:-1])
        img.putalpha(Image.fromarray(alpha))
        expected = np.asarray(img.convert("RGB")).copy()
        expected[:, : W // 4] = 255
        return img, expected
    if mode == "P":
        img = base.quantize(colors=16)
        return img, np.asarray(img.convert("RGB"))
    if mode == "1":
        img = base.convert("L").point(lambda v: 255 if v >= 128 else 0).convert("1")
        return img, np.repeat(np.asarray(img.convert("L"))[:, :, None], 3, axis=2)
    if mode == "CMYK":
        img = base.convert("CMYK")
        return img, np.asarray(img.convert("RGB"))
    if mode == "I;16":
        grey = np.asarray(base.convert("L")).astype(np.uint16) * 257  # full 16-bit range
        img = Image.fromarray(grey)
        assert img.mode == "I;16"
        top = grey.max()
        expected = np.clip(grey / top * 255 + 0.5, 0, 255).astype(np.uint8)
        return img, np.repeat(expected[:, :, None], 3, axis=2)
    raise AssertionError(mode)


@pytest.mark.parametrize("suffix,kwargs,mode", FORMAT_MODES,
                         ids=[f"{s}-{m}{'-lossless' if k.get('lossless') else ''}" for s, k, m in FORMAT_MODES])
def test_read_image_formats_and_modes(tmp_path, suffix, kwargs, mode):
    img, expected = _make(mode, _rgb())
    path = tmp_path / f"img.{suffix}"
    img.save(path, **kwargs)
    out = read_image(path)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    diff = np.abs(out.astype(int) - expected.astype(int))
    if suffix in LOSSLESS or kwargs.get("lossless"):
        assert diff.max() <= 1, (suffix, mode, diff.max())
    else:  # lossy: close on average
        assert diff.mean() < 6, (suffix, mode, diff.mean())


def test_read_image_palette_transparency_on_white(tmp_path):
    img = Image.new("P", (W, H), 1)
    img.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    img.info["transparency"] = 0
    img.paste(0, (0, 0, 10, H))  # left strip uses the transparent index
    path = tmp_path / "p.png"
    img.save(path, transparency=0)
    out = read_image(path)
    assert (out[:, :10] == 255).all()
    assert (out[:, 10:] == (200, 10, 10)).all()


def _exif_jpeg(path, stored: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    Image.fromarray(stored).save(path, quality=95, exif=exif.tobytes())


def test_read_image_applies_exif_orientation(tmp_path):
    stored = np.zeros((H, W, 3), np.uint8)  # 64 wide, 48 high as stored
    stored[:, : W // 2] = (255, 0, 0)  # left half red
    stored[:, W // 2:] = (0, 0, 255)  # right half blue
    path = tmp_path / "rotated.jpg"
    _exif_jpeg(path, stored, 6)  # 6: turn 90 degrees clockwise to display
    out = read_image(path)
    assert out.shape == (W, H, 3)  # width and height swapped
    top, bottom = out[: W // 2 - 4].reshape(-1, 3).mean(0), out[W // 2 + 4:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60  # the stored left (red) is now at the top
    assert bottom[2] > 200 and bottom[0] < 60
    # orientation 1 (upright) leaves the pixels alone
    _exif_jpeg(tmp_path / "upright.jpg", stored, 1)
    assert read_image(tmp_path / "upright.jpg").shape == (H, W, 3)


def test_read_mask_applies_exif_orientation(tmp_path):
    stored = np.zeros((H, W), np.uint8)
    stored[:, : W // 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 8  # 8: turn 90 degrees counter-clockwise
    Image.fromarray(stored).save(tmp_path / "m.png", exif=exif.tobytes())
    mask = read_mask(tmp_path / "m.png")
    assert mask.shape == (W, H)
    assert (mask[W // 2:] == 1).all() and (mask[: W // 2] == 0).all()  # stored left -> bottom


def test_read_image_file_is_closed(tmp_path):
    """A multi-page TIFF keeps its file open in PIL unless the reader closes it."""
    import gc
    import warnings

    frames = [Image.fromarray(_rgb()), Image.fromarray(255 - _rgb())]
    path = tmp_path / "pages.tif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        out = read_image(path)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert np.array_equal(out, _rgb())  # first page


# ------------------------------------------------------------------------------ bad files
def _truncated(tmp_path, fmt: str):
    path = tmp_path / f"cut.{fmt.lower().replace('jpeg', 'jpg')}"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path, fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("reader", [read_image, read_mask, read_label], ids=["image", "mask", "label"])
@pytest.mark.parametrize("case", ["missing", "folder", "text", "empty", "truncated-jpeg", "truncated-png"])
def test_bad_files_raise_one_line_error_naming_the_file(tmp_path, reader, case):
    if case == "missing":
        path = tmp_path / "nope.png"
    elif case == "folder":
        path = tmp_path / "dir.png"
        path.mkdir()
    elif case == "text":
        path = tmp_path / "notes.png"
        path.write_text("this is not an image\nsecond line\n")
    elif case == "empty":
        path = tmp_path / "empty.jpg"
        path.write_bytes(b"")
    elif case == "truncated-jpeg":
        path = _truncated(tmp_path, "JPEG")
    else:
        path = _truncated(tmp_path, "PNG")
    with pytest.raises(SgoneError) as exc:
        reader(path)
    _assert_one_line(exc, str(path))
    assert str(exc.value).startswith(f"{path}: ")


# ----------------------------------------------------------------------------------- masks
def _save(path, array, mode=None, **kwargs):
    img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    img.save(path, **kwargs)
    return path


def test_mask_zero_one_and_zero_255(tmp_path):
    disc = _disc()
    assert np.array_equal(read_mask(_save(tmp_path / "a.png", disc)), disc)
    assert np.array_equal(read_mask(_save(tmp_path / "b.png", disc * 255)), disc)
    assert np.array_equal(read_mask(_save(tmp_path / "c.bmp", disc * 255)), disc)
    assert np.array_equal(read_mask(_save(tmp_path / "d.tif", disc * 255)), disc)
    one = Image.fromarray(disc * 255).convert("1")
    one.save(tmp_path / "e.png")
    assert np.array_equal(read_mask(tmp_path / "e.png"), disc)


def test_mask_grey_jpeg_is_thresholded(tmp_path):
    disc = _disc()
    mask = read_mask(_save(tmp_path / "m.jpg", disc * 255, quality=75))
    assert set(np.unique(mask).tolist()) <= {0, 1}
    assert (mask != disc).mean() < 0.02


def _voc_mask(tmp_path, name="voc.png"):
    labels = np.zeros((H, W), np.uint8)
    person, dog = _disc(cx=18, r=10).astype(bool), _disc(cx=46, r=10).astype(bool)
    labels[person], labels[dog] = 15, 12
    ring = _disc(cx=18, r=12).astype(bool) & ~person  # the VOC "void" band around objects
    labels[ring] = 255
    img = Image.frombytes("P", (W, H), labels.tobytes())
    img.putpalette(voc_palette())
    img.save(tmp_path / name)
    return tmp_path / name, labels


def test_mask_voc_palette_all_classes_and_ignore(tmp_path):
    path, labels = _voc_mask(tmp_path)
    assert Image.open(path).mode == "P"
    mask = read_mask(path)
    assert np.array_equal(mask == 1, (labels == 15) | (labels == 12))
    assert np.array_equal(mask == 255, labels == 255)
    assert np.array_equal(read_label(path), labels)


def test_mask_voc_palette_class_id(tmp_path):
    path, labels = _voc_mask(tmp_path)
    mask = read_mask(path, class_id=12)
    assert np.array_equal(mask == 1, labels == 12)
    assert np.array_equal(mask == 255, labels == 255)  # ignore stays ignore
    assert not (mask[labels == 15] == 1).any()


def test_mask_class_id_absent_or_invalid(tmp_path):
    path, _ = _voc_mask(tmp_path)
    with pytest.raises(SgoneError) as exc:
        read_mask(path, class_id=7)
    _assert_one_line(exc, str(path), "class id 7", "[12, 15]")
    for bad in (0, 255, -1):
        with pytest.raises(SgoneError) as exc:
            read_mask(path, class_id=bad)
        _assert_one_line(exc, str(path), str(bad))


def test_mask_single_channel_class_ids(tmp_path):
    labels = np.zeros((H, W), np.uint8)
    labels[_disc(cx=18, r=8).astype(bool)] = 3
    labels[_disc(cx=46, r=8).astype(bool)] = 5
    path = _save(tmp_path / "ids.png", labels)
    assert np.array_equal(read_mask(path) == 1, labels > 0)  # small ids: every class is the object
    assert np.array_equal(read_mask(path, class_id=5) == 1, labels == 5)


def test_mask_rgb_non_black_is_object(tmp_path):
    disc, other = _disc(cx=20, r=9).astype(bool), _disc(cx=46, r=9).astype(bool)
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[disc] = (192, 128, 128)  # VOC person colour
    rgb[other] = (0, 0, 64)  # a dark colour is still not black
    mask = read_mask(_save(tmp_path / "rgb.png", rgb))
    assert np.array_equal(mask == 1, disc | other)
    with pytest.raises(SgoneError) as exc:
        read_mask(tmp_path / "rgb.png", class_id=1)
    _assert_one_line(exc, str(tmp_path / "rgb.png"), "--class-id")


def test_mask_rgb_grey_with_class_id(tmp_path):
    labels = np.zeros((H, W), np.uint8)
    labels[_disc().astype(bool)] = 9
    path = _save(tmp_path / "grey_rgb.png", np.repeat(labels[:, :, None], 3, axis=2))
    assert np.array_equal(read_mask(path, class_id=9) == 1, labels == 9)


def test_mask_rgb_jpeg_noise_near_black_is_background(tmp_path):
    disc = _disc(r=14).astype(bool)
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[disc] = (220, 30, 30)
    path = _save(tmp_path / "rgb.jpg", rgb, quality=60)
    noisy = np.asarray(Image.open(path)).max(axis=2)
    assert ((noisy > 0) & ~disc).any()  # the premise: JPEG put non-black pixels outside the disc
    mask = read_mask(path)
    assert (mask[disc] == 1).all()
    assert not (mask[~_disc(r=17).astype(bool)] == 1).any()  # only edge ringing, nothing far away


def test_mask_rgba_transparent_is_background(tmp_path):
    disc = _disc().astype(bool)
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere...
    rgba[disc, 3] = 255  # ...but only the disc is opaque
    mask = read_mask(_save(tmp_path / "cutout.png", rgba))
    assert np.array_equal(mask == 1, disc)
    la = np.zeros((H, W, 2), np.uint8)
    la[..., 0] = 255
    la[disc, 1] = 255
    Image.merge("LA", [Image.fromarray(la[..., 0]), Image.fromarray(la[..., 1])]).save(tmp_path / "la.png")
    assert np.array_equal(read_mask(tmp_path / "la.png") == 1, disc)


def test_mask_16_bit_and_float(tmp_path):
    disc = _disc()
    binary16 = Image.fromarray(disc.astype(np.uint16) * 65535)
    binary16.save(tmp_path / "m16.png")
    assert Image.open(tmp_path / "m16.png").mode.startswith("I")
    assert np.array_equal(read_mask(tmp_path / "m16.png"), disc)
    # 8-bit content in a 16-bit file: a VOC-like map with ignore must keep its classes
    labels = np.zeros((H, W), np.uint16)
    labels[disc.astype(bool)] = 1
    labels[:2] = 255
    Image.fromarray(labels).save(tmp_path / "l16.png")
    mask = read_mask(tmp_path / "l16.png")
    assert np.array_equal(mask == 1, labels == 1) and np.array_equal(mask == 255, labels == 255)
    # class ids above 255 in a 16-bit label map
    big = np.zeros((H, W), np.uint16)
    big[disc.astype(bool)] = 1000
    Image.fromarray(big).save(tmp_path / "big16.png")
    assert np.array_equal(read_mask(tmp_path / "big16.png", class_id=1000), disc)
    # float TIFF, 0.0 / 1.0
    Image.fromarray(disc.astype(np.float32)).save(tmp_path / "f.tif")
    assert np.array_equal(read_mask(tmp_path / "f.tif"), disc)


# ---------------------------------------------------------------------------------- writing
def test_write_mask_png_single_channel_0_255(tmp_path):
    mask = np.zeros((H, W), np.uint8)
    mask[_disc().astype(bool)] = 1
    mask[:3] = 255  # ignore is written as background
    write_mask_png(tmp_path / "out" / "m.png", mask)
    img = Image.open(tmp_path / "out" / "m.png")
    assert img.mode == "L" and img.size == (W, H)
    arr = np.asarray(img)
    assert set(np.unique(arr).tolist()) == {0, 255}
    assert np.array_equal(arr == 255, mask == 1)
    assert list(tmp_path.joinpath("out").iterdir()) == [tmp_path / "out" / "m.png"]


def test_atomic_writes_leave_no_temp_files_and_keep_old_file_on_error(tmp_path):
    target = tmp_path / "result.png"
    save_image(target, _rgb())
    before = target.read_bytes()
    for error in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with atomic_path(target) as tmp:
                tmp.write_bytes(b"half")
                raise error
        assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.png"]
    assert not list(tmp_path.glob(".*.tmp*"))


def test_atomic_write_uses_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        save_image(tmp_path / "r.png", _rgb())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.png").stat().st_mode) == 0o644  # not mkstemp's private 0600


def test_write_label_png_round_trip_with_voc_colours(tmp_path):
    labels = np.zeros((6, 9), np.uint8)
    labels[1:3, 2:5], labels[4, :], labels[0, 0] = 15, 255, 1
    write_label_png(tmp_path / "labels.png", labels)
    assert np.array_equal(read_label(tmp_path / "labels.png"), labels)
    with Image.open(tmp_path / "labels.png") as img:
        assert img.mode == "P"
        rgb = np.asarray(img.convert("RGB"))
    assert tuple(rgb[1, 2]) == (192, 128, 128)  # VOC's person colour
    assert tuple(rgb[4, 0]) == (224, 224, 192)  # VOC's void colour
    assert read_mask(tmp_path / "labels.png", class_id=15)[4, 0] == 255
    assert not list(tmp_path.glob(".*.tmp*"))


# ------------------------------------------------------------------------------ big images
def test_pixel_limit_is_one_line_naming_the_file_and_the_flag(tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(_rgb()).save(path)
    for reader in (read_image, read_mask, read_label):
        with pytest.raises(SgoneError) as exc:
            reader(path, max_pixels=W * H - 1)
        _assert_one_line(exc, str(path), f"{W}x{H}", f"--max-pixels {W * H}")
    assert read_image(path, max_pixels=W * H).shape == (H, W, 3)
    assert read_image(path, max_pixels=0).shape == (H, W, 3)  # 0: no limit


def test_pil_decompression_bomb_limit_is_replaced_by_ours(tmp_path, monkeypatch):
    """PIL warns above its limit and refuses above twice it; sgone's limit (and flag) decides instead."""
    import warnings

    path = tmp_path / "photo.png"
    Image.fromarray(_rgb()).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # as if the image were a 30000x30000 one
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning would fail here
        assert read_image(path).shape == (H, W, 3)
    assert Image.MAX_IMAGE_PIXELS == 100  # PIL's setting is left as it was


@pytest.mark.parametrize("suffix,mode", [("jpg", "RGB"), ("png", "RGB"), ("png", "P"), ("png", "RGBA"),
                                         ("tif", "I;16"), ("jpg", "L")])
def test_read_image_fit_shrinks_like_a_resize_of_the_full_image(tmp_path, suffix, mode):
    big_h, big_w = 240, 320
    y, x = np.mgrid[0:big_h, 0:big_w]
    rgb = np.stack([x * 255 // (big_w - 1), y * 255 // (big_h - 1), (x + y) % 256], axis=2).astype(np.uint8)
    image = Image.fromarray(rgb)
    if mode == "P":
        image = image.quantize(colors=16)
    elif mode == "RGBA":
        image.putalpha(Image.fromarray(((x < big_w // 4) * 255).astype(np.uint8)))
    elif mode == "I;16":
        image = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
    elif mode != "RGB":
        image = image.convert(mode)
    path = tmp_path / f"big.{suffix}"
    image.save(path, **({"quality": 95} if suffix == "jpg" else {}))
    small, full_hw = read_image_fit(path, 80)
    assert full_hw == (big_h, big_w) and small.shape == (60, 80, 3) and small.dtype == np.uint8
    expected = np.asarray(Image.fromarray(read_image(path)).resize((80, 60), Image.BILINEAR), dtype=np.float32)
    assert np.abs(small.astype(np.float32) - expected).mean() < 4
    same, hw = read_image_fit(path, 1000)  # no shrinking needed: the full image
    assert hw == (big_h, big_w) and np.array_equal(same, read_image(path))


def test_read_image_fit_exif_rotation_gives_upright_full_size(tmp_path):
    stored = np.zeros((H * 4, W * 4, 3), np.uint8)
    stored[:, : W * 2] = (255, 0, 0)  # left half red
    path = tmp_path / "rotated.jpg"
    _exif_jpeg(path, stored, 6)
    small, full_hw = read_image_fit(path, W)
    assert full_hw == (W * 4, H * 4)  # upright: width and height swapped
    assert small.shape == (W, H, 3)
    assert small[: W // 2 - 4, :, 0].mean() > 200 and small[W // 2 + 4:, :, 0].mean() < 60  # red on top
