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


# -------------------------------------------------------------- the streaming path
# Over a streaming input take counts the elements it passed on; its state is
# that count and the input's (docs/ops.md).


@pytest.mark.parametrize("count", [0, 2, 5, 10, -1])
def test_streaming_path_yields_the_random_access_elements(count: int) -> None:
    assert len(assert_paths_agree(lambda ds: ds.take(count), 5)) == (
        5 if count < 0 else min(5, count)
    )


def test_streaming_take_of_infinite_is_finite() -> None:
    assert_paths_agree(lambda ds: ds.repeat().take(7), 3)


def test_streaming_take_reads_nothing_past_its_count() -> None:
    ds = filtered(5).take(2)
    assert state_after(ds, 0) == {"taken": 0, "parent": filtered_state(0), "seed": None}
    with iter(ds) as iterator:
        assert [int(x) for x in iterator] == [0, 1]
        assert iterator.get_state()["iterator"] == {
            "taken": 2, "parent": filtered_state(2), "seed": None
        }  # fmt: skip
    assert list(filtered(5).take(0)) == []
    assert state_after(filtered(5).take(0), 0)["parent"] == filtered_state(0)


@pytest.mark.parametrize("make", STREAMING_INPUTS.values(), ids=STREAMING_INPUTS.keys())
def test_streaming_conformance(make: Callable[[int], ps.Dataset]) -> None:
    assert_conformant(make(9).take(5))
    assert_conformant(make(5).take(0))
    assert_conformant(make(3).take(10))
    assert_conformant(make(2).repeat().take(9))


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_OP = st.integers(0, 25).map(lambda n: lambda ds: ds.take(n))
