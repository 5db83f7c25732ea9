"""Elastic data parallelism: a sharded random-access pipeline restores under another world size.

The rule: the state of ``ds.shard(num_shards, index)`` (with only ``map``,
``prefetch`` or ``batch`` after the shard) carries ``"global"``, the number of
elements of ``ds`` the whole job has consumed, all shards stepping in
lockstep. Restoring it into shard ``j`` of ``M`` continues at that shard's
first element at or after the global count, so the union of what all shards
read before and after the restore is a prefix of ``ds``: nothing lost or
repeated.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import StateMismatchError
from pipestate.testing import assert_conformant

pytestmark = pytest.mark.timeout(120)


def plus_one(x: np.int64) -> np.int64:
    return x + 1


def _roundtrip(state: dict) -> dict:
    return json.loads(json.dumps(state))  # type: ignore[no-any-return]


def _run_job(
    make, world: int, steps: int, restore: dict | None
) -> tuple[list[list[int]], dict, bool]:
    """``world`` ranks step in lockstep ``steps`` times; returns what each read and rank 0's state.

    The third value tells whether a rank ran out of data.
    """
    iterators = [iter(make(world, rank)) for rank in range(world)]
    if restore is not None:
        for it in iterators:
            it.set_state(restore)
    read: list[list[int]] = [[] for _ in range(world)]
    ended = False
    for _ in range(steps):
        for rank, it in enumerate(iterators):
            try:
                read[rank].extend(np.asarray(next(it)).ravel().tolist())
            except StopIteration:
                ended = True
    state = _roundtrip(iterators[0].get_state())
    for it in iterators:
        it.close()
    return read, state, ended


SOURCE = 1000


def per_element(world: int, rank: int) -> ps.Dataset:
    return ps.Dataset.range(SOURCE).global_shuffle(seed=3).shard(world, rank).map(plus_one)


def whole_batches(world: int, rank: int) -> ps.Dataset:
    # A fixed per-rank batch of 4: each step consumes world * 4 elements.
    return ps.Dataset.range(SOURCE).batch(4).shard(world, rank).prefetch(2)


GLOBAL_BATCH = 12  # divisible by every world size drawn below


def global_batch(world: int, rank: int) -> ps.Dataset:
    # A fixed global batch: each rank reads GLOBAL_BATCH // world elements per step.
    return ps.Dataset.range(SOURCE).shard(world, rank).batch(GLOBAL_BATCH // world)


def parallel_map(world: int, rank: int) -> ps.Dataset:
    return ps.Dataset.range(SOURCE).shard(world, rank).map(plus_one, num_parallel_calls=2)


JOBS = {
    "per-element": (per_element, [1, 2, 3, 4, 5]),
    "whole-batches": (whole_batches, [1, 2, 3, 5]),
    "global-batch": (global_batch, [1, 2, 3, 4, 6]),
    "parallel-map": (parallel_map, [1, 2, 4]),
}


@pytest.mark.parametrize("job", JOBS.keys())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_restore_under_other_world_sizes_loses_and_repeats_nothing(job: str, data) -> None:
    make, worlds = JOBS[job]
    sizes = data.draw(st.lists(st.sampled_from(worlds), min_size=2, max_size=4), label="worlds")
    steps = data.draw(st.lists(st.integers(0, 12), min_size=len(sizes), max_size=len(sizes)))
    everything = [x for x in make(1, 0) for x in np.asarray(x).ravel().tolist()]
    consumed: list[int] = []
    state = None
    for world, count in zip(sizes, steps):
        read, state, ended = _run_job(make, world, count, state)
        for rank_read in read:
            consumed.extend(rank_read)
        assert not ended
    # Nothing repeated, nothing skipped: the job read exactly a prefix of the stream.
    assert sorted(consumed) == sorted(everything[: len(consumed)])
    assert len(set(consumed)) == len(consumed)


@pytest.mark.parametrize("world", [2, 3])
def test_same_world_size_restores_each_rank_exactly(world: int) -> None:
    for rank in range(world):
        assert_conformant(per_element(world, rank), max_elements=30, max_positions=12)
    assert_conformant(ps.Dataset.range(23).shard(3, 1).batch(2), max_elements=30)


def test_any_ranks_state_restores_any_rank() -> None:
    # In lockstep every rank's state has the same global count.
    iterators = [iter(per_element(3, rank)) for rank in range(3)]
    for _ in range(5):
        for it in iterators:
            next(it)
    states = [it.get_state()["iterator"] for it in iterators]
    assert {s["global"] for s in states} == {15}
    fresh = iter(per_element(3, 2))
    fresh.set_state(iterators[0].get_state())
    assert fresh.get_state()["iterator"] == states[2]


def test_exhausted_job_restores_exhausted() -> None:
    make = per_element
    read, state, _ = _run_job(make, 2, SOURCE // 2 + 1, None)
    assert sum(len(r) for r in read) == SOURCE
    for rank in range(3):
        it = iter(make(3, rank))
        it.set_state(state)
        with pytest.raises(StopIteration):
            next(it)


def test_batch_boundary_mismatch_is_explained() -> None:
    # 2 ranks x 1 step x batch 3 = 6 elements; rank 0 of 4 would continue at its element 2 (6 / 4
    # rounded up), which a batch of 3 can't start at.
    it = iter(ps.Dataset.range(100).shard(2, 0).batch(3))
    next(it)
    state = it.get_state()
    with pytest.raises(StateMismatchError, match="batch boundary"):
        iter(ps.Dataset.range(100).shard(4, 0).batch(3)).set_state(state)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda n, i: ps.Dataset.range(50).shard(n, i).skip(1), id="skip-after-shard"),
        pytest.param(
            lambda n, i: ps.Dataset.range(50).filter(lambda x: True).shard(n, i), id="streaming"
        ),
        pytest.param(lambda n, i: ps.Dataset.range(n).shard(n, i), id="different-source"),
    ],
)
def test_non_elastic_pipelines_refuse_other_settings(make) -> None:
    it = iter(make(2, 0))
    next(it)
    with pytest.raises(StateMismatchError, match="different pipeline"):
        iter(make(3, 1)).set_state(it.get_state())


def test_state_has_the_global_count() -> None:
    it = iter(ps.Dataset.range(100).shard(4, 1).batch(5))
    next(it)
    next(it)
    assert it.get_state()["iterator"] == {"index": 2, "seed": None, "global": 40}
    plain = iter(ps.Dataset.range(100).batch(5))
    next(plain)
    assert plain.get_state()["iterator"] == {"index": 1, "seed": None}


def test_loader_state_is_elastic() -> None:
    ds = ps.Dataset.range(200).shard(2, 0).map(plus_one)
    it = iter(ps.data.Loader(ds, num_workers=2, chunk_size=3))
    for _ in range(10):
        next(it)
    state = it.get_state()  # global count 20: elements 0..19 were read by the two ranks
    it.close()
    out = []
    for rank in range(3):
        restored = iter(ps.data.Loader(ps.Dataset.range(200).shard(3, rank).map(plus_one), 1))
        restored.set_state(state)
        out.append(int(next(restored)) - 1)
        restored.close()
    assert sorted(out) == [20, 21, 22]


@pytest.mark.parametrize(
    ("build", "blocker"),
    [
        (
            lambda w, i: ps.Dataset.range(100).shard(w, i).shuffle(10, seed=1),
            "shuffle(buffer_size=10",
        ),
        (lambda w, i: ps.Dataset.range(100).shard(w, i).enumerate(), "enumerate(start=0) stands"),
        (
            lambda w, i: ps.Dataset.range(100).filter(lambda x: x % 2 == 0).shard(w, i),
            "reads a streaming input (filter(",
        ),
    ],
)
def test_a_state_from_another_world_size_names_the_op_that_prevents_resharding(
    build: Any, blocker: str
) -> None:
    saved = iter(build(2, 0))
    next(saved)
    restored = iter(build(3, 1))
    with pytest.raises(
        ps.errors.StateMismatchError, match="re-partitions only by the elastic rule"
    ) as info:
        restored.set_state(saved.get_state())
    assert blocker in str(info.value)
    assert [repr(x) for x in restored] == [repr(x) for x in build(3, 1)]  # nothing was read
