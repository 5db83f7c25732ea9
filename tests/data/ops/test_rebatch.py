from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import InvalidArgumentError, StateMismatchError
from pipestate.testing import assert_conformant, assert_elements_equal, roundtrip_state

from ._streaming import filtered, state_after

D = ps.Dataset


def lists(ds: ps.Dataset) -> list[list[int]]:
    return [x.tolist() for x in ds]


@pytest.mark.parametrize(
    ("sizes", "drop", "expected"),
    [
        (3, False, [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]),
        (3, True, [[0, 1, 2], [3, 4, 5], [6, 7, 8]]),
        ([2, 1, 0, 1], False, [[0, 1], [2], [], [3], [4, 5], [6], [], [7], [8, 9]]),
        ([5], False, [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]),
    ],
)
def test_rows_recut_across_input_batches(sizes: Any, drop: bool, expected: list[list[int]]) -> None:
    ds = D.range(10).batch(4).rebatch(sizes, drop_remainder=drop)
    assert lists(ds) == expected
    assert ds.cardinality() == ps.data.UNKNOWN_CARDINALITY


def test_structured_batches_keep_their_dtypes() -> None:
    ds = D.range(6).map(lambda x: {"a": x, "b": (x * 0.5, np.bytes_(b"x" * int(x)))}).batch(4)
    batches = list(ds.rebatch(3))
    assert_elements_equal(
        batches[1],
        {
            "a": np.array([3, 4, 5]),
            "b": (np.array([1.5, 2.0, 2.5]), np.array([b"xxx", b"xxxx", b"xxxxx"])),
        },
    )


def test_empty_batches_read_no_input() -> None:
    ds = D.range(4).batch(2).rebatch([0, 1])
    assert lists(ds) == [[], [0], [], [1], [], [2], [], [3], []]


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(D.range(11).batch(4).rebatch(3), id="ra"),
        pytest.param(filtered(11).batch(4).rebatch([2, 1, 0]), id="streaming"),
        pytest.param(D.range(11).batch(3).rebatch(4, drop_remainder=True), id="drop"),
        pytest.param(D.range(0).batch(3).rebatch(2), id="empty"),
        pytest.param(
            D.zip(D.range(9), D.range(9).map(lambda x: x * 1.5)).batch(4).rebatch(3), id="tuple"
        ),
        pytest.param(D.range(5).batch(2).repeat().rebatch(3).take(7), id="infinite"),
        pytest.param(D.range(12).global_shuffle().batch(5).rebatch(2), id="seedless"),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=30)


def test_state_holds_the_last_input_batch_and_the_rows_output() -> None:
    state = state_after(D.range(100).batch(10).rebatch(4), 1)
    assert state["batch"]["count"] == 1
    assert state["batch"]["columns"][0].tolist() == [list(range(10))]
    assert (state["offset"], state["next_size"]) == (4, 0)
    assert state["parent"] == {"index": 1, "seed": None}


def test_restored_string_rows_keep_the_batch_dtype() -> None:
    # A string column is as wide as its longest string: rows restored from a
    # saved batch must keep that width, and an empty batch its dtype.
    ds = D.from_tensor_slices(["abcd", "a", "ab", "abc"]).batch(2).rebatch([1, 0, 1])
    expected = list(ds)
    for position in range(len(expected) + 1):
        it = iter(ds)
        for _ in range(position):
            next(it)
        fresh = iter(ds)
        fresh.set_state(roundtrip_state(it.get_state()))
        for got, want in zip(fresh, expected[position:]):
            assert_elements_equal(got, want)


def test_invalid_arguments_and_inputs() -> None:
    with pytest.raises(ValueError, match=r"rebatch: batch_size must be >= 1, got batch_size=0"):
        D.range(4).batch(2).rebatch(0)
    with pytest.raises(ValueError, match=r"batch_size must hold at least one positive size"):
        D.range(4).batch(2).rebatch([0, 0])
    with pytest.raises(ValueError, match=r"batch_size must hold at least one positive size"):
        D.range(4).batch(2).rebatch([])
    with pytest.raises(ValueError, match=r"batch_size\[1\] must be >= 0"):
        D.range(4).batch(2).rebatch([1, -1])
    with pytest.raises(TypeError, match=r"batch_size must be an integer, got str"):
        D.range(4).batch(2).rebatch("2")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"rebatch expects batched elements"):
        next(iter(D.range(4).rebatch(2)))
    with pytest.raises(InvalidArgumentError, match=r"different first dimensions"):
        next(iter(D.from_tensors((np.zeros(2), np.zeros(3))).rebatch(1)))
    assert "name='r'" in repr(D.range(4).batch(2).rebatch(1, name="r"))


def test_malformed_state_names_the_op() -> None:
    it = iter(D.range(20).batch(4).rebatch([3, 2]))
    next(it)
    good = it.get_state()
    with pytest.raises(
        StateMismatchError, match=r"rebatch: state\['next_size'\]=2 is out of range"
    ):
        it.set_state({**good, "iterator": {**good["iterator"], "next_size": 2}})
    two = {"count": 2, "spec": "leaf", "columns": [np.zeros((2, 1), np.int64)]}
    with pytest.raises(StateMismatchError, match=r"state\['batch'\] must hold at most one batch"):
        it.set_state({**good, "iterator": {**good["iterator"], "batch": two}})
    with pytest.raises(StateMismatchError, match=r"rebatch: state\['offset'\]=5 is out of range"):
        it.set_state({**good, "iterator": {**good["iterator"], "offset": 5}})
    assert lists(it)[:2] == [[3, 4], [5, 6, 7]]


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_OP = st.builds(
    lambda batch, sizes, drop: lambda ds: ds.batch(batch).rebatch(sizes, drop_remainder=drop),
    st.integers(1, 4),
    st.lists(st.integers(0, 3), min_size=1, max_size=3).filter(any),
    st.booleans(),
)


@pytest.mark.parametrize(
    ("count", "sizes", "expected"),
    [
        (3, [2, 0], [[0, 1], [], [2]]),
        (4, [4, 0], [[0, 1, 2, 3], []]),
        (5, [2, 0], [[0, 1], [], [2, 3], [], [4]]),
    ],
)
def test_no_empty_batch_after_the_input_ends(
    count: int, sizes: list[int], expected: list[list[int]]
) -> None:
    """As tf.data (checked with TensorFlow 2.21): an empty batch follows only while input
    may remain."""
    ds = ps.Dataset.range(count).batch(4).rebatch(sizes)
    assert [b.tolist() for b in ds] == expected
    assert_conformant(ds)
