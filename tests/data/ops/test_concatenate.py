from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.testing import assert_conformant, assert_elements_equal

from ._streaming import (
    STREAMING_INPUTS,
    assert_agree,
    filtered,
    filtered_state,
    state_after,
)


def test_values() -> None:
    ds = ps.Dataset.range(3).concatenate(ps.Dataset.range(10, 12))
    assert [int(x) for x in ds] == [0, 1, 2, 10, 11]
    assert len(ds) == 5
    assert ds[3] == 10


def test_batch_across_the_join() -> None:
    ds = ps.Dataset.from_tensor_slices({"a": np.arange(3)}).concatenate(
        ps.Dataset.from_tensor_slices({"a": np.arange(100, 103)})
    )
    assert_elements_equal(next(iter(ds.batch(4))), {"a": np.array([0, 1, 2, 100])})


def test_mismatched_dtypes_fail_when_concatenate_is_called() -> None:
    with pytest.raises(
        TypeError, match=r"concatenate: incompatible dataset elements: int64\[\] vs float64\[3\]"
    ):
        ps.Dataset.range(2).concatenate(ps.Dataset.from_tensor_slices(np.zeros((2, 3))))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param({"a": [1]}, {"b": [1]}, id="dict-keys"),
        pytest.param(([1], [2]), [1], id="tuple-vs-leaf"),
        pytest.param(([1], [2]), ([1], [2], [3]), id="tuple-lengths"),
        pytest.param(["a"], [1], id="string-vs-int"),
    ],
)
def test_mismatched_structures_fail_when_concatenate_is_called(first: Any, second: Any) -> None:
    a, b = ps.Dataset.from_tensor_slices(first), ps.Dataset.from_tensor_slices(second)
    with pytest.raises(TypeError, match="concatenate: incompatible dataset elements"):
        a.concatenate(b)


@pytest.mark.parametrize("read_ahead", [False, True], ids=["plain", "prefetch"])
def test_different_shapes_concatenate_as_in_tf_data(read_ahead: bool) -> None:
    first = ps.Dataset.from_tensor_slices(np.arange(6).reshape(3, 2))
    second = ps.Dataset.from_tensor_slices(np.arange(6).reshape(2, 3))
    ds = first.concatenate(second)
    if read_ahead:
        ds = ds.prefetch(2)
    assert [x.tolist() for x in ds] == [[0, 1], [2, 3], [4, 5], [0, 1, 2], [3, 4, 5]]
    assert ds._element_spec() == ps.data.TensorSpec((None,), np.int64)
    assert_conformant(ds)


def test_batch_across_a_join_of_different_shapes_is_an_error() -> None:
    first = ps.Dataset.from_tensor_slices(np.zeros((3, 2)))
    second = ps.Dataset.from_tensor_slices(np.zeros((2, 3)))
    it = iter(first.concatenate(second).batch(2))
    assert next(it).shape == (2, 2)
    with pytest.raises(ps.errors.InvalidArgumentError, match="cannot batch"):
        next(it)


def test_infinite_first() -> None:
    assert ps.Dataset.range(2).repeat().concatenate(ps.Dataset.range(3)).cardinality() == -1


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(ps.Dataset.range(4).concatenate(ps.Dataset.range(50, 53)), id="plain"),
        pytest.param(
            ps.Dataset.range(4)
            .concatenate(ps.Dataset.range(50, 57))
            .global_shuffle(seed=4)
            .batch(3),
            id="shuffled-batched",
        ),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds)


def test_not_a_dataset() -> None:
    with pytest.raises(
        TypeError, match="concatenate: dataset must be a pipestate Dataset, got list"
    ):
        ps.Dataset.range(2).concatenate([1, 2])  # type: ignore[arg-type]


# -------------------------------------------------------------- the streaming path
# When either input streams, concatenate reads the first input, then the
# second; its state is which one it reads and both inputs' states (docs/ops.md).


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param(3, 4, id="both"),
        pytest.param(0, 3, id="first-empty"),
        pytest.param(3, 0, id="second-empty"),
        pytest.param(0, 0, id="both-empty"),
    ],
)
def test_streaming_path_yields_the_random_access_elements(a: int, b: int) -> None:
    expected = ps.Dataset.range(a).concatenate(ps.Dataset.range(10, 10 + b))
    for make in STREAMING_INPUTS.values():
        for ds in (
            make(a).concatenate(ps.Dataset.range(10, 10 + b)),
            ps.Dataset.range(a).concatenate(make(b).map(lambda x: x + 10)),
            make(a).concatenate(filtered(b).map(lambda x: x + 10)),
        ):
            assert len(assert_agree(ds, expected)) == a + b


def test_streaming_state_says_which_input_is_read() -> None:
    ds = filtered(2).concatenate(ps.Dataset.range(3))
    assert state_after(ds, 0) == {
        "current": 0,
        "parents": [filtered_state(0), {"index": 0, "seed": None}],
        "seed": None,
    }
    assert state_after(ds, 3) == {
        "current": 1,
        "parents": [filtered_state(2), {"index": 1, "seed": None}],
        "seed": None,
    }


@pytest.mark.parametrize("make", STREAMING_INPUTS.values(), ids=STREAMING_INPUTS.keys())
def test_streaming_conformance(make: Callable[[int], ps.Dataset]) -> None:
    assert_conformant(make(3).concatenate(ps.Dataset.range(4)))
    assert_conformant(ps.Dataset.range(3).concatenate(make(0)))
    assert_conformant(make(0).concatenate(make(2)))
    assert_conformant(make(4).concatenate(ps.Dataset.range(5)).batch(3))


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_OP = st.integers(0, 9).map(lambda n: lambda ds: ds.concatenate(ds.take(n)))
