"""DINOv2's part of an exported model: the patch map the encoder graph takes as its "semantic" input.

DINOv2 runs as its own ONNX file (the edited graph of `sgone.backbones.dinov2`, copied into the
export as dinov2.onnx, in the model's precision). Resizing, tiling and stitching stay outside the
graphs because the number of tiles follows the image's shape; the manifest's "semantic" entry
states each step so that a runtime without torch can repeat them to the bit (examples/onnx_segment.py
does, in numpy).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from sgone.backbones.dinov2 import INPUT_NAME, PATCH, TILE, DinoV2S14

SEMANTIC_FILE = "dinov2.onnx"


def semantic_map(dino: DinoV2S14, images: Tensor) -> Tensor:
    """(B,3,H,W) in [0,1] -> DINOv2's stitched patch map (B,384,H'/14,W'/14), the map `JointBackbone` resizes
    onto its CNN's grid."""
    return dino(images)[0]


def float32_list(values: Any) -> list[float]:
    """float32 values as the shortest decimals that read back as the same float32s (the manifest's constants
    must be exact: the runtime repeats the arithmetic)."""
    return [float(str(np.float32(v))) for v in torch.as_tensor(values, dtype=torch.float32).flatten().tolist()]


def semantic_manifest(dino: DinoV2S14) -> dict[str, Any]:
    """What a runtime needs to turn the encoder's input image into the "semantic" input."""
    return {
        "file": SEMANTIC_FILE, "input": INPUT_NAME, "output": dino.outputs[0], "precision": dino.precision,
        "source_sha1": bytes(dino.onnx_digest.tolist()).hex(),
        "resolution": dino.resolution, "tile": TILE, "tile_stride": dino.tile_stride, "patch": PATCH,
        "block": dino.block, "batch": dino.batch,
        "mean": float32_list(dino.mean), "std": float32_list(dino.std),
        "steps": [
            "take the encoder's input image (1,3,H,W) in [0,1]",
            "normalise: (x - mean) / std per channel, in float32",
            "resize it by the manifest's 'image_resize' rule to the canvas: longer side `resolution`, each side "
            "max(minimum, int(round(side * resolution / max(H, W) / patch)) * patch) with Python's round, minimum "
            "`tile` (`patch` when tile_stride is 0)",
            "tile_stride 0: run the file on the whole canvas; otherwise cut tile x tile tiles at offsets "
            "0, tile_stride, 2 tile_stride, ... along each side, the last flush with the canvas's end, rows outer",
            "run the tiles in that order, `batch` at a time: the int8 file quantises each run's activations with "
            "one scale, so other runs give other features",
            "output tokens [N, 1 + h*w, 384]: drop the first (CLS), reshape the rest to (384, h, w) row-major",
            "stitch: every patch cell of the canvas grid (H'/14, W'/14) is the mean of the tiles covering it "
            "(summed in tile order)",
        ],
    }


def semantic_encoder(info: dict[str, Any], session: Any) -> DinoV2S14:
    """A DinoV2S14 that runs `session` (the exported dinov2.onnx) with the manifest entry's options."""
    dino = DinoV2S14(resolution=int(info["resolution"]), tile_stride=int(info["tile_stride"]),
                     batch=int(info.get("batch", 8)))
    dino.outputs = (str(info["output"]),)
    dino._session = session
    with torch.no_grad():
        dino.onnx_digest.copy_(torch.tensor(list(bytes.fromhex(info["source_sha1"])), dtype=torch.uint8))
    return dino
