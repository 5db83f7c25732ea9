from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import StateMismatchError
from pipestate.testing import assert_conformant

from .._strategies import total
from ._streaming import filtered, state_after

D = ps.Dataset


def mod5(x: Any) -> Any:
    return x % 5


def test_first_appearances_in_order() -> None:
    ds = D.from_tensor_slices(np.array([1, 37, 2, 37, 2, 1])).unique()
    assert [int(x) for x in ds] == [1, 37, 2]
    assert ds.cardinality() == ps.data.UNKNOWN_CARDINALITY
    words = D.from_tensor_slices(["b", "a", "b", "c"]).unique()
    assert list(words) == [b"b", b"a", b"c"]
    rows = D.from_tensor_slices(np.array([[1, 1], [2, 2], [1, 1]])).unique()
    assert [r.tolist() for r in rows] == [[1, 1], [2, 2]]


def test_arrays_of_other_shapes_are_different_elements() -> None:
    ds = D.range(4).map(lambda n: np.ones(int(n) % 3, np.int64)).unique()
    assert [len(x) for x in ds] == [0, 1, 2]


def test_unsupported_elements() -> None:
    with pytest.raises(TypeError, match=r"unique supports elements that are one integer or string"):
        D.from_tensor_slices(np.zeros(3)).unique()
    with pytest.raises(TypeError, match=r"but the elements of .* are \("):
        D.zip(D.range(3), D.range(3)).unique()
    with pytest.raises(TypeError, match=r"unique: unique supports .*got float64\[\]"):
        next(iter(D.range(3).map(lambda x: x * 0.5).unique()))
    with pytest.raises(TypeError, match=r"got \(int64\[\], int64\[\]\)"):
        next(iter(D.range(3).map(lambda x: (x, x)).unique()))
    assert "name='u'" in repr(D.range(3).unique(name="u"))


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(D.range(20).map(mod5).unique(), id="ra"),
        pytest.param(filtered(20).map(mod5).unique(), id="streaming"),
        pytest.param(D.from_tensor_slices(["x", "yy", "x", "", "yy"]).unique(), id="strings"),
        pytest.param(D.range(0).unique(), id="empty"),
        pytest.param(D.range(30).global_shuffle().map(mod5).unique(), id="seedless"),
        pytest.param(D.range(12).map(mod5).unique().repeat(2), id="repeat"),
        pytest.param(D.range(5).repeat().map(mod5).unique().take(5), id="infinite"),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=30)


def test_state_holds_the_distinct_elements_seen() -> None:
    state = state_after(D.range(100).map(mod5).unique(), 3)
    assert state["seen"]["count"] == 3
    assert state["parent"] == {"index": 3, "seed": None}


def test_malformed_state_names_the_op() -> None:
    it = iter(D.range(20).map(mod5).unique())
    next(it)
    good = it.get_state()
    twice = {"count": 2, "spec": "leaf", "columns": [np.array([0, 0])]}
    with pytest.raises(StateMismatchError, match=r"unique: state\['seen'\] holds an element twice"):
        it.set_state({**good, "iterator": {**good["iterator"], "seen": twice}})
    floats = {"count": 1, "spec": "leaf", "columns": [np.array([0.5])]}
    with pytest.raises(StateMismatchError, match=r"unique: state\['seen'\] holds an invalid"):
        it.set_state({**good, "iterator": {**good["iterator"], "seen": floats}})
    assert [int(x) for x in it] == [1, 2, 3, 4]


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.


def _small(*args: object) -> np.int64:
    """A small integer made from any element, so that unique has repeats to drop."""
    return np.int64(total(args) % 7)


PROPERTY_OP = st.just(lambda ds: ds.map(_small).unique())
