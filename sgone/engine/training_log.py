"""The training run's logs: log.jsonl, TensorBoard when installed, the loss and mIoU curves."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


class Logger:
    """JSONL log (always), TensorBoard events when `torch.utils.tensorboard` imports; rank 0 only."""

    def __init__(self, out: Path, resume_step: int | None, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = out / "log.jsonl"
        self.writer = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            # drop what the interrupted run logged after its last checkpoint: those steps run again
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif self.path.exists():
            self.path.unlink()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step)
        except Exception:  # tensorboard not installed: the JSONL log is the record
            self.writer = None

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def save_curve(records: list[dict[str, Any]], path: Path) -> None:
    """training_curve.png: the loss (raw and a moving average) above validation mIoU, vs step."""
    from sgone import viz

    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    vals = [(r["step"], r["val_miou"]) for r in records if "val_miou" in r]
    panels = []
    if losses:
        steps, values = zip(*losses)
        series = {"loss": (list(steps), list(values))}
        window = len(values) // 20
        if window > 1:
            smooth = np.convolve(values, np.ones(window) / window, mode="valid").tolist()
            series[f"mean of {window}"] = (list(steps[window - 1:]), smooth)
        panels.append(viz.line_plot(series, title="training loss", xlabel="step", ylabel="loss"))
    if vals:
        steps, values = zip(*vals)
        panels.append(viz.line_plot({"val mIoU": (list(steps), list(values))},
                                    title="validation mIoU (seen classes)", xlabel="step", ylabel="mIoU %"))
    if panels:
        viz.save_png(path, np.concatenate(panels, axis=0))
