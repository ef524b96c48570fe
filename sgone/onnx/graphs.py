"""The torch modules that `torch.onnx.export` traces: encoder, prototype and head of a model.

Each graph takes and returns plain tensors in a fixed order (named in `GraphSpec`), so that the
ONNX files can be run without sgone. The prototype graph re-states the models'
`support_prototype` from mask covers instead of masks (adaptive average pooling to a size known
only at run time does not export) and runs k-means with a fixed number of masked steps instead of
boolean indexing and an early stop; `tests/export/test_onnx_graphs.py` checks both against the models.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from sgone import ops
from sgone.errors import SgoneError

COVERS = ("foreground_cover", "background_cover")  # (1,1,h,w) share of each feature cell in the region
MASK = ("mask",)  # (1,1,H,W) 1 = object at the input size: the published variant pools at full resolution
IMAGE = ("image",)  # (B,3,H,W) in [0,1]
# + DINOv2's stitched patch map (B,384,H'/14,W'/14), computed outside the graphs (`sgone.onnx.semantic`)
IMAGE_SEMANTIC = ("image", "semantic")
JOINT_BACKBONES = ("dinov2_s14+mobilenet_v2",)


@dataclass(frozen=True)
class GraphSpec:
    """Tensor names of a model's three graphs, in the order the graphs take and return them."""

    arch: str
    features: tuple[str, ...]        # encoder outputs
    support_features: tuple[str, ...]  # encoder outputs the prototype graph reads
    prototypes: tuple[str, ...]      # prototype graph outputs = head inputs after the features
    regions: tuple[str, ...] = COVERS  # what the prototype graph reads of the support's mask
    inputs: tuple[str, ...] = IMAGE  # what the encoder graph takes


def graph_spec(model: nn.Module) -> GraphSpec:
    """The spec of a model; SgoneError for a model the exporter does not handle."""
    config = getattr(model, "config", {}) or {}
    arch, backbone = config.get("arch"), config.get("backbone", "?")
    if arch == "sgone-prior" and backbone in JOINT_BACKBONES:
        return GraphSpec(arch, ("guide", "prior", "prior_semantic", "side"), ("guide", "prior", "prior_semantic"),
                         ("vector", "prior_fg", "background_set", "semantic_fg", "semantic_background_set"),
                         inputs=IMAGE_SEMANTIC)
    if backbone not in ("mobilenet_v2", "efficientnet_lite0", "vgg16", "resnet50"):
        raise SgoneError(f"{backbone if arch != 'prototype-fused' else 'dinov2_s14 + mobilenet_v2 (fused)'}: "
                         "backbone not supported by the ONNX export (use a MobileNetV2, EfficientNet-Lite0, VGG-16 "
                         "or ResNet-50 model, or an SG-One checkpoint trained on dinov2_s14+mobilenet_v2)")
    if arch == "prototype":
        protos = ("vector", "background")
        if model.background_prototypes > 1:
            protos += ("background_set",)
        if model.foreground_prototypes > 1:
            protos += ("foreground_set",)
        return GraphSpec(arch, ("guide",), ("guide",), protos)
    if arch == "sgone-prior":
        return GraphSpec(arch, ("guide", "prior", "side"), ("guide", "prior"), ("vector", "prior_fg", "background_set"))
    if arch == "sgone":
        regions = MASK if getattr(model, "variant", "") == "published" else COVERS
        return GraphSpec(arch, ("guide", "side"), ("guide",), ("vector",), regions)
    raise SgoneError(f"{arch}: architecture not supported by the ONNX export (supported: prototype, sgone, "
                     "sgone-prior)")


class EncoderGraph(nn.Module):
    """image (B,3,H,W) in [0,1] [, semantic (B,384,h',w') DINOv2 patch map] -> the model's features at
    stride 8, in `spec.features` order. With a semantic input, the model's joint backbone runs its CNN
    here and takes DINOv2's map as given (resized onto the CNN's grid, as `JointBackbone` does)."""

    def __init__(self, model: nn.Module, spec: GraphSpec) -> None:
        super().__init__()
        self.model, self.names = model, spec.features

    def forward(self, image: torch.Tensor, semantic: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        if semantic is None:
            encoded = self.model.encode(image, need_side=True)
        else:
            levels = list(self.model.backbone.detail(image))
            semantic = F.interpolate(semantic, size=levels[0].shape[-2:], mode="bilinear", align_corners=False)
            encoded = self.model.encode_levels([semantic, *levels], need_side=True)
        return tuple(encoded[name] for name in self.names)


class PrototypeGraph(nn.Module):
    """One support's features (1,C,h,w) + its regions (`spec.regions`) -> its prototypes, `spec.prototypes` order."""

    def __init__(self, model: nn.Module, spec: GraphSpec) -> None:
        super().__init__()
        self.model, self.spec = model, spec

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = len(self.spec.support_features)
        feats = dict(zip(self.spec.support_features, inputs[:n]))
        protos = prototypes_from_regions(self.model, self.spec.arch, feats, dict(zip(self.spec.regions, inputs[n:])))
        return tuple(protos[name] for name in self.spec.prototypes)


class HeadGraph(nn.Module):
    """Query features (B,C,h,w) + prototypes (B,C) / parts (B,N,C) -> logits (B,2,h,w), similarity (B,h,w)."""

    def __init__(self, model: nn.Module, spec: GraphSpec) -> None:
        super().__init__()
        self.model, self.spec = model, spec

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.spec.features)
        encoded = dict(zip(self.spec.features, inputs[:n]))
        protos = dict(zip(self.spec.prototypes, inputs[n:]))
        out = self.model.segment(encoded, protos)
        return out["logits"], out["similarity"]


def prototypes_from_regions(model: Any, arch: str, feats: dict[str, torch.Tensor], regions: dict[str, torch.Tensor],
                            kmeans: Callable[..., torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The models' `support_prototype`, from the covers `ops.region_weights` gives (1,1,h,w), or for the
    published variant the object mask at the input size (1,1,H,W), features upsampled to it.

    model: anything with the model's `background_prototypes` / `foreground_prototypes`; kmeans:
    `kmeans_parts` (default, traceable) or `ops.region_prototypes` (same parts, stops early).
    """
    kmeans = kmeans or kmeans_parts
    if "mask" in regions:
        mask = regions["mask"]
        guide = F.interpolate(feats["guide"], size=mask.shape[-2:], mode="bilinear", align_corners=False)
        return {"vector": weighted_mean(guide, mask)}
    fg, bg = regions["foreground_cover"], regions["background_cover"]
    if arch == "sgone-prior":
        out = {"vector": weighted_mean(feats["guide"], fg)}
        for features, fg_name, parts in (("prior", "prior_fg", "background_set"),
                                         ("prior_semantic", "semantic_fg", "semantic_background_set")):
            if features in feats:
                out[fg_name] = weighted_mean(feats[features], fg)
                out[parts] = kmeans(feats[features], bg, model.background_prototypes)
        return out
    guide = feats["guide"]
    if arch == "sgone":
        return {"vector": weighted_mean(guide, fg)}
    out = {"vector": weighted_mean(guide, fg), "background": weighted_mean(guide, bg)}
    if model.background_prototypes > 1:
        out["background_set"] = kmeans(guide, bg, model.background_prototypes)
    if model.foreground_prototypes > 1:
        out["foreground_set"] = kmeans(guide, fg, model.foreground_prototypes)
    return out


def weighted_mean(features: torch.Tensor, cover: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """features (B,C,h,w), cover (B,1,h,w) -> (B,C): `ops.masked_average_pooling` in downsample mode."""
    return (features * cover).sum(dim=(2, 3)) / cover.sum(dim=(1, 2, 3)).clamp_min(eps).unsqueeze(1)


def kmeans_parts(features: torch.Tensor, cover: torch.Tensor, k: int, iters: int = 10,
                 min_weight: float = 0.5) -> torch.Tensor:
    """`ops.region_prototypes` for one sample, traceable: (1,C,h,w), (1,1,h,w) -> (1,k,C).

    Cells below `min_weight` are masked out instead of dropped, and all `iters + 1` steps run:
    once the centroids stop moving a step returns them unchanged, so the result is the same as
    the early stop's.
    """
    xt = features[0].flatten(1)  # (C, n): the features' own layout, no transpose of the big map
    w = cover[0].flatten(1)  # (1, n)
    keep = w >= min_weight
    wx = w * keep.to(w.dtype)
    xnt = F.normalize(xt, dim=0)
    mean = F.normalize((xt * wx).sum(1, keepdim=True), dim=0)  # (C, 1)
    inf = torch.tensor(float("inf"), dtype=xt.dtype)
    chosen = [torch.where(keep, mean.t() @ xnt, -inf).argmax(dim=1)]
    nearest = xnt[:, chosen[0]].t() @ xnt  # (1, n)
    for _ in range(1, k):
        chosen.append(torch.where(keep, nearest, inf).argmin(dim=1))
        nearest = torch.maximum(nearest, xnt[:, chosen[-1]].t() @ xnt)
    index = torch.cat(chosen)
    centroids = xnt[:, index].t()  # (k, C)
    parts = torch.arange(k).unsqueeze(1)
    for _ in range(iters + 1):
        onehot = ((centroids @ xnt).argmax(dim=0, keepdim=True) == parts).to(xt.dtype) * wx  # (k, n)
        filled = (onehot.sum(1) > 0).unsqueeze(1)
        means = (xt @ onehot.t()).t() / onehot.sum(1).clamp_min(1e-6).unsqueeze(1)  # (k, C)
        centroids = torch.where(filled, F.normalize(means, dim=1), centroids)
    out = torch.where(filled, means, xt[:, index].t())
    return (out * keep.any().to(xt.dtype)).unsqueeze(0)  # an empty region gives zero vectors


def region_inputs(spec: GraphSpec, masks: torch.Tensor, grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """One support's mask (1,H,W) {0,1,255} at the input size -> the prototype graph's region inputs.

    Covers: `ops.region_weights` on the feature grid (255 counts for neither region); the published
    variant's mask: every non-zero value is object, as `SGOne.binarise` reads it.
    """
    if spec.regions == MASK:
        return {"mask": (masks > 0).float().unsqueeze(1)}
    return {"foreground_cover": ops.region_weights(masks, grid, "foreground"),
            "background_cover": ops.region_weights(masks, grid, "background")}


def config_counts(config: dict) -> SimpleNamespace:
    """The k-means part counts of a model config, as `prototypes_from_regions` reads them from a model."""
    return SimpleNamespace(background_prototypes=config.get("background_prototypes", 8),
                           foreground_prototypes=config.get("foreground_prototypes", 1))
