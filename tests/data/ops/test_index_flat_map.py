from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import InvalidArgumentError, StateMismatchError
from pipestate.testing import assert_conformant, assert_elements_equal

from .._strategies import total
from ._streaming import filtered, state_after

D = ps.Dataset


def pairs(x: Any) -> np.ndarray:
    """Two rows per element: ``[x, 10 * x]``."""
    return np.array([x, 10 * x])


def by_two(i: Any) -> tuple[Any, Any]:
    return i // 2, i % 2


def ints(ds: ps.Dataset) -> list[int]:
    return [int(x) for x in ds]


def test_rows_in_index_order_and_random_access() -> None:
    ds = D.range(3).index_flat_map(pairs, by_two, output_cardinality=6)
    assert ints(ds) == [0, 0, 1, 10, 2, 20]
    assert ds._random_access
    assert len(ds) == 6
    assert int(ds[5]) == 20
    assert sorted(ints(ds.global_shuffle(seed=3))) == [0, 0, 1, 2, 10, 20]
    assert ints(D.range(3).index_flat_map(pairs, by_two)) == [0, 0, 1, 10, 2, 20]
    assert D.range(3).index_flat_map(pairs, by_two).cardinality() == ps.data.UNKNOWN_CARDINALITY


def test_structured_rows_and_tuple_elements() -> None:
    ds = D.zip(D.range(2), D.range(10, 12)).index_flat_map(
        lambda a, b: {"a": np.array([a, a]), "b": np.array([b, -b])}, by_two, output_cardinality=4
    )
    assert_elements_equal(list(ds)[3], {"a": np.int64(1), "b": np.int64(-11)})


def test_ends_where_the_index_points_past_the_input() -> None:
    for source in (D.range(3), filtered(3)):
        assert ints(source.index_flat_map(pairs, by_two)) == [0, 0, 1, 10, 2, 20]
    infinite = D.counter().index_flat_map(pairs, by_two, ps.data.INFINITE_CARDINALITY)
    assert infinite.cardinality() == ps.data.INFINITE_CARDINALITY
    assert ints(infinite.take(5)) == [0, 0, 1, 10, 2]


def test_errors() -> None:
    with pytest.raises(InvalidArgumentError, match=r"offset 2 into input element 0, whose map_f"):
        next(iter(D.range(3).index_flat_map(pairs, lambda i: (0, 2))))
    with pytest.raises(InvalidArgumentError, match=r"must return a pair \(element_index, offset\)"):
        next(iter(D.range(3).index_flat_map(pairs, lambda i: i)))
    with pytest.raises(InvalidArgumentError, match=r"must return a pair"):
        next(iter(D.range(3).index_flat_map(pairs, lambda i: (-1, 0))))
    with pytest.raises(InvalidArgumentError, match=r"but the input has 3 elements"):
        D.range(3).index_flat_map(pairs, by_two, output_cardinality=8)[7]
    backwards = filtered(4).index_flat_map(pairs, lambda i: (3 - i // 2, i % 2))
    it = iter(backwards)
    assert int(next(it)) == 3
    next(it)
    with pytest.raises(InvalidArgumentError, match=r"element indices must not decrease"):
        next(it)
    with pytest.raises(TypeError, match=r"index_flat_map: index_map_func must be callable"):
        D.range(3).index_flat_map(pairs, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"output_cardinality must be >= -2"):
        D.range(3).index_flat_map(pairs, by_two, -3)
    assert "name='i'" in repr(D.range(3).index_flat_map(pairs, by_two, name="i"))


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(D.range(6).index_flat_map(pairs, by_two, 12), id="ra"),
        pytest.param(D.range(6).index_flat_map(pairs, by_two), id="ra-unknown-length"),
        pytest.param(filtered(6).index_flat_map(pairs, by_two), id="streaming"),
        pytest.param(filtered(6).index_flat_map(pairs, by_two, 7), id="streaming-cut"),
        pytest.param(D.range(6).index_flat_map(pairs, by_two, 12).global_shuffle(), id="shuffled"),
        pytest.param(D.range(0).index_flat_map(pairs, by_two), id="empty"),
        pytest.param(D.range(3).repeat().index_flat_map(pairs, by_two, -1).take(9), id="infinite"),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=30)


def test_states() -> None:
    assert state_after(D.range(10**6).index_flat_map(pairs, by_two, 2 * 10**6), 5) == {
        "index": 5,
        "seed": None,
    }
    streaming = state_after(filtered(10).index_flat_map(pairs, by_two), 3)
    assert (streaming["produced"], streaming["read"], streaming["element"]["count"]) == (3, 2, 1)


def test_malformed_state_names_the_op() -> None:
    it = iter(filtered(10).index_flat_map(pairs, by_two))
    next(it)
    good = it.get_state()
    empty = {"count": 0, "spec": None, "columns": []}
    with pytest.raises(StateMismatchError, match=r"index_flat_map: state\['element'\] must hold"):
        it.set_state({**good, "iterator": {**good["iterator"], "element": empty}})
    with pytest.raises(StateMismatchError, match=r"index_flat_map: state\['produced'\] must be"):
        it.set_state({**good, "iterator": {**good["iterator"], "produced": "1"}})
    assert ints(it)[:2] == [0, 1]


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.


def _rows(copies: int) -> Any:
    def map_func(*args: object) -> np.ndarray:
        return np.arange(copies, dtype=np.int64) + total(args)

    return map_func


def _flattened(copies: int) -> Any:
    return lambda ds: ds.index_flat_map(_rows(copies), lambda i: (i // copies, i % copies))


PROPERTY_OP = st.builds(_flattened, st.integers(1, 3))
