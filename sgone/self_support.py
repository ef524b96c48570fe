"""A second look at the query (self-support, after SSP, ECCV 2022): the query's own prototypes.

The first pass's confident query cells (foreground probability above `HIGH`: object; below
`LOW`: background; the rest ignored) go through the model's own `support_prototype`, on the
query's cached encoding (nothing is re-encoded). The result is blended into every support shot
(`blend_prototypes`: object and background vectors moved `WEIGHT` of the way to the query's,
sets of parts pooled so the query's own background parts join the support's), and the query is
matched again. Two instances of a class differ less inside one photo than across photos: the
query's object prototype closes that gap, its background parts claim the query's own clutter.

Works with any model of the protocol (`encode`/`support_prototype`/`segment`, docs/architecture.md):
the prototypes are dicts of (B,C) vectors and (B,N,C) sets ("..._set" keys).
Defaults (`HIGH`, `LOW`, `WEIGHT`) were chosen on held-out fold 0 only (benchmarks/small_objects.py).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from sgone.ops import IGNORE

HIGH = 0.6  # first-pass probability above which a query pixel is the query's object
LOW = 0.4  # ... below which it is the query's background
WEIGHT = 0.5  # how far the object/background vectors move towards the query's
PARTS = True  # the query's own sets of parts (its background's) join the support's
KEEP = 0.5  # share of the first pass's scores kept in the answer (0: the second look's alone)


def pseudo_mask(prob: torch.Tensor, high: float = HIGH, low: float = LOW,
                others: torch.Tensor | None = None) -> torch.Tensor:
    """First-pass foreground score (B,h,w) -> query mask (B,h,w) long: 1 above `high`, 0 below `low`,
    255 (ignore) between. others (B,h,w): the other ways' highest score (N-way), which must be below
    `low` too for a pixel to be background."""
    mask = torch.full(prob.shape, IGNORE, dtype=torch.long, device=prob.device)
    background = prob < low if others is None else (prob < low) & (others < low)
    mask[background] = 0
    mask[prob > high] = 1
    return mask


def usable(mask: torch.Tensor) -> bool:
    """A query mask (B,h,w) gives prototypes only when every sample has object and background pixels;
    otherwise the second look is skipped (an empty first pass keeps its answer)."""
    flat = mask.flatten(1)
    return bool((flat == 1).any(dim=1).all() and (flat == 0).any(dim=1).all())


def blend_prototypes(support: dict[str, torch.Tensor], query: dict[str, torch.Tensor],
                     weight: float = WEIGHT, parts: bool = PARTS) -> dict[str, torch.Tensor]:
    """Support and query prototypes -> the second look's: vectors (B,C) (1-weight)*support + weight*query;
    sets of parts ("_set" keys, (B,N,C) and (B,M,C)) pooled to (B,N+M,C) (with `parts`; else the support's).

    A query identical to the support, read perfectly, gives its support back up to repeated parts
    (a pixel's best match among the parts is unchanged)."""
    out = {}
    for key, value in support.items():
        if key.endswith("_set"):
            q = query[key].expand(value.shape[0], *query[key].shape[1:])
            out[key] = torch.cat([value, q], dim=1) if parts else value
        else:
            out[key] = (1.0 - weight) * value + weight * query[key]
    return out


def grid_scores(scores: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B,N,H,W) scores at the query's size -> (B,N,h,w) on the network input grid (area average)."""
    if scores.shape[-2:] == tuple(hw):
        return scores
    return F.adaptive_avg_pool2d(scores.float(), hw)


def query_prototypes(support_prototype: Callable[[dict, torch.Tensor], dict], encoded: dict[str, torch.Tensor],
                     scores: torch.Tensor, high: float = HIGH, low: float = LOW) -> list[dict[str, torch.Tensor] | None]:
    """One query's prototypes per way from its first pass.

    encoded: the query's cached encoding (batch 1); scores (N,h,w) first-pass foreground scores on
    the input grid; support_prototype: the model's. -> per way the query's prototypes, or None where
    the first pass has no confident object or no confident background (that way keeps its support).
    """
    out: list[dict[str, torch.Tensor] | None] = []
    for way in range(scores.shape[0]):
        others = None
        if scores.shape[0] > 1:
            others = torch.cat([scores[:way], scores[way + 1:]]).amax(dim=0, keepdim=True)
        mask = pseudo_mask(scores[way:way + 1], high, low, others)
        out.append(support_prototype(encoded, mask) if usable(mask) else None)
    return out


def second_look(rescore: Callable[[list[list[dict[str, torch.Tensor]]]], torch.Tensor],
                support_prototype: Callable[[dict, torch.Tensor], dict], encoded: dict[str, torch.Tensor],
                shots: list[list[dict[str, torch.Tensor]]], scores: torch.Tensor, hw: tuple[int, int],
                high: float = HIGH, low: float = LOW, weight: float = WEIGHT, parts: bool = PARTS,
                keep: float = KEEP) -> torch.Tensor:
    """The self-support step for one query: first-pass scores (N,H,W) -> the second look's (N,H,W).

    encoded: the query's cached encoding (batch 1) on input grid hw; shots: support prototypes per
    way and shot; rescore(shots) -> (N,H,W) scores of the query against other prototypes (the
    caller's k-shot fusion and upsampling). A way without a confident object and background keeps
    its first-pass scores; with none at all, `scores` itself is returned. The others get
    keep * first + (1 - keep) * second.
    """
    queries = query_prototypes(support_prototype, encoded, grid_scores(scores[None], hw)[0], high, low)
    if all(q is None for q in queries):
        return scores
    blended = [way if q is None else [blend_prototypes(p, q, weight, parts) for p in way]
               for way, q in zip(shots, queries)]
    again = rescore(blended)
    return torch.stack([first if q is None else keep * first + (1 - keep) * new
                        for first, new, q in zip(scores, again, queries)])
