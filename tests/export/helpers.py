"""Helpers of the ONNX tests."""
from __future__ import annotations


def run_example_without_torch(folder, output, *extra: str, timeout: int = 300):
    """examples/onnx_segment.py on the bundled sample with `import torch` and `import sgone` made to
    fail (onnxruntime, numpy and pillow only) -> the finished process."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    samples = root / "sgone" / "samples"
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.modules['sgone'] = None; "
            f"sys.argv = sys.argv[1:]; runpy.run_path({str(root / 'examples' / 'onnx_segment.py')!r}, "
            "run_name='__main__')")
    args = ["onnx_segment", str(folder), "--support", str(samples / "support.jpg"), "--support-mask",
            str(samples / "support_mask.png"), "--input", str(samples / "query.jpg"), "--output", str(output),
            *extra]
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)
