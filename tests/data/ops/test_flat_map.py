from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import ExternalStateError, StateMismatchError
from pipestate.testing import assert_conformant, assert_elements_equal

from .._strategies import inner

D = ps.Dataset


def upto(n: np.int64) -> ps.Dataset:
    return D.range(int(n))


def is_odd(x: np.int64) -> bool:
    return bool(x % 2 == 1)


def ints(ds: Any) -> list[int]:
    return [int(x) for x in ds]


def test_values_in_order() -> None:
    assert ints(D.range(1, 4).flat_map(upto)) == [0, 0, 1, 0, 1, 2]
    assert ints(D.range(4).flat_map(lambda x: D.range(0))) == []


def test_tuple_element_is_unpacked_and_inner_structure_is_kept() -> None:
    ds = D.zip(D.range(2), D.range(5, 7)).flat_map(
        lambda a, b: D.from_tensor_slices({"a": np.full(2, a), "b": np.full(2, b)})
    )
    values = list(ds)
    assert len(values) == 4
    assert_elements_equal(values[2], {"a": np.int64(1), "b": np.int64(6)})


def test_is_interleave_with_one_slot() -> None:
    a = ints(D.range(1, 6).flat_map(upto))
    assert a == ints(D.range(1, 6).interleave(upto, cycle_length=1))
    state = iter(D.range(1, 6).flat_map(upto)).get_state()["iterator"]
    assert state["slots"] == [None]
    assert "flat_map(map_func='upto')" in repr(D.range(3).flat_map(upto))


def test_cardinality_is_unknown_as_in_tf() -> None:
    for ds in (D.range(5), D.range(0), D.range(3).repeat()):
        assert ds.flat_map(upto).cardinality() == ps.data.UNKNOWN_CARDINALITY


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(D.range(1, 6).flat_map(upto), id="ra"),
        pytest.param(D.range(6).filter(is_odd).flat_map(upto), id="streaming-input"),
        pytest.param(
            D.range(5).flat_map(lambda x: D.range(x).filter(is_odd)), id="streaming-inner"
        ),
        pytest.param(D.range(1, 4).flat_map(upto).repeat(2), id="repeat"),
        pytest.param(
            D.range(4).shuffle(3, seed=1).flat_map(lambda x: D.range(x).shuffle(3, seed=2)),
            id="seeded-shuffles",
        ),
        pytest.param(
            D.range(5).flat_map(lambda x: D.range(x).global_shuffle()), id="seedless-inner"
        ),
        pytest.param(D.range(4).shuffle(4).flat_map(upto), id="seedless-outer"),
        pytest.param(
            D.range(4).flat_map(lambda x: D.range(x + 1).flat_map(upto)), id="nested-flat-map"
        ),
        pytest.param(
            D.range(4).flat_map(lambda x: D.range(x).interleave(upto, cycle_length=2)),
            id="interleave-inside",
        ),
        pytest.param(
            D.from_tensor_slices({"n": np.arange(3), "s": np.array([b"a", b"b", b"c"])})
            .filter(lambda d: True)
            .flat_map(lambda d: D.from_tensors((d["s"], d["n"])).repeat(int(d["n"]))),
            id="dict-elements-streaming",
        ),
        pytest.param(D.range(0).flat_map(upto), id="empty-input"),
        pytest.param(D.range(1, 4).repeat().flat_map(upto).take(20), id="infinite-input-take"),
        pytest.param(
            D.range(2).flat_map(lambda x: D.range(3).repeat()).take(9), id="infinite-inner"
        ),
        pytest.param(D.range(1, 8).flat_map(upto).batch(4), id="then-batch"),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=60)


def test_state_over_random_access_input_is_small() -> None:
    rows = np.zeros((10, 1000, 3), np.float32)
    ds = D.from_tensor_slices(rows).flat_map(lambda block: D.from_tensor_slices(block))
    it = iter(ds)
    for _ in range(2500):
        next(it)
    state = it.get_state()
    inner = state["iterator"]
    assert inner["elements"] is None
    assert inner["slots"][0]["index"] == 2
    assert inner["slots"][0]["state"] == {"index": 500, "seed": None}
    assert len(json.dumps(state)) < 800


def test_map_func_must_return_a_dataset() -> None:
    with pytest.raises(TypeError, match=r"flat_map: map_func .* must return a pipestate Dataset"):
        next(iter(D.range(3).flat_map(lambda x: [x])))  # type: ignore[arg-type,return-value]


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="flat_map: map_func must be callable, got str 'f'"):
        D.range(3).flat_map("f")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="flat_map: stateful must be a bool, got 1"):
        D.range(3).flat_map(upto, stateful=1)  # type: ignore[arg-type]


def test_stateful_map_func_is_external_state() -> None:
    with pytest.raises(ExternalStateError, match=r"flat_map\(map_func='upto'\) \(stateful"):
        iter(D.range(3).flat_map(upto, stateful=True)).get_state()


def test_malformed_state_names_the_op() -> None:
    ds = D.range(1, 6).flat_map(upto)
    it = iter(ds)
    for _ in range(4):
        next(it)
    state = it.get_state()
    state["iterator"]["slots"][0]["index"] = 7
    with pytest.raises(
        StateMismatchError, match=r"flat_map: state\['slots'\]\[0\]: state\['index'"
    ):
        it.set_state(state)
    assert ints(it) == [1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 4]  # the position was kept


# ------------------------------------------------------------------ tf.data parity
PARITY: dict[str, Any] = {
    "ranges": lambda d: d.range(1, 5).flat_map(lambda x: d.range(x)),
    "empty-inner": lambda d: d.range(6).flat_map(lambda x: d.range(x % 3)),
    "tuple-unpacked": lambda d: d.zip(d.range(3), d.range(3)).flat_map(
        lambda a, b: d.from_tensors((a, b * 2)).repeat(a + 1)
    ),
    "dict-inner": lambda d: d.range(3).flat_map(
        lambda x: d.from_tensor_slices({"v": np.arange(4)}).take(x + 1)
    ),
    "nested": lambda d: d.range(3).flat_map(
        lambda x: d.range(x + 1).flat_map(lambda y: d.from_tensors(y).repeat(2))
    ),
    "repeat-batch": lambda d: d.range(1, 4).flat_map(lambda x: d.range(x)).repeat(2).batch(4),
    "unbatch-like": lambda d: d.from_tensor_slices(np.arange(12).reshape(4, 3)).flat_map(
        lambda row: d.from_tensor_slices(row)
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

PROPERTY_OP = st.just(lambda ds: ds.flat_map(inner))
