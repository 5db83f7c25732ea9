from __future__ import annotations

import collections
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import StateMismatchError
from pipestate.testing import assert_conformant, assert_elements_equal

D = ps.Dataset
UNKNOWN = ps.data.UNKNOWN_CARDINALITY
Point = collections.namedtuple("Point", ["x", "y"])


def is_odd(x: np.int64) -> bool:
    return bool(x % 2 == 1)


def test_values_and_types() -> None:
    values = list(D.range(7).batch(3).unbatch())
    assert values == list(range(7))
    assert all(type(v) is np.int64 for v in values)
    rows = list(D.from_tensors(np.arange(6.0).reshape(3, 2)).unbatch())
    assert_elements_equal(rows[1], np.array([2.0, 3.0]))


def test_nested_elements_keep_their_structure() -> None:
    ds = D.from_tensors(
        {"b": Point(np.arange(2), np.array([b"p", b"q"])), "a": np.zeros((2, 3))}
    ).unbatch()
    values = list(ds)
    assert_elements_equal(values[1], {"b": Point(np.int64(1), np.bytes_(b"q")), "a": np.zeros(3)})
    assert list(values[0]) == ["b", "a"]


def test_empty_batches_yield_nothing() -> None:
    ds = D.range(4).map(lambda n: np.arange(int(n) * 10, int(n) * 10 + int(n) % 2)).unbatch()
    assert [int(x) for x in ds] == [10, 30]


def test_batch_then_unbatch_is_the_identity_under_shuffle() -> None:
    ds = D.range(50).global_shuffle(seed=3)
    assert [int(x) for x in ds.batch(7).unbatch()] == [int(x) for x in ds]


@pytest.mark.parametrize(
    ("ds", "expected"),
    [
        pytest.param(D.range(10).batch(3), UNKNOWN, id="partial-last-batch"),
        pytest.param(D.range(10).batch(3, drop_remainder=True), 9, id="drop-remainder"),
        pytest.param(D.from_tensor_slices(np.zeros((4, 3))), 12, id="slices"),
        pytest.param(D.from_tensors(np.zeros((4, 3))), 4, id="tensors"),
        pytest.param(D.from_tensors((np.zeros(4), np.zeros(5))), UNKNOWN, id="ragged-tensors"),
        pytest.param(D.range(0).batch(2), UNKNOWN, id="empty-unknown-batch"),
        pytest.param(D.range(0).batch(2, drop_remainder=True), 0, id="empty-known-batch"),
        pytest.param(D.range(4).batch(3).repeat(), ps.data.INFINITE_CARDINALITY, id="inf-ragged"),
        pytest.param(
            D.range(10).batch(2, drop_remainder=True).repeat(),
            ps.data.INFINITE_CARDINALITY,
            id="infinite",
        ),
        pytest.param(D.range(10).batch(2, drop_remainder=True).take(3), 6, id="take"),
        pytest.param(
            D.range(10).filter(is_odd).batch(2, drop_remainder=True), UNKNOWN, id="filter"
        ),
        pytest.param(D.range(10).map(lambda x: np.zeros(2)), UNKNOWN, id="map"),
    ],
)
def test_cardinality_like_tf(ds: ps.Dataset, expected: int) -> None:
    assert ds.unbatch().cardinality() == expected


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(D.range(10).batch(3).unbatch(), id="ra"),
        pytest.param(D.range(12).batch(4, drop_remainder=True).unbatch(), id="ra-uniform"),
        pytest.param(D.range(8).filter(is_odd).batch(3).unbatch(), id="streaming"),
        pytest.param(
            D.from_tensor_slices({"z": np.arange(5), "a": np.arange(10.0).reshape(5, 2)})
            .filter(lambda d: True)
            .batch(3)
            .unbatch(),
            id="dict-streaming-unsorted-keys",
        ),
        pytest.param(
            D.from_tensor_slices((np.arange(6), np.arange(6) * 2)).batch(4).unbatch(),
            id="tuple-ra",
        ),
        pytest.param(D.range(9).batch(4).unbatch().repeat(2), id="repeat-outside"),
        pytest.param(D.range(7).batch(3).repeat(2).unbatch(), id="repeat-inside"),
        pytest.param(D.range(6).batch(2).shuffle(2, seed=2).unbatch(), id="shuffled-batches"),
        pytest.param(D.range(12).batch(3).global_shuffle().unbatch(), id="seedless-shuffle"),
        pytest.param(D.range(15).global_shuffle().batch(4).unbatch(), id="seedless-global-shuffle"),
        pytest.param(D.range(6).map(lambda n: np.arange(int(n) % 3)).unbatch(), id="ragged"),
        pytest.param(D.range(0).batch(2).unbatch(), id="empty"),
        pytest.param(D.range(5).batch(2).repeat().unbatch().take(23), id="infinite-take"),
        pytest.param(
            D.range(1, 5).map(lambda n: np.arange(int(n))).padded_batch(2).unbatch().unbatch(),
            id="unbatch-twice",
        ),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=60)


def test_state_over_random_access_input_holds_no_element_data() -> None:
    ds = D.from_tensor_slices(np.zeros((20, 1000, 8), np.float32)).unbatch()
    it = iter(ds)
    for _ in range(4321):
        next(it)
    state = it.get_state()
    assert state["iterator"] == {
        "offset": 321,
        "batch": None,
        "parent": {"index": 5, "seed": None},
        "seed": None,
    }
    fresh = iter(ds)
    fresh.set_state(json.loads(json.dumps(state)))
    assert sum(1 for _ in fresh) == 20_000 - 4321


def test_state_over_streaming_input_saves_the_current_batch_only_mid_batch() -> None:
    ds = D.range(10).filter(lambda x: True).batch(4).unbatch()
    it = iter(ds)
    for _ in range(4):
        next(it)
    at_boundary = it.get_state()["iterator"]
    assert (at_boundary["offset"], at_boundary["batch"]["count"]) == (0, 0)
    next(it)
    mid = it.get_state()["iterator"]
    assert mid["offset"] == 1
    assert mid["batch"]["columns"][0].tolist() == [[4, 5, 6, 7]]


@pytest.mark.parametrize(
    ("ds", "message"),
    [
        pytest.param(
            D.range(3), "unbatch: cannot unbatch an element with scalar components", id="s"
        ),
        pytest.param(
            D.from_tensors((np.zeros(2), np.int64(1))),
            r"scalar components, got \(float64\[2\], int64\[\]\)",
            id="one-scalar",
        ),
        pytest.param(
            D.from_tensors({"a": np.zeros(2), "b": np.zeros(3)}),
            r"unbatch: every component of an element must have the same first dimension, got "
            r"\{'a': float64\[2\], 'b': float64\[3\]\}",
            id="mismatch",
        ),
    ],
)
def test_bad_elements(ds: ps.Dataset, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        next(iter(ds.unbatch()))


def _state_after(ds: ps.Dataset, count: int) -> tuple[Any, dict[str, Any]]:
    it = iter(ds)
    for _ in range(count):
        next(it)
    return it, it.get_state()


@pytest.mark.parametrize(
    ("ds", "edit", "message"),
    [
        pytest.param(
            D.range(10).batch(4).unbatch(),
            {"offset": 4},
            r"unbatch: state\['offset'\]=4 is out of range for the current batch of 4 rows",
            id="offset",
        ),
        pytest.param(
            D.range(10).batch(4).unbatch(),
            {"batch": [1, 2]},
            r"unbatch: state\['batch'\] must be None for a random-access input",
            id="batch-not-none",
        ),
        pytest.param(
            D.range(10).filter(is_odd).batch(2).unbatch(),
            {"offset": 0},
            r"unbatch: state\['batch'\] must hold 0 element\(s\) with state\['offset'\]=0, got 1",
            id="streaming-count",
        ),
        pytest.param(
            D.range(10).batch(4).unbatch(),
            {"offset": -1},
            r"unbatch: state\['offset'\]=-1 is out of range",
            id="negative",
        ),
    ],
)
def test_malformed_state_names_the_op(ds: ps.Dataset, edit: dict[str, Any], message: str) -> None:
    it, state = _state_after(ds, 1)
    expected = [int(x) for x in _state_after(ds, 1)[0]]
    state["iterator"].update(edit)
    with pytest.raises(StateMismatchError, match=message):
        it.set_state(state)
    assert [int(x) for x in it] == expected


def test_offset_before_any_input_is_refused() -> None:
    ds = D.range(10).batch(4).unbatch()
    state = iter(ds).get_state()
    state["iterator"]["offset"] = 1
    with pytest.raises(StateMismatchError, match="the input has not been read yet"):
        iter(ds).set_state(state)


# ------------------------------------------------------------------ tf.data parity
PARITY: dict[str, Any] = {
    "batch-unbatch": lambda d: d.range(10).batch(3).unbatch(),
    "drop-remainder": lambda d: d.range(10).batch(3, drop_remainder=True).unbatch(),
    "slices-2d": lambda d: d.from_tensor_slices(np.arange(24.0).reshape(4, 3, 2)).unbatch(),
    "tensors": lambda d: d.from_tensors(np.arange(6, dtype=np.int32).reshape(3, 2)).unbatch(),
    "dict-tuple": lambda d: d.from_tensor_slices(
        {"a": np.arange(8).reshape(4, 2), "b": (np.arange(8.0).reshape(4, 2),)}
    ).unbatch(),
    "strings": lambda d: d.from_tensors(np.array([b"x", b"yy", b"zzz"])).unbatch(),
    "repeat": lambda d: d.range(5).batch(2, drop_remainder=True).repeat(3).unbatch(),
    "padded-then-unbatch": lambda d: (
        d.range(1, 5).padded_batch(2, padded_shapes=[]).unbatch().batch(3)
    ),
    "infinite-take": lambda d: d.range(4).batch(3).repeat().unbatch().take(10),
}


def _normalise(leaf: Any) -> Any:
    if isinstance(leaf, bytes):  # tf.data's scalar strings
        return np.bytes_(leaf)
    array = np.asarray(leaf)
    if array.dtype == object:  # tf.data's strings
        array = np.array(array.tolist(), dtype=bytes)
        return array[()] if array.ndim == 0 else array
    return leaf


@pytest.mark.parametrize("name", sorted(PARITY))
def test_same_as_tf_data(name: str) -> None:
    tf = pytest.importorskip("tensorflow")
    ours, theirs = PARITY[name](D), PARITY[name](tf.data.Dataset)
    from pipestate.data._structure import map_structure

    expected = [map_structure(_normalise, e) for e in theirs.as_numpy_iterator()]
    actual = list(ours)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert_elements_equal(a, e)
    assert ours.cardinality() == int(theirs.cardinality())


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_OP = st.just(lambda ds: ds.unbatch())
