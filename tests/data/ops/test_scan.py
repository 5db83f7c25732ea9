from __future__ import annotations

import collections
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import ExternalStateError, StateMismatchError
from pipestate.testing import assert_conformant, assert_elements_equal, roundtrip_state

from .._strategies import total

D = ps.Dataset
Stats = collections.namedtuple("Stats", ["count", "total"])


def running_sum(total: np.int64, x: np.int64) -> tuple[np.int64, np.int64]:
    return total + x, total + x


def is_odd(x: np.int64) -> bool:
    return bool(x % 2 == 1)


def test_values_and_cardinality() -> None:
    ds = D.range(6).scan(np.int64(0), running_sum)
    values = list(ds)
    assert values == [0, 1, 3, 6, 10, 15]
    assert all(type(v) is np.int64 for v in values)
    assert len(ds) == 6
    assert D.range(3).repeat().scan(0, running_sum).cardinality() == ps.data.INFINITE_CARDINALITY
    assert D.range(3).filter(is_odd).scan(0, running_sum).cardinality() == (
        ps.data.UNKNOWN_CARDINALITY
    )


def test_each_pass_of_a_repeat_starts_from_the_initial_state() -> None:
    assert list(D.range(3).scan(np.int64(0), running_sum).repeat(2)) == [0, 1, 3, 0, 1, 3]


def test_scan_func_gets_the_state_and_the_whole_element() -> None:
    # As tf.data: a tuple element is one argument, not unpacked.
    seen = []

    def record(state: Any, element: Any) -> Any:
        seen.append(element)
        return state, element[0] * element[1]

    ds = D.zip(D.range(3), D.range(10, 13)).scan(np.int64(0), record)
    assert list(ds) == [0, 11, 24]
    assert all(type(e) is tuple and len(e) == 2 for e in seen)


def test_tuple_dict_and_named_tuple_states() -> None:
    fib = D.range(6).scan((np.int64(0), np.int64(1)), lambda s, _: ((s[1], s[0] + s[1]), s[0]))
    assert list(fib) == [0, 1, 1, 2, 3, 5]
    ds = D.range(1, 5).scan(
        {"stats": Stats(np.int64(0), 0.0)},
        lambda s, x: (
            {"stats": Stats(s["stats"].count + 1, s["stats"].total + x)},
            s["stats"].total / max(int(s["stats"].count), 1),
        ),
    )
    assert [float(v) for v in ds] == [0.0, 1.0, 1.5, 2.0]


def test_state_shape_may_change() -> None:
    ds = D.range(4).scan(np.zeros(0, np.int64), lambda s, x: (np.append(s, x), s))
    values = list(ds)
    assert [v.tolist() for v in values] == [[], [0], [0, 1], [0, 1, 2]]


def test_python_initial_state_becomes_numpy() -> None:
    ds = D.range(3).scan(0, running_sum)
    assert [type(v) for v in ds] == [np.int64] * 3
    it = iter(D.range(3).scan(np.array(0.5), lambda s, x: (s + x, s)))
    assert type(next(it)) is np.float64  # a 0-d array state is kept as a NumPy scalar


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(D.range(12).scan(np.int64(0), running_sum), id="ra"),
        pytest.param(D.range(20).filter(is_odd).scan(np.int64(0), running_sum), id="streaming"),
        pytest.param(
            D.range(8).scan(
                {"seen": np.zeros(0, np.int64), "n": np.int64(0)},
                lambda s, x: ({"seen": np.append(s["seen"], x), "n": s["n"] + 1}, s["seen"]),
            ),
            id="dict-growing-state",
        ),
        pytest.param(
            D.range(8).scan(
                Stats(np.int64(0), np.float32(0)),
                lambda s, x: (Stats(s.count + 1, s.total + np.float32(x)), s),
            ),
            id="named-tuple-state",
        ),
        pytest.param(
            D.range(8).scan(
                np.bytes_(b""), lambda s, x: (s + b"ab"[int(x) % 2 : int(x) % 2 + 1], s)
            ),
            id="string-state",
        ),
        pytest.param(D.range(6).scan(np.int64(0), running_sum).repeat(2), id="repeat-outside"),
        pytest.param(D.range(4).repeat(2).scan(np.int64(0), running_sum), id="repeat-inside"),
        pytest.param(D.range(5).shuffle(2, seed=1).scan(np.int64(0), running_sum), id="seeded"),
        pytest.param(D.range(9).global_shuffle().scan(np.int64(0), running_sum), id="seedless"),
        pytest.param(D.range(0).scan(np.int64(0), running_sum), id="empty"),
        pytest.param(D.range(3).repeat().scan(np.int64(0), running_sum).take(10), id="infinite"),
        pytest.param(D.range(9).scan(np.int64(0), running_sum).batch(4), id="then-batch"),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=30)


def test_state_holds_the_scan_state_as_json_and_restores_it() -> None:
    ds = D.range(100).scan(np.int64(0), running_sum)
    it = iter(ds)
    for _ in range(50):
        next(it)
    state = it.get_state()
    assert state["iterator"] == {
        "scan_state": [{"dtype": "<i8", "shape": [], "data": [1225]}],
        "parent": {"index": 50, "seed": None},
        "seed": None,
    }
    fresh = iter(ds)
    fresh.set_state(json.loads(json.dumps(state)))
    assert int(next(fresh)) == 1225 + 50


def test_large_state_leaves_are_saved_as_arrays() -> None:
    ds = D.range(5).scan(
        (np.zeros(1000, np.float32), np.array([b"x", b"yz"])),
        lambda s, x: ((s[0] + np.float32(x), s[1]), x),
    )
    it = iter(ds)
    for _ in range(3):
        next(it)
    saved = it.get_state()["iterator"]["scan_state"]
    assert isinstance(saved[0]["data"], np.ndarray)
    assert saved[1] == {"dtype": "|S2", "shape": [2], "data": ["x", "yz"]}
    fresh = iter(ds)
    fresh.set_state(roundtrip_state(it.get_state()))
    assert_elements_equal(fresh._state[0], np.full(1000, 3, np.float32))  # type: ignore[attr-defined]
    assert_elements_equal(fresh._state[1], np.array([b"x", b"yz"]))  # type: ignore[attr-defined]


def test_restored_named_tuple_state_keeps_its_type() -> None:
    ds = D.range(5).scan(
        Stats(np.int64(0), np.int64(0)), lambda s, x: (Stats(s.count + 1, s.total + x), s.total)
    )
    it = iter(ds)
    next(it)
    next(it)
    fresh = iter(ds)
    fresh.set_state(roundtrip_state(it.get_state()))
    assert fresh._state == Stats(np.int64(2), np.int64(1))  # type: ignore[attr-defined]
    assert type(fresh._state) is Stats  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        pytest.param(
            lambda s, x: s + x,
            r"scan: scan_func .*<lambda> must return a pair \(new_state, output\), got int64",
            id="not-a-pair",
        ),
        pytest.param(
            lambda s, x: ((s, s), x),
            r"scan: the new state returned by .*<lambda> is \(int64\[\], int64\[\]\), but "
            r"initial_state is int64\[\]; the state must keep its structure",
            id="structure",
        ),
        pytest.param(
            lambda s, x: (s + 0.5, x),
            r"scan: the new state .* is float64\[\], but initial_state is int64\[\]; the state "
            r"must keep its dtypes",
            id="dtype",
        ),
    ],
)
def test_bad_scan_func_results(fn: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        next(iter(D.range(3).scan(np.int64(0), fn)))


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="scan: scan_func must be callable, got int 1"):
        D.range(3).scan(0, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="scan: stateful must be a bool, got 'no'"):
        D.range(3).scan(0, running_sum, stateful="no")  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"scan: invalid initial_state: can't represent object .* as an element"
    ):
        D.range(3).scan(object(), running_sum)


def test_stateful_scan_func_is_external_state() -> None:
    with pytest.raises(ExternalStateError, match=r"scan\(initial_state='int64\[\]'.*stateful"):
        iter(D.range(3).scan(0, running_sum, stateful=True)).get_state()


@pytest.mark.parametrize(
    ("saved", "message"),
    [
        pytest.param(
            [{"dtype": "<f8", "shape": [], "data": [1.5]}],
            r"scan: state\['scan_state'\] is float64\[\], but initial_state is int64\[\]",
            id="dtype",
        ),
        pytest.param(
            [{"dtype": "<i8", "shape": [2], "data": [1]}],
            r"scan: state\['scan_state'\]\[0\] holds 1 values for shape \[2\]",
            id="size",
        ),
        pytest.param(
            [{"dtype": "|O", "shape": [], "data": [1]}],
            r"scan: state\['scan_state'\]\[0\] has an invalid dtype or shape",
            id="object-dtype",
        ),
        pytest.param(
            [{"dtype": "<i8", "shape": []}],
            r"scan: state\['scan_state'\]\[0\] must be a dict with keys dtype, shape, data",
            id="keys",
        ),
        pytest.param([], r"scan: state\['scan_state'\] must be a list of 1 leaves", id="count"),
    ],
)
def test_malformed_state_names_the_op(saved: Any, message: str) -> None:
    ds = D.range(10).scan(np.int64(0), running_sum)
    it = iter(ds)
    next(it)
    next(it)
    bad = it.get_state()
    bad["iterator"]["scan_state"] = saved
    with pytest.raises(StateMismatchError, match=message):
        it.set_state(bad)
    assert int(next(it)) == 3  # the position was kept


# ------------------------------------------------------------------ tf.data parity
def _cumsum(s: Any, x: Any) -> Any:
    return s + x, s + x


PARITY: dict[str, Any] = {
    "running-sum": lambda d: d.range(8).scan(np.int64(0), _cumsum),
    "tuple-state": lambda d: d.range(8).scan(
        (np.int64(0), np.int64(1)), lambda s, _: ((s[1], s[0] + s[1]), s[0])
    ),
    "tuple-element-not-unpacked": lambda d: d.zip(d.range(5), d.range(5)).scan(
        np.int64(0), lambda s, e: (s + e[0], (s, e[1]))
    ),
    "dict-state-float": lambda d: d.range(6).scan(
        {"sum": np.float32(0), "n": np.int64(0)},
        lambda s, x: ({"sum": s["sum"] + np.float32(2), "n": s["n"] + 1}, s["sum"]),
    ),
    "repeat": lambda d: d.range(4).scan(np.int64(0), _cumsum).repeat(2),
    "infinite-take": lambda d: d.range(3).repeat().scan(np.int64(10), _cumsum).take(7),
    "unknown-cardinality": lambda d: (
        d.range(9).filter(lambda x: x % 3 == 0).scan(np.int64(0), _cumsum)
    ),
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


def _running_sum(state: np.int64, element: object) -> tuple[np.int64, object]:
    state = np.int64(state + total((element,)) % 1000)
    return state, (state, element)


PROPERTY_OP = st.just(lambda ds: ds.scan(np.int64(0), _running_sum))
