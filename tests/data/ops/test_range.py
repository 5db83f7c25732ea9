from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.testing import assert_conformant


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param((5,), [0, 1, 2, 3, 4], id="stop"),
        pytest.param((2, 5), [2, 3, 4], id="start-stop"),
        pytest.param((1, 10, 3), [1, 4, 7], id="step"),
        pytest.param((5, 1, -2), [5, 3], id="negative-step"),
        pytest.param((0,), [], id="empty"),
        pytest.param((5, 2), [], id="stop-before-start"),
    ],
)
def test_values_match_tf_data(args: tuple[int, ...], expected: list[int]) -> None:
    ds = ps.Dataset.range(*args)
    values = list(ds)
    assert [int(v) for v in values] == expected
    assert all(type(v) is np.int64 for v in values)
    assert len(ds) == len(expected) == ds.cardinality()


def test_dtype_argument() -> None:
    values = list(ps.Dataset.range(3, dtype=np.float32))
    assert [type(v) for v in values] == [np.float32] * 3


@pytest.mark.parametrize(
    "args", [pytest.param((12,), id="stop"), pytest.param((3, 40, 7), id="step")]
)
def test_conformance(args: tuple[int, ...]) -> None:
    assert_conformant(ps.Dataset.range(*args))


def test_random_access() -> None:
    ds = ps.Dataset.range(10, 20, 2)
    assert ds[0] == 10
    assert ds[-1] == 18
    with pytest.raises(IndexError, match="index 5 out of range for a dataset of length 5"):
        ds[5]
    with pytest.raises(TypeError, match="Dataset indices must be integers, got str"):
        ds["1"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        pytest.param(
            (), TypeError, r"range\(stop\) or range\(start, stop\[, step\]\), got 0", id="none"
        ),
        pytest.param((1, 2, 3, 4), TypeError, "got 4 arguments", id="four"),
        pytest.param((1.5,), TypeError, "stop must be an integer, got float 1.5", id="float"),
        pytest.param((0, 5, 0), ValueError, "step must not be zero, got step=0", id="zero-step"),
        pytest.param(
            (2**63,),
            ValueError,
            "stop must fit in int64, got stop=9223372036854775808",
            id="overflow",
        ),
    ],
)
def test_bad_arguments(args: tuple[object, ...], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        ps.Dataset.range(*args)  # type: ignore[arg-type]


def test_bad_dtype() -> None:
    with pytest.raises(TypeError, match="dtype must be an integer or float dtype, got <U1"):
        ps.Dataset.range(3, dtype="U1")


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_SOURCE = st.integers(0, 40).map(ps.Dataset.range)
