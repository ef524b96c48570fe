"""The SG-One network: a guidance branch (support vector x query similarity) and a
segmentation branch whose features the similarity map multiplies.

Two variants share the layers:
- "published": the public code's behaviour (MAP on features upsampled to the mask's
  resolution, masks binarised with `mask > 0` so 255 counts as object, MAP denominator
  summed over the batch, padding=1 on the final 1x1 conv);
- "fixed": per-sample MAP on the area-downsampled mask, 255 ignored, no padding on the 1x1 conv.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from sgone import ops

VARIANTS = ("fixed", "published")


def _conv3x3(cin: int, cout: int, relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SGOne(nn.Module):
    """SG-One over any stride-8 backbone that returns [low, mid, high] feature maps."""

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
        self.config = dict(config or {}, arch="sgone", variant=variant,
                           guidance_dim=guidance_dim, side_dim=side_dim)

    def binarise(self, masks: torch.Tensor) -> torch.Tensor:
        """Masks as the variant reads them: published turns every non-zero value (255 too) into 1."""
        if self.variant == "published":
            return (masks > 0).long()
        return masks.long()

    def encode(self, images: torch.Tensor, need_side: bool = True) -> dict[str, torch.Tensor]:
        """(B,3,H,W) in [0,1] -> {"guide": (B,Cg,h,w), "side": (B,Cs,h,w) if need_side}, stride 8."""
        return self._heads(self.backbone(images), need_side)

    def _heads(self, levels: list[torch.Tensor], need_side: bool) -> dict[str, torch.Tensor]:
        low, mid, high = levels
        out = {"guide": self.guidance(high)}
        if need_side:
            s3 = self.side3(low)
            s4 = self.side4(torch.cat([s3, mid], dim=1))
            out["side"] = self.side5(torch.cat([s4, high], dim=1))
        return out

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

    def forward(self, support_images: torch.Tensor, support_masks: torch.Tensor,
                query_images: torch.Tensor) -> dict[str, torch.Tensor]:
        """support_images (B,K,3,H,W), support_masks (B,K,H,W), query_images (B,3,H,W) -> segment()."""
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
