"""DINOv2's part of an exported model: the patch map the encoder graph takes as its "semantic" input.

DINOv2 runs as its own ONNX file (the edited graph of `sgone.backbones.dinov2`, copied into the
export as dinov2.onnx). Resizing, tiling and stitching stay outside the graphs because the number
of tiles follows the image's shape; the manifest's "semantic" entry states each step so that a
runtime without torch can repeat them (examples/onnx_segment.py does, in numpy and pillow).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sgone.backbones.dinov2 import INPUT_NAME, PATCH, TILE, DinoV2S14

SEMANTIC_FILE = "dinov2.onnx"


def semantic_map(dino: DinoV2S14, images: Tensor) -> Tensor:
    """(B,3,H,W) in [0,1] -> DINOv2's stitched patch map (B,384,H'/14,W'/14), the map `JointBackbone` resizes
    onto its CNN's grid."""
    return dino(images)[0]


def semantic_manifest(dino: DinoV2S14) -> dict[str, Any]:
    """What a runtime needs to turn the encoder's input image into the "semantic" input."""
    return {
        "file": SEMANTIC_FILE, "input": INPUT_NAME, "output": dino.outputs[0], "precision": dino.precision,
        "source_sha1": bytes(dino.onnx_digest.tolist()).hex(),
        "resolution": dino.resolution, "tile": TILE, "tile_stride": dino.tile_stride, "patch": PATCH,
        "mean": [round(float(v), 6) for v in dino.mean.flatten()],
        "std": [round(float(v), 6) for v in dino.std.flatten()],
        "steps": [
            "take the encoder's input image (B,3,H,W) in [0,1]",
            "resize it (bilinear, antialiased, align_corners=False) to the canvas: longer side `resolution`, "
            "each side rounded to a multiple of `patch` and at least `tile` (at least `patch` when tile_stride is 0)",
            "normalise: (x - mean) / std per channel",
            "tile_stride 0: run the file on the whole canvas; otherwise cut tile x tile tiles at offsets "
            "0, tile_stride, 2 tile_stride, ... along each side, the last flush with the canvas's end, and run each",
            "output tokens [N, 1 + h*w, 384]: drop the first (CLS), reshape the rest to (384, h, w) row-major",
            "stitch: every patch cell of the canvas grid (H'/14, W'/14) is the mean of the tiles covering it",
        ],
    }


def semantic_encoder(info: dict[str, Any], session: Any) -> DinoV2S14:
    """A DinoV2S14 that runs `session` (the exported dinov2.onnx) with the manifest entry's options."""
    dino = DinoV2S14(resolution=int(info["resolution"]), tile_stride=int(info["tile_stride"]))
    dino.outputs = (str(info["output"]),)
    dino._session = session
    with torch.no_grad():
        dino.onnx_digest.copy_(torch.tensor(list(bytes.fromhex(info["source_sha1"])), dtype=torch.uint8))
    return dino
