"""Distributed checkpoints of a ``jax.distributed`` job: real processes on loopback.

``_mp_train.py`` is a data-parallel JAX loop: each process reads its shard of
one global stream and saves through ``CheckpointManager``, which finds the
job's :class:`~pipestate.jax.JaxCoordinator` by itself. The tests start the
processes together (each with 2 CPU devices) and compare their records; every
process has a timeout: nothing here can hang. The detection of the job's
coordinator is checked in this process with stand-ins for the clients.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from tests._processes import free_port, records, wait_all

pytest.importorskip("jax")

import jax
import numpy as np

from pipestate.checkpoint import _distributed as distributed
from pipestate.checkpoint import latest_checkpoint
from pipestate.checkpoint._reader import CheckpointReader
from pipestate.checkpoint._storage import Storage
from pipestate.errors import DistributedSaveError
from pipestate.jax import JaxCoordinator
from pipestate.jax import _distributed as jax_coordination

from ._mp_sharded import GLOBAL_SHAPE, LEAVES, global_value, leaf_value, own_value
from ._mp_train import BATCH, global_stream, pipeline

TRAIN = Path(__file__).with_name("_mp_train.py")
SHARDED = Path(__file__).with_name("_mp_sharded.py")
TIMEOUT = 60
ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    env["JAX_PLATFORMS"] = "cpu"
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.pop("PYTHONWARNINGS", None)
    return env


def launch(
    num_processes: int,
    tmp: Path,
    *args: str,
    per_process: dict[int, list[str]] | None = None,
    script: Path = TRAIN,
) -> list[subprocess.CompletedProcess[str]]:
    """One job of ``num_processes`` processes started together (1: no ``jax.distributed``)."""
    port = free_port() if num_processes > 1 else 0
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                *("--process-id", str(pid), "--num-processes", str(num_processes)),
                *("--port", str(port), "--record", str(tmp / "record"), *args),
                *(per_process or {}).get(pid, []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
        )
        for pid in range(num_processes)
    ]
    return wait_all(processes, TIMEOUT)


def check(results: list[subprocess.CompletedProcess[str]]) -> None:
    for result in results:
        assert result.returncode == 0, result.stdout


def by_rank(found: list[dict[str, Any]], event: str) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for r in found:
        if r["event"] == event:
            out.setdefault(r["rank"], []).append(r)
    return out


def shard_elements(world_size: int, rank: int, first_batch: int, batches: int) -> list[int]:
    """Elements ``rank`` reads in batches ``first_batch`` to ``first_batch + batches``."""
    flat = np.asarray(list(pipeline(world_size, rank).take(first_batch + batches))).reshape(-1)
    return [int(x) for x in flat[first_batch * BATCH :]]


def test_two_processes_save_one_checkpoint_and_resume_on_two_then_one(tmp_path: Path) -> None:
    directory = tmp_path / "ckpt"
    check(launch(2, tmp_path, "--ckpt-dir", str(directory), "--steps", "6", "--save-every", "3"))
    found = records(tmp_path)
    starts = by_rank(found, "start")
    for rank in (0, 1):
        (start,) = starts[rank]
        assert start["coordinator"] == "JaxCoordinator"
        assert (start["coordinator_rank"], start["coordinator_world_size"]) == (rank, 2)
        assert start["namespace"] == "jax1"  # the job's first attempt on its service
        assert start["restored"] is None
    saves = by_rank(found, "saved")
    # Both processes' saves made one checkpoint each, committed by process 0.
    assert [s["path"] for s in saves[0]] == [str(directory / "ckpt-1"), str(directory / "ckpt-2")]
    assert [s["path"] for s in saves[1]] == [s["path"] for s in saves[0]]
    assert sorted(p.name for p in directory.glob("*.index")) == ["ckpt-1.index", "ckpt-2.index"]
    assert latest_checkpoint(str(directory)) == str(directory / "ckpt-2")
    first_totals = {s["total"] for r in (0, 1) for s in saves[r][-1:]}
    assert len(first_totals) == 1  # the replicated total agrees
    for rank in (0, 1):
        assert saves[rank][-1]["consumed"] == shard_elements(2, rank, 0, 6)
    storage, prefix = Storage.for_path(str(directory / "ckpt-2"))
    with CheckpointReader(storage, prefix) as reader:
        assert reader.world_size == 2
        for key in reader.tensors:  # every array reads back and checks out
            reader.read_tensor(key)
    total_saved = saves[0][-1]["total"]
    params_saved = saves[0][-1]["params"]
    # The parameters (sharded over both processes' devices) and the optimizer state of the
    # first checkpoint resume the training bit for bit: 3 more steps give the 6th step's.
    check(
        launch(
            2,
            tmp_path,
            *("--ckpt-dir", str(directory), "--steps", "3", "--no-save"),
            *("--restore-from", str(directory / "ckpt-1")),
        )
    )
    ends = by_rank(records(tmp_path), "end")
    for rank in (0, 1):
        (end,) = ends[rank]
        assert end["step"] == 6
        assert end["consumed"] == shard_elements(2, rank, 3, 3)
        assert end["params"] == params_saved

    # The same job size resumes where each process stopped, with the replicated values.
    check(launch(2, tmp_path, "--ckpt-dir", str(directory), "--steps", "4", "--save-every", "5"))
    found = found_two = records(tmp_path)
    starts = by_rank(found, "start")
    saves = by_rank(found, "saved")
    for rank in (0, 1):
        (start,) = starts[rank]
        assert start["restored"] == str(directory / "ckpt-2")
        assert (start["step"], start["total"], start["params"]) == (6, total_saved, params_saved)
        assert saves[rank][-1]["consumed"] == shard_elements(2, rank, 6, 4)
    assert latest_checkpoint(str(directory)) == str(directory / "ckpt-3")

    # One process continues the job's global stream (the iterator re-shards by the elastic
    # rule): over the three runs each element was read exactly once.
    check(launch(1, tmp_path, "--ckpt-dir", str(directory), "--steps", "5", "--save-every", "5"))
    found = records(tmp_path)
    ((start,),) = by_rank(found, "start").values()
    assert start["coordinator"] == "NoneType"
    assert start["step"] == 10
    # The parameters restored onto this process's own 2 devices.
    assert start["params"] == by_rank(found_two, "saved")[0][-1]["params"]
    (last,) = by_rank(found, "saved")[0]
    consumed = [x for rank in (0, 1) for x in shard_elements(2, rank, 0, 10)] + last["consumed"]
    stream = [int(x) for x in global_stream().take(2 * 10 * BATCH + 5 * BATCH)]
    assert sorted(consumed) == sorted(stream)
    assert latest_checkpoint(str(directory)) == str(directory / "ckpt-4")


@pytest.mark.parametrize("absence", ["skips", "exits"])
def test_a_missing_process_fails_the_save_naming_it(tmp_path: Path, absence: str) -> None:
    """Process 1 skips its 2nd save, or leaves the job before it: process 0 names it."""
    flag = "--skip-save" if absence == "skips" else "--exit-at-save"
    directory = tmp_path / "ckpt"
    results = launch(
        2,
        tmp_path,
        *("--ckpt-dir", str(directory), "--steps", "6", "--save-every", "3", "--timeout", "2"),
        per_process={1: [flag, "2"]},
    )
    assert [r.returncode for r in results] == [3, 0], [r.stdout for r in results]
    found = records(tmp_path)
    ((failed,),) = by_rank(found, "save_failed").values()
    assert failed["rank"] == 0
    assert failed["step"] == 6
    assert failed["missing"] == [1]
    assert "rank 1 did not arrive within 2 s" in failed["error"]
    assert "previous checkpoint stays the latest" in failed["error"]
    assert latest_checkpoint(str(directory)) == str(directory / "ckpt-1")
    assert not (directory / "ckpt-2.index").exists()
    assert [p.name for p in directory.glob("ckpt-2*")] == []  # process 0 removed its shards


def test_an_array_sharded_across_processes_on_cpu(tmp_path: Path) -> None:
    """What each process holds of a jax.Array over the job's global mesh (the save's input)."""
    check(launch(2, tmp_path, "--mode", "probe", script=SHARDED))
    found = {r["rank"]: r for r in records(tmp_path)}
    assert sorted(found) == [0, 1]
    value = global_value()
    for rank, record in found.items():
        assert len(record["devices"]) == 4
        assert [p for _, p in record["devices"]].count(rank) == 2
        assert sorted(record["local_devices"]) == sorted(
            d for d, p in record["devices"] if p == rank
        )
        for name in ("by_rows", "blocks", "replicated"):
            held = record[name]
            assert held["fully_addressable"] is False
            assert len(held["shards"]) == 2
            for shard in held["shards"]:
                assert shard["process"] == rank
                box = tuple(slice(a, b) for a, b in shard["box"])
                assert np.array_equal(np.asarray(shard["value"], np.float32), value[box])
        # Fetching the array whole is refused where a part lives on the other process.
        assert "non-addressable" in record["fetch_sharded"]
        assert record["fetch_replicated"] == "ok"
    rows = sorted(s["box"][0] for r in found.values() for s in r["by_rows"]["shards"])
    assert rows == [[0, 2], [2, 4], [4, 6], [6, 8]]  # each row once, over both processes
    # P("dev", "proc") on the 2 x 2 mesh: process p holds the p-th half of the columns.
    for rank, record in found.items():
        half = GLOBAL_SHAPE[1] // 2
        assert {tuple(s["box"][1]) for s in record["blocks"]["shards"]} == {
            (rank * half, (rank + 1) * half)
        }
    # A replicated array: every device holds it, one replica (0, on process 0) is the first.
    replicas = {r: [s["replica"] for s in found[r]["replicated"]["shards"]] for r in found}
    assert sorted(replicas[0] + replicas[1]) == [0, 1, 2, 3]
    assert 0 in replicas[0]


def _owner(name: str, offsets: list[int]) -> int:
    """The process whose devices hold the chunk of leaf ``name`` at ``offsets`` (as saved)."""
    if name == "w":  # rows over the 4 devices, 2 per process
        return 0 if offsets[0] < 4 else 1
    if name == "m":  # columns over the processes
        return 0 if offsets[1] < 3 else 1
    return 1  # "r": replicated across the processes, the first replica on process 1


def _check_held(record: dict[str, Any], save: int) -> None:
    """Every shard a process holds after a restore is the saved value there, bit for bit."""
    for name, held in record.items():
        expected = leaf_value(name, save)
        for shard in held["shards"]:
            box = tuple(slice(a, b) for a, b in shard["box"])
            got = np.asarray(shard["value"]).astype(expected.dtype)
            assert got.tobytes() == expected[box].tobytes(), (name, shard["box"])


def _check_covered(found: dict[int, dict[str, Any]], key: str) -> None:
    """The two processes' shards of each leaf make up the whole leaf."""
    for name, (shape, _) in LEAVES.items():
        cells = np.zeros(shape, np.int64)
        for record in found.values():
            for shard in record[key][name]["shards"]:
                box = tuple(slice(a, b) for a, b in shard["box"])
                cells[box] += 1
        assert cells.min() >= 1, (key, name)


def test_sharded_arrays_written_by_their_owners_restored_anywhere(tmp_path: Path) -> None:
    """A pytree of arrays sharded across both processes: saved without gathering (async),
    restored onto 2 processes (the same and other shardings) and one; process 1 killed in
    a save."""
    directory = tmp_path / "ckpt"
    results = launch(
        2,
        tmp_path,
        *("--mode", "save", "--ckpt-dir", str(directory), "--saves", "3", "--timeout", "3"),
        *("--die-rank", "1", "--die-at-save", "3", "--async-save"),
        script=SHARDED,
    )
    assert [r.returncode for r in results] == [3, -9], [r.stdout for r in results]
    (record,) = records(tmp_path)
    assert record["saved"] == [str(directory / "ckpt-1"), str(directory / "ckpt-2")]
    assert record["missing"] == [1]
    assert "rank 1 did not arrive within 3 s" in record["error"]
    assert latest_checkpoint(str(directory)) == str(directory / "ckpt-2")
    assert not (directory / "ckpt-3.index").exists()

    # Each process wrote its own shards' chunks, once; the replicated leaf process 0 alone.
    storage, prefix = Storage.for_path(str(directory / "ckpt-2"))
    with CheckpointReader(storage, prefix) as reader:
        assert reader.world_size == 2
        written: dict[int, set[int]] = {0: set(), 1: set()}
        for name, chunks in (("w", 4), ("m", 4), ("r", 2)):
            keys = [k for k in reader.tensors if k.startswith(f"params/.ATTRIBUTES/['{name}']@")]
            assert len(keys) == chunks
            cells = np.zeros(LEAVES[name][0], np.int64)
            for key in keys:
                offsets = json.loads(key.rsplit("@", 1)[1])
                entry = reader.tensors[key]
                cells[tuple(slice(o, o + n) for o, n in zip(offsets, entry.shape))] += 1
                written[_owner(name, offsets)].add(entry.shard)
            assert (cells == 1).all()  # every element in exactly one chunk
        (b,) = [k for k in reader.tensors if k.startswith("params/.ATTRIBUTES/['b']")]
        written[0].add(reader.tensors[b].shard)
        assert written[0]
        assert written[1]
        assert max(written[0]) < min(written[1])  # rank 1's shards follow rank 0's

    # One process (this one, 8 devices): the whole arrays, and the arrays on its own mesh.
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from pipestate.jax import restore_pytree

    tree = restore_pytree(str(directory), key="params")
    for name in LEAVES:
        assert tree[name].tobytes() == leaf_value(name, 2).tobytes()
    # Arrays of no global mesh are replicated values: process 0's copy is saved.
    own = restore_pytree(str(directory), key="own")
    assert np.array_equal(own["local"], own_value(0))
    assert np.array_equal(own["on_first"], global_value((4, 2)))
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("a", "b"))
    specs = {2: P("a", "b"), 1: P("b")}
    target = {
        name: jax.ShapeDtypeStruct(
            shape, jax.numpy.dtype(dtype), sharding=NamedSharding(mesh, specs[len(shape)])
        )
        for name, (shape, dtype) in LEAVES.items()
    }
    placed = restore_pytree(str(directory), target=target, key="params")
    for name in LEAVES:
        assert placed[name].sharding == target[name].sharding
        assert np.asarray(placed[name]).tobytes() == leaf_value(name, 2).tobytes()

    # Two processes again: onto the saved shardings and onto others, bit for bit.
    check(launch(2, tmp_path, "--mode", "restore", "--ckpt-dir", str(directory), script=SHARDED))
    found = {r["rank"]: r for r in records(tmp_path)}
    assert sorted(found) == [0, 1]
    for layout in ("same", "other"):
        for how in ("restore_pytree", "checkpoint_restore"):
            _check_covered(found, f"{layout}/{how}")
            for record in found.values():
                _check_held(record[f"{layout}/{how}"], 2)
    assert [record["step"] for record in found.values()] == [2, 2]


def test_an_array_no_process_wrote_is_refused_saying_where_it_lives() -> None:
    """Process 0 holds none of an array that the processes holding it took for their own."""
    from pipestate.checkpoint._dist_write import _check_chunks
    from pipestate.checkpoint._graph import ARRAY_PREFIX

    round_ = distributed.SaveRound(FakeCoordinator(), "ckpt-1", timeout=1)
    body = {"shape": [4], "dtype": "float32", "chunks": []}
    with pytest.raises(DistributedSaveError, match="process 0 holds none of it") as info:
        _check_chunks(round_, {1: {ARRAY_PREFIX + "params/.ATTRIBUTES/['a']": body}})
    assert "place it on devices of process 0 too" in str(info.value)
    assert "previous checkpoint stays the latest" in str(info.value)


def test_a_restored_uncommitted_leaf_still_meets_sharded_ones_in_jit(tmp_path: Path) -> None:
    """optax's step count is uncommitted: restored, it is too, and the next step still runs."""
    import optax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import pipestate as ps

    mesh = Mesh(np.array(jax.devices()), ("x",))
    params = {"w": jax.device_put(np.ones((8, 2), np.float32), NamedSharding(mesh, P("x")))}
    optimizer = optax.adam(0.1)

    @jax.jit
    def step(params: Any, state: Any) -> tuple[Any, Any]:
        updates, state = optimizer.update(params, state, params)
        return optax.apply_updates(params, updates), state

    checkpoint = ps.Checkpoint(params=params, opt_state=optimizer.init(params))
    checkpoint.params, checkpoint.opt_state = step(checkpoint.params, checkpoint.opt_state)
    path = checkpoint.save(str(tmp_path / "ckpt"))
    expected = step(checkpoint.params, checkpoint.opt_state)
    fresh = ps.Checkpoint(params=params, opt_state=optimizer.init(params))
    assert fresh.opt_state[0].count.committed is False
    fresh.restore(path).assert_consumed()
    assert fresh.opt_state[0].count.committed is False
    assert int(fresh.opt_state[0].count) == 1
    got = step(fresh.params, fresh.opt_state)  # devices of both arguments agree
    assert np.asarray(got[0]["w"]).tobytes() == np.asarray(expected[0]["w"]).tobytes()
    # A ShapeDtypeStruct without a sharding: this process's default device, uncommitted.
    from pipestate.jax import restore_pytree

    tree = restore_pytree(
        path, target={"w": jax.ShapeDtypeStruct((8, 2), np.float32)}, key="params"
    )
    assert tree["w"].committed is False
    assert tree["w"].devices() == {jax.local_devices()[0]}


# -- finding the job's coordinator (in this process, with stand-ins) --------------------


class FakeClient:
    """The parts of a jax.distributed client a coordinator uses, over a dict."""

    def __init__(self) -> None:
        self.store: dict[str, bytes] = {}
        self.fail_with: str | None = None

    def _check(self) -> None:
        if self.fail_with is not None:
            raise jax.errors.JaxRuntimeError(self.fail_with)

    def key_value_set_bytes(self, key: str, value: bytes, allow_overwrite: bool = False) -> None:
        self._check()
        if key in self.store and not allow_overwrite:
            raise jax.errors.JaxRuntimeError(f"ALREADY_EXISTS: key {key} already exists.")
        self.store[key] = value

    def key_value_try_get_bytes(self, key: str) -> bytes:
        self._check()
        if key not in self.store:
            raise jax.errors.JaxRuntimeError(f"NOT_FOUND: Config key {key} not found.")
        return self.store[key]

    def key_value_delete(self, key: str) -> None:
        self._check()
        self.store.pop(key, None)

    def key_value_increment(self, key: str, increment: int) -> int:
        self._check()
        value = int(self.store.get(key, b"0")) + increment
        self.store[key] = str(value).encode()
        return value


class FakeCoordinator(distributed.Coordinator):
    """Rank 0 of 2 over a dict (for the protocol's checks alone)."""

    rank, world_size = 0, 2

    def __init__(self) -> None:
        self.store: dict[str, bytes] = {}

    def set(self, key: str, value: bytes) -> None:
        self.store[key] = value

    def get(self, key: str) -> bytes | None:
        return self.store.get(key)


@pytest.fixture
def jax_job(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    """``jax.distributed`` as if initialized as process 1 of 2, over a fake client."""
    from jax._src import distributed as jax_distributed

    client = FakeClient()
    state = jax_distributed.global_state
    monkeypatch.setattr(state, "client", client)
    monkeypatch.setattr(state, "process_id", 1)
    monkeypatch.setattr(state, "num_processes", 2)
    monkeypatch.setattr(distributed, "_jax_clients", {})
    monkeypatch.setattr(jax_coordination, "_shared", {})
    for name in ("TORCHELASTIC_RUN_ID", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return client


def test_no_job_without_jax_distributed() -> None:
    from jax._src import distributed as jax_distributed

    assert jax_distributed.global_state.client is None
    assert distributed.current_coordinator() is None
    with pytest.raises(RuntimeError, match=r"call jax.distributed.initialize\(...\)"):
        JaxCoordinator()


def test_the_job_of_jax_distributed_is_found_and_kept(jax_job: FakeClient) -> None:
    coordinator = distributed.current_coordinator()
    assert isinstance(coordinator, JaxCoordinator)
    assert (coordinator.rank, coordinator.world_size) == (1, 2)
    assert repr(coordinator) == "JaxCoordinator(rank=1, world_size=2)"
    assert distributed.current_coordinator() is coordinator  # its rounds are counted once
    assert distributed.placement() == distributed.Placement(1, 2)
    # A use_coordinator setting comes first.
    with distributed.use_coordinator(None):
        assert distributed.current_coordinator() is None


def test_a_job_of_one_process_saves_alone(
    jax_job: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jax._src import distributed as jax_distributed

    monkeypatch.setattr(jax_distributed.global_state, "num_processes", 1)
    assert distributed.current_coordinator() is None


def test_the_store_operations(jax_job: FakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    coordinator = JaxCoordinator()
    assert coordinator.get("a") is None  # NOT_FOUND is "not set yet"
    coordinator.set("a", b"\x00\xff")
    coordinator.set("a", b"again")  # a rank may report a failure under its own key
    assert coordinator.get("a") == b"again"
    coordinator.delete("a")
    assert coordinator.get("a") is None
    # The namespace counts how often a process of this rank joined the service, once per
    # process: every coordinator over the client shares it.
    assert coordinator.namespace() == "jax1"
    assert JaxCoordinator().namespace() == "jax1"
    monkeypatch.setattr(jax_coordination, "_shared", {})  # as a restarted process
    assert JaxCoordinator().namespace() == "jax2"
    jax_job.fail_with = "UNAVAILABLE: failed to connect to all addresses"
    for operation in (lambda: coordinator.get("a"), lambda: coordinator.set("a", b"")):
        with pytest.raises(DistributedSaveError, match="coordination service") as info:
            operation()
        assert "UNAVAILABLE: failed to connect" in str(info.value)


def test_coordinators_over_one_client_number_their_saves_together(jax_job: FakeClient) -> None:
    """A save's keys are its round's: a coordinator made for use_coordinator and the one
    current_coordinator() finds must not both start at round 0 (the second would read the
    first one's outcome, still in the store, as its own)."""
    found = distributed.current_coordinator()
    assert isinstance(found, JaxCoordinator)
    made = JaxCoordinator()
    rounds = [found.next_round(), made.next_round(), JaxCoordinator().next_round()]
    assert rounds == [0, 1, 2]
    first = distributed.SaveRound(found, "a save", timeout=1.0)
    second = distributed.SaveRound(made, "a save", timeout=1.0)
    assert first._prefix != second._prefix
    assert first._published is second._published


def test_torch_distributed_wins_over_jax_distributed(
    jax_job: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    group, store = object(), object()
    c10d = types.SimpleNamespace(_get_default_group=lambda: group, _get_default_store=lambda: store)
    fake = types.ModuleType("torch.distributed")
    fake.__dict__.update(
        is_available=lambda: True,
        is_initialized=lambda: True,
        get_world_size=lambda: 3,
        get_rank=lambda: 2,
        distributed_c10d=c10d,
    )
    monkeypatch.setitem(sys.modules, "torch.distributed", fake)
    monkeypatch.setattr(distributed, "_group_stores", {})
    coordinator = distributed.current_coordinator()
    assert isinstance(coordinator, distributed.StoreCoordinator)
    assert (coordinator.rank, coordinator.world_size) == (2, 3)


def test_finding_the_job_never_imports_jax() -> None:
    code = (
        "import sys; from pipestate.checkpoint import current_coordinator; "
        "assert current_coordinator() is None; assert 'jax' not in sys.modules"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
