from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.testing import assert_conformant

from ._streaming import (
    STREAMING_INPUTS,
    assert_paths_agree,
    filtered,
    filtered_state,
    state_after,
)


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


# -------------------------------------------------------------- the streaming path
# Over a streaming input skip reads and drops the first elements; its state is
# how many it skipped and the input's (docs/ops.md).


@pytest.mark.parametrize("count", [0, 2, 5, 9, -1])
def test_streaming_path_yields_the_random_access_elements(count: int) -> None:
    values = assert_paths_agree(lambda ds: ds.skip(count), 5)
    assert len(values) == (0 if count < 0 else max(0, 5 - count))


def test_streaming_skip_of_infinite() -> None:
    assert_paths_agree(lambda ds: ds.repeat().skip(4).take(5), 3)


def test_streaming_state_counts_skipped_elements() -> None:
    ds = filtered(6).skip(2)
    assert state_after(ds, 0) == {"skipped": 0, "parent": filtered_state(0), "seed": None}
    assert state_after(ds, 1) == {"skipped": 2, "parent": filtered_state(3), "seed": None}
    assert state_after(filtered(3).skip(5), 0)["skipped"] == 0
    with iter(filtered(3).skip(5)) as iterator:
        assert list(iterator) == []
        assert iterator.get_state()["iterator"]["parent"] == filtered_state(3)


@pytest.mark.parametrize("make", STREAMING_INPUTS.values(), ids=STREAMING_INPUTS.keys())
def test_streaming_conformance(make: Callable[[int], ps.Dataset]) -> None:
    assert_conformant(make(8).skip(3))
    assert_conformant(make(3).skip(5))
    assert_conformant(make(4).skip(-1))


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_OP = st.integers(0, 6).map(lambda n: lambda ds: ds.skip(n))
