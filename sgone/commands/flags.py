"""Flags shared by the commands that run a predictor (`segment`, `demo`, `video`, `evaluate`, `app`),
their checks, and the predictor they describe. Choices, defaults and help come from `sgone.options`;
the same idea has the same flag in every command, old names stay as hidden aliases (`hidden_alias`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from sgone import options
from sgone.errors import SgoneError


def add_model_arguments(parser: argparse.ArgumentParser, default_help: str = options.DEFAULT_MODEL_HELP) -> None:
    """--model, --size, --device, --threshold: every command that runs a predictor."""
    parser.add_argument("--model", default=None,
                        help=f"registered model name or checkpoint path (default: {default_help})")
    add_size_argument(parser)
    add_device_argument(parser)
    parser.add_argument("--threshold", type=float, default=options.DEFAULT_THRESHOLD,
                        help="foreground probability threshold")


def add_size_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=options.DEFAULT_SIZE,
                        help=f"longer image side fed to the network (default {options.DEFAULT_SIZE}); 0 keeps the original size")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=options.DEFAULT_DEVICE,
                        help=options.DEVICES_HELP)


def add_boundary_argument(parser: argparse.ArgumentParser) -> None:
    """`--boundary`, for the still-image commands (video modes have their own upsampling)."""
    parser.add_argument("--boundary", choices=options.BOUNDARIES, default=options.DEFAULT_BOUNDARY,
                        help="from the network's stride-8 grid to pixels: none (default: bilinear) or guided (a "
                             "guided filter moves the mask's edges onto the image's, a finer window for DINOv2 "
                             f"models; helps at --size {options.DEFAULT_SIZE} and above, hurts at small sizes)")


def add_small_object_arguments(parser: argparse.ArgumentParser) -> None:
    """`--self-support`, `--zoom` and `--flip`, the Predictor's steps for small objects and many instances
    (still images)."""
    parser.add_argument("--self-support", action="store_true", dest="self_support",
                        help="a second look at each query: match it again against the support blended with the "
                             "query's own object and background from the first pass (no re-encode; off by default, "
                             "see docs/results.md)")
    parser.add_argument("--zoom", action="store_true",
                        help="crop each region the first pass found (at most 3) from the full-resolution query, "
                             "segment it again at --size and paste it back (one more encode per crop; off by default)")
    parser.add_argument("--flip", action="store_true",
                        help="also read each query mirrored and average the two readings (one more encode per "
                             "query; off by default, see docs/results.md)")


def add_runtime_argument(parser: argparse.ArgumentParser) -> None:
    """`--runtime` and `--precision`, for commands whose predictor `build_predictor` makes."""
    parser.add_argument("--runtime", choices=tuple(options.RUNTIMES), default=options.DEFAULT_RUNTIME,
                        help="auto (default): the installed runtime measured fastest for the model on this CPU, "
                             "torch on CUDA; torch; onnx: ONNX Runtime on the CPU, the model exported when the command "
                             "starts (a few seconds) or --model a folder from `sgone export --dynamic`; openvino: the "
                             'same graphs run by OpenVINO (pip install "sgone[openvino]")')
    parser.add_argument("--precision", choices=options.PRECISIONS, default=options.DEFAULT_PRECISION,
                        help="auto (default): the model as it ships (the default model's DINOv2 in int8); fp32; "
                             "bf16 (openvino, on a CPU with AVX-512 BF16 or AMX: faster, masks differ slightly)")


def add_weights_argument(parser: argparse.ArgumentParser) -> None:
    """`--weights`, for commands that build their predictor with `build_predictor`."""
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="ImageNet weight file (or a folder holding it) for the backbone of a registered --model, "
                             "e.g. vgg16-397923af.pth or resnet50-0676ba61.pth, which sgone does not ship "
                             "(default: found offline in installed packages or torch's hub cache)")


def add_fusion_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--fusion", choices=options.FUSIONS, default=options.DEFAULT_FUSION, help=help_text)


SKIP_HINT = "(--on-bad-input skip goes on without it)"


def add_on_bad_input_argument(parser: argparse.ArgumentParser, what: str, old: str) -> None:
    """`--on-bad-input {stop,skip}` (and the command's old name for it, hidden)."""
    parser.add_argument("--on-bad-input", choices=options.ON_BAD_INPUT, default="stop", dest="on_bad_input",
                        help=f"a missing or unreadable {what} stops the run with an error naming it, before anything "
                             f"is written (default stop), or is reported, listed in summary.json and skipped")
    hidden_alias(parser, old, "on_bad_input", choices=options.ON_BAD_INPUT)


def hidden_alias(parser: argparse.ArgumentParser, flag: str, dest: str, **kwargs) -> None:
    """An old flag name kept working but left out of --help."""
    parser.add_argument(flag, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)


def required_with_alias(parser: argparse.ArgumentParser, flag: str, old: str, dest: str, help: str,
                        **kwargs) -> None:
    """A required flag whose old name (hidden) may stand in for it: usage shows only `flag`."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(flag, dest=dest, help=help, **kwargs)
    group.add_argument(old, dest=dest, help=argparse.SUPPRESS, **kwargs)


def check_model_arguments(args: argparse.Namespace) -> None:
    """Reject bad values of the shared model flags before any file is read or model built."""
    import math

    if args.size is not None and args.size < 0:
        raise SgoneError(f"--size {args.size}: must be positive (0 keeps the original size)")
    if not (math.isfinite(args.threshold) and 0.0 <= args.threshold <= 1.0):
        raise SgoneError(f"--threshold {args.threshold}: must be between 0 and 1")
    weights = getattr(args, "weights", None)
    if weights is not None:
        from sgone.models.zoo import MODELS

        name = args.model or options.DEFAULT_MODEL
        if getattr(args, "runtime", "torch") != "torch" and Path(name).is_dir():
            raise SgoneError(f"--weights {weights}: {name} is an exported model, which holds its own weights")
        if "arch" not in MODELS.get(name, {}):  # a path, or a shipped checkpoint such as the default
            raise SgoneError(f"--weights {weights}: only for a registered --model name; {name} is a checkpoint, "
                             f"which holds its own weights")
        if not Path(weights).exists():
            raise SgoneError(f"{weights}: no such weights file")


def check_mask_arguments(args: argparse.Namespace) -> None:
    """`--class-id` and `--max-pixels`, as `segment` and `label` take them."""
    if args.class_id is not None and (args.class_id <= 0 or args.class_id == 255):
        raise SgoneError(f"--class-id {args.class_id}: not an object class (0 is background, 255 is ignore)")
    if args.max_pixels is not None and args.max_pixels < 0:
        raise SgoneError(f"--max-pixels {args.max_pixels}: must be positive (0 = no limit)")


def model_name(args: argparse.Namespace) -> str:
    """The model the flags name (the default's own name when --model is not given)."""
    return str(args.model or options.DEFAULT_MODEL)


def build_predictor(args: argparse.Namespace, fusion: str = options.DEFAULT_FUSION):
    """The predictor for --model/--weights/--device/--size/--threshold/--runtime/--precision/--boundary (and
    --self-support/--zoom/--flip where a command has them): every
    name, the default and --weights take the same road (`sgone.runtimes`, then `load_model`)."""
    from sgone import predictor as predictors

    return predictors.Predictor(args.model, device=args.device, size=args.size or None, threshold=args.threshold,
                                fusion=fusion, runtime=getattr(args, "runtime", options.DEFAULT_RUNTIME),
                                boundary=getattr(args, "boundary", options.DEFAULT_BOUNDARY),
                                precision=getattr(args, "precision", options.DEFAULT_PRECISION),
                                weights=getattr(args, "weights", None) or "auto",
                                self_support=getattr(args, "self_support", False), zoom=getattr(args, "zoom", False),
                                flip=getattr(args, "flip", False))
