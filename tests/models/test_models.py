"""SG-One network and training-free model: shapes, variants, protocol, checkpoints."""
import pytest
import torch

from sgone.errors import SgoneError
from sgone.models.registry import MODELS, build_model, has_untrained_head, load_model
from tests.helpers import mobilenet_weights


def imagenet_weights():
    """The MobileNetV2 ImageNet file, or skip: random features do not separate colours reliably."""
    return mobilenet_weights()


@pytest.fixture(scope="module")
def episode():
    g = torch.Generator().manual_seed(0)
    support = torch.rand(2, 3, 3, 64, 72, generator=g)  # B=2, K=3
    masks = torch.zeros(2, 3, 64, 72, dtype=torch.long)
    masks[:, :, 10:40, 20:50] = 1
    masks[:, :, 39, :] = 255
    query = torch.rand(2, 3, 64, 72, generator=g)
    return support, masks, query


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "vgg16"])
def test_sgone_shapes_fixed_and_published(episode, backbone):
    support, masks, query = episode
    fixed = build_model("sgone", backbone, "fixed", weights=None).eval()
    out = fixed(support, masks, query)
    assert out["logits"].shape == (2, 2, 8, 9)
    assert out["similarity"].shape == (2, 8, 9)
    assert out["similarity"].abs().max() <= 1.0 + 1e-5
    published = build_model("sgone", backbone, "published", weights=None).eval()
    # the public code's padded 1x1 conv grows the logits by one pixel on each side
    assert published(support, masks, query)["logits"].shape == (2, 2, 10, 11)


def test_sgone_forward_equals_protocol_steps(episode):
    support, masks, query = episode
    model = build_model("sgone", "mobilenet_v2", weights=None).eval()
    with torch.no_grad():
        out = model(support, masks, query)
        protos = [model.support_prototype(model.encode(support[:, k], need_side=False), masks[:, k]) for k in range(3)]
        steps = model.segment(model.encode(query), model.fuse_prototypes(protos))
    assert torch.allclose(out["logits"], steps["logits"], atol=1e-5)


def test_published_variant_counts_boundary_as_object():
    model = build_model("sgone", "mobilenet_v2", "published", weights=None)
    masks = torch.tensor([[[0, 1, 255]]])
    assert model.binarise(masks).tolist() == [[[0, 1, 1]]]
    fixed = build_model("sgone", "mobilenet_v2", "fixed", weights=None)
    assert fixed.binarise(masks).tolist() == [[[0, 1, 255]]]


def test_sgone_trains_a_step(episode):
    support, masks, query = episode
    model = build_model("sgone", "mobilenet_v2", weights=None)
    out = model(support, masks, query)
    out["logits"].mean().backward()
    assert model.guidance.weight.grad is not None and model.classifier.weight.grad is not None


def test_prototype_model_separates_two_textures():
    # object: a bright red square on a dark-blue background, in support and query at other places
    def scene(y, x):
        img = torch.zeros(1, 3, 96, 96)
        img[:, 2] = 0.6
        mask = torch.zeros(1, 96, 96, dtype=torch.long)
        img[:, :, y:y + 40, x:x + 40] = torch.tensor([1.0, 0.1, 0.1]).view(1, 3, 1, 1)
        mask[:, y:y + 40, x:x + 40] = 1
        return img, mask

    torch.manual_seed(0)
    model = build_model("prototype", "mobilenet_v2", weights=imagenet_weights()).eval()
    s_img, s_mask = scene(8, 8)
    q_img, q_mask = scene(48, 40)
    with torch.no_grad():
        out = model(s_img.unsqueeze(1), s_mask.unsqueeze(1), q_img)
    prob = torch.nn.functional.interpolate(out["logits"], size=(96, 96), mode="bilinear").softmax(1)[0, 1]
    pred = prob > 0.5
    truth = q_mask[0] == 1
    iou = (pred & truth).sum() / (pred | truth).sum()
    assert iou > 0.5  # ImageNet features separate two flat colours; a broken sign or swap gives ~0


def test_registry_names_and_errors(tmp_path):
    assert "prototype-mobilenet_v2" in MODELS and "sgone-vgg16-published" in MODELS
    with pytest.raises(SgoneError, match="unknown model"):
        load_model("no-such-model")
    with pytest.raises(SgoneError, match="checkpoint not found"):
        load_model(str(tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SgoneError, match="not a readable checkpoint"):
        load_model(str(bad))
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(SgoneError, match="not an sgone checkpoint"):
        load_model(str(tmp_path / "other.pt"))


def test_checkpoint_round_trip(tmp_path, episode):
    support, masks, query = episode
    model = build_model("sgone", "mobilenet_v2", "fixed", weights=None).eval()
    torch.save({"model": model.state_dict(), "model_config": model.config}, tmp_path / "m.pt")
    loaded = load_model(str(tmp_path / "m.pt"))
    with torch.no_grad():
        assert torch.allclose(model(support, masks, query)["logits"], loaded(support, masks, query)["logits"])
    assert loaded.config == model.config


def test_backbone_options_survive_a_checkpoint(tmp_path, episode):
    support, masks, query = episode
    model = build_model("prototype", "mobilenet_v2", weights=None, backbone_options={"high_stride": 16}).eval()
    assert model.backbone.high_stride == 16 and model.config["backbone_options"] == {"high_stride": 16}
    torch.save({"model": model.state_dict(), "model_config": model.config}, tmp_path / "m.pt")
    loaded = load_model(str(tmp_path / "m.pt"))
    assert loaded.backbone.high_stride == 16 and loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(model(support, masks, query)["logits"], loaded(support, masks, query)["logits"])
    with pytest.raises(SgoneError, match="unknown option"):
        build_model("prototype", "vgg16", weights=None, backbone_options={"high_stride": 16})


def test_load_model_backbone_options_update_a_checkpoints_own(tmp_path, episode):
    support, masks, query = episode
    model = build_model("sgone", "mobilenet_v2", "fixed", weights=None, backbone_options={"high_stride": 16}).eval()
    torch.save({"model": model.state_dict(), "model_config": model.config}, tmp_path / "m.pt")
    loaded = load_model(str(tmp_path / "m.pt"), backbone_options={"high_stride": 8})
    assert loaded.backbone.high_stride == 8 and loaded.config["backbone_options"] == {"high_stride": 8}
    # same weights, other features: the outputs change
    loaded_state = loaded.state_dict()
    assert all(torch.equal(v, loaded_state[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        before, after = model.backbone(query)[-1], loaded.backbone(query)[-1]
    assert (before - after).abs().max() > 1e-3 * before.abs().max()
    with pytest.raises(SgoneError, match="checkpoints only"):
        load_model("prototype-mobilenet_v2", weights=None, backbone_options={"high_stride": 8})


class ColourTaps(torch.nn.Module):
    """A stand-in backbone whose features are the pixel colours at stride 8."""

    def forward(self, x):
        f = torch.nn.functional.avg_pool2d(x, 8)
        return [f, f, f]


def _colour_image(colours, h=32, w=64):
    img = torch.zeros(1, 3, h, w)
    for (y0, y1, x0, x1), rgb in colours:
        img[0, :, y0:y1, x0:x1] = torch.tensor(rgb).view(3, 1, 1)
    return img


def _colour_probs(support, object_columns, query, **options):
    """(4,8) object probability of a PrototypeModel on colour features; the object mask spans the columns."""
    from sgone.models.prototype import PrototypeModel

    mask = torch.zeros(1, 32, 64, dtype=torch.long)
    mask[:, :, object_columns[0]:object_columns[1]] = 1
    model = PrototypeModel(ColourTaps(), levels=("high",), **options).eval()
    with torch.no_grad():
        return model(support[:, None], mask[:, None], query)["logits"].softmax(1)[0, 1]


def test_background_parts_separate_what_one_background_mean_cannot():
    red, green, yellow = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1.0, 1.0, 0.0)
    # support: red | yellow object | green; the background's mean colour points the object's way
    support = _colour_image([((0, 32, 0, 24), red), ((0, 32, 24, 40), yellow), ((0, 32, 40, 64), green)])
    query = _colour_image([((0, 32, 0, 16), yellow), ((0, 32, 16, 40), red), ((0, 32, 40, 64), green)])
    truth = torch.zeros(4, 8, dtype=torch.bool)
    truth[:, :2] = True
    results = {parts: _colour_probs(support, (24, 40), query, background_prototypes=parts) for parts in (1, 2)}
    assert torch.equal(results[2] > 0.5, truth)
    assert torch.allclose(results[1], torch.full_like(results[1], 0.5), atol=1e-5)  # a tie everywhere


def test_background_parts_k_shot_forward_equals_the_predictor_protocol(episode):
    support, masks, query = episode
    model = build_model("prototype", "mobilenet_v2", weights=None, background_prototypes=3).eval()
    with torch.no_grad():
        direct = model(support, masks, query)["logits"]
        protos = [model.support_prototype(model.encode(support[:, s]), masks[:, s]) for s in range(3)]
        fused = model.fuse_prototypes(protos)
        assert fused["background_set"].shape == (2, 9, model.encode(query)["guide"].shape[1])
        stepwise = model.segment(model.encode(query), fused)["logits"]
    assert torch.allclose(direct, stepwise, atol=1e-5)
    assert model.config["background_prototypes"] == 3
    with pytest.raises(ValueError, match="background_prototypes"):
        build_model("prototype", "mobilenet_v2", weights=None, background_prototypes=0)


def test_multi_scale_encoding_shapes_norms_and_config(tmp_path, episode):
    _, _, query = episode
    torch.manual_seed(0)
    single = build_model("prototype", "mobilenet_v2", weights=None).eval()
    multi = build_model("prototype", "mobilenet_v2", weights=None, scales=(1.0, 0.5)).eval()
    multi.load_state_dict(single.state_dict())
    with torch.no_grad():
        one = single.encode(query)["guide"]
        two = multi.encode(query)["guide"]
        half = single.encode(torch.nn.functional.interpolate(query, scale_factor=0.5, mode="bilinear"))["guide"]
    assert two.shape == one.shape
    norms = two.norm(dim=1)  # two levels, each unit length again after averaging
    assert torch.allclose(norms, torch.full_like(norms, 2 ** 0.5), atol=1e-4)
    assert not torch.allclose(two, one, atol=1e-3)
    # the average lies between the scales: closer to each than they are to each other
    half_up = torch.nn.functional.interpolate(half, size=one.shape[-2:], mode="bilinear")
    cos = torch.nn.functional.cosine_similarity
    assert cos(two, one, dim=1).mean() > cos(half_up, one, dim=1).mean()
    torch.save({"model": multi.state_dict(), "model_config": multi.config}, tmp_path / "m.pt")
    assert load_model(str(tmp_path / "m.pt")).scales == (1.0, 0.5)
    with pytest.raises(ValueError, match="scales"):
        build_model("prototype", "mobilenet_v2", weights=None, scales=(0.0,))


def test_object_parts_claim_what_the_object_mean_cannot():
    red, blue, yellow = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 0.0)
    # a red-and-blue object on yellow: the object's mean colour is as close to yellow as to red
    support = _colour_image([((0, 32, 0, 64), yellow), ((0, 32, 16, 32), red), ((0, 32, 32, 48), blue)])
    query = _colour_image([((0, 32, 0, 64), yellow), ((0, 32, 40, 56), red), ((0, 32, 8, 24), blue)])
    probs = {parts: _colour_probs(support, (16, 48), query, background_prototypes=1, foreground_prototypes=parts)
             for parts in (1, 2)}
    red_cells, blue_cells = probs[1][:, 5:7], probs[1][:, 1:3]
    assert torch.allclose(red_cells, torch.full_like(red_cells, 0.5), atol=1e-5)  # a tie
    assert (blue_cells > 0.5).all()
    truth = torch.zeros(4, 8, dtype=torch.bool)
    truth[:, 1:3] = truth[:, 5:7] = True
    assert torch.equal(probs[2] > 0.5, truth)


def test_untrained_heads_are_refused_unless_allowed(tmp_path):
    from sgone.predictor import Predictor

    untrained = [name for name in MODELS if has_untrained_head(name)]
    assert "sgone-mobilenet_v2" in untrained and not any(n.startswith("prototype-") for n in untrained)
    for name in untrained:
        with pytest.raises(SgoneError, match=f"{name}: untrained head.*checkpoint"):
            load_model(name, weights=None)
    with pytest.raises(SgoneError, match="untrained head"):
        Predictor("sgone-mobilenet_v2")
    model = load_model("sgone-mobilenet_v2", weights=None, allow_untrained=True)  # benchmarks, training
    assert model.config["arch"] == "sgone" and not model.training
    # a checkpoint of the same network is trained: it loads without the opt-in
    torch.save({"model": model.state_dict(), "model_config": model.config}, tmp_path / "m.pt")
    assert load_model(str(tmp_path / "m.pt")).config == model.config
