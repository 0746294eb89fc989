"""The package's layers: imports only point down, and no module imports itself round a circle.

Layers, low to high. A module may import its own layer and the ones below; never one above. So the
trial and the worker never import review code, and the statistics both use live low (stats).
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "hpsearch"
LAYERS = [
    ("hpsearch.secrets", "hpsearch.errors", "hpsearch.record"),
    ("hpsearch.config",),
    ("hpsearch.stats", "hpsearch.tables", "hpsearch.space", "hpsearch.models"),
    ("hpsearch.backbones",),
    ("hpsearch.schedules", "hpsearch.data"),
    ("hpsearch.plan",),
    ("hpsearch.pruners",),
    ("hpsearch.trial",),
    ("hpsearch.study",),
    ("hpsearch.review",),
    ("hpsearch.app", "hpsearch.__main__", "hpsearch"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {
        module_name(p): p
        for p in sorted(PACKAGE.rglob("*.py"))
        if "conf" not in p.relative_to(PACKAGE).parts
    }


def imports(path: Path, name: str) -> set[str]:
    """Every hpsearch module that ``path`` imports, at the top or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    known = modules()
    return {m for m in found if m in known}


def layer(name: str) -> int:
    best = max(
        (
            prefix
            for group in LAYERS
            for prefix in group
            if name == prefix or name.startswith(prefix + ".")
        ),
        key=len,
    )
    return next(i for i, group in enumerate(LAYERS) if best in group)


def test_every_module_has_a_layer():
    for name in modules():
        layer(name)  # raises when no layer claims it


def test_imports_only_point_down():
    upward = [
        f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
        for name, path in modules().items()
        for target in imports(path, name)
        if layer(target) > layer(name)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    graph = {name: imports(path, name) - {name} for name, path in modules().items()}
    # A package's __init__ re-exports its modules; an edge into a package is an edge into them.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if nxt.startswith(node + "."):
                continue  # a package importing its own modules (its __init__ re-exports)
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if state.get(nxt) is None and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for name in graph:
        if name not in state:
            cycle = visit(name)
            assert cycle is None, " -> ".join(cycle)


def test_the_layering_test_sees_an_upward_import(tmp_path):
    """The check itself: a lazy import from the trial into review code is found."""
    fake = PACKAGE / "trial" / "objective.py"
    text = fake.read_text() + "\n\ndef _peek():\n    from hpsearch.review import report\n"
    probe = tmp_path / "objective.py"
    probe.write_text(text)
    assert "hpsearch.review.report" in imports(probe, "hpsearch.trial.objective")
    assert layer("hpsearch.review.report") > layer("hpsearch.trial.objective")
