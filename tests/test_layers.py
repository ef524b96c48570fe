"""The import layering of `sgone/` (docs/architecture.md, "Layers"): no import cycle between
modules, and no module imports one of a higher layer. Read from the source with `ast`, so lazy
imports inside functions count too (only `if TYPE_CHECKING:` blocks are skipped)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sgone"

# Lowest first. A module belongs to the layer of its longest listed prefix ("sgone" itself, the
# package's __init__, matches only itself); it may import its own layer and those below, never one above.
LAYERS: list[tuple[str, ...]] = [
    # foundations: errors, options, files, pure maths (self-support too), inputs as tensors, pictures, bundled samples
    ("sgone", "sgone.errors", "sgone.lazy", "sgone.options", "sgone.io", "sgone.ops", "sgone.boundary",
     "sgone.inputs", "sgone.upsample", "sgone.viz", "sgone.samples", "sgone.self_support"),
    ("sgone.backbones",),
    ("sgone.models",),
    # the runtime seam: the model protocol run by PyTorch, ONNX Runtime, ...
    ("sgone.onnx", "sgone.runtimes"),
    ("sgone.predictor",),
    ("sgone.data", "sgone.engine", "sgone.video", "sgone.label"),
    ("sgone.commands", "sgone.app", "sgone.cli", "sgone.__main__"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    best, found = -1, None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or (module.startswith(prefix + ".") and prefix != "sgone")
            if inside and len(prefix) > best:
                best, found = len(prefix), i
    assert found is not None, f"{module}: in no layer of tests/test_layers.py's LAYERS"
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    return skip


def imports_of(module: str) -> set[str]:
    """The sgone modules that `module` imports (anywhere in its source)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skip = _type_checking_nodes(tree)
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:  # `from sgone import ops` imports the module sgone.ops
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    out = set()
    for target in targets:
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        if target.startswith("sgone") and target != module:
            out.add(target)
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_upward_import():
    upward = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
              for m, targets in GRAPH.items() for t in targets if layer_of(t) > layer_of(m)]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(upward))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None. A package's __init__ importing its own
    submodules does not count as an edge back from them (Python runs the package first anyway)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if node.startswith(nxt + "."):
                continue  # a submodule importing its own package's __init__
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checks_can_fail():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("sgone.commands.segment") > layer_of("sgone.predictor") > layer_of("sgone.models.registry")
