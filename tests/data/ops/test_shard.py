from __future__ import annotations

import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.testing import assert_conformant


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


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_OP = st.integers(1, 3).flatmap(
    lambda n: st.integers(0, n - 1).map(lambda i: lambda ds: ds.shard(n, i))
)
