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
import socket
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

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

from ._mp_sharded import GLOBAL_SHAPE, global_value
from ._mp_train import BATCH, global_stream, pipeline

TRAIN = Path(__file__).with_name("_mp_train.py")
SHARDED = Path(__file__).with_name("_mp_sharded.py")
TIMEOUT = 60
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    done = []
    try:
        for p in processes:
            out, _ = p.communicate(timeout=TIMEOUT)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out, ""))
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    return done


def records(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "record"
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return [json.loads(line) for line in lines]


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

    # The same job size resumes where each process stopped, with the replicated values.
    check(launch(2, tmp_path, "--ckpt-dir", str(directory), "--steps", "4", "--save-every", "5"))
    found = records(tmp_path)
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
    monkeypatch.setattr(jax_coordination, "_attempts", {})
    monkeypatch.delitem(sys.modules, "torch.distributed", raising=False)
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
    monkeypatch.setattr(jax_coordination, "_attempts", {})  # as a restarted process
    assert JaxCoordinator().namespace() == "jax2"
    jax_job.fail_with = "UNAVAILABLE: failed to connect to all addresses"
    for operation in (lambda: coordinator.get("a"), lambda: coordinator.set("a", b"")):
        with pytest.raises(DistributedSaveError, match="coordination service") as info:
            operation()
        assert "UNAVAILABLE: failed to connect" in str(info.value)


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
