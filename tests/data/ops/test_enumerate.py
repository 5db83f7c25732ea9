from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.testing import assert_conformant, assert_elements_equal


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


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_OP = st.integers(-3, 3).map(lambda s: lambda ds: ds.enumerate(s))
