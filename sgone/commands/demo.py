"""`sgone demo`: segment the bundled sample photo and print the IoU against its ground truth."""
from __future__ import annotations

import argparse
from pathlib import Path

from sgone.commands.flags import (add_boundary_argument, add_model_arguments, add_runtime_argument,
                                  add_weights_argument, build_predictor, check_model_arguments)
from sgone.commands.outputs import check_output_folder, make_output_folder, write_results
from sgone.samples import sample_paths

EXAMPLE = """example:
  sgone demo --output sgone-demo --size 473"""


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run one-shot segmentation on the bundled sample photo", epilog=EXAMPLE,
                              description="Person support (left half of a VOC photo) -> persons in the "
                                          "right half; prints IoU against the sample's ground truth.")
    p.add_argument("--output", default="sgone-demo", metavar="DIR", help="where to write results (default sgone-demo)")
    add_weights_argument(p)
    add_model_arguments(p)
    add_boundary_argument(p)
    add_runtime_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from sgone.io import read_image, read_mask
    from sgone.models.registry import DEFAULT_MODEL
    from sgone.viz import heatmap, overlay, tile_grid

    check_model_arguments(args)
    out = Path(args.output)
    check_output_folder(out)
    paths = sample_paths()
    support, query = read_image(paths["support"]), read_image(paths["query"])
    support_mask, truth = read_mask(paths["support_mask"]), read_mask(paths["query_mask"])
    predictor = build_predictor(args)
    predictor.set_support([support], [support_mask])
    result = predictor.predict(query)
    pred, gt = result.mask == 1, truth == 1
    iou = float((pred & gt).sum() / max((pred | gt).sum(), 1))
    grid = tile_grid([[overlay(support, support_mask, color=(0, 200, 0)), overlay(query, truth, color=(0, 200, 0)),
                       overlay(query, result.mask), heatmap(result.similarity, query)]],
                     [["support + mask", "query truth", f"prediction IoU {iou:.3f}", "similarity"]], tile=240)
    make_output_folder(out)
    write_results({
        out / "query.png": np.where(result.mask == 1, 255, 0).astype(np.uint8),
        out / "query_overlay.png": overlay(query, result.mask),
        out / "query_similarity.png": heatmap(result.similarity, query, colorbar=True),
        out / "demo_grid.png": grid,
    })
    model_name = args.model or f"{DEFAULT_MODEL} (the default)"
    print(f"model: {model_name}; sample: person support -> persons in another photo half")
    print(f"IoU against ground truth: {iou:.3f}  (predicted {int(pred.sum())} px, true {int(gt.sum())} px)")
    print(f"wrote {out}/query.png, query_overlay.png, query_similarity.png, demo_grid.png")
    return 0 if np.isfinite(iou) else 1
