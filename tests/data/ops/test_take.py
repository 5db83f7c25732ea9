from __future__ import annotations

import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.testing import assert_conformant


@pytest.mark.parametrize(
    ("count", "expected"), [(0, []), (2, [0, 1]), (10, [0, 1, 2, 3, 4]), (-1, [0, 1, 2, 3, 4])]
)
def test_values(count: int, expected: list[int]) -> None:
    ds = ps.Dataset.range(5).take(count)
    assert [int(x) for x in ds] == expected
    assert len(ds) == len(expected)


def test_take_of_infinite_is_finite() -> None:
    ds = ps.Dataset.range(3).repeat().take(7)
    assert len(ds) == 7
    assert [int(x) for x in ds] == [0, 1, 2, 0, 1, 2, 0]


def test_take_restarts_its_input_each_pass() -> None:
    ds = ps.Dataset.range(10).global_shuffle(seed=5).take(4).repeat(2)
    values = [int(x) for x in ds]
    full = [int(x) for x in ps.Dataset.range(10).global_shuffle(seed=5).repeat(2)]
    assert values == full[:4] + full[10:14]


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(ps.Dataset.range(9).take(5), id="finite"),
        pytest.param(ps.Dataset.range(2).repeat().take(9), id="of-infinite"),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds)


@pytest.mark.parametrize("count", [-1, -5])
def test_any_negative_count_takes_all_as_in_tf_data(count: int) -> None:
    for ds in (ps.Dataset.range(3), ps.Dataset.range(3).filter(lambda x: True)):
        assert [int(x) for x in ds.take(count)] == [0, 1, 2]
    assert ps.Dataset.range(3).take(count).cardinality() == 3


def test_bad_count() -> None:
    with pytest.raises(TypeError, match="take: count must be an integer"):
        ps.Dataset.range(3).take("5")  # type: ignore[arg-type]


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_OP = st.integers(0, 25).map(lambda n: lambda ds: ds.take(n))
