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
    ("num_shards", "index", "expected"),
    [
        (3, 0, [0, 3, 6, 9]),
        (3, 1, [1, 4, 7]),
        (3, 2, [2, 5, 8]),
        (1, 0, list(range(10))),
        (20, 15, []),
    ],
)
def test_values(num_shards: int, index: int, expected: list[int]) -> None:
    ds = ps.Dataset.range(10).shard(num_shards, index)
    assert [int(x) for x in ds] == expected
    assert len(ds) == len(expected)


def test_shards_partition_the_data() -> None:
    ds = ps.Dataset.range(103).global_shuffle(seed=9)
    seen = sorted(int(x) for i in range(4) for x in ds.shard(4, i))
    assert seen == list(range(103))


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(ps.Dataset.range(20).shard(3, 2), id="plain"),
        pytest.param(ps.Dataset.range(3).repeat().shard(2, 1), id="infinite"),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=30)


@pytest.mark.parametrize(
    ("num_shards", "index", "message"),
    [
        (0, 0, "num_shards must be >= 1, got num_shards=0"),
        (2, 2, r"index must be in \[0, num_shards\), got index=2 with num_shards=2"),
        (2, -1, "index must be >= 0, got index=-1"),
    ],
)
def test_bad_arguments(num_shards: int, index: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ps.Dataset.range(3).shard(num_shards, index)


# -------------------------------------------------------------- the streaming path
# Over a streaming input shard reads num_shards elements at a time and keeps the
# index-th; each next() ends at a group boundary, so the state is the input's
# (docs/ops.md).


@pytest.mark.parametrize(
    ("n", "num_shards", "index"),
    [
        pytest.param(10, 3, 0, id="first"),
        pytest.param(10, 3, 2, id="last-of-a-partial-group"),
        pytest.param(3, 5, 4, id="index-past-the-end"),
        pytest.param(3, 5, 2, id="one-partial-group"),
        pytest.param(0, 2, 1, id="empty"),
        pytest.param(7, 1, 0, id="one-shard"),
    ],
)
def test_streaming_path_yields_the_random_access_elements(
    n: int, num_shards: int, index: int
) -> None:
    values = assert_paths_agree(lambda ds: ds.shard(num_shards, index), n)
    assert [int(x) for x in values] == list(range(index, n, num_shards))


def test_streaming_state_ends_at_group_boundaries() -> None:
    ds = filtered(10).shard(3, 1)
    assert state_after(ds, 0) == {"parent": filtered_state(0), "seed": None}
    assert state_after(ds, 1) == {"parent": filtered_state(3), "seed": None}
    assert state_after(ds, 3) == {"parent": filtered_state(9), "seed": None}


def test_streaming_shards_partition_the_data() -> None:
    shards = [[int(x) for x in filtered(11).shard(3, i)] for i in range(3)]
    assert sorted(x for shard in shards for x in shard) == list(range(11))


@pytest.mark.parametrize("make", STREAMING_INPUTS.values(), ids=STREAMING_INPUTS.keys())
def test_streaming_conformance(make: Callable[[int], ps.Dataset]) -> None:
    assert_conformant(make(10).shard(3, 1))
    assert_conformant(make(3).shard(5, 4))
    assert_conformant(make(11).shard(2, 0).batch(2))


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_OP = st.integers(1, 3).flatmap(
    lambda n: st.integers(0, n - 1).map(lambda i: lambda ds: ds.shard(n, i))
)
