"""Memory of past frames for the temporal mode: per frame, its feature cells with object /
background labels, matched pixel by pixel against each new frame (as matching-based VOS does)."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch


@dataclass
class MemoryEntry:
    """One remembered frame: unit feature cells of the object `fg` (C,Mf) and of the background
    `bg` (C,Mb), their flat grid positions `fg_at` (Mf,) and `bg_at` (Mb,), `frame` its index in
    the clip and `confidence` how sure its labels are (1 for the given mask)."""

    fg: torch.Tensor
    bg: torch.Tensor
    fg_at: torch.Tensor
    bg_at: torch.Tensor
    frame: int
    confidence: float


def entry_from_probability(features: torch.Tensor, probability: torch.Tensor, frame: int,
                           low: float = 0.3, high: float = 0.7, valid: torch.Tensor | None = None) -> MemoryEntry:
    """features (C,h,w) unit vectors, probability (h,w) -> an entry of the confident cells only
    (object >= high, background <= low; the band between is left out, and so are the cells
    outside `valid` (h,w) bool, e.g. a mask's ignored pixels); confidence = mean object
    probability of the object cells (0 when there are none)."""
    flat, p = features.flatten(1), probability.flatten()
    keep = torch.ones_like(p, dtype=torch.bool) if valid is None else valid.flatten()
    fg_at = torch.nonzero((p >= high) & keep).flatten()
    bg_at = torch.nonzero((p <= low) & keep).flatten()
    conf = float(p[fg_at].mean()) if len(fg_at) else 0.0
    return MemoryEntry(flat[:, fg_at], flat[:, bg_at], fg_at, bg_at, frame, conf)


def frame_confidence(probability: torch.Tensor, threshold: float = 0.5) -> float:
    """Mean object probability over the cells called object (0 when none is)."""
    obj = probability > threshold
    return float(probability[obj].mean()) if bool(obj.any()) else 0.0


class FrameMemory:
    """The first frame (kept for good), the previous frame (always replaced) and up to `capacity`
    confident past frames, sampled at least `every` frames apart.

    Update rule (`remember`): a frame joins the long-term memory when its confidence is at least
    `min_confidence`, its object area is within a factor `max_growth` of the first frame's (a
    frame that lost the object or spilled onto the background would teach the error), and at
    least `every` frames have passed since the last one kept; the oldest is dropped beyond
    `capacity`. The previous frame is remembered whatever its confidence (matched only locally).
    """

    def __init__(self, capacity: int = 2, every: int = 5, min_confidence: float = 0.8, max_growth: float = 2.0) -> None:
        self.capacity, self.every = capacity, every
        self.min_confidence, self.max_growth = min_confidence, max_growth
        self.first: MemoryEntry | None = None
        self.previous: MemoryEntry | None = None
        self.long_term: list[MemoryEntry] = []

    def set_first(self, entry: MemoryEntry) -> None:
        self.first, self.previous, self.long_term = entry, None, []

    def accepts(self, entry: MemoryEntry, area: float, first_area: float) -> bool:
        """Whether `entry` (object `area` against the first frame's `first_area`) may join the long-term memory."""
        last = self.long_term[-1].frame if self.long_term else (self.first.frame if self.first else -self.every)
        return (
            self.capacity > 0
            and entry.confidence >= self.min_confidence
            and first_area / self.max_growth <= area <= first_area * self.max_growth
            and entry.frame - last >= self.every
        )

    def remember(self, entry: MemoryEntry, area: float, first_area: float) -> bool:
        """Store `entry` as the previous frame and, if `accepts`, in the long-term memory; True when kept long-term."""
        self.previous = entry
        if not self.accepts(entry, area, first_area):
            return False
        self.long_term.append(entry)
        if len(self.long_term) > self.capacity:
            self.long_term.pop(0)
        return True

    def global_entries(self) -> list[MemoryEntry]:
        """Entries matched anywhere in the frame: the first and the long-term ones."""
        return ([self.first] if self.first is not None else []) + self.long_term


def match(query: torch.Tensor, entries: list[tuple[MemoryEntry, torch.Tensor | None]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-neighbour scores of query cells (C,N) against memory entries.

    entries: (entry, window) pairs; window (N, h*w) bool says which grid cells each query cell may
    match (a local window), None = anywhere. Returns (object score, background score), each (N,):
    the best cosine similarity among the reachable object (background) cells of all entries;
    -1 where none is reachable.
    """
    n = query.shape[1]
    fg = torch.full((n,), -1.0, dtype=query.dtype, device=query.device)
    bg = torch.full_like(fg, -1.0)
    for entry, window in entries:
        for keys, at, best in ((entry.fg, entry.fg_at, fg), (entry.bg, entry.bg_at, bg)):
            if keys.shape[1] == 0:
                continue
            sim = query.T @ keys  # (N, M)
            if window is not None:
                sim = sim.masked_fill(~window[:, at], -1.0)
            torch.maximum(best, sim.amax(dim=1), out=best)
    return fg, bg


def window_mask(h: int, w: int, radius: float, device: torch.device | str | None = None) -> torch.Tensor:
    """(h*w, h*w) bool: cell i may match cell j when their Chebyshev distance is at most `radius` cells."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return torch.maximum((ys[:, None] - ys[None, :]).abs(), (xs[:, None] - xs[None, :]).abs()) <= radius


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        flags = []
    return "avx512_bf16" in flags or "amx_bf16" in flags


def read_dtype(precision: str) -> torch.dtype:
    """"fp32", "bf16", or "auto" (bf16 where the CPU has it natively) -> the memory read's dtype."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    return torch.bfloat16 if precision == "bf16" or (precision == "auto" and native_bf16()) else torch.float32


def propagate_labels(query: torch.Tensor, keys: list[torch.Tensor], labels: list[torch.Tensor], topk: int,
                     temperature: float, allowed: list[torch.Tensor | None] | None = None,
                     bias: list[float] | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Soft label of each query cell: a top-k vote of the labels of its most similar memory cells.

    query (C,N) and keys[i] (C,Mi) are unit vectors; labels[i] (Mi,) soft object labels in [0, 1];
    allowed[i] (N,Mi) bool or None says which cells of memory frame i each query cell may read (a
    local window; None = all); bias[i] is added to frame i's scores (a log weight: a float, or (Mi,) per cell). Scores are
    cosine / temperature + bias; each query cell keeps its `topk` best readable cells, weighted by
    the softmax of their scores. Returns (N,) in [0, 1]; 0 for a cell that can read nothing.
    `dtype` is the scores' (bf16 halves the memory traffic of the (N, M) score matrix, the cost).
    """
    use = [i for i, k in enumerate(keys) if k.shape[1] > 0]
    if not use:
        return torch.zeros(query.shape[1], dtype=query.dtype)
    scores = query.T.to(dtype) @ torch.cat([keys[i] for i in use], dim=1).to(dtype)  # one matmul, whole memory
    scores.mul_(1.0 / temperature)
    start = 0
    for i in use:
        end = start + keys[i].shape[1]
        if bias is not None and (torch.is_tensor(bias[i]) or bias[i]):  # a float per frame or a tensor (Mi,) per cell
            scores[:, start:end].add_(bias[i])
        if allowed is not None and allowed[i] is not None:
            scores[:, start:end].masked_fill_(~allowed[i], float("-inf"))
        start = end
    lab = torch.cat([labels[i] for i in use]).float()
    top, at = scores.topk(min(topk, scores.shape[1]), dim=1)
    weights = torch.softmax(top.float(), dim=1).nan_to_num(0.0)  # a row of -inf (nothing readable) gives 0
    return (weights * lab[at]).sum(dim=1).to(query.dtype)


def pca_basis(features: torch.Tensor, dims: int) -> torch.Tensor | None:
    """(C,N) features -> (C,dims) orthonormal basis of their main directions (after centring), or
    None when dims >= C (nothing to reduce). Reading a memory in `dims` dimensions costs dims/C of
    the matmul; the basis comes from the first frame, so every frame is projected alike."""
    c = features.shape[0]
    if dims <= 0 or dims >= c:
        return None
    x = features - features.mean(dim=1, keepdim=True)
    _, vectors = torch.linalg.eigh(x @ x.T)  # ascending eigenvalues
    return vectors[:, -dims:].flip(1).contiguous()
