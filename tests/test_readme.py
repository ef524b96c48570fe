"""Every ```python block of README.md runs as pasted (in order, sharing one namespace); so do
docs/guide.md's (the longer examples that left the README)."""
import re
from pathlib import Path

from tests.helpers import mobilenet_weights

README = Path(__file__).resolve().parents[1] / "README.md"
GUIDE = README.parent / "docs" / "guide.md"


def python_blocks(path: Path = README) -> list[tuple[int, str]]:
    """(line number, code) of each ```python block."""
    text = path.read_text(encoding="utf-8")
    return [(text[:m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M)]


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    mobilenet_weights()  # the default model's ImageNet weights (or missing)
    blocks = python_blocks()
    assert len(blocks) >= 2  # the Python API and N-way examples
    monkeypatch.chdir(tmp_path)  # files a block writes stay out of the checkout
    namespace: dict = {"__name__": "__readme__"}
    for line, code in blocks:
        exec(compile(code, f"{README}:{line}", "exec"), namespace)
    # the N-way example labels both squares
    assert set(namespace["labels"].ravel().tolist()) == {0, 1, 2}


def test_guide_python_blocks_run(tmp_path, monkeypatch):
    mobilenet_weights()
    blocks = python_blocks(GUIDE)
    assert len(blocks) >= 2  # the video and ONNX examples
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__guide__"}
    for line, code in blocks:
        exec(compile(code, f"{GUIDE}:{line}", "exec"), namespace)
