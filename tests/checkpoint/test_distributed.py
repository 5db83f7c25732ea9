"""The distributed save protocol, with ranks as threads of one process over an in-memory store.

The real thing (torchrun, processes, SIGKILL) is in ``tests/distributed``; here
the protocol's decisions are checked quickly: who writes what, what the index
holds, and how each failure ends on every rank.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pipestate as ps
from pipestate.checkpoint import Checkpoint, CheckpointManager, CheckpointOptions, Variable
from pipestate.checkpoint._dist_write import _check_chunks, _merge_chunks
from pipestate.checkpoint._distributed import Coordinator, SaveRound, use_coordinator
from pipestate.errors import (
    CheckpointMismatchError,
    CorruptCheckpointError,
    DistributedSaveError,
)


class MemoryCoordinator(Coordinator):
    """Ranks as threads: one dict is the job's store."""

    def __init__(self, store: dict[str, bytes], rank: int, world_size: int) -> None:
        self._store = store
        self.rank = rank
        self.world_size = world_size

    def set(self, key: str, value: bytes) -> None:
        self._store[key] = value

    def get(self, key: str) -> bytes | None:
        return self._store.get(key)

    def delete(self, key: str) -> None:
        self._store.pop(key, None)


def run_ranks(
    world_size: int,
    body: Callable[[int], Any],
    *,
    timeout: float = 60,
    store: dict[str, bytes] | None = None,
) -> list[Any]:
    """``body(rank)`` run on ``world_size`` threads, one coordinator each: results or errors."""
    store = {} if store is None else store
    results: list[Any] = [None] * world_size

    def run(rank: int) -> None:
        with use_coordinator(MemoryCoordinator(store, rank, world_size)):
            try:
                results[rank] = body(rank)
            except BaseException as err:
                results[rank] = err

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a rank hangs"
    return results


def make_objects(rank: int, world_size: int) -> dict[str, Any]:
    data = iter(ps.Dataset.range(100).shard(world_size, rank))
    for _ in range(3 + rank % 2 * 0):
        next(data)
    rng = np.random.default_rng(rank)
    rng.random(rank + 1)
    return {
        "model": Variable(np.arange(6, dtype=np.float32).reshape(2, 3) + 0 * rank),
        "data": data,
        "rng": rng,
    }


def index_of(path: str) -> dict[str, Any]:
    document = json.loads(Path(path + ".index").read_text())
    body: dict[str, Any] = document["checkpoint"]
    assert document["version"] == 2
    return body


def test_each_rank_writes_its_own_shards_and_rank0_commits_one_index(tmp_path: Path) -> None:
    directory = str(tmp_path / "ckpt")

    def save(rank: int) -> tuple[str, int]:
        objects = make_objects(rank, 3)
        ckpt = Checkpoint(**objects)
        path = CheckpointManager(ckpt, directory, max_to_keep=2).save()
        assert path is not None
        return path, int(next(objects["data"]))

    results = run_ranks(3, save)
    paths = {r[0] for r in results}
    assert paths == {directory + "/ckpt-1"}
    body = index_of(directory + "/ckpt-1")
    assert body["world_size"] == 3
    assert body["num_shards"] == 3
    # The replicated model is saved once, by rank 0; each rank's iterator and generator apart.
    keys = sorted(body["tensors"])
    assert [k for k in keys if k.startswith("model")] == ["model/.ATTRIBUTES/VARIABLE_VALUE"]
    assert sum("@rank" in k for k in keys) == 0  # these per-rank values hold no arrays
    per_rank = [n for n in body["nodes"] if "ranks" in n]
    assert len(per_rank) == 2
    states = [json.dumps(r) for r in per_rank[0]["ranks"]] + [
        json.dumps(r) for r in per_rank[1]["ranks"]
    ]
    assert len(set(states)) == 6  # every rank's own values

    def restore(rank: int) -> tuple[int, float]:
        objects = make_objects(rank, 3)
        fresh_data = iter(ps.Dataset.range(100).shard(3, rank))
        fresh_rng = np.random.default_rng(99)
        ckpt = Checkpoint(model=objects["model"], data=fresh_data, rng=fresh_rng)
        ckpt.restore(directory + "/ckpt-1").assert_consumed()
        return int(next(fresh_data)), float(fresh_rng.random())

    restored = run_ranks(3, restore)
    for rank in range(3):
        expected = np.random.default_rng(rank)
        expected.random(rank + 1)
        assert restored[rank] == (results[rank][1], float(expected.random()))


def test_per_rank_arrays_are_kept_apart() -> None:
    def values(rank: int) -> dict[str, Any]:
        return {"w": Variable(np.full(4, rank, np.int64))}

    class PerRank(ps.checkpoint.AutoTrackable):
        _pipestate_per_rank = True

    def save(rank: int, directory: str) -> str:
        holder = PerRank()
        holder.w = values(rank)["w"]
        return Checkpoint(mine=holder).write(directory + "/x")

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        run_ranks(2, lambda r: save(r, d))
        body = index_of(d + "/x")
        assert sorted(k for k in body["tensors"] if "@rank" in k) == [
            "mine/w/.ATTRIBUTES/VARIABLE_VALUE@rank0",
            "mine/w/.ATTRIBUTES/VARIABLE_VALUE@rank1",
        ]

        def restore(rank: int) -> list[int]:
            holder = PerRank()
            holder.w = Variable(np.zeros(4, np.int64))
            Checkpoint(mine=holder).read(d + "/x").assert_consumed()
            return list(holder.w.numpy())

        assert run_ranks(2, restore) == [[0] * 4, [1] * 4]


class Counter:
    """A per-rank object whose snapshot fails on the rank told to fail."""

    _pipestate_per_rank = True

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.value = 0

    def state_dict(self) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("the counter's device is gone")
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = int(state["value"])


def test_a_rank_that_fails_fails_the_save_on_every_rank(tmp_path: Path) -> None:
    directory = str(tmp_path / "ckpt")

    def save(rank: int) -> str | None:
        counter = Counter(fail=False)
        manager = CheckpointManager(
            Checkpoint(model=Variable(np.ones(3)), counter=counter), directory, max_to_keep=3
        )
        first = manager.save()
        counter.fail = rank == 1
        manager.save(options=CheckpointOptions(timeout=5))
        return first

    results = run_ranks(2, save)
    assert isinstance(results[1], RuntimeError)
    assert "the counter's device is gone" in str(results[1])
    assert isinstance(results[0], DistributedSaveError)
    assert results[0].failed_ranks == (1,)
    assert "rank 1 failed: RuntimeError: the counter's device is gone" in str(results[0])
    assert ps.checkpoint.latest_checkpoint(directory) == directory + "/ckpt-1"
    assert not (tmp_path / "ckpt" / "ckpt-2.index").exists()
    assert [p.name for p in (tmp_path / "ckpt").iterdir() if "ckpt-2" in p.name] == []


def test_a_missing_rank_is_named_on_every_rank(tmp_path: Path) -> None:
    directory = str(tmp_path / "ckpt")

    def save(rank: int) -> str | None:
        manager = CheckpointManager(Checkpoint(model=Variable(np.ones(3))), directory, 3)
        options = CheckpointOptions(timeout=1.0)
        manager.save(options=options)
        if rank == 2:
            return None  # this rank never makes the second save
        return manager.save(options=options)

    results = run_ranks(3, save)
    for rank in (0, 1):
        err = results[rank]
        assert isinstance(err, DistributedSaveError), err
        assert err.missing_ranks == (2,)
        assert "rank 2 did not arrive within 1 s" in str(err)
        assert "previous checkpoint stays the latest" in str(err)
    assert ps.checkpoint.latest_checkpoint(directory) == directory + "/ckpt-1"


def test_ranks_must_save_the_same_graph_and_checkpoint(tmp_path: Path) -> None:
    def save(rank: int) -> str:
        objects: dict[str, Any] = {"model": Variable(np.ones(2))}
        if rank == 1:
            objects["extra"] = Variable(np.ones(1))
        options = CheckpointOptions(timeout=5)
        return Checkpoint(**objects).write(str(tmp_path / "c"), options=options)

    results = run_ranks(2, save)
    assert all(isinstance(r, DistributedSaveError) for r in results)
    assert "rank 1 saves another object graph" in str(results[0])
    assert str(results[1]) == str(results[0])

    def save_elsewhere(rank: int) -> str:
        return Checkpoint(model=Variable(np.ones(2))).write(
            str(tmp_path / f"c{rank}"), options=CheckpointOptions(timeout=5)
        )

    results = run_ranks(2, save_elsewhere)
    assert all(isinstance(r, DistributedSaveError) for r in results)
    assert "every rank must save the same checkpoint" in str(results[0])


def test_per_rank_objects_without_a_rule_refuse_another_world_size(tmp_path: Path) -> None:
    path = str(tmp_path / "c")

    def save(rank: int) -> str:
        return Checkpoint(**make_objects(rank, 2)).write(path)

    run_ranks(2, save)

    def restore(rank: int) -> Any:
        objects = make_objects(rank, 3)
        return Checkpoint(**objects).read(path)

    results = run_ranks(3, restore)
    for err in results:
        assert isinstance(err, CheckpointMismatchError)
        assert "saved per rank by 2 ranks and this job has 3" in str(err)
        assert "'rng'" in str(err)

    # Data iterators re-shard: rank 0's state continues the global stream on any world size.
    def restore_data(rank: int) -> list[int]:
        data = iter(ps.Dataset.range(100).shard(3, rank))
        Checkpoint(data=data, model=Variable(np.zeros((2, 3), np.float32))).read(
            path
        ).expect_partial()
        return [int(next(data)) for _ in range(2)]

    continued = run_ranks(3, restore_data)
    # The 2-rank job consumed 3 elements per rank: global elements 0..5.
    assert sorted(x for xs in continued for x in xs) == list(range(6, 12))


def test_async_distributed_save(tmp_path: Path) -> None:
    directory = str(tmp_path / "ckpt")

    def save(rank: int) -> str | None:
        manager = CheckpointManager(
            Checkpoint(model=Variable(np.ones(3)), data=iter(ps.Dataset.range(9))),
            directory,
            max_to_keep=2,
            enable_async=True,
        )
        path = manager.save()
        manager.sync()
        assert manager.latest_checkpoint == directory + "/ckpt-1"
        return path

    assert run_ranks(2, save) == [directory + "/ckpt-1"] * 2
    assert index_of(directory + "/ckpt-1")["world_size"] == 2


def test_index_of_several_ranks_is_validated(tmp_path: Path) -> None:
    path = str(tmp_path / "c")
    run_ranks(2, lambda rank: Checkpoint(**make_objects(rank, 2)).write(path))
    index = Path(path + ".index")
    document = json.loads(index.read_text())
    node = next(n for n in document["checkpoint"]["nodes"] if "ranks" in n)
    node["ranks"] = node["ranks"][:1]
    from pipestate.checkpoint._index import body_crc

    document["crc32c"] = body_crc(document["checkpoint"])
    index.write_text(json.dumps(document))
    with pytest.raises(CorruptCheckpointError, match="ranks must be a list of 2 objects"):
        Checkpoint(**make_objects(0, 2)).read(path)


# -- sharded tensors: rank 0 completes each DTensor's chunk list ----------------------


def _sharded(shape: list[int], *boxes: tuple[int, int]) -> dict[str, Any]:
    chunks = [{"offsets": [o], "shape": [n], "of": f"w@[{o}]"} for o, n in boxes]
    return {"shape": shape, "dtype": "float32", "chunks": chunks}


def _lead_round() -> SaveRound:
    return SaveRound(MemoryCoordinator({}, 0, 3), "ckpt", 1.0)


def test_rank_0_merges_the_ranks_chunks_in_order() -> None:
    round_ = _lead_round()
    mine = {1: {"w": _sharded([6], (0, 2))}}
    _merge_chunks(round_, mine, 2, {"1": {"w": _sharded([6], (4, 2))}})
    _merge_chunks(round_, mine, 1, {"1": {"w": _sharded([6], (2, 2))}})
    _check_chunks(round_, mine)
    assert [c["offsets"] for c in mine[1]["w"]["chunks"]] == [[0], [2], [4]]


@pytest.mark.parametrize(
    ("theirs", "message"),
    [
        pytest.param(
            {"1": {"w": _sharded([5], (4, 1))}},
            "rank 1 saved the DTensor at 'w' as float32[5], rank 0 as float32[6]",
            id="other-shape",
        ),
        pytest.param({"1": {"v": _sharded([6], (4, 2))}}, "rank 0 as nothing", id="other-tensor"),
        pytest.param(
            {"7": {"w": _sharded([6], (4, 2))}},
            "rank 1 saved DTensors in object '7', where rank 0 saved none",
            id="other-object",
        ),
    ],
)
def test_rank_0_refuses_chunks_that_do_not_match(theirs: dict[str, Any], message: str) -> None:
    mine = {1: {"w": _sharded([6], (0, 2))}}
    with pytest.raises(DistributedSaveError, match=re.escape(message)) as caught:
        _merge_chunks(_lead_round(), mine, 1, theirs)
    assert caught.value.failed_ranks == (1,)


def test_rank_0_refuses_to_commit_a_dtensor_its_ranks_do_not_cover() -> None:
    mine = {1: {"w": _sharded([6], (0, 2), (4, 2))}}
    with pytest.raises(DistributedSaveError, match="cover 4 of its 6 elements"):
        _check_chunks(_lead_round(), mine)


def test_rank_0_refuses_to_commit_overlapping_chunks() -> None:
    mine = {1: {"w": _sharded([4], (0, 3))}}
    _merge_chunks(_lead_round(), mine, 1, {"1": {"w": _sharded([4], (2, 2))}})
    with pytest.raises(DistributedSaveError, match="overlap"):
        _check_chunks(_lead_round(), mine)


def test_inspect_names_the_ranks(tmp_path: Path) -> None:
    from pipestate.checkpoint._inspect import describe_tree

    path = str(tmp_path / "c")
    run_ranks(2, lambda rank: Checkpoint(**make_objects(rank, 2)).write(path))
    text = describe_tree(path)
    assert "(format 2, saved by 2 ranks)" in text
    assert "data (IndexIterator, per rank: rank 0's of 2 shown)" in text
    assert "model (Variable)\n" in text


def test_async_saves_recover_on_every_rank_after_one_fails(tmp_path: Path) -> None:
    """A snapshot that fails once on one rank fails that save on every rank, reported at the
    next save or sync as for any async save, and the saves after it succeed everywhere."""
    directory = str(tmp_path / "ckpt")

    def run(rank: int) -> list[str]:
        counter = Counter(fail=False)
        manager = CheckpointManager(
            Checkpoint(model=Variable(np.ones(3)), counter=counter),
            directory,
            max_to_keep=5,
            enable_async=True,
        )
        outcomes = []
        for i in range(4):
            counter.fail = rank == 1 and i == 1
            counter.value = i
            try:
                manager.save(options=CheckpointOptions(timeout=5))
                manager.sync()
                outcomes.append(str(manager.latest_checkpoint))
            except (DistributedSaveError, RuntimeError) as err:
                outcomes.append(f"failed: {type(err).__name__}")
        return outcomes

    first, second = run_ranks(2, run)
    assert first[1].startswith("failed")
    assert second[1].startswith("failed")
    assert first[0] == second[0] == directory + "/ckpt-1"
    assert first[2:] == second[2:] == [directory + "/ckpt-3", directory + "/ckpt-4"]


def test_a_follower_that_fails_to_write_is_named_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import time

    from pipestate.checkpoint import _dist_write

    original = _dist_write.write_shards

    def full_on_rank_1(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("first", 0) > 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(*args, **kwargs)

    monkeypatch.setattr(_dist_write, "write_shards", full_on_rank_1)
    started = time.monotonic()
    results = run_ranks(
        2,
        lambda rank: Checkpoint(model=Variable(np.ones(3)), data=iter(ps.Dataset.range(3))).write(
            str(tmp_path / "c"), options=CheckpointOptions(timeout=30)
        ),
    )
    assert time.monotonic() - started < 20  # not the timeout: the failure was heard
    assert isinstance(results[0], DistributedSaveError)
    assert results[0].failed_ranks == (1,)
    assert "No space left on device" in str(results[0])
    assert not (tmp_path / "c.index").exists()


def test_verify_and_diff_read_every_rank(tmp_path: Path) -> None:
    from pipestate.checkpoint._index import body_crc
    from pipestate.checkpoint._inspect import diff_checkpoints, verify_checkpoint

    def save(rank: int, path: str, steps: int) -> str:
        data = iter(ps.Dataset.range(100).shard(2, rank))
        for _ in range(steps + rank):
            next(data)
        return Checkpoint(data=data).write(path)

    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    run_ranks(2, lambda rank: save(rank, a, 3))
    run_ranks(2, lambda rank: save(rank, b, 3 + 5 * rank))  # only rank 1's differs
    assert any("@rank1" in line for line in diff_checkpoints(a, b))
    assert not any("@rank0" in line for line in diff_checkpoints(a, b))
    assert verify_checkpoint(a)[1] == []
    index = Path(a + ".index")
    document = json.loads(index.read_text())
    node = next(n for n in document["checkpoint"]["nodes"] if "ranks" in n)
    node["ranks"][1]["iterator"] = {"array": "no/such/tensor"}
    document["crc32c"] = body_crc(document["checkpoint"])
    index.write_text(json.dumps(document))
    _, problems = verify_checkpoint(a)
    assert len(problems) == 1
    assert "no/such/tensor" in problems[0]


def test_checkpoint_save_on_every_rank_is_one_checkpoint(tmp_path: Path) -> None:
    prefix = str(tmp_path / "run" / "ckpt")

    def save(rank: int) -> tuple[str, str, int]:
        ckpt = Checkpoint(model=Variable(np.ones(2)), data=iter(ps.Dataset.range(4)))
        ckpt.save(prefix)
        path = ckpt.save(prefix)
        return (
            path,
            str(ps.checkpoint.latest_checkpoint(str(tmp_path / "run"))),
            int(ckpt.save_counter.numpy()),
        )

    results = run_ranks(2, save)
    assert results[0] == results[1] == (prefix + "-2", prefix + "-2", 2)
    assert index_of(prefix + "-2")["world_size"] == 2

    def restore(rank: int) -> int:
        ckpt = Checkpoint(model=Variable(np.zeros(2)), data=iter(ps.Dataset.range(4)))
        ckpt.restore(prefix + "-2").assert_consumed()
        return int(ckpt.save_counter.numpy())

    assert run_ranks(2, restore) == [2, 2]


def test_the_store_keeps_one_rounds_keys(tmp_path: Path) -> None:
    """However many saves a job makes (failed ones too), the store holds one round's keys."""
    directory = str(tmp_path / "ckpt")
    store: dict[str, bytes] = {}

    def save(rank: int) -> None:
        counter = Counter(fail=False)
        manager = CheckpointManager(
            Checkpoint(model=Variable(np.ones(3)), counter=counter), directory, max_to_keep=2
        )
        for i in range(6):
            counter.fail = rank == 1 and i == 2
            with contextlib.suppress(DistributedSaveError, RuntimeError):
                manager.save(options=CheckpointOptions(timeout=5))

    run_ranks(3, save, store=store)
    rounds = {key.rsplit("/", 2)[0] for key in store}
    assert len(rounds) == 1, sorted(store)
    assert len(store) <= 3 * 4  # plan, go, written, done: at most one of each per rank
