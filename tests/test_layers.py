"""The package's house rules: no import circle between modules and no arrow upward between layers.

Every ``import`` and ``from ... import`` counts, those inside functions too (a lazy import is still an arrow).
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_ROOT

SRC = REPO_ROOT / "src"
# Bottom to top; a module may import its own layer and those below. Top-level modules and sub-packages by name.
LAYERS = [
    {"", "env", "util", "vocab", "pfs", "chain"},
    {"models"},
    {"music"},
    {"local"},
    {"stages", "sample_data"},
    {"report"},
    {"cluster", "compose"},
    {"demo"},
    {"cli", "__main__"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The ambientgen modules one file imports (a name imported from a package counts as its module if it is one)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "ambientgen"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "ambientgen":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                as_path = SRC / sub.replace(".", "/")
                found.add(sub if as_path.with_suffix(".py").is_file() or (as_path / "__init__.py").is_file()
                          else target)
    return found - {name}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted((SRC / "ambientgen").rglob("*.py"))}


def layer_of(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if part in names:
            return i
    raise AssertionError(f"{module}: not in any layer of tests/test_layers.py")


def test_every_module_has_a_layer_and_no_arrow_points_up():
    upward = [f"{m} -> {t}" for m, targets in graph().items() for t in targets if layer_of(t) > layer_of(m)]
    assert upward == []


def test_no_import_circle():
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    assert circles == []


def test_the_checker_sees_lazy_and_relative_imports():
    edges = graph()
    assert "ambientgen.music.pianoroll" in edges["ambientgen.stages.render"]  # inside a function
    assert "ambientgen.local.records" in edges["ambientgen.local.store"]  # relative
    assert layer_of("ambientgen.cli") > layer_of("ambientgen.stages.render") > layer_of("ambientgen.util")


def test_modules_are_named_after_their_commands():
    """`ambientgen mp3-to-wav` lives in mp3_to_wav.py; a command with a package of its own (local, cluster, report)
    is that package."""
    from ambientgen.cli import COMMANDS

    for command, module in COMMANDS.items():
        parts = module.split(".")
        assert command.replace("-", "_") in (parts[-1], parts[1]), (command, module)
