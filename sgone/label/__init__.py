"""Labelling whole collections (`sgone label`) and COCO export.

- `coco`: `CocoBuilder` (per-image masks or `Prediction`s -> a COCO instances dict with RLE
  segmentations), `encode_mask`, `write_coco`; for `Predictor` users and the web app too.
- `inputs`: --input folders, globs and manifests -> keyed items; the support set's classes.
- `output`: the output folder (journal, fingerprint, index.jsonl, annotations.json).
- `work`: one image's decode -> prediction -> stored bytes, shared by both engines.
- `local`, `ray_engine`: the two engines (threads in one process; Ray Data actors).
"""
from __future__ import annotations

from sgone.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "CocoBuilder": "sgone.label.coco",
    "encode_mask": "sgone.label.coco",
    "write_coco": "sgone.label.coco",
    "LabelOutput": "sgone.label.output",
}, globals())
