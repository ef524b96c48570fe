"""A learnt read-out for the `memory` video mode (issue 22, item 4): a small convolutional head that
turns what the memory read sees into the object probability of each cell, in place of the
training-free blend (80% vote + 20% prototype probability, times the location prior).

What it reads (`EVIDENCE`, each an (h,w) map on the network grid; `memory_evidence` computes them
from one pass over the memory's similarities):
    vote          the training-free top-k vote over the whole memory (first frame + recent frames)
    vote_first    the vote of the first frame's cells alone
    vote_recent   the vote of the recent frames' cells alone (0 where none is readable)
    first_fg / first_bg    best cosine similarity to the first frame's object / background cells
    recent_fg / recent_bg  the same over the recent frames, within the read window (-1 when none)
    prototype     the first frame's prototype probability
    prior         the location prior around the previous mask (1 when lost)
    previous      the previous mask, pooled to the grid
    lost          1 while the object is lost (a constant map)
    blend         the training-free blend itself

The head predicts a correction of the blend's logit (its last layer starts at zero, so an untrained
head reproduces the training-free read); it is trained on cached features of DAVIS train clips
(`benchmarks/davis_readout.py`), its inputs recorded while the training-free mode runs.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sgone.errors import SgoneError
from sgone.io import atomic_path

EVIDENCE = ("vote", "vote_first", "vote_recent", "first_fg", "first_bg", "recent_fg", "recent_bg",
            "prototype", "prior", "previous", "lost", "blend")


def _topk_vote(scores: torch.Tensor, labels: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """scores (N,M), labels (M,) -> (vote (N,), top scores (N,k) fp32, their labels (N,k)); a row of -inf votes 0."""
    top, at = scores.topk(min(topk, scores.shape[1]), dim=1)
    top = top.float()
    lab = labels.float()[at]
    weights = torch.softmax(top, dim=1).nan_to_num(0.0)
    return (weights * lab).sum(dim=1), top, lab


def _best(scores: torch.Tensor, cells: torch.Tensor, temperature: float) -> torch.Tensor:
    """(N,M) scores (cosine / temperature, -inf where unreadable), (M,) bool cells -> (N,) best cosine
    among those cells, -1 where none is readable."""
    if not bool(cells.any()):
        return torch.full((scores.shape[0],), -1.0)
    best = torch.where(cells, scores, float("-inf")).amax(dim=1)
    return (best.float() * temperature).clamp(min=-1.0)


def memory_evidence(query: torch.Tensor, first: tuple[torch.Tensor, torch.Tensor],
                    recent: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]], topk: int,
                    temperature: float, first_bias: float, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The memory part of `EVIDENCE` for query cells (C,N) (unit vectors).

    first: (keys (C,M0), labels (M0,)) read anywhere, with `first_bias` added to its scores in the
    whole-memory vote; recent: (keys (C,Mi), labels (Mi,), allowed (N,Mi) bool or None) per recent
    frame. `vote` is `sgone.video.memory.propagate_labels` over the same memory, up to rounding (the
    top-k of the union is the top-k of the two parts' top-k). Scores in `dtype`, as that read's.
    Returns (N,) fp32 tensors.
    """
    n = query.shape[1]
    q = query.T.to(dtype)
    keys0, labels0 = first
    s0 = (q @ keys0.to(dtype)).mul_(1.0 / temperature)
    vote_first, top0, lab0 = _topk_vote(s0, labels0, topk)
    out = {"vote_first": vote_first, "first_fg": _best(s0, labels0 > 0.5, temperature),
           "first_bg": _best(s0, labels0 <= 0.5, temperature)}
    recent = [r for r in recent if r[0].shape[1] > 0]
    if recent:
        keys = torch.cat([k for k, _, _ in recent], dim=1)
        labels = torch.cat([lab for _, lab, _ in recent])
        s = (q @ keys.to(dtype)).mul_(1.0 / temperature)
        if any(a is not None for *_, a in recent):
            allowed = torch.cat([a if a is not None else torch.ones(n, k.shape[1], dtype=torch.bool) for k, _, a in recent], dim=1)
            s.masked_fill_(~allowed, float("-inf"))
        vote_recent, top1, lab1 = _topk_vote(s, labels, topk)
        out.update(vote_recent=vote_recent, recent_fg=_best(s, labels > 0.5, temperature),
                   recent_bg=_best(s, labels <= 0.5, temperature))
        top = torch.cat([top0 + first_bias, top1], dim=1)
        lab = torch.cat([lab0, lab1], dim=1)
        best, at = top.topk(min(topk, top.shape[1]), dim=1)
        out["vote"] = (torch.softmax(best, dim=1).nan_to_num(0.0) * lab.gather(1, at)).sum(dim=1)
    else:
        out.update(vote_recent=torch.zeros(n), recent_fg=torch.full((n,), -1.0), recent_bg=torch.full((n,), -1.0),
                   vote=vote_first)
    return out


class ReadoutHead(nn.Module):
    """(B, len(EVIDENCE), h, w) evidence -> (B, h, w) object probability: the blend's logit plus a
    learnt correction from three 3x3 convolutions (dilations 1, 2, 4: a 15-cell field), squashed to
    at most `bound` in size (0 = unbounded), so a frame unlike the training clips cannot turn the
    training-free read upside down."""

    def __init__(self, width: int = 32, bound: float = 0.0) -> None:
        super().__init__()
        c = len(EVIDENCE)
        self.width, self.bound = width, float(bound)
        self.body = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=4, dilation=4), nn.ReLU(inplace=True),
            nn.Conv2d(width, 1, 1),
        )
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def logits(self, evidence: torch.Tensor) -> torch.Tensor:
        blend = evidence[:, EVIDENCE.index("blend")].clamp(1e-4, 1 - 1e-4)
        correction = self.body(evidence)[:, 0]
        if self.bound > 0:
            correction = self.bound * torch.tanh(correction / self.bound)
        return torch.logit(blend) + correction

    def forward(self, evidence: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(evidence))


def save_readout(head: ReadoutHead, path: str | Path, meta: dict | None = None) -> None:
    """Write the head's weights (+ what it was trained on) atomically."""
    with atomic_path(path) as tmp:
        torch.save({"evidence": list(EVIDENCE), "width": head.width, "bound": head.bound,
                    "state_dict": head.state_dict(), "meta": meta or {}}, tmp)


def load_readout(path: str | Path) -> ReadoutHead:
    """A head saved by `save_readout`; a one-line error for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise SgoneError(f"{path}: read-out head not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        if data["evidence"] != list(EVIDENCE):
            raise SgoneError(f"{path}: read-out head reads other evidence ({data['evidence']})")
        head = ReadoutHead(int(data["width"]), float(data.get("bound", 0.0)))
        head.load_state_dict(data["state_dict"])
    except SgoneError:
        raise
    except Exception as exc:  # a damaged or foreign file
        raise SgoneError(f"{path}: not a read-out head ({type(exc).__name__})") from None
    return head.eval()


def save_keys(basis: torch.Tensor, temperature: float, path: str | Path, meta: dict | None = None) -> None:
    """Write a learnt key projection (C,D) and its read temperature atomically (benchmarks/davis_keys.py)."""
    with atomic_path(path) as tmp:
        torch.save({"kind": "memory keys", "basis": basis.float().contiguous(), "temperature": float(temperature),
                    "meta": meta or {}}, tmp)


def load_keys(path: str | Path) -> tuple[torch.Tensor, float]:
    """(basis (C,D), temperature) saved by `save_keys`; a one-line error for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise SgoneError(f"{path}: key projection not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        if data.get("kind") != "memory keys":
            raise KeyError("kind")
        return data["basis"].float(), float(data["temperature"])
    except Exception as exc:
        raise SgoneError(f"{path}: not a key projection ({type(exc).__name__})") from None
