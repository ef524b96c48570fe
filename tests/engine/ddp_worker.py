"""Run under `torchrun --nproc_per_node 2`: train a few steps with DDP (gloo), then evaluate.

Usage: ddp_worker.py OUT. Writes OUT/eval/results.json (rank 0) and OUT/weights-rank{r}.pt.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: tests.engine.helpers

from sgone.engine import distributed  # noqa: E402
from sgone.engine.episode_eval import evaluate  # noqa: E402
from sgone.engine.trainer import train  # noqa: E402
from tests.engine.helpers import TinySource, tiny_model  # noqa: E402


def main(out: Path) -> None:
    torch.set_num_threads(1)
    source = TinySource()
    model = tiny_model(seed=0)
    result = train({"recipe": "modern", "steps": 3, "batch_size": 2, "size": 40, "freeze": "none", "lr": 3e-3,
                    "out": str(out / "train"), "val_every": 3, "val_episodes": 5, "ckpt_every": 3,
                    "device": "cpu", "progress": False, "fold": 0, "seed": 1},
                   source=source, model=model)
    rank = torch.distributed.get_rank()
    assert result["world_size"] == 2, result
    torch.save(model.state_dict(), out / f"weights-rank{rank}.pt")
    evaluate(model, source, fold=1, shots=2, episodes=9, seed=0, fusion="vote", size=32,
             out=out / "eval", progress=False, grid=1)
    distributed.cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
