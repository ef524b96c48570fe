"""`sgone video`: segment an object through a clip from one annotated first frame."""
from __future__ import annotations

import argparse
from pathlib import Path

from sgone.errors import SgoneError


def register(subparsers) -> None:
    from sgone.commands.flags import (add_model_arguments, add_on_bad_input_argument, add_runtime_argument,
                                      required_with_alias)
    from sgone.options import TRAINING_FREE_MODEL
    from sgone.video.options import DEFAULT_MODE, MODES, PREVIEWS

    p = subparsers.add_parser(
        "video", help="segment an object through a video from its first frame's mask",
        description="One-shot video object segmentation: the first frame's mask is the support and every later "
                    "frame is a query. Writes OUTPUT/masks/<frame>.png (0/255, frame size), OUTPUT/overlay.mp4, "
                    "an animated preview and OUTPUT/summary.json. Frames stream one at a time; masks are written "
                    "atomically as they come.")
    p.add_argument("--input", required=True, metavar="FRAMES_OR_VIDEO",
                   help="a folder of frames (sorted by name, numbers as numbers) or a video file (MP4, AVI, WebM, ...)")
    required_with_alias(p, "--support-mask", "--mask", "mask", metavar="MASK",
                        help="mask of the first frame, the support (0/1, 0/255, palette or RGB non-black = object), "
                             "same size as the frame unless --resize-masks")
    p.add_argument("--resize-masks", action="store_true",
                   help="accept a first-frame mask of another size by resizing it to the frame (nearest neighbour)")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--mode", choices=MODES, default=DEFAULT_MODE,
                   help=f"memory: each cell takes the labels of its most similar cells in the first and recent "
                        f"frames, re-detection when the object is lost, a zoom step for small objects; temporal: "
                        f"first-frame prototypes plus nearest matches in past frames, a location prior and colour "
                        f"models (1.5x faster); independent: every frame against the first frame only (the paper's "
                        f"protocol); propagate: confident predictions also update the prototype online "
                        f"(default {DEFAULT_MODE}; figures in docs/video.md)")
    p.add_argument("--every", type=int, default=1, metavar="N", help="process every N-th frame (default 1: all)")
    add_on_bad_input_argument(p, "frame", old="--on-bad-frame")
    p.add_argument("--preview", choices=PREVIEWS, default="gif", help="animated preview format (default gif)")
    p.add_argument("--no-video", action="store_true", help="do not write overlay.mp4")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate of the input (default: the video's own; 24 for a frame folder)")
    p.add_argument("--update-weight", type=float, default=None, metavar="W",
                   help="propagate: weight of a frame's prototype in the online update (default 0.2, lowered over "
                        "time as w / (1 + w t) so the first frame keeps its share)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads for the model (default: one less than the CPU cores, at least 1: the spare "
                        "core decodes frames and encodes the MP4; on a busy 2-core machine 2 threads ran 5-8x "
                        "slower than 1, docs/results.md)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_arguments(p, f"{TRAINING_FREE_MODEL}, the training-free model: on video clips no model was "
                           "trained on it scored as well as the trained default, at ~5x its frame rate")
    add_runtime_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import math

    from sgone.commands.flags import check_model_arguments
    from sgone.commands.outputs import check_output_folder
    from sgone.video import PropagationConfig, check_first_frame, run_video
    from sgone.video.model import DEFAULT_VIDEO_MODEL, default_threads, video_predictor
    from sgone.video.run import stale_outputs

    args.model = args.model or DEFAULT_VIDEO_MODEL  # not the image default (see sgone.video.model)
    check_model_arguments(args)
    if args.every < 1:
        raise SgoneError(f"--every {args.every}: must be at least 1")
    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        raise SgoneError(f"--fps {args.fps}: must be a positive number")
    if args.threads is not None and args.threads < 1:
        raise SgoneError(f"--threads {args.threads}: must be at least 1")
    config = None
    if args.update_weight is not None:
        if args.mode != "propagate":
            raise SgoneError(f"--update-weight: only for --mode propagate (the mode is {args.mode})")
        if not (0.0 < args.update_weight <= 1.0):
            raise SgoneError(f"--update-weight {args.update_weight}: must be in (0, 1]")
        config = PropagationConfig(weight=args.update_weight)
    mask = Path(args.mask)
    if not mask.is_file():
        raise SgoneError(f"{mask}: mask file not found")
    output = Path(args.output)
    # fail on a bad input or first-frame mask before the model loads or any folder is made
    check_first_frame(args.input, mask, args.resize_masks)
    check_output_folder(output)
    stale_outputs(output)  # someone else's PNGs in OUTPUT/masks: refused before the model loads
    import torch  # only once the inputs look fine

    torch.set_num_threads(args.threads or default_threads())
    predictor = video_predictor(args.model, device=args.device, size=args.size, threshold=args.threshold,
                                runtime=args.runtime, precision=args.precision)
    summary = run_video(
        predictor, args.input, mask, output, mode=args.mode, every=args.every, on_bad_frame=args.on_bad_input,
        preview=args.preview, write_video=not args.no_video, fps=args.fps, config=config, progress=not args.quiet,
        resize_mask=args.resize_masks,
    )
    skipped = f", skipped {len(summary.skipped)} bad frame(s)" if summary.skipped else ""
    print(f"wrote {summary.masks_written} mask(s) to {summary.outputs.get('masks')}{skipped}; "
          f"{summary.fps:.2f} frames/s ({args.mode})")
    for key in ("video", "preview"):
        if key in summary.outputs:
            print(f"{key}: {summary.outputs[key]}")
    return 0

