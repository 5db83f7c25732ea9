"""Every op in the registry must have a conformance test and a property strategy in this folder."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pipestate as ps
from pipestate.data.ops import REGISTRY

from .._strategies import OP_ATTRIBUTE, SOURCE_ATTRIBUTE, op_module

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


# Ops without a strategy in the property test of tests/data/test_exactly_once.py, and why.
NO_PROPERTY_STRATEGY = {
    # File sources: a strategy would have to write files for every example; their
    # conformance tests restore them at every position of real files instead.
    "list_files": "reads a directory",
    "text_line": "reads text files",
    # Background threads: tests/data/test_exactly_once_parallel.py puts prefetch
    # (and parallel map) into random pipelines under any number of threads.
    "prefetch": "covered by the parallel property test",
}


@pytest.mark.parametrize("op_name", sorted(REGISTRY))
def test_op_has_a_property_strategy(op_name: str) -> None:
    module = op_module(op_name)
    declared = [a for a in (OP_ATTRIBUTE, SOURCE_ATTRIBUTE) if hasattr(module, a)]
    if op_name in NO_PROPERTY_STRATEGY:
        assert not declared, f"{op_name!r} declares {declared}: drop it from NO_PROPERTY_STRATEGY"
        return
    assert declared, (
        f"{module.__name__} declares neither {OP_ATTRIBUTE} nor {SOURCE_ATTRIBUTE} for the "
        "property test (see docs/testing.md), and the op is not in NO_PROPERTY_STRATEGY"
    )


def test_exemptions_are_registered_ops() -> None:
    assert set(NO_PROPERTY_STRATEGY) <= set(REGISTRY)


@pytest.mark.parametrize("op_name", sorted(set(REGISTRY) - set(NO_PROPERTY_STRATEGY)))
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_property_strategies_draw_working_pipelines(op_name: str, data: st.DataObject) -> None:
    module = op_module(op_name)
    for attribute in (OP_ATTRIBUTE, SOURCE_ATTRIBUTE):
        value = getattr(module, attribute, ())
        for strategy in value if isinstance(value, tuple) else (value,):
            drawn = data.draw(strategy)
            ds = drawn(ps.Dataset.range(12).batch(2)) if attribute == OP_ATTRIBUTE else drawn
            assert isinstance(ds, ps.Dataset)
            list(ds.take(20))
