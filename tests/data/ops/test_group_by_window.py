from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import InvalidArgumentError, StateMismatchError
from pipestate.testing import assert_conformant, assert_elements_equal

from .._strategies import total
from ._streaming import filtered

D = ps.Dataset


def parity(x: Any) -> Any:
    return x % 2


def batch4(key: Any, window: ps.Dataset) -> ps.Dataset:
    return window.batch(4)


def lists(ds: ps.Dataset) -> list[list[int]]:
    return [x.tolist() for x in ds]


def test_full_windows_as_they_fill_then_the_rest_by_key() -> None:
    ds = D.from_tensor_slices(np.array([1, 0, 0, 3, 0, 0, 5, 2, 1, 4])).group_by_window(
        parity, batch4, window_size=4
    )
    assert lists(ds) == [[0, 0, 0, 0], [1, 3, 5, 1], [2, 4]]
    assert ds.cardinality() == ps.data.UNKNOWN_CARDINALITY
    assert D.range(2).repeat().group_by_window(parity, batch4, 4).cardinality() == (
        ps.data.INFINITE_CARDINALITY
    )


def test_reduce_func_gets_the_key_and_a_window_it_may_read_twice() -> None:
    def reduce(key: Any, window: ps.Dataset) -> ps.Dataset:
        assert type(key) is np.int64
        return D.zip(window.batch(3), window.map(lambda x: x * 10).batch(3)).map(
            lambda a, b: (a, b, key)
        )

    ds = D.range(6).group_by_window(parity, reduce, window_size=3)
    values = list(ds)
    assert_elements_equal(values[1], (np.array([1, 3, 5]), np.array([10, 30, 50]), np.int64(1)))


def test_window_size_func_per_key() -> None:
    ds = D.range(11).group_by_window(
        lambda x: x % 3, lambda key, w: w.batch(4), window_size_func=lambda k: k + 1
    )
    assert lists(ds) == [[0], [3], [1, 4], [6], [2, 5, 8], [9], [7, 10]]


def test_structured_elements_and_reduced_datasets_with_seeds() -> None:
    ds = D.zip(D.range(12), D.range(12).map(lambda x: x * 0.5)).group_by_window(
        lambda a, b: a % 3, lambda key, w: w.shuffle(4).batch(4), window_size=4
    )
    batches = list(ds)
    assert sorted(batches[0][0].tolist()) == [0, 3, 6, 9]


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(D.range(13).group_by_window(parity, batch4, 4), id="ra"),
        pytest.param(filtered(13).group_by_window(parity, batch4, 4), id="streaming"),
        pytest.param(
            D.range(14).group_by_window(
                lambda x: x % 3,
                lambda k, w: w.map(lambda x: x + k),
                window_size_func=lambda k: k + 2,
            ),
            id="unbatched-outputs",
        ),
        pytest.param(
            D.range(12).group_by_window(parity, lambda k, w: w.shuffle(3).batch(2), 3),
            id="seedless-inside",
        ),
        pytest.param(
            D.range(12).global_shuffle().group_by_window(parity, batch4, 4), id="seedless"
        ),
        pytest.param(D.range(0).group_by_window(parity, batch4, 4), id="empty"),
        pytest.param(
            D.range(5).repeat().group_by_window(lambda x: x % 3, batch4, 2).take(9), id="infinite"
        ),
        pytest.param(
            D.range(9)
            .map(lambda x: np.arange(int(x) % 4))
            .group_by_window(lambda v: len(v) % 2, lambda k, w: w.padded_batch(2), 2),
            id="ragged",
        ),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=30)


def test_state_holds_the_waiting_elements_by_key() -> None:
    it = iter(D.range(10).group_by_window(lambda x: x % 3, batch4, 4))
    assert next(it).tolist() == [0, 3, 6, 9]
    state = it.get_state()["iterator"]
    # The window being output stays buffered until its reduced dataset ends.
    assert state["keys"] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert state["buffer"]["count"] == 10
    assert state["current"]["key"] == 0
    assert state["parent"] == {"index": 10, "seed": None}


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match=r"either the window_size argument or the window_size_f"):
        D.range(3).group_by_window(parity, batch4)
    with pytest.raises(ValueError, match=r"either the window_size argument"):
        D.range(3).group_by_window(parity, batch4, 2, lambda k: 2)
    with pytest.raises(InvalidArgumentError, match=r"window size must be greater than zero, but"):
        D.range(3).group_by_window(parity, batch4, 0)
    with pytest.raises(TypeError, match=r"group_by_window: key_func must be callable"):
        D.range(3).group_by_window(3, batch4, 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"group_by_window: window_size must be an integer"):
        D.range(3).group_by_window(parity, batch4, 2.0)  # type: ignore[arg-type]
    assert "name='g'" in repr(D.range(3).group_by_window(parity, batch4, 2, name="g"))


def test_function_errors_while_iterating() -> None:
    with pytest.raises(TypeError, match=r"key_func .* must return a scalar int64, got float"):
        next(iter(D.range(3).group_by_window(lambda x: 0.5, batch4, 2)))
    with pytest.raises(TypeError, match=r"reduce_func .* must return a pipestate Dataset"):
        next(iter(D.range(3).group_by_window(parity, lambda k, w: 3, 1)))
    with pytest.raises(InvalidArgumentError, match=r"but got -1 \(for key 0\)"):
        next(iter(D.range(3).group_by_window(parity, batch4, window_size_func=lambda k: -1)))
    with pytest.raises(RuntimeError, match=r"raised StopIteration"):
        next(iter(D.range(3).group_by_window(lambda x: next(iter([])), batch4, 2)))


def test_malformed_state_names_the_op() -> None:
    ds = D.range(10).group_by_window(lambda x: x % 3, batch4, 4)
    it = iter(ds)
    next(it)
    good = it.get_state()
    bad = {**good, "iterator": {**good["iterator"], "keys": [0, 0, 0, 0, 1, 1, 1, 2, 2, "x"]}}
    with pytest.raises(
        StateMismatchError, match=r"group_by_window: state\['keys'\] must be a list"
    ):
        it.set_state(bad)
    bad = {**good, "iterator": {**good["iterator"], "keys": [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]}}
    with pytest.raises(
        StateMismatchError, match=r"holds 6 elements of key 1, whose window size is 4"
    ):
        it.set_state(bad)
    bad = {**good, "iterator": {**good["iterator"], "current": {"key": 7}}}
    with pytest.raises(StateMismatchError, match=r"state\['current'\] must be None or a dict"):
        it.set_state(bad)
    assert lists(it) == [[1, 4, 7], [2, 5, 8]]


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.


def _key(modulus: int) -> Any:
    return lambda *args: total(args) % modulus


def _grouped(modulus: int, size: int) -> Any:
    return lambda ds: ds.group_by_window(_key(modulus), lambda k, w: w, window_size=size)


PROPERTY_OP = st.builds(_grouped, st.integers(1, 3), st.integers(1, 4))
