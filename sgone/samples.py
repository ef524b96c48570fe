"""The photo pair bundled with the package (sgone/samples/): a VOC photo's left half (a person,
the support) and right half (persons, the query), each with its mask. `sgone demo`, the ONNX
export check, the app's examples and the benchmarks use it."""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_paths() -> dict[str, Path]:
    """{"support", "support_mask", "query", "query_mask"} -> the bundled files."""
    folder = Path(str(resources.files("sgone") / "samples"))
    return {name: folder / f"{name}{ext}" for name, ext in
            (("support", ".jpg"), ("support_mask", ".png"), ("query", ".jpg"), ("query_mask", ".png"))}
