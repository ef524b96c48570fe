"""The runtime tests share the ONNX tests' fixture of the bundled photos."""
from tests.export.conftest import samples  # noqa: F401
