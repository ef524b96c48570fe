"""The SG-One network: a guidance branch (support vector x query similarity) and a
segmentation branch whose features the similarity map multiplies.

Two variants share the layers:
- "published": the public code's behaviour (MAP on features upsampled to the mask's
  resolution, masks binarised with `mask > 0` so 255 counts as object, MAP denominator
  summed over the batch, padding=1 on the final 1x1 conv);
- "fixed": per-sample MAP on the area-downsampled mask, 255 ignored, no padding on the 1x1 conv.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from sgone import ops
from sgone.models.architecture import Architecture

VARIANTS = ("fixed", "published")


def _conv3x3(cin: int, cout: int, relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SGOne(Architecture, nn.Module):
    """SG-One over any stride-8 backbone that returns [low, mid, high] feature maps."""

    arch = "sgone"

    def __init__(self, backbone: nn.Module, variant: str = "fixed", guidance_dim: int = 512,
                 side_dim: int = 128, config: dict | None = None) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown SG-One variant {variant!r}: use one of {VARIANTS}")
        self.variant = variant
        self.backbone = backbone
        c_low, c_mid, c_high = backbone.channels
        self.guidance = nn.Conv2d(c_high, guidance_dim, 3, padding=1)  # "fc6", no ReLU
        self.side3 = _conv3x3(c_low, side_dim, relu=True)
        self.side4 = _conv3x3(side_dim + c_mid, side_dim, relu=True)
        self.side5 = _conv3x3(side_dim + c_high, side_dim, relu=False)
        self.fuse = _conv3x3(side_dim, side_dim, relu=True)
        # the public code pads its 1x1 conv, so its logits grow by 2 pixels a side pair
        self.classifier = nn.Conv2d(side_dim, 2, 1, padding=1 if variant == "published" else 0)
        self.map_mode = "upsample" if variant == "published" else "downsample"
        self.map_denominator = "batch" if variant == "published" else "sample"
        self.config = dict(config or {}, arch=self.arch, variant=variant,
                           guidance_dim=guidance_dim, side_dim=side_dim)

    def binarise(self, masks: torch.Tensor) -> torch.Tensor:
        """Masks as the variant reads them: published turns every non-zero value (255 too) into 1."""
        if self.variant == "published":
            return (masks > 0).long()
        return masks.long()

    def encode(self, images: torch.Tensor, need_side: bool = True) -> dict[str, torch.Tensor]:
        """(B,3,H,W) in [0,1] -> {"guide": (B,Cg,h,w), "side": (B,Cs,h,w) if need_side}, stride 8."""
        return self._heads(self.backbone(images), need_side)

    def encode_levels(self, levels: list[torch.Tensor], need_side: bool = True) -> dict[str, torch.Tensor]:
        """encode() from the backbone's outputs [low, mid, high] (e.g. read from a feature cache)."""
        return self._heads(list(levels), need_side)

    def _heads(self, levels: list[torch.Tensor], need_side: bool) -> dict[str, torch.Tensor]:
        out = {"guide": self.guidance(levels[2])}
        if need_side:
            out["side"] = self._side(levels)
        return out

    def _side(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """The segmentation branch: side3 on low, side4 on (side3, mid), side5 on (side4, high)."""
        low, mid, high = levels
        s4 = self.side4(torch.cat([self.side3(low), mid], dim=1))
        return self.side5(torch.cat([s4, high], dim=1))

    def support_prototype(self, encoded: dict[str, torch.Tensor], masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Support vector by masked average pooling: masks (B,H,W) -> {"vector": (B,Cg)}."""
        vector = ops.masked_average_pooling(encoded["guide"], self.binarise(masks), mode=self.map_mode,
                                            denominator=self.map_denominator)
        return {"vector": vector}

    @staticmethod
    def fuse_prototypes(prototypes: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """k-shot fusion by averaging the k support vectors."""
        return {"vector": ops.fuse_vectors([p["vector"] for p in prototypes])}

    def segment(self, encoded: dict[str, torch.Tensor], prototype: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Query encoding + support vector -> {"logits": (B,2,h,w), "similarity": (B,h,w)}."""
        similarity = ops.cosine_similarity_map(prototype["vector"], encoded["guide"])
        x = self.fuse(encoded["side"] * similarity.unsqueeze(1))
        return {"logits": self.classifier(x), "similarity": similarity}

    def forward(self, support_images, support_masks: torch.Tensor, query_images,
                from_levels: bool = False) -> dict[str, torch.Tensor]:
        """support_images (B,K,3,H,W), support_masks (B,K,H,W), query_images (B,3,H,W) -> segment().

        from_levels: the images are backbone outputs instead (the feature cache's training path):
        support [(B,K,C,h,w)] x 3 levels, query [(B,C,h,w)] x 3.
        """
        if from_levels:
            b, k = support_images[0].shape[:2]
            support = self._heads([lv.flatten(0, 1) for lv in support_images], need_side=False)
            vectors = self.support_prototype(support, support_masks.flatten(0, 1))["vector"].view(b, k, -1)
            return self.segment(self._heads(list(query_images), need_side=True), {"vector": vectors.mean(dim=1)})
        b, k = support_images.shape[:2]
        supports = support_images.flatten(0, 1)
        if supports.shape[-2:] == query_images.shape[-2:]:
            # one backbone pass over supports and queries; the side branch runs on queries only
            levels = self.backbone(torch.cat([supports, query_images]))
            n = b * k
            support = {"guide": self.guidance(levels[2][:n])}
            query = self._heads([level[n:] for level in levels], need_side=True)
        else:
            support = self.encode(supports, need_side=False)
            query = self.encode(query_images)
        vectors = self.support_prototype(support, support_masks.flatten(0, 1))["vector"].view(b, k, -1)
        return self.segment(query, {"vector": vectors.mean(dim=1)})


class PriorGuidedSGOne(SGOne):
    """SG-One whose head also sees the training-free prior and starts from its answer.

    Why: trained on a few seen classes, the published head learns class-agnostic objectness and
    ignores its guidance map (cosine 0.850 inside vs 0.833 outside). Here the head gets, besides
    `side * similarity`, two maps it cannot learn away because they come from the frozen
    features: the cosine to the support's object prototype and the best cosine among k-means
    parts of the support's background (the training-free model's scores, PFENet's "prior" idea).
    Its logits are added to the prior's own logits, and the last conv starts at zero, so an
    untrained head equals the training-free model and training only has to correct it. The
    learnt guidance (`similarity`) gets an auxiliary loss in training (`guidance_loss`).
    head_weight scales that correction at inference (1 = as trained, 0 = the prior alone).

    Layers (stride 8, channels of backbone levels low/mid/high = c_low, c_mid, c_high):
    guide = 1x1 conv MLP on concat(mid, high) -> guidance_dim; side branch: three 3x3 convs at
    side_dim on the low level (side_levels "low"), or SG-One's over low, mid and high ("all");
    head = 3x3 conv (side_dim + 3) -> side_dim, 3x3 dilated-2 conv, 1x1 conv -> 2 (zero init).
    """

    arch = "sgone-prior"

    def __init__(self, backbone: nn.Module, guidance_dim: int = 256, side_dim: int = 64,
                 background_prototypes: int = 8, temperature: float = 10.0, side_levels: str = "low",
                 semantic_weight: float = 0.5, head_weight: float = 1.0, config: dict | None = None) -> None:
        nn.Module.__init__(self)
        if not (math.isfinite(head_weight) and head_weight >= 0.0):
            raise ValueError(f"head_weight must be a finite number >= 0, got {head_weight}")
        if side_levels not in ("low", "all"):
            raise ValueError(f"side_levels must be 'low' or 'all', got {side_levels!r}")
        if not 0.0 <= semantic_weight <= 1.0:
            raise ValueError(f"semantic_weight must be in [0, 1], got {semantic_weight}")
        self.variant = "fixed"
        self.backbone = backbone
        self.side_levels = side_levels
        # a 4-level backbone (`JointBackbone`) puts a semantic level first
        self.semantic = len(backbone.channels) == 4
        self.semantic_weight = float(semantic_weight) if self.semantic else 0.0
        c_sem = backbone.channels[0] if self.semantic else 0
        c_low, c_mid, c_high = backbone.channels[-3:]
        self.guidance = nn.Sequential(nn.Conv2d(c_sem + c_mid + c_high, guidance_dim, 1), nn.ReLU(inplace=True),
                                      nn.Conv2d(guidance_dim, guidance_dim, 1))
        self.side3 = _conv3x3(c_low, side_dim, relu=True)
        if side_levels == "all":  # SG-One's branch over low, mid and high
            self.side4 = _conv3x3(side_dim + c_mid, side_dim, relu=True)
            self.side5 = _conv3x3(side_dim + c_high, side_dim, relu=False)
        else:  # low-level detail only: the deeper levels carry class identity, which overfits the seen classes
            self.side4 = _conv3x3(side_dim, side_dim, relu=True)
            self.side5 = _conv3x3(side_dim, side_dim, relu=False)
        self.fuse = nn.Sequential(
            nn.Conv2d(side_dim + 3, side_dim, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(side_dim, side_dim, 3, padding=2, dilation=2), nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(side_dim, 2, 1)
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)
        self.map_mode, self.map_denominator = "downsample", "sample"
        self.background_prototypes = background_prototypes
        self.temperature = temperature
        self.config = dict(config or {}, arch=self.arch, variant="fixed", guidance_dim=guidance_dim,
                           side_dim=side_dim, background_prototypes=background_prototypes,
                           temperature=temperature, side_levels=side_levels)
        if self.semantic:
            self.config["semantic_weight"] = self.semantic_weight
        # how much of the learnt correction is added to the prior's logits at inference (1 = as trained)
        self.head_weight = float(head_weight)
        if self.head_weight != 1.0:
            self.config["head_weight"] = self.head_weight

    def _side(self, levels: list[torch.Tensor]) -> torch.Tensor:
        if self.side_levels == "all":
            return super()._side(levels)
        return self.side5(self.side4(self.side3(levels[0])))

    def _heads(self, levels: list[torch.Tensor], need_side: bool) -> dict[str, torch.Tensor]:
        """[low, mid, high] or [semantic, low, mid, high] -> {"guide", "prior"[, "prior_semantic"][, "side"]}."""
        semantic = list(levels[:1]) if self.semantic else []
        _, mid, high = levels[-3:]
        out = {"guide": self.guidance(torch.cat([*semantic, mid, high], dim=1)),
               # the training-free model's features: each level normalised per pixel
               "prior": torch.cat([F.normalize(mid, dim=1), F.normalize(high, dim=1)], dim=1)}
        if semantic:
            out["prior_semantic"] = F.normalize(semantic[0], dim=1)
        if need_side:
            out["side"] = self._side(list(levels[-3:]))
        return out

    def support_prototype(self, encoded: dict[str, torch.Tensor], masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """masks (B,H,W) -> {"vector": (B,Cg), "prior_fg": (B,Cp), "background_set": (B,N,Cp)} and, with a
        semantic level, the same two for it ("semantic_fg", "semantic_background_set")."""
        weights = ops.region_weights(masks, encoded["prior"].shape[-2:], "background")
        out = {"vector": ops.masked_average_pooling(encoded["guide"], masks)}
        for features, fg, parts in (("prior", "prior_fg", "background_set"),
                                    ("prior_semantic", "semantic_fg", "semantic_background_set")):
            if features in encoded:
                out[fg] = ops.masked_average_pooling(encoded[features], masks)
                out[parts] = ops.region_prototypes(encoded[features], weights, self.background_prototypes)
        return out

    @staticmethod
    def fuse_prototypes(prototypes: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """k shots -> one: vectors averaged, background parts pooled (B, k*N, C)."""
        return ops.fuse_prototype_dicts(prototypes)

    def segment(self, encoded: dict[str, torch.Tensor], prototype: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """-> {"logits": (B,2,h,w), "similarity": (B,h,w) learnt guidance, "prior_logits": (B,2,h,w)}."""
        similarity = ops.cosine_similarity_map(prototype["vector"], encoded["guide"])
        prior_fg, prior_bg = self._prior(encoded, prototype)
        x = torch.cat([encoded["side"] * similarity.unsqueeze(1), similarity.unsqueeze(1),
                       prior_fg.unsqueeze(1), prior_bg.unsqueeze(1)], dim=1)
        prior_logits = self.temperature * torch.stack([prior_bg, prior_fg], dim=1)
        logits = prior_logits + self.head_weight * self.classifier(self.fuse(x))
        return {"logits": logits, "similarity": similarity, "prior_logits": prior_logits}

    def _prior(self, encoded: dict[str, torch.Tensor], prototype: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(cosine to the object prototype, best cosine among the background parts), each (B,h,w).
        With a semantic level: semantic_weight x its pair + (1 - semantic_weight) x the CNN's, which
        makes the prior logits those of `FusedPrototypeModel` (a weighted sum of two-class logits)."""
        fg = ops.cosine_similarity_map(prototype["prior_fg"], encoded["prior"])
        bg = ops.cosine_similarity_map(prototype["background_set"], encoded["prior"]).amax(dim=1)
        if not self.semantic:
            return fg, bg
        w = self.semantic_weight
        sem_fg = ops.cosine_similarity_map(prototype["semantic_fg"], encoded["prior_semantic"])
        sem_bg = ops.cosine_similarity_map(prototype["semantic_background_set"], encoded["prior_semantic"]).amax(dim=1)
        return w * sem_fg + (1 - w) * fg, w * sem_bg + (1 - w) * bg

    def prior_logits(self, encoded: dict[str, torch.Tensor], prototype: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training-free model's logits (B,2,h,w) from the same prototypes (no learnt layer)."""
        fg, bg = self._prior(encoded, prototype)
        return self.temperature * torch.stack([bg, fg], dim=1)

    def forward(self, support_images, support_masks: torch.Tensor, query_images,
                from_levels: bool = False) -> dict[str, torch.Tensor]:
        """As SGOne.forward; with from_levels the inputs are backbone outputs: support [(B,K,C,h,w)] x 3,
        query [(B,C,h,w)] x 3 (the feature cache's training path)."""
        if not from_levels:
            b, k = support_images.shape[:2]
            support_images = [lv.unflatten(0, (b, k)) for lv in self.backbone(support_images.flatten(0, 1))]
            query_images = self.backbone(query_images)
        b, k = support_images[0].shape[:2]
        support = self._heads([lv.flatten(0, 1) for lv in support_images], need_side=False)
        query = self._heads(list(query_images), need_side=True)
        protos = self.support_prototype(support, support_masks.flatten(0, 1))
        fused = ops.fuse_prototype_batch(protos, b, k)
        return self.segment(query, fused)


def guidance_loss(similarity: torch.Tensor, labels: torch.Tensor, scale: float = 10.0,
                  margin: float = 0.5) -> torch.Tensor:
    """Auxiliary loss that makes the learnt guidance discriminate: BCE of sigmoid(scale * (cos - margin))
    against the query's object, similarity (B,h,w) at stride 8, labels (B,H,W) {0,1,255} area-pooled."""
    fg = ops.region_weights(labels, similarity.shape[-2:], "foreground")[:, 0]
    bg = ops.region_weights(labels, similarity.shape[-2:], "background")[:, 0]
    valid = (fg + bg) > 0.5
    if not valid.any():
        return similarity.sum() * 0.0
    target = fg / (fg + bg).clamp_min(1e-6)
    logits = scale * (similarity.float() - margin)
    return F.binary_cross_entropy_with_logits(logits[valid], target[valid])
