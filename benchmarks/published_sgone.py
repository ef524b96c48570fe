"""The public SG-One forward (VGG-16, 1-shot), re-implemented for timing only.

This is the reference point of `core_speed.py`: what the published code costs per episode,
so that `sgone`'s own models can be compared with it in one run. Written from the layer
layout in `REFERENCE.md` section 1; nothing here is imported by the `sgone` package.

What the published forward does (and this module does the same, op for op):
- one VGG-16 "D" network with pool1-pool3 3x3/stride 2/padding 1 and pool4-pool5
  3x3/stride 1/padding 1 (output stride 8), no dilation; every block ends with its pool;
- the support image and the query image go through the network *separately* (batch 1 each),
  and the network always runs its side branches (side3 on pool3, side4 on
  concat(side3, pool4), side5 on concat(side4, pool5)), for the support too, where the
  public code throws the result away (`support_side=False` skips that waste);
- guidance: conv4 block -> conv5 block -> "fc6" 3x3 conv 512->512 (no ReLU), on both images;
- masked average pooling: the support's fc6 map is upsampled bilinearly to the mask's full
  resolution (a 512 x H x W tensor), multiplied by the mask and summed, divided by the mask
  area summed over the whole batch;
- cosine similarity (over channels) between the query's fc6 map and that vector;
- side5 * similarity -> 3x3 conv 128->128 + ReLU -> 1x1 conv 128->2 with padding=1, so the
  logits are 2 pixels larger than the stride-8 grid.

Weights are random (xavier-uniform as in the public code): ImageNet VGG-16 weights are not
available offline, and the cost of a forward pass does not depend on them.

Run `python benchmarks/published_sgone.py` for its GFLOPs (analytic and counted) and a timing.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# VGG-16 "D" with the DeepLab-style stride-1 pools: "M" = 3x3/s2/p1 pool, "N" = 3x3/s1/p1 pool
CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "N", 512, 512, 512, "N"]


def _blocks(cfg: list) -> nn.ModuleList:
    """Five blocks, each ending with its pool (the public code's features_1 .. features_5)."""
    blocks, layers, cin = [], [], 3
    for v in cfg:
        if v in ("M", "N"):
            layers.append(nn.MaxPool2d(3, stride=2 if v == "M" else 1, padding=1))
            blocks.append(nn.Sequential(*layers))
            layers = []
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    return nn.ModuleList(blocks)


class PublishedVGG(nn.Module):
    """The public code's `netB`: VGG-16 blocks + fc6 + side branches.

    forward(x normalised (B,3,H,W)) -> (fc6 (B,512,h,w), side5 (B,128,h,w) or None), h = ceil(H/8).
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = _blocks(CFG)
        self.fc6 = nn.Conv2d(512, 512, 3, padding=1)
        self.side3 = nn.Sequential(nn.Conv2d(256, 128, 3, padding=1), nn.ReLU())
        self.side4 = nn.Sequential(nn.Conv2d(640, 128, 3, padding=1), nn.ReLU())
        self.side5 = nn.Conv2d(640, 128, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, side: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        for block in self.features[:3]:
            x = block(x)
        out3 = x
        out4 = self.features[3](out3)
        out5 = self.features[4](out4)
        guide = self.fc6(out5)
        if not side:
            return guide, None
        s3 = self.side3(out3)
        s4 = self.side4(torch.cat([s3, out4], dim=1))
        s5 = self.side5(torch.cat([s4, out5], dim=1))
        return guide, s5


class PublishedSGOne(nn.Module):
    """The public SG-One 1-shot forward.

    forward(support (B,3,H,W) in [0,1], support_mask (B,H,W) or (B,1,H,W) {0,1}, query (B,3,H,W)
    in [0,1]) -> {"logits": (B,2,h+2,w+2), "similarity": (B,h,w)}.
    """

    def __init__(self, support_side: bool = True) -> None:
        super().__init__()
        self.net = PublishedVGG()
        self.classifier_6 = nn.Sequential(nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(inplace=True))
        self.exit_layer = nn.Conv2d(128, 2, 1, padding=1)  # the published padding=1
        self.support_side = support_side
        self.cosine = nn.CosineSimilarity(dim=1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        for m in (self.classifier_6[0], self.exit_layer):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, support: torch.Tensor, support_mask: torch.Tensor,
                query: torch.Tensor) -> dict[str, torch.Tensor]:
        # the public code normalises in its data loader; done here so both models take [0,1] images
        support = (support - self.mean) / self.std
        query = (query - self.mean) / self.std
        mask = support_mask.float()
        if mask.dim() == 3:
            mask = mask.unsqueeze(1)
        guide_s, _ = self.net(support, side=self.support_side)
        # MAP as published: features up to the mask's resolution, area summed over the batch
        up = F.interpolate(guide_s, size=mask.shape[-2:], mode="bilinear", align_corners=False)
        vector = (up * mask).sum(dim=(2, 3)) / mask.sum()
        guide_q, side_q = self.net(query, side=True)
        similarity = self.cosine(guide_q, vector[:, :, None, None])
        x = self.classifier_6(side_q * similarity.unsqueeze(1))
        return {"logits": self.exit_layer(x), "similarity": similarity}


# ------------------------------------------------------------------------------ FLOPs
def _conv_macs(cin: int, cout: int, k: int, h: int, w: int) -> int:
    return cin * cout * k * k * h * w


def _pool_out(n: int, stride: int) -> int:
    return (n + 2 - 3) // stride + 1


def analytic_gflops(height: int, width: int, support_side: bool = True) -> float:
    """Conv GFLOPs (2 FLOPs per multiply-add) of one published 1-shot forward at HxW.

    Counts every convolution (the VGG blocks, fc6, the side branches, classifier_6 and the
    1x1 exit conv); pooling, interpolation and element-wise work are left out (< 1%).
    """
    def backbone(side: bool) -> int:
        h, w, cin, macs = height, width, 3, 0
        for v in CFG:
            if v in ("M", "N"):
                s = 2 if v == "M" else 1
                h, w = _pool_out(h, s), _pool_out(w, s)
            else:
                macs += _conv_macs(cin, v, 3, h, w)
                cin = v
        macs += _conv_macs(512, 512, 3, h, w)  # fc6
        if side:
            macs += _conv_macs(256, 128, 3, h, w) + 2 * _conv_macs(640, 128, 3, h, w)
        return macs, h, w

    sup, _, _ = backbone(support_side)
    qry, h, w = backbone(True)
    head = _conv_macs(128, 128, 3, h, w) + _conv_macs(128, 2, 1, h + 2, w + 2)
    return 2 * (sup + qry + head) / 1e9


def counted_gflops(model: nn.Module, *inputs: torch.Tensor) -> float:
    """GFLOPs of `model(*inputs)` as torch's FlopCounterMode counts them (convs, matmuls).

    The model and inputs are copied to the meta device when possible, so nothing is computed.
    """
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    try:
        meta_model = copy.deepcopy(model).to("meta")
        meta_inputs = [t.to("meta") for t in inputs]
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            meta_model(*meta_inputs)
    except Exception:  # an op without a meta kernel: count on the real tensors
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            model(*inputs)
    return counter.get_total_flops() / 1e9


def episode_inputs(height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random support image, an elliptic support mask (B,H,W) {0,1} and a query image, all at HxW."""
    g = torch.Generator().manual_seed(seed)
    support = torch.rand(1, 3, height, width, generator=g)
    query = torch.rand(1, 3, height, width, generator=g)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    mask = ((yy / 0.6) ** 2 + (xx / 0.4) ** 2 <= 1).long().unsqueeze(0)
    return support, mask, query


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="321x321,375x500", help="HxW list (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-time", action="store_true", help="only print the GFLOPs")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = PublishedSGOne().eval()
    print(f"| size | GFLOPs (analytic) | GFLOPs (FlopCounterMode) | ms (median of {args.repeats}) |")
    print("|---|---:|---:|---:|")
    for spec in args.sizes.split(","):
        h, w = (int(v) for v in spec.lower().split("x"))
        inputs = episode_inputs(h, w)
        ms = "-"
        if not args.no_time:
            times = []
            with torch.inference_mode():
                model(*inputs)  # warm-up
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    model(*inputs)
                    times.append((time.perf_counter() - t0) * 1e3)
            ms = f"{statistics.median(times):.0f}"
        print(f"| {h}x{w} | {analytic_gflops(h, w):.1f} | {counted_gflops(model, *inputs):.1f} | {ms} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
