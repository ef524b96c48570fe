"""The model zoo as data, without torch: architectures by name, and registered model names as
configs. A name is a config (`MODELS[name]`, what a checkpoint stores as "model_config"), a shipped
model is a config plus weights (`{"checkpoint": file}` in sgone/checkpoints/, which holds both), and
`sgone.models.registry.load_model` takes every one of them, a checkpoint path and the default down
the same road: config -> `Architecture.from_config` -> weights (docs/architecture.md, "Model zoo").

Adding an architecture = one class (`sgone.models.architecture.Architecture`: `arch`,
`training_free`, `from_config`) + its line in `ARCHITECTURES`; a registered name = one line in `MODELS`.
"""
from __future__ import annotations

from sgone.options import DEFAULT_MODEL, TRAINING_FREE_MODEL

# architecture name (a config's "arch") -> "module:Class", imported on first use
ARCHITECTURES: dict[str, str] = {
    "sgone": "sgone.models.sgone_net:SGOne",
    "sgone-prior": "sgone.models.sgone_net:PriorGuidedSGOne",
    "prototype": "sgone.models.prototype:PrototypeModel",
    "prototype-fused": "sgone.models.fused:FusedPrototypeModel",
}

MOBILENET_STRIDE16: dict = {"backbone": "mobilenet_v2", "backbone_options": {"high_stride": 16}}
DINO_PROTOTYPE: dict = {"arch": "prototype", "backbone": "dinov2_s14", "levels": ["low"]}


def fused_dino_mobilenet(**dino_options) -> dict:
    """prototype-fused: DINOv2 for what (its options, e.g. tiling), MobileNetV2 for where, logits halved."""
    semantic = dict(DINO_PROTOTYPE, **({"backbone_options": dino_options} if dino_options else {}))
    return {"arch": "prototype-fused", "semantic": semantic, "detail": {"arch": "prototype", **MOBILENET_STRIDE16},
            "weight": 0.5}


FUSED_DINO_MOBILENET = fused_dino_mobilenet()

# Registered names. "prototype-*" run with ImageNet weights alone; "sgone-*" configs have an untrained
# head (for training and benchmarks); "-real" ones are shipped checkpoints (config + trained weights).
MODELS: dict[str, dict] = {
    # high tap at stride 16, upsampled: same mIoU within +-1.3 on three sources, 1/3 less time
    # (docs/results.md, section 3)
    TRAINING_FREE_MODEL: {"arch": "prototype", **MOBILENET_STRIDE16},
    "prototype-mobilenet_v2-stride8": {"arch": "prototype", "backbone": "mobilenet_v2"},
    # also encoded at 1.5x: +2.1 to +4.4 mIoU on four sources at ~3x the time (docs/results.md, section 3)
    "prototype-mobilenet_v2-multiscale": {"arch": "prototype", **MOBILENET_STRIDE16, "scales": [1.0, 1.5]},
    "prototype-efficientnet_lite0": {"arch": "prototype", "backbone": "efficientnet_lite0"},
    "prototype-vgg16": {"arch": "prototype", "backbone": "vgg16"},
    "prototype-resnet50": {"arch": "prototype", "backbone": "resnet50"},
    # DINOv2 ViT-S/14 (ONNX, block 9, tiled to a 32-patch longer side) and its fusion with the
    # default's MobileNetV2; options chosen on fold 0 of the real corpora (docs/results.md, DINOv2)
    "prototype-dinov2_s14": DINO_PROTOTYPE,
    "prototype-dinov2_s14-mobilenet_v2": FUSED_DINO_MOBILENET,
    # the same with DINOv2 on one 224 tile (16 patches a side): 2.3x faster, 2.2 mIoU lower on fold 0
    "prototype-dinov2_s14-mobilenet_v2-224": fused_dino_mobilenet(resolution=224),
    # DINOv2 on the whole 448-px image in one pass (no tiles): fold 0 as the tiled one, half its DINOv2 time
    "prototype-dinov2_s14-mobilenet_v2-whole": fused_dino_mobilenet(tile_stride=0),
    # the same with DINOv2's MatMul weights in int8 (dynamic quantisation, made once from the file)
    "prototype-dinov2_s14-mobilenet_v2-whole-int8": fused_dino_mobilenet(tile_stride=0, precision="int8"),
    # SG-One trained on real photos (the default: see sgone.options.DEFAULT_MODEL)
    DEFAULT_MODEL: {"checkpoint": "sgone-dinov2_s14-mobilenet_v2-real.pt"},
    "sgone-mobilenet_v2-real": {"checkpoint": "sgone-mobilenet_v2-real.pt"},
    "sgone-mobilenet_v2": {"arch": "sgone", "backbone": "mobilenet_v2"},
    # PriorGuidedSGOne on DINOv2 + MobileNetV2 (its prior is prototype-dinov2_s14-mobilenet_v2's rule)
    "sgone-dinov2_s14-mobilenet_v2": {"arch": "sgone-prior", "backbone": "dinov2_s14+mobilenet_v2",
                                      "backbone_options": {"high_stride": 16}, "side_levels": "low"},
    "sgone-efficientnet_lite0": {"arch": "sgone", "backbone": "efficientnet_lite0"},
    "sgone-vgg16": {"arch": "sgone", "backbone": "vgg16"},
    "sgone-vgg16-published": {"arch": "sgone", "backbone": "vgg16", "variant": "published"},
    "sgone-resnet50": {"arch": "sgone", "backbone": "resnet50"},
}


def is_shipped(name: str) -> bool:
    return "checkpoint" in MODELS.get(name, {})
