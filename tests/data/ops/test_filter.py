from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import StateMismatchError
from pipestate.testing import assert_conformant

from .._strategies import total


def is_even(x: np.int64) -> bool:
    return bool(x % 2 == 0)


def test_values_and_cardinality() -> None:
    ds = ps.Dataset.range(10).filter(is_even)
    assert [int(x) for x in ds] == [0, 2, 4, 6, 8]
    assert ds.cardinality() == ps.data.UNKNOWN_CARDINALITY
    assert ps.Dataset.range(3).repeat().filter(is_even).cardinality() == (
        ps.data.INFINITE_CARDINALITY
    )
    with pytest.raises(TypeError, match="length is unknown"):
        len(ds)


def test_tuple_is_unpacked_and_numpy_bools_accepted() -> None:
    ds = ps.Dataset.zip(ps.Dataset.range(6), ps.Dataset.range(6)).filter(
        lambda a, b: np.array(a + b > 5)
    )
    assert [(int(a), int(b)) for a, b in ds] == [(3, 3), (4, 4), (5, 5)]


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(ps.Dataset.range(30).filter(is_even), id="range"),
        pytest.param(ps.Dataset.range(30).filter(lambda x: x > 100), id="nothing-passes"),
        pytest.param(ps.Dataset.range(0).filter(is_even), id="empty"),
        pytest.param(ps.Dataset.range(40).filter(is_even).batch(3), id="then-batch"),
        pytest.param(
            ps.Dataset.range(20).global_shuffle(seed=3).filter(is_even).map(lambda x: x * 10),
            id="shuffled-then-map",
        ),
        pytest.param(ps.Dataset.range(20).global_shuffle().filter(is_even), id="seedless"),
        pytest.param(
            ps.Dataset.range(9).filter(is_even).repeat(3).filter(lambda x: x != 4),
            id="filter-repeat-filter",
        ),
        pytest.param(
            ps.Dataset.range(50).filter(is_even).skip(4).take(10).shard(3, 2).enumerate(),
            id="streaming-take-skip-shard-enumerate",
        ),
        pytest.param(
            ps.Dataset.zip(ps.Dataset.range(12).filter(is_even), ps.Dataset.range(100)),
            id="zip-streaming-and-random-access",
        ),
        pytest.param(
            ps.Dataset.range(7).filter(is_even).concatenate(ps.Dataset.range(3)),
            id="concatenate-streaming-first",
        ),
        pytest.param(
            ps.Dataset.range(4).concatenate(ps.Dataset.range(9).filter(is_even)),
            id="concatenate-streaming-second",
        ),
        pytest.param(ps.Dataset.range(3).repeat().filter(is_even).take(7), id="infinite-then-take"),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds)


def test_state_over_random_access_input_is_one_index() -> None:
    ds = ps.Dataset.range(10**9).filter(is_even)
    it = iter(ds)
    for _ in range(1000):
        next(it)
    inner = it.get_state()["iterator"]
    assert inner == {"parent": {"index": 1999, "seed": None}, "seed": None}


def test_restore_cost_does_not_replay() -> None:
    calls = []

    def counted(x: np.int64) -> bool:
        calls.append(int(x))
        return True

    ds = ps.Dataset.range(10**6).filter(counted)
    state = {
        **iter(ds).get_state(),
        "iterator": {"parent": {"index": 500_000, "seed": None}, "seed": None},
    }
    it = iter(ds)
    it.set_state(state)
    assert int(next(it)) == 500_000
    assert calls == [500_000]


def test_predicate_must_return_scalar_bool() -> None:
    message = r"filter: predicate .*<lambda> must return a scalar bool, got np.int64\(0\)"
    with pytest.raises(TypeError, match=message):
        next(iter(ps.Dataset.range(3).filter(lambda x: x)))
    with pytest.raises(TypeError, match="scalar bool, got bool\\[2\\]"):
        next(iter(ps.Dataset.range(3).filter(lambda x: np.array([True, False]))))


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="filter: predicate must be callable, got int 3"):
        ps.Dataset.range(3).filter(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="filter: stateful must be a bool"):
        ps.Dataset.range(3).filter(is_even, stateful="yes")  # type: ignore[arg-type]


def test_not_random_access() -> None:
    with pytest.raises(TypeError, match="does not support random access"):
        ps.Dataset.range(3).filter(is_even)[0]


def test_malformed_state_names_the_op() -> None:
    ds = ps.Dataset.range(10).filter(is_even).map(lambda x: x + 1)
    it = iter(ds)
    next(it)
    good = it.get_state()
    bad = {**good, "iterator": {"parent": {"parent": 7, "seed": None}, "seed": None}}
    with pytest.raises(StateMismatchError, match="filter: state\\['parent'\\] must be a dict"):
        it.set_state(bad)
    assert int(next(it)) == 3  # the failed restore left the position alone


def test_stateful_predicate_is_external_state() -> None:
    ds = ps.Dataset.range(5).filter(is_even, stateful=True)
    with pytest.raises(ps.errors.ExternalStateError, match="filter\\(predicate='is_even'\\)"):
        iter(ds).get_state()


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.


def _keep(*args: object) -> bool:
    """A predicate for any element: drops about a third of them."""
    return total(args) % 3 != 1


PROPERTY_OP = st.just(lambda ds: ds.filter(_keep))
