"""Episode sampling for training (drawn per step) and testing (a fixed, serialisable list).

Every draw uses `numpy.random.default_rng([seed, index])`, so episode i is the same in every
run, process and DataLoader worker, and does not depend on how many episodes came before.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import Callable

import numpy as np
from torch.utils.data import Dataset

from sgone.data.episode import IGNORE, Episode, Source
from sgone.errors import SgoneError

Transform = Callable[[Episode, np.random.Generator], Episode]
STYLES = {"hsnet": {"episodes": 1000, "seed": 0}, "pfenet": {"episodes": 5000, "seed": 321}}


def episode_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The generator for episode `index`; `stream` separates sampling (0) from transforms (1)."""
    return np.random.default_rng([int(seed), int(index), int(stream)])


def _class_lists(source: Source, class_ids: list[int], split: str, shots: int) -> dict[int, list[str]]:
    """Sorted image keys per class; a class too small for shots + 1 distinct images is an error."""
    lists = {}
    for class_id in class_ids:
        keys = sorted(source.items(split, class_id))
        if len(keys) < shots + 1:
            raise SgoneError(
                f"{source.root}: class {class_id} '{source.class_names.get(class_id, class_id)}' has "
                f"{len(keys)} image(s) in split '{split}', {shots}-shot episodes need {shots + 1}")
        lists[class_id] = keys
    return lists


def _check_ways(source: Source, class_ids: list[int], ways: int, fold: int, role: str) -> None:
    if ways < 1:
        raise SgoneError(f"{source.root}: ways must be at least 1, got {ways}")
    if len(class_ids) < ways:
        raise SgoneError(f"{source.root}: fold {fold} has {len(class_ids)} {role} class(es), "
                         f"{ways}-way episodes need {ways}")


def _draw_supports(rng: np.random.Generator, keys: list[str], query: str, shots: int) -> list[str]:
    """`shots` distinct keys of the sorted `keys`, never the query.

    Indices are drawn over the keys without the query and shifted past it, which avoids
    copying a long class list for every episode.
    """
    at = bisect_left(keys, query)
    skip = at < len(keys) and keys[at] == query
    n = len(keys) - skip
    if n < shots:
        raise SgoneError(f"class has {n} image(s) besides the query '{query}', need {shots}")
    return [keys[i + 1 if skip and i >= at else i] for i in rng.choice(n, size=shots, replace=False)]


def make_spec(index: int, query: str, class_ids: list[int], supports: list[list[str]]) -> dict:
    """A JSON-friendly episode description (what `load_episode` reads)."""
    return {"index": int(index), "query": query, "class_ids": [int(c) for c in class_ids],
            "supports": [list(row) for row in supports]}


def load_episode(source: Source, spec: dict, transform: Transform | None = None,
                 rng: np.random.Generator | None = None, keep_original: bool = False) -> Episode:
    """Read the images of `spec` and build an Episode; the query label of way c (1-based) is c."""
    class_ids = spec["class_ids"]
    support_images, support_masks = [], []
    for class_id, keys in zip(class_ids, spec["supports"]):
        loaded = [source.load(key, class_id) for key in keys]
        support_images.append([img for img, _ in loaded])
        support_masks.append([m for _, m in loaded])
    query_image, first = source.load(spec["query"], class_ids[0])
    query_mask = np.where(first == 1, 1, 0).astype(np.uint8)
    ignore = first == IGNORE
    for way, class_id in enumerate(class_ids[1:], start=2):
        mask = source.load_mask(spec["query"], class_id)
        query_mask[(mask == 1) & (query_mask == 0)] = way
        ignore |= mask == IGNORE
    query_mask[ignore & (query_mask == 0)] = IGNORE
    episode = Episode(
        support_images=support_images, support_masks=support_masks,
        query_image=query_image, query_mask=query_mask, class_ids=list(class_ids),
        class_names=[source.class_names.get(c, str(c)) for c in class_ids],
        support_names=[list(keys) for keys in spec["supports"]], query_name=spec["query"],
        query_mask_original=query_mask if keep_original else None,
    )
    if transform is not None:
        episode = transform(episode, rng if rng is not None else np.random.default_rng(0))
    return episode


BALANCE = ("pairs", "source")


class TrainEpisodes(Dataset):
    """Training episodes of `fold`'s seen classes from image split "train", indexed by step.

    Episode i: a (query image, class) pair drawn uniformly from all pairs of the seen classes
    (so classes weigh by their image count, as in HSNet/PFENet), the other ways' classes drawn
    from the remaining seen classes, and `shots` supports per way that are never the query.
    balance "source" (a mixed source): a corpus drawn uniformly first, then a pair of it, so a
    small corpus (COCO-128's 126 photos beside 1004 clothing photos) is not drowned out.
    `length` defaults to the number of (image, class) pairs: one pass counts as an epoch.
    """

    def __init__(self, source: Source, fold: int, shots: int = 1, ways: int = 1, seed: int = 0,
                 transform: Transform | None = None, length: int | None = None, balance: str = "pairs") -> None:
        if shots < 1:
            raise SgoneError(f"{source.root}: shots must be at least 1, got {shots}")
        if balance not in BALANCE:
            raise SgoneError(f"unknown balance '{balance}': use one of {', '.join(BALANCE)}")
        if balance == "source" and not hasattr(source, "class_source"):
            raise SgoneError(f"{source.root}: balance 'source' needs a mixed data set (dataset 'mix')")
        self.source, self.fold, self.shots, self.ways, self.seed = source, fold, shots, ways, seed
        self.transform = transform
        self.class_ids = list(source.classes(fold, "train"))
        _check_ways(source, self.class_ids, ways, fold, "train")
        self.lists = _class_lists(source, self.class_ids, "train", shots)
        self.pairs = [(key, c) for c in self.class_ids for key in self.lists[c]]
        self.length = len(self.pairs) if length is None else int(length)
        self.groups: list[list[int]] = []  # indices into pairs, one list per corpus (balance "source")
        if balance == "source":
            names = sorted({source.class_source[c] for c in self.class_ids})
            self.groups = [[i for i, (_, c) in enumerate(self.pairs) if source.class_source[c] == n] for n in names]

    def __len__(self) -> int:
        return self.length

    def spec(self, index: int) -> dict:
        rng = episode_rng(self.seed, index)
        if self.groups:
            group = self.groups[int(rng.integers(len(self.groups)))]
            query, first = self.pairs[group[int(rng.integers(len(group)))]]
        else:
            query, first = self.pairs[int(rng.integers(len(self.pairs)))]
        others = [c for c in self.class_ids if c != first]
        class_ids = [first] + [others[i] for i in rng.choice(len(others), size=self.ways - 1, replace=False)]
        supports = [_draw_supports(rng, self.lists[c], query, self.shots) for c in class_ids]
        return make_spec(index, query, class_ids, supports)

    def __getitem__(self, index: int) -> Episode:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return load_episode(self.source, self.spec(index), self.transform, episode_rng(self.seed, index, 1))


class TestEpisodes(Dataset):
    """A fixed list of test episodes of `fold`'s unseen classes from image split "val".

    style "hsnet": the classes take turns: episode i has class i mod n (n test classes, in the
    source's order) and that class's next image (sorted keys, wrapping round), so any n
    consecutive episodes cover every class; defaults episodes=1000, seed=0;
    style "pfenet": query class, then query image drawn at random, defaults episodes=5000, seed=321.
    Supports are drawn at random from the same class, never the query. For N ways, way 1 is the
    query's class and ways 2..N are drawn from the other test classes.
    `specs` (a list of dicts) can be saved, sharded and reloaded with `TestEpisodes.from_specs`.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, source: Source, fold: int, shots: int = 1, ways: int = 1, episodes: int | None = None,
                 seed: int | None = None, style: str = "hsnet", transform: Transform | None = None) -> None:
        if style not in STYLES:
            raise SgoneError(f"unknown episode style '{style}' (expected one of {', '.join(STYLES)})")
        if shots < 1:
            raise SgoneError(f"{source.root}: shots must be at least 1, got {shots}")
        self.source, self.fold, self.shots, self.ways, self.style = source, fold, shots, ways, style
        self.episodes = STYLES[style]["episodes"] if episodes is None else int(episodes)
        self.seed = STYLES[style]["seed"] if seed is None else int(seed)
        self.transform = transform
        class_ids = list(source.classes(fold, "test"))
        _check_ways(source, class_ids, ways, fold, "test")
        lists = _class_lists(source, class_ids, "val", shots)
        self.specs = self.build_specs(lists, class_ids)

    def build_specs(self, lists: dict[int, list[str]], class_ids: list[int]) -> list[dict]:
        specs = []
        for i in range(self.episodes):
            rng = episode_rng(self.seed, i)
            if self.style == "hsnet":
                first = class_ids[i % len(class_ids)]
                query = lists[first][(i // len(class_ids)) % len(lists[first])]
            else:
                first = class_ids[int(rng.integers(len(class_ids)))]
                query = lists[first][int(rng.integers(len(lists[first])))]
            others = [c for c in class_ids if c != first]
            chosen = [first] + [others[j] for j in rng.choice(len(others), size=self.ways - 1, replace=False)]
            supports = [_draw_supports(rng, lists[c], query, self.shots) for c in chosen]
            specs.append(make_spec(i, query, chosen, supports))
        return specs

    @classmethod
    def from_specs(cls, source: Source, specs: list[dict], transform: Transform | None = None) -> "TestEpisodes":
        """Episodes from saved specs (e.g. one process's shard), without re-drawing anything."""
        self = cls.__new__(cls)
        self.source, self.specs, self.transform = source, list(specs), transform
        self.fold = self.style = None
        self.shots = len(specs[0]["supports"][0]) if specs else 0
        self.ways = len(specs[0]["class_ids"]) if specs else 0
        self.episodes, self.seed = len(self.specs), None
        return self

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, index: int) -> Episode:
        spec = self.specs[index]
        return load_episode(self.source, spec, self.transform, episode_rng(self.seed or 0, spec["index"], 1),
                            keep_original=True)
