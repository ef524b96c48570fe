"""Names imported on first use: packages' public names (PEP 562, `lazy_exports`) and registry
entries (`lookup`), so that importing sgone (and building the CLI) does not load torch."""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

from sgone.errors import SgoneError


def lazy_exports(package: str, where: dict[str, str], namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(`__getattr__`, `__dir__`) for `package`: name -> the module `where[name]` it comes from;
    `namespace` is the package's globals()."""

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__


def lookup(table: Mapping[str, Any], name: str, what: str) -> Any:
    """The one registry style of the package (data sources, backbones, architectures, runtimes,
    video modes): a module-level dict from name to the thing itself, or to a "module:attr" (or
    "module") string where importing it early would cost (torch, pycocotools, ONNX Runtime).
    -> the thing; SgoneError "NAME: unknown WHAT (use one of: ...)" for a name not in `table`."""
    if name not in table:
        raise SgoneError(f"{name}: unknown {what} (use one of: {', '.join(table)})")
    entry = table[name]
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        loaded = importlib.import_module(module)
        return getattr(loaded, attr) if attr else loaded
    return entry
