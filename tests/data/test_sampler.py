"""Episode sampling: determinism (runs, processes), support != query, shapes, specs, errors."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from sgone.data.episode import collate
from sgone.data.folder import FolderSource
from sgone.data.pascal import PascalSource
from sgone.data.sampler import TestEpisodes, TrainEpisodes
from sgone.data.transforms import EvalTransform, TrainTransform
from sgone.errors import SgoneError


@pytest.fixture(scope="module")
def pascal(voc_template):
    return PascalSource(voc_template, min_pixels=100)


def digest(episode) -> str:
    h = hashlib.sha1()
    for row in episode.support_images + episode.support_masks:
        for a in row:
            h.update(a.tobytes())
    h.update(episode.query_image.tobytes())
    h.update(episode.query_mask.tobytes())
    return h.hexdigest()


def test_train_episodes_are_deterministic_and_index_based(pascal):
    a = TrainEpisodes(pascal, fold=1, shots=2, seed=7, transform=TrainTransform(size=32))
    b = TrainEpisodes(pascal, fold=1, shots=2, seed=7, transform=TrainTransform(size=32))
    assert [a.spec(i) for i in (5, 0, 3)] == [b.spec(i) for i in (5, 0, 3)]
    assert digest(a[3]) == digest(b[3])
    other = TrainEpisodes(pascal, fold=1, shots=2, seed=8)
    assert [a.spec(i) for i in range(10)] != [other.spec(i) for i in range(10)]
    assert len(a) == sum(len(pascal.items("train", c)) for c in pascal.classes(1, "train"))


def test_train_episodes_same_in_another_process(pascal, voc_template):
    script = textwrap.dedent(f"""
        import hashlib, json
        from sgone.data.pascal import PascalSource
        from sgone.data.sampler import TrainEpisodes
        from sgone.data.transforms import TrainTransform
        source = PascalSource({str(voc_template)!r}, min_pixels=100)
        episodes = TrainEpisodes(source, fold=2, shots=1, ways=2, seed=3, transform=TrainTransform(size=24))
        out = []
        for i in (0, 11, 42):
            ep = episodes[i]
            h = hashlib.sha1()
            for row in ep.support_images + ep.support_masks:
                for a in row:
                    h.update(a.tobytes())
            h.update(ep.query_image.tobytes()); h.update(ep.query_mask.tobytes())
            out.append([episodes.spec(i), h.hexdigest()])
        print(json.dumps(out))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    theirs = json.loads(result.stdout.strip().splitlines()[-1])
    episodes = TrainEpisodes(pascal, fold=2, shots=1, ways=2, seed=3, transform=TrainTransform(size=24))
    ours = [[episodes.spec(i), digest(episodes[i])] for i in (0, 11, 42)]
    assert ours == theirs


def test_support_never_equals_query(pascal):
    train = TrainEpisodes(pascal, fold=0, shots=2, ways=3, seed=0)
    for i in range(200):
        spec = train.spec(i)
        keys = [k for row in spec["supports"] for k in row]
        assert spec["query"] not in keys
        assert all(len(set(row)) == len(row) for row in spec["supports"])
        assert not set(spec["class_ids"]) & set(pascal.classes(0, "test"))
        assert len(set(spec["class_ids"])) == 3
    test = TestEpisodes(pascal, fold=0, shots=2, episodes=100)
    for spec in test.specs:
        assert spec["query"] not in spec["supports"][0]
        assert spec["class_ids"][0] in pascal.classes(0, "test")


def test_hsnet_and_pfenet_styles(pascal):
    hsnet = TestEpisodes(pascal, fold=3, episodes=40)
    assert (hsnet.seed, len(hsnet)) == (0, 40)
    # classes take turns; each class walks through its own sorted images, wrapping round
    classes = pascal.classes(3, "test")
    images = {c: sorted(pascal.items("val", c)) for c in classes}
    expected = [(images[classes[i % 5]][(i // 5) % len(images[classes[i % 5]])], classes[i % 5]) for i in range(40)]
    assert [(s["query"], s["class_ids"][0]) for s in hsnet.specs] == expected
    assert hsnet.specs == TestEpisodes(pascal, fold=3, episodes=40).specs  # seeded: the same list every time
    pfenet = TestEpisodes(pascal, fold=3, style="pfenet")
    assert (pfenet.seed, len(pfenet)) == (321, 5000)
    assert pfenet.specs == TestEpisodes(pascal, fold=3, style="pfenet").specs
    assert len({s["class_ids"][0] for s in pfenet.specs[:50]}) == 5


def test_few_hsnet_episodes_still_cover_every_class(pascal):
    """As many episodes as classes reach every class (the first list filled them from one class)."""
    classes = pascal.classes(3, "test")
    five = TestEpisodes(pascal, fold=3, episodes=len(classes))
    assert [s["class_ids"][0] for s in five.specs] == classes
    assert len({s["query"] for s in five.specs}) == len(classes)


def test_specs_serialise_and_shard(pascal):
    full = TestEpisodes(pascal, fold=0, shots=1, ways=2, episodes=6, transform=EvalTransform(size=32))
    specs = json.loads(json.dumps(full.specs))
    shard = TestEpisodes.from_specs(pascal, specs[3:], transform=EvalTransform(size=32))
    assert len(shard) == 3
    assert digest(shard[0]) == digest(full[3])


def test_collate_shapes_k_shot_n_way(pascal):
    episodes = TrainEpisodes(pascal, fold=0, shots=2, ways=2, seed=1, transform=TrainTransform(size=32))
    batch = collate([episodes[i] for i in range(4)])
    assert batch["support_images"].shape == (4, 2, 2, 3, 32, 32) and batch["support_images"].dtype == torch.float32
    assert batch["support_masks"].shape == (4, 2, 2, 32, 32) and batch["support_masks"].dtype == torch.long
    assert batch["query_image"].shape == (4, 3, 32, 32) and batch["query_mask"].shape == (4, 32, 32)
    assert batch["class_ids"].shape == (4, 2) and batch["class_ids"].dtype == torch.long
    assert 0 <= batch["support_images"].min() and batch["support_images"].max() <= 1
    assert set(torch.unique(batch["query_mask"]).tolist()) <= {0, 1, 2, 255}
    assert "query_mask_original" not in batch
    assert len(batch["support_names"]) == 4 and len(batch["support_names"][0][1]) == 2

    loader = torch.utils.data.DataLoader(
        TestEpisodes(pascal, fold=0, episodes=2, transform=EvalTransform(size=24)), batch_size=1, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["query_image"].shape == (1, 3, 17, 24)  # 40x56: the longer side to 24
    assert batch["query_mask_original"].shape == (1, 40, 56)
    original = TestEpisodes(pascal, fold=0, episodes=1, transform=EvalTransform(size=None))
    batch = collate([original[0]])
    assert batch["query_image"].shape == (1, 3, 40, 56) and batch["query_mask_original"].shape == (1, 40, 56)


def test_n_way_query_labels(pascal):
    episodes = TestEpisodes(pascal, fold=0, shots=1, ways=2, episodes=60)
    for ep in episodes:
        assert ep.query_mask_original is not None
        mask = ep.query_mask
        assert set(np.unique(mask)) <= {0, 1, 2, 255}
        assert (mask == 1).any()  # the query always holds way 1
        second = pascal.load_mask(ep.query_name, ep.class_ids[1])
        assert ((mask == 2) == ((second == 1) & (mask != 1))).all()
    assert any((ep.query_mask == 2).any() for ep in episodes)  # some queries also hold the second way's object


def test_too_few_images_is_an_error(folder_root):
    source = FolderSource(folder_root)  # 3 images per class
    TestEpisodes(source, fold=0, shots=2, episodes=3)
    with pytest.raises(SgoneError) as info:
        TestEpisodes(source, fold=0, shots=3, episodes=3)
    assert str(info.value) == f"{folder_root}: class 1 'cup' has 3 image(s) in split 'val', 3-shot episodes need 4"
    with pytest.raises(SgoneError, match="0 train class"):
        TrainEpisodes(source, fold=0)
    with pytest.raises(SgoneError, match="4-way episodes need 4"):
        TestEpisodes(source, fold=0, ways=4)
