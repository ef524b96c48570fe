"""Loading a model by name or from a checkpoint: one road for every registered name, shipped
checkpoint, checkpoint path and the default (`load_model`); the names and configs are the data of
`sgone.models.zoo`."""
from __future__ import annotations

import pickle
import zipfile
from importlib import resources
from pathlib import Path

import torch
import torch.nn as nn

from sgone.errors import SgoneError
from sgone.lazy import lookup
from sgone.models.zoo import ARCHITECTURES, FUSED_DINO_MOBILENET, MODELS, is_shipped  # noqa: F401  (re-exported)
from sgone.options import DEFAULT_MODEL, TRAINING_FREE_MODEL  # noqa: F401  (re-exported)

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def architecture(arch: str) -> type:
    """The model class of `arch` (a config's "arch")."""
    return lookup(ARCHITECTURES, arch, "architecture")


def build_model_from_config(config: dict, weights: str | Path | None = None) -> nn.Module:
    """Rebuild a model from its `config` dict (as stored in checkpoints); `weights` for the backbone."""
    return architecture(config.get("arch", "sgone")).from_config(config, weights=weights)


def build_model(arch: str = "sgone", backbone: str = "mobilenet_v2", variant: str = "fixed",
                weights: str | Path | None = "auto", backbone_options: dict | None = None, **options) -> nn.Module:
    """`build_model_from_config` with the config spelled as arguments: arch, backbone, SG-One's
    variant ("fixed" or "published"), the backbone's options, the constructor's options."""
    config = {"arch": arch, "backbone": backbone, "variant": variant, **options}
    if backbone_options:
        config["backbone_options"] = backbone_options
    return build_model_from_config(config, weights=weights)


def model_name(name_or_path: str | Path | None) -> str:
    """The name a model is known by in messages and summaries: None is the default's name."""
    return str(name_or_path or DEFAULT_MODEL)


def shipped_checkpoints() -> dict[str, Path]:
    """Checkpoints that ship inside the package (sgone/checkpoints/*.pt), by registered name."""
    folder = resources.files("sgone") / "checkpoints"
    found = {name: Path(str(folder / entry["checkpoint"])) for name, entry in MODELS.items() if "checkpoint" in entry}
    return {name: path for name, path in found.items() if path.is_file()}


def has_untrained_head(name: str) -> bool:
    """A registered config (no weights) of an architecture that must be trained first."""
    entry = MODELS.get(name)
    if entry is None or "checkpoint" in entry:
        return False
    return not architecture(entry.get("arch", "sgone")).training_free


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint dict on the CPU; SgoneError if it is missing or not an sgone checkpoint.
    Configs written before an option existed get the value they were trained with."""
    path = Path(path)
    if not path.is_file():
        raise SgoneError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise SgoneError(f"{path}: not a readable checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        raise SgoneError(f"{path}: not an sgone checkpoint (needs 'model' and 'model_config' entries)")
    if ckpt["model_config"].get("arch") == "sgone-prior":
        # checkpoints from before the option had SG-One's full side branch
        ckpt["model_config"] = {"side_levels": "all", **ckpt["model_config"]}
    return ckpt


def load_model(name_or_path: str | Path | None = None, device: str | torch.device = "cpu",
               weights: str | Path | None = "auto", allow_untrained: bool = False,
               backbone_options: dict | None = None) -> nn.Module:
    """A model in eval mode from a registered name, a shipped checkpoint name, or a checkpoint path.

    Every one takes one road: (config, state dict or None) -> `build_model_from_config` -> the
    state dict. `weights` is the backbone's ImageNet file for a registered config ("auto" finds
    it; a checkpoint holds its own). A registered name whose head is untrained (`sgone-*`: for
    training and benchmarks) is refused unless `allow_untrained`: its masks would be meaningless.
    `backbone_options` (checkpoints only) update the checkpoint's backbone options, e.g. DINOv2's
    tiling {"resolution": 224, "tile_stride": 224} for a frozen backbone: the learnt weights are
    kept, the features change.
    """
    name = model_name(name_or_path)
    try:
        return _load_model(name, device, weights, allow_untrained, backbone_options)
    except SgoneError as exc:  # e.g. the default's DINOv2 file absent: say what runs without it
        if name != DEFAULT_MODEL:
            raise
        raise SgoneError(f"{exc} (the default model {DEFAULT_MODEL} needs it; the training-free "
                         f"--model {TRAINING_FREE_MODEL} needs only MobileNetV2's file)") from None


def config_and_state(name: str) -> tuple[dict, dict | None]:
    """What a name stands for: a registered config (state None), or a shipped or user checkpoint's
    config and state dict."""
    entry = MODELS.get(name)
    if entry is not None and "checkpoint" not in entry:
        return dict(entry), None
    shipped = shipped_checkpoints()
    if name in shipped or Path(name).suffix in CHECKPOINT_SUFFIXES or Path(name).is_file():
        ckpt = read_checkpoint(shipped.get(name, name))
        return dict(ckpt["model_config"]), ckpt["model"]
    known = ", ".join(sorted(n for n in MODELS if not is_shipped(n)) + sorted(shipped))
    raise SgoneError(f"{name}: unknown model; use a checkpoint path or one of: {known}")


def _load_model(name: str, device: str | torch.device, weights: str | Path | None,
                allow_untrained: bool, backbone_options: dict | None = None) -> nn.Module:
    if has_untrained_head(name) and not allow_untrained:
        shipped = shipped_checkpoints()
        hint = f" or a shipped one ({', '.join(sorted(shipped))})" if shipped else ""
        raise SgoneError(f"{name}: untrained head, its masks would be meaningless; train one (`sgone train`) and "
                         f"pass its checkpoint{hint}, or use a training-free prototype-* model")
    config, state = config_and_state(name)
    if backbone_options:
        if state is None:
            raise SgoneError(f"{name}: backbone options apply to checkpoints only, not to registered names")
        config["backbone_options"] = {**config.get("backbone_options", {}), **backbone_options}
    return assemble(name, config, state, weights).to(device).eval()


def assemble(name: str, config: dict, state: dict | None, weights: str | Path | None = "auto") -> nn.Module:
    """The last step of the road: the model of `config` with `state` loaded (a checkpoint), or with
    the backbone's ImageNet `weights` (a registered config, state None). `name` is for errors."""
    model = build_model_from_config(config, weights=weights if state is None else None)
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise SgoneError(f"{name}: checkpoint does not match its model config ({first})") from None
    return model
