"""Every op in the registry must have a conformance test in this folder."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipestate.data.ops import REGISTRY

KIT_FUNCTIONS = {"assert_conformant", "assert_restorable_at_every_position"}
HERE = Path(__file__).parent


def _calls(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }


@pytest.mark.parametrize("op_name", sorted(REGISTRY))
def test_op_has_conformance_test(op_name: str) -> None:
    path = HERE / f"test_{op_name}.py"
    assert path.exists(), f"op {op_name!r} has no test file {path.name}"
    assert _calls(path) & KIT_FUNCTIONS, f"{path.name} never calls the conformance kit"


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        REGISTRY["x"] = object  # type: ignore[index]
