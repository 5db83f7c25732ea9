from __future__ import annotations

import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.testing import assert_conformant


@pytest.mark.parametrize(
    ("count", "expected"), [(0, [0, 1, 2, 3, 4]), (2, [2, 3, 4]), (10, []), (-1, []), (-7, [])]
)
def test_values(count: int, expected: list[int]) -> None:
    ds = ps.Dataset.range(5).skip(count)
    assert [int(x) for x in ds] == expected
    assert len(ds) == len(expected)


def test_skip_of_infinite() -> None:
    ds = ps.Dataset.range(3).repeat().skip(4)
    assert ds.cardinality() == ps.data.INFINITE_CARDINALITY
    it = iter(ds)
    assert [int(next(it)) for _ in range(4)] == [1, 2, 0, 1]
    assert ps.Dataset.range(3).repeat().skip(-1).cardinality() == 0


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(ps.Dataset.range(9).skip(4), id="finite"),
        pytest.param(ps.Dataset.range(9).skip(3).batch(2), id="batched"),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds)


def test_bad_count() -> None:
    with pytest.raises(TypeError, match="skip: count must be an integer, got NoneType None"):
        ps.Dataset.range(3).skip(None)  # type: ignore[arg-type]


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_OP = st.integers(0, 6).map(lambda n: lambda ds: ds.skip(n))
