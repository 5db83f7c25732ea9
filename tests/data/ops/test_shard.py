from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import StateMismatchError
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


# ------------------------------------------------------------------ even shards
# shard(..., even="pad" | "drop") gives every rank the same count on a finite epoch,
# as torch's DistributedSampler(shuffle=False) with drop_last=False / True.

SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 997]


def _sampler_indices(n: int, world: int, rank: int, drop_last: bool) -> list[int]:
    from torch.utils.data import DistributedSampler

    sampler: DistributedSampler[int] = DistributedSampler(
        range(n),  # type: ignore[arg-type]
        num_replicas=world,
        rank=rank,
        shuffle=False,
        drop_last=drop_last,
    )
    return list(sampler)


@pytest.mark.parametrize("even", ["pad", "drop"])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
def test_even_shards_equal_distributed_sampler(even: str, world: int) -> None:
    pytest.importorskip("torch")
    for n in SIZES:
        counts = set()
        for rank in range(world):
            expected = _sampler_indices(n, world, rank, drop_last=even == "drop")
            ds = ps.Dataset.range(n).shard(world, rank, even=even)
            assert [int(x) for x in ds] == expected, (n, world, rank)
            assert len(ds) == len(expected)
            streamed = filtered(n).shard(world, rank, even=even)
            assert [int(x) for x in streamed] == expected, ("streaming", n, world, rank)
            counts.add(len(expected))
        assert len(counts) == 1  # every rank the same number: no rank waits in an all-reduce


def test_997_elements_over_4_ranks() -> None:
    plain = [len(ps.Dataset.range(997).shard(4, i)) for i in range(4)]
    assert plain == [250, 249, 249, 249]
    assert [len(ps.Dataset.range(997).shard(4, i, even="pad")) for i in range(4)] == [250] * 4
    assert [len(ps.Dataset.range(997).shard(4, i, even="drop")) for i in range(4)] == [249] * 4
    padded = [int(ps.Dataset.range(997).shard(4, i, even="pad")[249]) for i in range(1, 4)]
    assert padded == [0, 1, 2]  # the last group completed from the start
    batches = [list(ps.Dataset.range(997).shard(4, i, even="drop").batch(8)) for i in range(4)]
    assert {len(b) for b in batches} == {32}


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(ps.Dataset.range(10).shard(4, 3, even="pad"), id="pad"),
        pytest.param(ps.Dataset.range(3).shard(5, 4, even="pad"), id="pad-wraps-twice"),
        pytest.param(ps.Dataset.range(10).shard(4, 1, even="drop"), id="drop"),
        pytest.param(ps.Dataset.range(3).shard(5, 1, even="drop"), id="drop-all"),
        pytest.param(filtered(11).shard(3, 2, even="pad"), id="streaming-pad"),
        pytest.param(filtered(11).shard(3, 0, even="drop"), id="streaming-drop"),
        pytest.param(ps.Dataset.range(4).repeat().shard(3, 2, even="pad").take(9), id="infinite"),
    ],
)
def test_even_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=30)


def test_even_shards_restore_under_another_world_size() -> None:
    n = 103

    def job(world: int, rank: int) -> ps.Dataset:
        source = ps.Dataset.range(n).global_shuffle(seed=1)
        return source.shard(world, rank, even="drop").batch(12 // world)

    consumed: list[int] = []
    state: dict[str, Any] | None = None
    for world, steps in ((4, 2), (2, 3), (3, 1), (6, 1)):
        iterators = [iter(job(world, rank)) for rank in range(world)]
        for it in iterators:
            if state is not None:
                it.set_state(state)
        for _ in range(steps):
            for it in iterators:
                consumed.extend(np.asarray(next(it)).tolist())
        state = iterators[0].get_state()
    assert len(set(consumed)) == len(consumed) == 12 * 7
    everything = [int(x) for x in ps.Dataset.range(n).global_shuffle(seed=1)]
    assert sorted(consumed) == sorted(everything[: len(consumed)])
    # The last world's even epoch: every rank gets the same number of batches to the end.
    assert state is not None
    iterators = [iter(job(4, rank)) for rank in range(4)]
    for it in iterators:
        it.set_state(state)
    rest = [[np.asarray(b).tolist() for b in it] for it in iterators]
    assert [[len(batch) for batch in r] for r in rest] == [[3, 1]] * 4  # 25 each, 21 read


def test_even_shards_refuse_a_count_the_new_world_cannot_share_evenly() -> None:
    iterators = [iter(ps.Dataset.range(50).shard(2, rank, even="pad")) for rank in range(2)]
    for it in iterators:
        next(it)
    state = iterators[0].get_state()  # the job consumed 2 elements
    with pytest.raises(StateMismatchError, match="2 elements, which 3 shards can't continue"):
        iter(ps.Dataset.range(50).shard(3, 0, even="pad")).set_state(state)
    iter(ps.Dataset.range(50).shard(2, 1, even="pad")).set_state(state)  # same world: fine


def test_even_keeps_the_fingerprint_of_plain_shards() -> None:
    plain = ps.Dataset.range(9).shard(2, 1)
    assert "even" not in repr(plain)
    assert plain.fingerprint != ps.Dataset.range(9).shard(2, 1, even="pad").fingerprint


@pytest.mark.parametrize("even", ["yes", True, 1])
def test_bad_even(even: object) -> None:
    with pytest.raises(ValueError, match="shard: even must be None, 'pad'"):
        ps.Dataset.range(3).shard(2, 0, even=even)  # type: ignore[arg-type]


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_OP = st.integers(1, 3).flatmap(
    lambda n: st.integers(0, n - 1).flatmap(
        lambda i: st.sampled_from([None, "pad", "drop"]).map(
            lambda even: lambda ds: ds.shard(n, i, even=even)
        )
    )
)
