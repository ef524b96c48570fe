"""Model names -> builders, and loading from a name or a checkpoint file."""
from __future__ import annotations

import pickle
import zipfile
from importlib import resources
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from sgone.errors import SgoneError
from sgone.options import DEFAULT_MODEL, TRAINING_FREE_MODEL  # noqa: F401  (re-exported)

ARCHS = ("sgone", "sgone-prior", "prototype", "prototype-fused")


def build_model(arch: str = "sgone", backbone: str = "mobilenet_v2", variant: str = "fixed",
                weights: str | Path | None = "auto", backbone_options: dict | None = None, **options) -> nn.Module:
    """Build a model. arch "sgone" (trainable head) or "prototype" (training-free).

    `weights` is for the backbone: "auto" finds ImageNet weights offline, None = random init.
    `backbone_options` go to the backbone builder (e.g. {"high_stride": 16}).
    """
    from sgone.backbones import build_backbone

    if arch not in ARCHS:
        raise SgoneError(f"unknown architecture {arch!r}: use one of {', '.join(ARCHS)}")
    if arch == "prototype-fused":
        return build_fused(weights=weights, **options)
    backbone_options = dict(backbone_options or {})
    config: dict = {"backbone": backbone}
    if backbone_options:
        config["backbone_options"] = backbone_options
    net = build_backbone(backbone, weights=weights, **backbone_options)
    if arch == "sgone":
        from sgone.models.sgone import SGOne

        return SGOne(net, variant=variant, config=config, **options)
    if arch == "sgone-prior":
        from sgone.models.sgone import PriorGuidedSGOne

        return PriorGuidedSGOne(net, config=config, **options)
    from sgone.models.prototype import PrototypeModel

    return PrototypeModel(net, config=config, **options)


def build_fused(semantic: dict, detail: dict, weight: float = 0.5, weights: str | Path | None = "auto") -> nn.Module:
    """Two training-free prototype models fused (`sgone.models.fused`); `semantic`/`detail` are their
    configs (as `build_model_from_config` takes). A weights path goes to the semantic backbone."""
    from sgone.models.fused import FusedPrototypeModel

    auto = None if weights is None else "auto"
    return FusedPrototypeModel(build_model_from_config(semantic, weights=weights),
                               build_model_from_config(detail, weights=auto), weight=weight)


def build_model_from_config(config: dict, weights: str | Path | None = None) -> nn.Module:
    """Rebuild a model from its `config` dict (as stored in checkpoints)."""
    config = dict(config)
    arch = config.pop("arch", "sgone")
    if arch == "prototype-fused":
        return build_fused(config["semantic"], config["detail"], config.get("weight", 0.5), weights=weights)
    backbone = config.pop("backbone", "mobilenet_v2")
    if arch == "sgone":
        keys = ("variant", "guidance_dim", "side_dim")
    elif arch == "sgone-prior":
        keys = ("guidance_dim", "side_dim", "background_prototypes", "temperature", "side_levels", "semantic_weight",
                "head_weight")
    else:
        keys = ("levels", "temperature", "refine_steps", "refine_confidence", "refine_weight",
                "background_prototypes", "foreground_prototypes", "scales")
    options = {k: config[k] for k in keys if k in config}
    if arch == "sgone-prior":
        options.setdefault("side_levels", "all")  # checkpoints from before the option had SG-One's full branch
    for key in ("levels", "scales"):
        if key in options:
            options[key] = tuple(options[key])
    return build_model(arch, backbone, weights=weights, backbone_options=config.get("backbone_options"), **options)


TRAINING_FREE_ARCHS = ("prototype", "prototype-fused")  # every other architecture has a head that must be trained


def _named(arch: str, backbone: str, **options) -> Callable[..., nn.Module]:
    def builder(weights: str | Path | None = "auto") -> nn.Module:
        return build_model(arch, backbone, weights=weights, **options)

    builder.__doc__ = f"{arch} model on {backbone}"
    builder.untrained_head = arch not in TRAINING_FREE_ARCHS  # type: ignore[attr-defined]
    return builder


DINO_PROTOTYPE: dict = {"levels": ("low",)}
FUSED_DINO_MOBILENET: dict = {
    "semantic": {"arch": "prototype", "backbone": "dinov2_s14", **DINO_PROTOTYPE},
    "detail": {"arch": "prototype", "backbone": "mobilenet_v2", "backbone_options": {"high_stride": 16}},
    "weight": 0.5,
}

FUSED_DINO_MOBILENET_224: dict = dict(FUSED_DINO_MOBILENET, semantic=dict(
    FUSED_DINO_MOBILENET["semantic"], backbone_options={"resolution": 224}))
FUSED_DINO_MOBILENET_WHOLE: dict = dict(FUSED_DINO_MOBILENET, semantic=dict(
    FUSED_DINO_MOBILENET["semantic"], backbone_options={"tile_stride": 0}))
FUSED_DINO_MOBILENET_WHOLE_INT8: dict = dict(FUSED_DINO_MOBILENET, semantic=dict(
    FUSED_DINO_MOBILENET["semantic"], backbone_options={"tile_stride": 0, "precision": "int8"}))

# Registered names. "prototype-*" run with ImageNet weights alone; "sgone-*" have an untrained
# head (for training and benchmarks) unless loaded from a checkpoint.
MODELS: dict[str, Callable[..., nn.Module]] = {
    # high tap at stride 16, upsampled: same mIoU within +-1.3 on three sources, 1/3 less time
    # (docs/results.md, section 3)
    "prototype-mobilenet_v2": _named("prototype", "mobilenet_v2", backbone_options={"high_stride": 16}),
    "prototype-mobilenet_v2-stride8": _named("prototype", "mobilenet_v2"),
    # also encoded at 1.5x: +2.1 to +4.4 mIoU on four sources at ~3x the time (docs/results.md, section 3)
    "prototype-mobilenet_v2-multiscale": _named("prototype", "mobilenet_v2", backbone_options={"high_stride": 16},
                                                scales=(1.0, 1.5)),
    "prototype-efficientnet_lite0": _named("prototype", "efficientnet_lite0"),
    "prototype-vgg16": _named("prototype", "vgg16"),
    "prototype-resnet50": _named("prototype", "resnet50"),
    # DINOv2 ViT-S/14 (ONNX, block 9, tiled to a 32-patch longer side) and its fusion with the
    # default's MobileNetV2; options chosen on fold 0 of the real corpora (docs/results.md, DINOv2)
    "prototype-dinov2_s14": _named("prototype", "dinov2_s14", **DINO_PROTOTYPE),
    "prototype-dinov2_s14-mobilenet_v2": _named("prototype-fused", "", **FUSED_DINO_MOBILENET),
    # the same with DINOv2 on one 224 tile (16 patches a side): 2.3x faster, 2.2 mIoU lower on fold 0
    "prototype-dinov2_s14-mobilenet_v2-224": _named("prototype-fused", "", **FUSED_DINO_MOBILENET_224),
    # DINOv2 on the whole 448-px image in one pass (no tiles): fold 0 as the tiled one, half its DINOv2 time
    "prototype-dinov2_s14-mobilenet_v2-whole": _named("prototype-fused", "", **FUSED_DINO_MOBILENET_WHOLE),
    # the same with DINOv2's MatMul weights in int8 (dynamic quantisation, made once from the file)
    "prototype-dinov2_s14-mobilenet_v2-whole-int8": _named("prototype-fused", "", **FUSED_DINO_MOBILENET_WHOLE_INT8),
    "sgone-mobilenet_v2": _named("sgone", "mobilenet_v2"),
    # PriorGuidedSGOne on DINOv2 + MobileNetV2 (its prior is prototype-dinov2_s14-mobilenet_v2's rule)
    "sgone-dinov2_s14-mobilenet_v2": _named("sgone-prior", "dinov2_s14+mobilenet_v2",
                                            backbone_options={"high_stride": 16}),
    "sgone-efficientnet_lite0": _named("sgone", "efficientnet_lite0"),
    "sgone-vgg16": _named("sgone", "vgg16"),
    "sgone-vgg16-published": _named("sgone", "vgg16", variant="published"),
    "sgone-resnet50": _named("sgone", "resnet50"),
}


def model_name(name_or_path: str | Path | None) -> str:
    """The name a model is known by in messages and summaries: None is the default's name."""
    return str(name_or_path or DEFAULT_MODEL)


def shipped_checkpoints() -> dict[str, Path]:
    """Checkpoints that ship inside the package (sgone/checkpoints/*.pt), by file stem."""
    folder = resources.files("sgone") / "checkpoints"
    try:
        return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".pt")}
    except (FileNotFoundError, NotADirectoryError):
        return {}


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint dict on the CPU; SgoneError if it is missing or not an sgone checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise SgoneError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise SgoneError(f"{path}: not a readable checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        raise SgoneError(f"{path}: not an sgone checkpoint (needs 'model' and 'model_config' entries)")
    return ckpt


def load_model(name_or_path: str | Path | None = None, device: str | torch.device = "cpu",
               weights: str | Path | None = "auto", allow_untrained: bool = False,
               backbone_options: dict | None = None) -> nn.Module:
    """A model in eval mode from a registered name, a shipped checkpoint name, or a checkpoint path.

    A registered name whose head is untrained (`sgone-*`: for training and benchmarks) is refused
    unless `allow_untrained`: its masks would be meaningless. `backbone_options` (checkpoints only)
    update the checkpoint's backbone options, e.g. DINOv2's tiling {"resolution": 224, "tile_stride": 224}
    for a frozen backbone: the learnt weights are kept, the features change.
    """
    name = model_name(name_or_path)
    try:
        return _load_model(name, device, weights, allow_untrained, backbone_options)
    except SgoneError as exc:  # e.g. the default's DINOv2 file absent: say what runs without it
        if name != DEFAULT_MODEL:
            raise
        raise SgoneError(f"{exc} (the default model {DEFAULT_MODEL} needs it; the training-free "
                         f"--model {TRAINING_FREE_MODEL} needs only MobileNetV2's file)") from None


def _load_model(name: str, device: str | torch.device, weights: str | Path | None,
                allow_untrained: bool, backbone_options: dict | None = None) -> nn.Module:
    shipped = shipped_checkpoints()
    if name in MODELS and getattr(MODELS[name], "untrained_head", False) and not allow_untrained:
        hint = f" or a shipped one ({', '.join(sorted(shipped))})" if shipped else ""
        raise SgoneError(f"{name}: untrained head, its masks would be meaningless; train one (`sgone train`) and "
                         f"pass its checkpoint{hint}, or use a training-free prototype-* model")
    if name in MODELS:
        if backbone_options:
            raise SgoneError(f"{name}: backbone options apply to checkpoints only, not to registered names")
        model = MODELS[name](weights=weights)
    elif name in shipped or Path(name).suffix in (".pt", ".pth", ".ckpt") or Path(name).is_file():
        ckpt = read_checkpoint(shipped.get(name, name))
        config = dict(ckpt["model_config"])
        if backbone_options:
            config["backbone_options"] = {**config.get("backbone_options", {}), **backbone_options}
        model = build_model_from_config(config, weights=None)
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise SgoneError(f"{name}: checkpoint does not match its model config ({first})") from None
    else:
        known = ", ".join(sorted(MODELS) + sorted(shipped))
        raise SgoneError(f"{name}: unknown model; use a checkpoint path or one of: {known}")
    return model.to(device).eval()
