"""The layering of docs/architecture.md, checked on the source: no layer imports one above it.

``pipestate.checkpoint`` does not import ``pipestate.data``; ``pipestate.data``
does not import ``pipestate.training`` or ``pipestate.torch``; the iterator and
engine modules of the data layer do not import the ops (the ops declare what
they are, and the engine reads the declarations).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src" / "pipestate"


def _imports(path: Path) -> set[str]:
    """The modules ``path`` imports at run time, at any depth (lazy imports in functions
    too; imports under ``if TYPE_CHECKING:`` are annotations only and left out)."""
    found: set[str] = set()
    pending: list[ast.AST] = [ast.parse(path.read_text())]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        pending.extend(ast.iter_child_nodes(node))
    return found


def _modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("checkpoint", ("pipestate.data", "pipestate.training")),
        ("data", ("pipestate.training", "pipestate.torch", "pipestate.jax")),
    ],
)
def test_a_layer_does_not_import_the_layers_above_it(
    package: str, forbidden: tuple[str, ...]
) -> None:
    offenders = {
        f"{path.relative_to(SRC)} imports {module}"
        for path in _modules(package)
        for module in _imports(path)
        if module.startswith(forbidden)
    }
    assert not offenders, sorted(offenders)


def test_the_iterators_and_the_engine_do_not_import_ops() -> None:
    engine = [p for p in (SRC / "data").glob("*.py") if p.name not in ("__init__.py", "dataset.py")]
    offenders = {
        f"{path.name} imports {module}"
        for path in engine
        for module in _imports(path)
        if module.startswith("pipestate.data.ops")
    }
    assert not offenders, sorted(offenders)
