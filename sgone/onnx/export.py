"""Write a model as three ONNX graphs (encoder, prototype, head) and a JSON manifest.

    export_model("prototype-mobilenet_v2", "onnx-out/")   # any input size, the longer side resized to 473
    export_model("sgone-mobilenet_v2-real", "onnx-out/", quantize="int8")
    export_model("prototype-mobilenet_v2", "onnx-out/", dynamic=False)   # fixed 1x3x473x473 input

The manifest states every step outside the graphs (sizes, the image resize, the mask resize, DINOv2's
tiles, k-shot averaging, threshold) exactly enough for a runtime without torch to give the library's
masks (examples/onnx_segment.py does, tests/examples/test_onnx_segment.py checks it).

The TorchScript-based exporter (`dynamo=False`, opset 17) is used: it needs no extra package,
takes about a second per model, and its graphs match PyTorch to ~1e-6 (checked on the bundled
photos at export time; the figures go into the manifest).
"""
from __future__ import annotations

import copy
import dataclasses
import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from sgone import ops
from sgone.errors import SgoneError
from sgone.onnx.graphs import EncoderGraph, GraphSpec, HeadGraph, PrototypeGraph, graph_spec, region_inputs
from sgone.onnx.semantic import SEMANTIC_FILE, float32_list, semantic_manifest, semantic_map
from sgone.options import DEFAULT_FUSION, DEFAULT_SIZE, DEFAULT_THRESHOLD

OPSET = 17
GRAPHS = ("encoder", "prototype", "head")
MANIFEST = "manifest.json"
QUANTIZE = ("int8",)


def _axes(names: tuple[str, ...], batch: bool, grid: bool) -> dict[str, dict[int, str]]:
    """Dynamic axes of feature tensors (B,C,h,w) and prototypes (B,C) / parts (B,N,C)."""
    out: dict[str, dict[int, str]] = {}
    for name in names:
        axes = {0: "batch"} if batch else {}
        if name.endswith("_set"):
            axes[1] = "parts"  # k-shot averaging pools k shots' parts
        elif name not in ("vector", "background", "prior_fg", "semantic_fg") and grid:
            axes.update({2: "grid_height", 3: "grid_width"})
        if axes:
            out[name] = axes
    return out


def _to_bytes(module: nn.Module, inputs: tuple[torch.Tensor, ...], input_names: list[str],
              output_names: list[str], dynamic_axes: dict) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape checks that the trace fixes
        torch.onnx.export(module, inputs, buffer, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False, do_constant_folding=True)
    return buffer.getvalue()


@torch.inference_mode()
def export_graphs(model: nn.Module, size: int = DEFAULT_SIZE,
                  dynamic: bool = True) -> tuple[GraphSpec, dict[str, bytes]]:
    """A prepared (BatchNorm-folded, eval) model -> its spec and {graph name: ONNX bytes}.

    Traced at size x size; `dynamic` leaves batch and image height/width free (the prototype
    graph takes one support at a time either way), otherwise the graphs are fixed to 1x3xsizexsize.
    The number of background parts stays free (k-shot averaging concatenates them).
    """
    spec = graph_spec(model)
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    encoder_inputs: tuple[torch.Tensor, ...] = (image,)
    if "semantic" in spec.inputs:
        encoder_inputs += (semantic_map(model.backbone.semantic, image),)
    feats = EncoderGraph(model, spec)(*encoder_inputs)
    encoded = dict(zip(spec.features, feats))
    mask = torch.zeros(1, size, size, dtype=torch.long)
    mask[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    regions = region_inputs(spec, mask, feats[0].shape[-2:])
    support = tuple(encoded[name] for name in spec.support_features) + tuple(regions[n] for n in spec.regions)
    protos = PrototypeGraph(model, spec)(*support)
    image_axes = {"image": {0: "batch", 2: "height", 3: "width"}} if dynamic else {}
    if dynamic and "semantic" in spec.inputs:
        image_axes["semantic"] = {0: "batch", 2: "semantic_height", 3: "semantic_width"}
    graphs = {
        "encoder": _to_bytes(EncoderGraph(model, spec), encoder_inputs, list(spec.inputs), list(spec.features),
                             {**image_axes, **_axes(spec.features, dynamic, dynamic)}),
        "prototype": _to_bytes(PrototypeGraph(model, spec), support, [*spec.support_features, *spec.regions],
                               list(spec.prototypes), {**_axes(spec.support_features + spec.regions, False, dynamic),
                                                       **_axes(spec.prototypes, False, dynamic),
                                                       **({"mask": {2: "height", 3: "width"}} if dynamic else {})}),
        "head": _to_bytes(HeadGraph(model, spec), (*feats, *protos), [*spec.features, *spec.prototypes],
                          ["logits", "similarity"],
                          {**_axes(spec.features + spec.prototypes + ("logits",), dynamic, dynamic),
                           **({"similarity": {0: "batch", 1: "grid_height", 2: "grid_width"}} if dynamic else {})}),
    }
    return spec, graphs


def manifest(model: nn.Module, name: str, spec: GraphSpec, size: int, dynamic: bool,
             shapes: dict[str, dict[str, dict[str, list]]], quantize: str | None) -> dict:
    """The JSON manifest: what a runtime needs to feed the graphs and read their outputs."""
    from sgone import __version__
    from sgone.backbones.base import IMAGENET_MEAN, IMAGENET_STD

    backbone = getattr(model, "backbone", None)
    return {
        "format": "sgone-onnx/1",
        "sgone_version": __version__,
        "model": name,
        "model_config": getattr(model, "config", {}),
        "opset": OPSET,
        "files": {g: f"{g}.onnx" for g in GRAPHS},
        "quantize": quantize,
        "input": {"size": size, "dynamic": dynamic,
                  "shape": ["batch", 3, "height", "width"] if dynamic else [1, 3, size, size],
                  "resize": ("longer side to size, aspect kept: h = max(8, round(H * size / max(H, W))), the same "
                             "for w, Python's round (halves to even)" if dynamic else "to size x size"),
                  "image": "the photo upright (EXIF orientation applied), transparent pixels on white, RGB uint8 "
                           "HxWx3 -> (1,3,H,W) float32 / 255 -> (h, w) by the 'image_resize' rule",
                  "layout": "NCHW RGB float32 in [0, 1]", "stride": 8,
                  "normalisation": {"mean": float32_list(getattr(backbone, "mean", IMAGENET_MEAN)),
                                    "std": float32_list(getattr(backbone, "std", IMAGENET_STD)), "inside_graph": True}},
        "image_resize": IMAGE_RESIZE,
        "mask": "the support's mask (0 background, 1 object, 255 ignore) at its image's size -> (h, w) by nearest "
                "neighbour as torch: source row min(floor(i * float32(H / h)), H - 1) with the product in float32 "
                "(row i when the sizes are equal), the same for columns",
        "spec": dataclasses.asdict(spec),
        "graphs": shapes,
        "covers":  "share of each feature cell (grid = ceil(input/8)) covered by the mask's object (1) "
                                "or background (0) pixels, 255 counting for neither: adaptive average pooling "
                                "of the mask at the input size; or (published SG-One) 'mask', 1 where the mask is "
                                "non-zero, at the input size",
        "probability": "softmax over the 2 logits (background, object) after bilinear upsampling "
                       "(align_corners=False) to the image size; object where above the threshold",
        "k_shot": "average the k supports' prototypes; concatenate their *_set parts along dim 1 "
                  "(sgone's default k-shot fusion, 'avg')",
        "fusion": DEFAULT_FUSION,
        "threshold": DEFAULT_THRESHOLD,
    }


# sgone.upsample.resize_images, stated for runtimes without sgone (examples/onnx_segment.py repeats it)
IMAGE_RESIZE = [
    "torch's F.interpolate(mode='bilinear', align_corners=False, antialias=True) made reproducible to the bit: "
    "DINOv2 in int8 turns a 1-ulp difference in its input into other features",
    "per axis, rows first then columns, skipped where the size is unchanged; n_in -> n_out, in float32 unless said: "
    "scale = n_in / n_out; support = max(scale, 1); invscale = 1 / scale (float64, rounded) if scale >= 1 else 1",
    "output i: centre = float32(float64(scale) * (i + 0.5)); low = max(trunc(float64(centre - support) + 0.5), 0); "
    "high = min(trunc(float64(centre + support) + 0.5), n_in)",
    "taps j = low .. high - 1: t = |float32((float64(j - centre) + 0.5) * invscale)|, weight 1 - t where t < 1 else 0; "
    "weights divided by their sum (summed in order of j)",
    "output = sum over taps in order of j of float64(x[j]) * float64(weight), in float64, rounded once to float32",
]


def _shapes(graphs: dict[str, bytes]) -> dict[str, dict[str, dict[str, list]]]:
    """{graph: {"inputs"/"outputs": {tensor: shape, symbolic names for free axes}}} read from the ONNX files."""
    import onnx

    def shapes(values) -> dict[str, list]:
        return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}

    out = {}
    for g, data in graphs.items():
        proto = onnx.load_model_from_string(data)
        out[g] = {"inputs": shapes(proto.graph.input), "outputs": shapes(proto.graph.output)}
    return out


def export_model(model: str | Path | nn.Module | None, output: str | Path, size: int = DEFAULT_SIZE,
                 dynamic: bool = True, quantize: str | None = None, calibration: list[np.ndarray] | None = None,
                 name: str | None = None) -> dict:
    """Export a model (name, checkpoint or module) to `output`/{encoder,prototype,head}.onnx + manifest.json.

    dynamic: any batch and image size, the longer side resized to `size` as the library does (default);
    False fixes the input to 1x3xsizexsize (photos are squeezed to a square, so non-square photos get
    other masks than the library's).
    The graphs are checked against PyTorch on the bundled photos and the result goes into the
    manifest ("check": max abs diff of the probabilities, IoU of the masks). quantize "int8":
    the encoder is quantised statically (QDQ) on `calibration` images (HxWx3 uint8; default the
    bundled photos), see `sgone.onnx.quantize`. Every file is written atomically. Returns the manifest.
    """
    from sgone.io import atomic_path, atomic_write
    from sgone.models.inference import prepare_for_inference
    from sgone.models.registry import DEFAULT_MODEL, load_model
    from sgone.onnx.sessions import OnnxModel, require_onnxruntime

    require_onnxruntime(export=True)
    if quantize not in (None, *QUANTIZE):
        raise SgoneError(f"--quantize {quantize}: use one of {', '.join(QUANTIZE)}")
    if size < 32:
        raise SgoneError(f"--size {size}: too small for a stride-8 network (at least 32)")
    if isinstance(model, nn.Module):
        name = name or type(model).__name__
        model = copy.deepcopy(model)  # folding BatchNorm changes the module
    else:
        name = name or str(model or DEFAULT_MODEL)
        model = load_model(model)
    spec = graph_spec(model)  # refuse an unsupported model before any work
    semantic = model.backbone.semantic if "semantic" in spec.inputs else None
    if quantize and semantic is not None:
        raise SgoneError(f"--quantize {quantize}: not offered for DINOv2 models yet (its loss on the photo checks "
                         "is unmeasured); export them without --quantize")
    model = prepare_for_inference(model, "cpu")
    spec, graphs = export_graphs(model, size, dynamic)
    if quantize:
        from sgone.onnx.quantize import quantize_encoder

        graphs["encoder"] = quantize_encoder(graphs["encoder"], calibration or sample_images(), size, dynamic)
    info = manifest(model, name, spec, size, dynamic, _shapes(graphs), quantize)
    info["check"] = check_agreement(model, OnnxModel(graphs, spec, torch_prototypes=False, semantic=semantic), size)
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise SgoneError(f"{output}: exists and is not a folder")
    try:
        if semantic is not None:
            info["files"]["dinov2"] = SEMANTIC_FILE
            info["semantic"] = semantic_manifest(semantic)
            with atomic_path(output / SEMANTIC_FILE) as tmp:
                shutil.copyfile(semantic.session_file, tmp)
        for g, data in graphs.items():
            atomic_write(output / info["files"][g], data)
        text = json.dumps(info, indent=2) + "\n"
        atomic_write(output / MANIFEST, text)
    except OSError as exc:
        raise SgoneError(f"{output}: cannot write ({exc.strerror or exc})") from None
    return json.loads(text)


def sample_images() -> list[np.ndarray]:
    """The bundled photos (HxWx3 uint8): support and query halves of a VOC photo."""
    from sgone.io import read_image
    from sgone.samples import sample_paths

    paths = sample_paths()
    return [read_image(paths["support"]), read_image(paths["query"])]


@torch.inference_mode()
def check_agreement(model: nn.Module, onnx_model, size: int) -> dict:
    """PyTorch vs the ONNX graphs on the bundled episode (both halves at size x size, the support
    mask given): {"max_abs_diff_probability", "mask_iou", "size"}."""
    from sgone.inputs import image_tensor, mask_tensor
    from sgone.io import read_mask
    from sgone.samples import sample_paths

    paths = sample_paths()
    support, query = sample_images()
    hw = (size, size)
    mask = mask_tensor(read_mask(paths["support_mask"]), hw)
    images = [image_tensor(x, hw) for x in (support, query)]
    probs = []
    for m in (model, onnx_model):
        proto = m.support_prototype(m.encode(images[0], need_side=False), mask)
        logits = m.segment(m.encode(images[1]), proto)["logits"]
        probs.append(ops.upsample_logits(logits, hw).softmax(dim=1)[:, 1])
    a, b = (p > 0.5 for p in probs)
    union = int((a | b).sum())
    return {"size": size, "max_abs_diff_probability": float((probs[0] - probs[1]).abs().max()),
            "mask_iou": float((a & b).sum()) / union if union else 1.0}
