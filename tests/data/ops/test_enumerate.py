from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.testing import assert_conformant, assert_elements_equal

from ._streaming import (
    STREAMING_INPUTS,
    assert_paths_agree,
    filtered,
    filtered_state,
    state_after,
)


def test_pairs() -> None:
    values = list(ps.Dataset.from_tensor_slices(np.array([5.0, 6.0])).enumerate(start=3))
    assert_elements_equal(values[0], (np.int64(3), np.float64(5.0)))
    assert_elements_equal(values[1], (np.int64(4), np.float64(6.0)))


def test_counter_restarts_each_pass() -> None:
    assert [int(i) for i, _ in ps.Dataset.range(2).enumerate().repeat(2)] == [0, 1, 0, 1]


def test_batched() -> None:
    batch = next(iter(ps.Dataset.range(10, 20).enumerate().batch(3)))
    assert_elements_equal(batch, (np.array([0, 1, 2]), np.array([10, 11, 12])))


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(ps.Dataset.range(7).enumerate(), id="plain"),
        pytest.param(ps.Dataset.range(7).enumerate(-2).batch(3), id="batched"),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds)


def test_bad_start() -> None:
    with pytest.raises(TypeError, match="start must be an integer, got str 'a'"):
        ps.Dataset.range(3).enumerate("a")  # type: ignore[arg-type]


# -------------------------------------------------------------- the streaming path
# Over a streaming input enumerate counts the elements it passed on; its state
# is that count and the input's (docs/ops.md).


@pytest.mark.parametrize("start", [0, 5, -3])
def test_streaming_path_yields_the_random_access_pairs(start: int) -> None:
    pairs = assert_paths_agree(lambda ds: ds.enumerate(start), 4)
    assert [int(i) for i, _ in pairs] == list(range(start, start + 4))


def test_streaming_counter_restarts_each_pass() -> None:
    pairs = assert_paths_agree(lambda ds: ds.enumerate(1).repeat(2), 3)
    assert [int(i) for i, _ in pairs] == [1, 2, 3, 1, 2, 3]


def test_streaming_state_counts_elements() -> None:
    ds = filtered(5).enumerate(10)
    assert state_after(ds, 0) == {"count": 0, "parent": filtered_state(0), "seed": None}
    assert state_after(ds, 2) == {"count": 2, "parent": filtered_state(2), "seed": None}


@pytest.mark.parametrize("make", STREAMING_INPUTS.values(), ids=STREAMING_INPUTS.keys())
def test_streaming_conformance(make: Callable[[int], ps.Dataset]) -> None:
    assert_conformant(make(6).enumerate(3))
    assert_conformant(make(5).enumerate(-2).batch(2))


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_OP = st.integers(-3, 3).map(lambda s: lambda ds: ds.enumerate(s))
