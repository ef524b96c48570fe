"""Feature cache, training and evaluation on cached features, run-folder safety, timed and Ctrl-C checkpoints."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sgone.data.mix import MixSource
from sgone.engine.cached_episodes import CachedTrainBatches, LabelMaps, predict_cached, score_cached
from sgone.engine.checkpoint import load_checkpoint
from sgone.engine.episode_eval import predict_batch
from sgone.engine.feature_cache import FeatureCache
from sgone.engine.trainer import train
from sgone.errors import SgoneError
from sgone.io import write_label_png
from sgone.models.prototype import PrototypeModel
from sgone.models.sgone_net import PriorGuidedSGOne, guidance_loss

from .helpers import COLOURS, LevelsOf, TinyBackbone, TinySemanticBackbone

H, W = 40, 56


def make_corpus(root: Path, classes: list[str], seed: int, per_class: int = 6) -> None:
    """Voclike tree: each image holds a box of its class (own colour) and a box of the next class."""
    root.mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(["background", *classes]) + "\n")
    rng = np.random.default_rng(seed)
    n = 0
    for c in range(1, len(classes) + 1):
        for _ in range(per_class):
            n += 1
            image = rng.integers(0, 80, (H, W, 3)).astype(np.uint8)
            labels = np.zeros((H, W), np.uint8)
            y, x = int(rng.integers(0, 16)), int(rng.integers(0, 20))
            labels[y:y + 20, x:x + 24] = c
            other = c % len(classes) + 1
            labels[30:38, 44:54] = other
            for cid in (c, other):
                image[labels == cid] = COLOURS[(cid + seed) % len(COLOURS)]
            (root / "JPEGImages").mkdir(exist_ok=True)
            Image.fromarray(image).save(root / "JPEGImages" / f"im{n:03d}.jpg", quality=95)
            write_label_png(root / "SegmentationClass" / f"im{n:03d}.png", labels)


@pytest.fixture
def mix(tmp_path) -> MixSource:
    make_corpus(tmp_path / "one", ["a", "b", "c", "d"], seed=1)
    make_corpus(tmp_path / "two", ["e", "f", "g", "h"], seed=2)
    return MixSource([tmp_path / "one", tmp_path / "two"], folds=2)


def tiny_backbone(seed: int = 0) -> TinyBackbone:
    torch.manual_seed(seed)
    net = TinyBackbone().eval()
    net.name = "tiny"
    return net


def test_cache_hit_equals_recomputation_and_is_memory_mapped(mix, tmp_path):
    cache = FeatureCache(tmp_path / "cache", tiny_backbone(), size=48)
    path = mix.image_path(mix.items("train", 1)[0])
    first = cache.levels(path)  # computed and stored
    assert cache.has(path) and (cache.dir / "meta.json").is_file()
    again = cache.levels(path)  # read back
    assert isinstance(again[0], np.memmap)
    fresh = torch.cat([torch.from_numpy(np.asarray(a, np.float32)) for a in cache.levels(path)])
    direct = torch.from_numpy(cache.compute(path).astype(np.float32))
    torch.testing.assert_close(fresh, direct, atol=0, rtol=0)
    assert [a.shape[0] for a in first] == [8, 16, 24] and first[0].shape == again[0].shape


def test_cached_levels_equal_the_backbone_at_the_predictor_size(mix, tmp_path):
    from sgone.io import read_image
    from sgone.inputs import image_tensor, input_size

    net = tiny_backbone()
    cache = FeatureCache(tmp_path / "cache", net, size=48)
    path = mix.image_path(mix.items("val", 2)[1])
    image = read_image(path)
    with torch.no_grad():
        expected = net(image_tensor(image, input_size(*image.shape[:2], 48)))
    for got, want in zip(cache.tensors(path), expected):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-3)  # float16 storage


def test_changed_image_size_or_weights_are_never_reused(mix, tmp_path):
    net = tiny_backbone()
    cache = FeatureCache(tmp_path / "cache", net, size=48)
    path = mix.image_path(mix.items("train", 1)[0])
    before = cache.entry(path)
    cache.levels(path)
    Image.fromarray(np.full((H, W, 3), 200, np.uint8)).save(path, quality=95)  # the image changes
    assert cache.entry(path) != before and not cache.has(path)
    changed = torch.from_numpy(np.asarray(cache.levels(path)[2], np.float32))
    assert not torch.equal(changed, torch.from_numpy(np.load(before)[-24:].astype(np.float32)))
    assert FeatureCache(tmp_path / "cache", net, size=64).dir != cache.dir
    assert FeatureCache(tmp_path / "cache", tiny_backbone(seed=5), size=48).dir != cache.dir


def test_damaged_entry_is_recomputed_and_unreadable_images_are_listed(mix, tmp_path):
    cache = FeatureCache(tmp_path / "cache", tiny_backbone(), size=48)
    path = mix.image_path(mix.items("train", 1)[0])
    cache.levels(path)
    cache.entry(path).write_bytes(b"not an array")
    assert cache.levels(path)[0].shape[0] == 8
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    problems = cache.fill([path, bad, tmp_path / "missing.jpg"], progress=False)
    assert len(problems) == 2 and any("broken.jpg" in p for p in problems) and any("missing.jpg" in p for p in problems)


def test_training_masks_ignore_the_folds_test_classes(mix, tmp_path):
    cache = FeatureCache(tmp_path / "cache", tiny_backbone(), size=48)
    batches = CachedTrainBatches(mix, 0, cache, shots=1, batch_size=4, seed=0, augment=False)
    test_ids = set(mix.classes(0, "test"))
    labels = LabelMaps(mix, 48)
    hits = 0
    for index in range(20):
        spec = batches.episodes.spec(index)
        assert spec["class_ids"][0] not in test_ids
        resized = labels.resized(spec["query"])
        name = spec["query"].split(":")[0]
        ignored = mix.own_ids(name, sorted(test_ids))
        mask = batches._mask(spec["query"], spec["class_ids"][0])
        if ignored and np.isin(resized, ignored).any():
            hits += 1
            assert (mask[np.isin(resized, ignored)] == 255).all()
    assert hits > 0  # the corpus puts a box of the next class in every image: some are test classes
    batch = batches.batch(1)
    g = -(-48 // 8)
    assert [t.shape for t in batch["query_levels"]] == [(4, 8, g, g), (4, 16, g, g), (4, 24, g, g)]  # g < max_cells
    assert batch["support_masks"].shape == (4, 1, 8 * g, 8 * g) and batch["query_mask"].shape == (4, 8 * g, 8 * g)


def test_untrained_prior_model_equals_the_training_free_model():
    net = tiny_backbone()
    guided = PriorGuidedSGOne(net, guidance_dim=16, side_dim=8).eval()
    free = PrototypeModel(net, levels=("mid", "high")).eval()
    torch.manual_seed(0)
    s, q = torch.rand(1, 1, 3, 48, 64), torch.rand(1, 3, 48, 64)
    m = torch.zeros(1, 1, 48, 64, dtype=torch.long)
    m[..., 10:30, 10:40] = 1
    with torch.no_grad():
        torch.testing.assert_close(guided(s, m, q)["logits"], free(s, m, q)["logits"])
        levels_s = [lv.unsqueeze(1) for lv in net(s[:, 0])]
        from_levels = guided(levels_s, m, net(q), from_levels=True)["logits"]
    torch.testing.assert_close(from_levels, free(s, m, q)["logits"])


def test_head_weight_scales_the_learnt_correction_and_survives_a_checkpoint(tmp_path):
    """logits = prior logits + head_weight x the head's output: 0 gives the prior, 1 the model as trained."""
    from sgone.models.registry import build_model_from_config

    model = prior_model()
    torch.manual_seed(1)
    s, q = torch.rand(1, 1, 3, 48, 64), torch.rand(1, 3, 48, 64)
    m = torch.zeros(1, 1, 48, 64, dtype=torch.long)
    m[..., 10:30, 10:40] = 1
    with torch.no_grad():
        full = model(s, m, q)
        correction = full["logits"] - full["prior_logits"]
        assert correction.abs().max() > 1e-3  # the head says something
        for weight in (0.0, 0.25):
            model.head_weight = weight
            torch.testing.assert_close(model(s, m, q)["logits"], full["prior_logits"] + weight * correction)
    assert "head_weight" not in prior_model().config  # 1 (as trained) leaves old configs as they were
    weighted = PriorGuidedSGOne(tiny_backbone(0), guidance_dim=16, side_dim=8, background_prototypes=2,
                                head_weight=0.25, config={"backbone": "tiny"})
    assert weighted.config["head_weight"] == 0.25
    rebuilt = build_model_from_config({**weighted.config, "backbone": "mobilenet_v2"}, weights=None)
    assert rebuilt.head_weight == 0.25
    with pytest.raises(ValueError, match="head_weight"):
        PriorGuidedSGOne(tiny_backbone(0), head_weight=-1.0)


def test_untrained_model_with_a_semantic_level_equals_the_fused_training_free_model():
    from sgone.models.fused import FusedPrototypeModel

    torch.manual_seed(0)
    net = TinySemanticBackbone().eval()
    guided = PriorGuidedSGOne(net, guidance_dim=16, side_dim=8, semantic_weight=0.3).eval()
    assert guided.config["semantic_weight"] == 0.3
    semantic = PrototypeModel(LevelsOf(net, (0, 0, 0)), levels=("low",))
    detail = PrototypeModel(LevelsOf(net, (1, 2, 3)), levels=("mid", "high"))
    fused = FusedPrototypeModel(semantic, detail, weight=0.3).eval()
    s, q = torch.rand(1, 2, 3, 48, 64), torch.rand(1, 3, 48, 64)
    m = torch.zeros(1, 2, 48, 64, dtype=torch.long)
    m[:, 0, 10:30, 10:40] = 1
    m[:, 1, 20:40, 5:30] = 1
    with torch.no_grad():
        expected = fused(s, m, q)["logits"]
        torch.testing.assert_close(guided(s, m, q)["logits"], expected)
        levels_s = [lv.unflatten(0, (1, 2)) for lv in net(s.flatten(0, 1))]
        torch.testing.assert_close(guided(levels_s, m, net(q), from_levels=True)["logits"], expected)
        # weight 0: the CNN's prior alone, whatever the semantic level says
        cnn_only = PriorGuidedSGOne(net, guidance_dim=16, side_dim=8, semantic_weight=0.0).eval()
        torch.testing.assert_close(cnn_only(s, m, q)["logits"], detail(s, m, q)["logits"])
    # the semantic level feeds the learnt guidance too
    assert guided.guidance[0].in_channels == 12 + 16 + 24


def test_cached_training_with_a_semantic_level(mix, tmp_path):
    torch.manual_seed(0)
    net = TinySemanticBackbone().eval()
    net.name = "tiny-semantic"
    model = PriorGuidedSGOne(net, guidance_dim=16, side_dim=8, background_prototypes=2, config={"backbone": "tiny"})
    cache = FeatureCache(tmp_path / "cache", net, size=48)
    batch = CachedTrainBatches(mix, 0, cache, batch_size=2, seed=3).batch(1)
    assert [t.shape[1] for t in batch["query_levels"]] == [12, 8, 16, 24]
    assert [t.shape[2] for t in batch["support_levels"]] == [12, 8, 16, 24]
    result = train(cached_config(tmp_path / "run", tmp_path / "cache"), source=mix, model=model)
    assert result["feature_cache"] is True and len(result["losses"]) == 6
    assert all(np.isfinite(loss) for _, loss in result["losses"])


def test_guidance_loss_rewards_a_discriminative_map():
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[:, :8] = 1
    good = torch.tensor([[[0.9, 0.9], [0.1, 0.1]]])
    flat = torch.full((1, 2, 2), 0.85)
    assert guidance_loss(good, labels) < guidance_loss(flat, labels) - 0.5


def cached_config(out, cache, **overrides) -> dict:
    base = {"recipe": "real", "arch": "sgone-prior", "steps": 6, "batch_size": 2, "size": 48, "out": str(out),
            "val_every": 3, "val_episodes": 4, "ckpt_every": 3, "device": "cpu", "progress": False,
            "fold": 0, "seed": 3, "feature_cache": str(cache), "ckpt_minutes": 0}
    base.update(overrides)
    return base


def prior_model(seed: int = 0) -> PriorGuidedSGOne:
    net = tiny_backbone(0)
    torch.manual_seed(seed)
    model = PriorGuidedSGOne(net, guidance_dim=16, side_dim=8, background_prototypes=2, config={"backbone": "tiny"})
    torch.nn.init.normal_(model.classifier.weight, std=0.01)  # a trained-looking head: the test sees its changes
    return model


def test_cached_training_runs_resumes_and_uses_the_cache(mix, tmp_path):
    result = train(cached_config(tmp_path / "a", tmp_path / "cache"), source=mix, model=prior_model())
    assert result["feature_cache"] is True and len(result["losses"]) == 6
    assert json.loads((tmp_path / "a" / "config.json").read_text())["feature_cache_used"] is True
    assert "cached features" in result["validation"] and "measures fit" in result["validation"]
    assert any((tmp_path / "cache").rglob("*.npy"))

    class Killed(Exception):
        pass

    def kill_at_5(step, record):
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        train(cached_config(tmp_path / "b", tmp_path / "cache"), source=mix, model=prior_model(), on_step=kill_at_5)
    resumed = train(cached_config(tmp_path / "b", tmp_path / "cache", resume=True), source=mix, model=prior_model(7))
    expected = dict(result["losses"])
    assert [s for s, _ in resumed["losses"]] == [4, 5, 6]
    for step, loss in resumed["losses"]:
        assert loss == pytest.approx(expected[step], abs=1e-5)


def test_existing_run_folder_is_refused_unless_resume_or_overwrite(mix, tmp_path):
    train(cached_config(tmp_path / "run", tmp_path / "cache", steps=2, val_every=0), source=mix, model=prior_model())
    with pytest.raises(SgoneError, match="holds a run .*--resume.*--overwrite"):
        train(cached_config(tmp_path / "run", tmp_path / "cache", steps=2, val_every=0), source=mix, model=prior_model())
    again = train(cached_config(tmp_path / "run", tmp_path / "cache", steps=2, val_every=0, overwrite=True),
                  source=mix, model=prior_model())
    assert [s for s, _ in again["losses"]] == [1, 2]
    finished = train(cached_config(tmp_path / "run", tmp_path / "cache", steps=2, val_every=0, resume=True),
                     source=mix, model=prior_model())
    assert finished["losses"] == [] and finished["step"] == 2


def test_checkpoint_by_wall_time(mix, tmp_path):
    steps_saved = []

    def watch(step, record):
        steps_saved.append(load_checkpoint(tmp_path / "t" / "last.pt")["step"])

    # ckpt_every far away: only the clock writes last.pt, after every step with a tiny period
    train(cached_config(tmp_path / "t", tmp_path / "cache", steps=3, ckpt_every=1000, val_every=0,
                        ckpt_minutes=1e-9), source=mix, model=prior_model(), on_step=watch)
    assert steps_saved == [1, 2, 3]


def test_ctrl_c_writes_last_pt_at_the_finished_step(mix, tmp_path):
    def interrupt_at_2(step, record):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cached_config(tmp_path / "c", tmp_path / "cache", steps=6, ckpt_every=1000, val_every=0),
              source=mix, model=prior_model(), on_step=interrupt_at_2)
    assert load_checkpoint(tmp_path / "c" / "last.pt")["step"] == 2


def test_cached_prediction_matches_the_image_path(mix, tmp_path):
    """predict_cached on cached levels = predict_batch on the images at the same size (float16 aside)."""
    from sgone.data.sampler import TestEpisodes
    from sgone.io import read_image
    from sgone.inputs import image_tensor, input_size, mask_tensor

    model = prior_model().eval()
    cache = FeatureCache(tmp_path / "cache", model.backbone, size=48)
    labels = LabelMaps(mix, 48)
    specs = TestEpisodes(mix, 1, shots=2, episodes=4, seed=0).specs
    for spec in specs:
        got = predict_cached(model, mix, spec, cache, labels, "avg")
        cid = spec["class_ids"][0]
        own = mix.own_id(cid)[1]

        def tensors(key):
            image = read_image(mix.image_path(key))
            hw = input_size(*image.shape[:2], 48)
            return image_tensor(image, hw)[0], mask_tensor((labels.original(key) == own).astype(np.uint8), hw)[0]

        supports = [tensors(k) for k in spec["supports"][0]]
        query, _ = tensors(spec["query"])
        batch = {"support_images": torch.stack([s for s, _ in supports])[None, None],
                 "support_masks": torch.stack([m for _, m in supports])[None, None],
                 "query_image": query[None], "query_mask_original": got["label"][None], "query_mask": got["label"][None]}
        want = predict_batch(model, batch, "avg")
        torch.testing.assert_close(got["prob"], want["prob"], atol=2e-3, rtol=0)
    acc, ious = score_cached(model, mix, specs, cache, labels, progress=False)
    assert len(ious) == 4 and 0.0 <= acc.miou() <= 1.0


def test_training_path_refuses_sources_without_file_names(tmp_path):
    from .helpers import TinySource

    with pytest.raises(SgoneError, match="dataset 'mix'"):
        CachedTrainBatches(TinySource(), 0, FeatureCache(tmp_path, tiny_backbone(), size=48))


def test_ctrl_c_during_a_step_waits_for_the_step_to_finish(mix, tmp_path):
    import os
    import signal

    def sigint_at_2(step, record):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: deferred to the end of the step, then raised

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(cached_config(tmp_path / "s", tmp_path / "cache", steps=6, ckpt_every=1000, val_every=0),
              source=mix, model=prior_model(), on_step=sigint_at_2)
    assert load_checkpoint(tmp_path / "s" / "last.pt")["step"] == 2
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back


def test_mix_without_the_feature_cache_is_refused(mix, tmp_path):
    for change in ({"feature_cache": None}, {"freeze": "bn"}):
        with pytest.raises(SgoneError, match="feature cache"):
            train(cached_config(tmp_path / "n", tmp_path / "cache", steps=2, val_every=0, **change),
                  source=mix, model=prior_model())


def test_resume_refuses_other_data_settings(mix, tmp_path):
    train(cached_config(tmp_path / "r", tmp_path / "cache", steps=2, val_every=0), source=mix, model=prior_model())
    with pytest.raises(SgoneError, match="source_options"):
        train(cached_config(tmp_path / "r", tmp_path / "cache", steps=2, val_every=0, resume=True,
                            source_options={"min_images": 2}), source=mix, model=prior_model())


def test_davis_sequences_train_as_object_classes_from_the_cache(tmp_path):
    make_corpus(tmp_path / "one", ["a", "b", "c", "d"], seed=1)
    davis = tmp_path / "davis"
    for i in range(6):
        image = np.full((H, W, 3), 30, np.uint8)
        image[8:28, 10:40] = COLOURS[i % len(COLOURS)]
        (davis / "JPEGImages" / "480p" / "blob").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(davis / "JPEGImages" / "480p" / "blob" / f"{i:05d}.jpg", quality=95)
        mask = np.zeros((H, W), np.uint8)
        mask[8:28, 10:40] = 255
        (davis / "Annotations" / "480p" / "blob").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(davis / "Annotations" / "480p" / "blob" / f"{i:05d}.png")
    (davis / "ImageSets" / "480p").mkdir(parents=True)
    (davis / "ImageSets" / "480p" / "train.txt").write_text("blob\n")
    (tmp_path / "categories.txt").write_text("blob\tblob\n")
    mix = MixSource([tmp_path / "one", davis], folds=2, davis_categories=tmp_path / "categories.txt")
    blob = next(c for c, n in mix.class_names.items() if n == "davis/blob")
    cache = FeatureCache(tmp_path / "cache", tiny_backbone(), size=48)
    batches = CachedTrainBatches(mix, 0, cache, shots=1, batch_size=2, seed=0, augment=False)
    assert blob in batches.episodes.class_ids
    mask = batches._mask("davis:blob/00003", blob)
    resized = LabelMaps(mix, 48).resized("davis:blob/00003")
    assert (mask == (resized > 0)).all() and 0.2 < mask.mean() < 0.4  # the box, 20x30 of 40x56
    index = next(i for i in range(200) if batches.episodes.spec(i)["class_ids"] == [blob])
    item, item_mask = batches._item(batches.episodes.spec(index)["query"], blob, np.random.default_rng(0), crop=False)
    assert len(item) == 3 and (item_mask == 1).any()


def test_autocast_rule_and_the_real_recipe_under_autocast(mix, tmp_path, monkeypatch):
    """CUDA trains under autocast by default (bf16 where supported, else fp16), the CPU only with
    --amp. With --amp the CPU runs the recipe's steps under bf16 autocast, the code path CUDA takes
    (no GPU was at hand to run it there): the forward sees autocast on, the losses stay close."""
    from sgone.engine.optimisation import autocast_settings

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert autocast_settings(torch.device("cuda"), None) == (True, torch.float16)
    assert autocast_settings(torch.device("cuda"), False)[0] is False
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert autocast_settings(torch.device("cuda"), None) == (True, torch.bfloat16)
    assert autocast_settings(torch.device("cpu"), None)[0] is False
    losses = {}
    for amp in (False, True):
        model, seen = prior_model(), []
        model.register_forward_pre_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
        result = train(cached_config(tmp_path / f"amp{amp}", tmp_path / "cache", steps=3, val_every=0, amp=amp),
                       source=mix, model=model)
        assert seen and all(on == amp for on in seen)
        losses[amp] = [loss for _, loss in result["losses"]]
    assert all(math.isfinite(v) for v in losses[True])
    assert losses[True] == pytest.approx(losses[False], rel=0.1)
