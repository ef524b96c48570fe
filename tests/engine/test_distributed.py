"""Two processes (torchrun, gloo on CPU): DDP training runs, evaluation equals one process exactly."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from sgone.engine.checkpoint import load_checkpoint
from sgone.engine.episode_eval import evaluate

from .helpers import TinySource, tiny_model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_training_and_evaluation(tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(worker), str(tmp_path)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    # DDP kept the two replicas identical, and rank 0's checkpoint holds those weights
    w0, w1 = (torch.load(tmp_path / f"weights-rank{r}.pt") for r in (0, 1))
    ckpt = load_checkpoint(tmp_path / "train" / "last.pt")
    assert ckpt["step"] == 3 and len(ckpt["rng"]) == 2
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
        assert torch.equal(w0[key], ckpt["model"][key]), key
    log = [json.loads(line) for line in (tmp_path / "train" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3] and any("val_miou" in r for r in log)

    # the sharded evaluation equals a one-process evaluation of the same weights, count for count
    two = json.loads((tmp_path / "eval" / "results.json").read_text())
    model = tiny_model()
    model.load_state_dict(ckpt["model"])
    one = evaluate(model, TinySource(), fold=1, shots=2, episodes=9, seed=0, fusion="vote", size=32, progress=False)
    assert two["counts"] == one["counts"]
    assert two["miou"] == one["miou"] and two["fb_iou"] == one["fb_iou"]
    assert two["episode_iou"] == one["episode_iou"]


def test_cleanup_waits_for_the_other_ranks_only_on_the_normal_path(monkeypatch):
    from sgone.engine import distributed

    calls: list[str] = []
    for name, value in (("is_available", True), ("is_initialized", True), ("get_world_size", 2)):
        monkeypatch.setattr(distributed.dist, name, lambda value=value: value)
    monkeypatch.setattr(distributed.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    distributed.cleanup()
    assert calls == ["barrier", "destroy"]
    calls.clear()
    try:
        try:
            raise RuntimeError("a rank failed")
        finally:
            distributed.cleanup()  # as the commands call it: the other ranks must not wait for this one
    except RuntimeError:
        pass
    assert calls == ["destroy"]
