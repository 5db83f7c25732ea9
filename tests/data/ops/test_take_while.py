from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import StateMismatchError
from pipestate.testing import assert_conformant, assert_elements_equal

from .._strategies import total

D = ps.Dataset


def below_five(x: np.int64) -> bool:
    return bool(x < 5)


def is_odd(x: np.int64) -> bool:
    return bool(x % 2 == 1)


def ints(ds: Any) -> list[int]:
    return [int(x) for x in ds]


def test_values_and_cardinality() -> None:
    ds = D.range(10).take_while(below_five)
    assert ints(ds) == [0, 1, 2, 3, 4]
    assert ints(D.range(10).take_while(lambda x: x > 0)) == []
    assert ints(D.range(3).take_while(below_five)) == [0, 1, 2]
    for source in (D.range(10), D.range(0), D.range(3).repeat()):
        assert source.take_while(below_five).cardinality() == ps.data.UNKNOWN_CARDINALITY


def test_tuple_is_unpacked_and_numpy_bools_accepted() -> None:
    ds = D.zip(D.range(6), D.range(6)).take_while(lambda a, b: np.array(a + b < 5))
    assert [(int(a), int(b)) for a, b in ds] == [(0, 0), (1, 1), (2, 2)]


def test_stops_reading_the_input_after_the_predicate_fails() -> None:
    calls: list[int] = []

    def counted(x: np.int64) -> bool:
        calls.append(int(x))
        return bool(x < 2)

    it = iter(D.range(10).take_while(counted))
    assert ints(it) == [0, 1]
    for _ in range(3):
        with pytest.raises(StopIteration):
            next(it)
    assert calls == [0, 1, 2]
    restored = iter(D.range(10).take_while(counted))
    restored.set_state(it.get_state())
    assert it.get_state()["iterator"]["ended"] is True
    with pytest.raises(StopIteration):
        next(restored)
    assert calls == [0, 1, 2]


def test_infinite_input() -> None:
    assert ints(D.range(4).repeat().take_while(lambda x: x != 3)) == [0, 1, 2]


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(D.range(20).take_while(below_five), id="ra"),
        pytest.param(D.range(20).take_while(lambda x: True), id="all-pass"),
        pytest.param(D.range(20).take_while(lambda x: False), id="none-pass"),
        pytest.param(D.range(0).take_while(below_five), id="empty"),
        pytest.param(D.range(20).filter(is_odd).take_while(lambda x: x < 13), id="streaming"),
        pytest.param(D.range(8).take_while(below_five).repeat(3), id="repeat-outside"),
        pytest.param(D.range(4).repeat(3).take_while(lambda x: x != 3), id="repeat-inside"),
        pytest.param(
            D.range(6)
            .shuffle(2, seed=3, reshuffle_each_iteration=False)
            .take_while(lambda x: x < 5),
            id="shuffled",
        ),
        pytest.param(D.range(12).global_shuffle().take_while(lambda x: True), id="seedless"),
        pytest.param(
            D.from_tensor_slices({"b": np.arange(9), "a": np.arange(9.0)}).take_while(
                lambda d: d["b"] < 6
            ),
            id="dict",
        ),
        pytest.param(D.range(3).repeat().take_while(lambda x: True).take(10), id="infinite"),
        pytest.param(D.range(30).take_while(lambda x: x < 17).batch(4), id="then-batch"),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=40)


def test_state_over_random_access_input_is_one_index_and_a_flag() -> None:
    it = iter(D.range(10**9).take_while(lambda x: x < 10**6))
    for _ in range(1000):
        next(it)
    assert it.get_state()["iterator"] == {
        "ended": False,
        "parent": {"index": 1000, "seed": None},
        "seed": None,
    }


def test_predicate_must_return_a_scalar_bool() -> None:
    with pytest.raises(TypeError, match=r"take_while: predicate .*<lambda> must return a scalar"):
        next(iter(D.range(3).take_while(lambda x: x)))
    with pytest.raises(TypeError, match=r"take_while: predicate must be callable, got int 3"):
        D.range(3).take_while(3)  # type: ignore[arg-type]


def test_malformed_state_names_the_op() -> None:
    ds = D.range(10).take_while(below_five)
    it = iter(ds)
    next(it)
    state = it.get_state()
    state["iterator"]["ended"] = "no"
    with pytest.raises(StateMismatchError, match=r"take_while: state\['ended'\] must be a bool"):
        it.set_state(state)
    state["iterator"]["ended"] = False
    state["iterator"]["parent"]["index"] = 11
    with pytest.raises(StateMismatchError, match=r"range: state\['index'\]=11 is out of range"):
        it.set_state(state)
    assert ints(it) == [1, 2, 3, 4]


# ------------------------------------------------------------------ tf.data parity
PARITY: dict[str, Any] = {
    "prefix": lambda d: d.range(10).take_while(lambda x: x < 4),
    "none": lambda d: d.range(10).take_while(lambda x: x > 100),
    "all": lambda d: d.range(5).take_while(lambda x: x < 100),
    "tuple-unpacked": lambda d: d.zip(d.range(8), d.range(8)).take_while(lambda a, b: a + b < 7),
    "dict": lambda d: d.from_tensor_slices({"v": np.arange(6.0)}).take_while(lambda e: e["v"] < 3),
    "infinite": lambda d: d.range(5).repeat().take_while(lambda x: x < 4),
    "repeat-outside": lambda d: d.range(6).take_while(lambda x: x < 2).repeat(3),
    "then-batch": lambda d: d.range(20).take_while(lambda x: x < 11).batch(4),
}


@pytest.mark.parametrize("name", sorted(PARITY))
def test_same_as_tf_data(name: str) -> None:
    tf = pytest.importorskip("tensorflow")
    ours, theirs = PARITY[name](D), PARITY[name](tf.data.Dataset)
    expected = list(theirs.as_numpy_iterator())
    actual = list(ours)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert_elements_equal(a, e)
    assert ours.cardinality() == int(theirs.cardinality())


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.


def _small(*args: object) -> bool:
    return total(args) % 17 != 16


PROPERTY_OP = st.just(lambda ds: ds.take_while(_small))
