"""`sgone export`: a model as ONNX graphs (encoder, prototype, head) and a JSON manifest."""
from __future__ import annotations

import argparse
from pathlib import Path

from sgone.errors import SgoneError
from sgone.options import DEFAULT_MODEL, DEFAULT_SIZE

EXAMPLE = """example:
  sgone export --output onnx-model/
  python examples/onnx_segment.py onnx-model/ --support s.jpg --support-mask s.png --input q.jpg --output q_mask.png
  sgone export --model sgone-mobilenet_v2-real --output onnx-int8/ --quantize int8 --calibration photos/
  sgone segment --model onnx-int8/ --runtime onnx --support s.jpg --support-mask s.png --input q.jpg --output out/"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a model to ONNX for ONNX Runtime (no PyTorch needed to run it)", epilog=EXAMPLE,
        description="Writes OUTPUT/encoder.onnx (image -> features), prototype.onnx (a support's features and "
                    "mask cover -> prototypes), head.onnx (query features + prototypes -> logits, similarity), "
                    "dinov2.onnx for DINOv2 models, and manifest.json (the image and mask resize rules, "
                    "input size rule, normalisation, DINOv2's tiling, tensor shapes, model config, threshold, sgone "
                    "version, and the graphs' agreement with PyTorch on the bundled photos). "
                    "examples/onnx_segment.py runs them with onnxruntime, numpy and pillow alone and gives "
                    "`sgone segment`'s masks.")
    p.add_argument("--model", default=None,
                   help="registered model name, shipped checkpoint name or checkpoint path (default: the default of "
                        f"`sgone segment`, {DEFAULT_MODEL})")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the graphs and manifest.json")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE,
                   help=f"input size: the longer side, aspect kept, as `sgone segment --size` (default {DEFAULT_SIZE}), "
                        "or with --fixed the square side")
    p.add_argument("--fixed", action="store_true",
                   help="a fixed 1x3xSIZExSIZE input for runtimes that need static shapes: photos are squeezed to a "
                        "square, so masks of non-square photos differ from sgone's, and --runtime onnx refuses it "
                        "(default: free batch, height and width)")
    p.add_argument("--dynamic", action="store_true", help=argparse.SUPPRESS)  # now the default; old commands still run
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="int8 encoder (static QDQ, calibrated on --calibration photos); see docs/results.md for "
                        "what it costs in mIoU")
    p.add_argument("--calibration", default=None, metavar="DIR",
                   help="folder of photos to calibrate --quantize int8 on (default: the two bundled sample photos)")
    p.set_defaults(func=run)


def calibration_images(folder: str | None, limit: int = 64) -> list:
    """Up to `limit` photos of `folder` (name order) as HxWx3 uint8, or the bundled ones."""
    from sgone.io import list_images, read_image

    if folder is None:
        from sgone.onnx.export import sample_images

        return sample_images()
    images = list_images(folder)[:limit]
    if not images:
        raise SgoneError(f"{folder}: no images to calibrate on")
    return [read_image(p) for p in images]


def run(args: argparse.Namespace) -> int:
    from sgone.onnx.sessions import require_onnxruntime

    require_onnxruntime(export=True)  # before the model is loaded: the one-line install hint
    if args.calibration is not None and not args.quantize:
        raise SgoneError("--calibration: only with --quantize int8")
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise SgoneError(f"{output}: exists and is not a folder")
    images = calibration_images(args.calibration) if args.quantize else None
    from sgone.onnx.export import export_model

    info = export_model(args.model, output, size=args.size, dynamic=not args.fixed, quantize=args.quantize,
                        calibration=images)
    check = info["check"]
    shape = ("any size, longer side resized to " + str(args.size) if info["input"]["dynamic"]
             else "x".join(str(d) for d in info["input"]["shape"]))
    print(f"wrote {', '.join(info['files'].values())} and manifest.json to {output} "
          f"({info['model']}, input {shape}{', int8 encoder' if args.quantize else ''})")
    print(f"check against PyTorch on the bundled photos at {check['size']}: max abs diff of the probabilities "
          f"{check['max_abs_diff_probability']:.2g}, IoU of the masks {check['mask_iou']:.4f}")
    if args.quantize and args.calibration is None:
        print("note: calibrated on the 2 bundled photos only; --calibration DIR with ~32 photos like yours lost "
              "less mIoU (docs/results.md, ONNX Runtime section)")
    return 0
