"""The writer lock: a second process saving into a directory is refused, naming the holder;
a lock of a dead process is taken over; managers of one process share the lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import pipestate as ps
from pipestate.checkpoint import CheckpointManager
from pipestate.checkpoint._lock import LEASE_TTL_S
from pipestate.errors import CheckpointLockedError

from .conftest import Backend

ROOT = Path(__file__).resolve().parents[2]

_HOLD = """
import sys, time
import numpy as np
import pipestate as ps
options = eval(sys.argv[2])
manager = ps.CheckpointManager(
    ps.Checkpoint(w=ps.Variable(np.zeros(3))), sys.argv[1], 2, storage_options=options
)
manager.save()
print("holding", flush=True)
sys.stdin.read()  # until the test closes stdin (or kills it)
"""


def _holder(backend: Backend) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD, backend.directory, repr(backend.storage_options)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "holding"
    return process


def _close(process: subprocess.Popen[str]) -> None:
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()


def _manager(backend: Backend) -> CheckpointManager:
    ckpt = ps.Checkpoint(w=ps.Variable(np.ones(3)))
    return CheckpointManager(ckpt, backend.directory, 2, storage_options=backend.storage_options)


@pytest.fixture(params=["local", "s3"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Storage two processes can share (the in-memory filesystem is per process)."""
    if request.param == "local":
        return Backend("local", str(tmp_path / "run"))
    from .conftest import BUCKET

    server = request.getfixturevalue("s3_server")
    return Backend("s3", f"s3://{BUCKET}/{uuid.uuid4().hex}/run", server.storage_options)


def test_a_second_writer_is_refused_naming_the_holder(shared: Backend) -> None:
    holder = _holder(shared)
    try:
        manager = _manager(shared)
        with pytest.raises(CheckpointLockedError) as info:
            manager.save()
        message = str(info.value)
        assert f"process {holder.pid} on host {socket.gethostname()!r}" in message
        assert isinstance(info.value, OSError)
        # Nothing was saved by the refused manager; reading still works.
        assert manager.latest_checkpoint is not None
        assert manager.latest_checkpoint.endswith("ckpt-1")
        assert manager.checkpoint.save_counter.numpy() == 0
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
        _close(holder)
    # The holder exited: its lock is released (S3: the lease deleted at exit).
    assert _manager(shared).save() is not None


def test_the_lock_of_a_killed_writer_is_taken_over(shared: Backend) -> None:
    holder = _holder(shared)
    holder.kill()
    holder.wait(timeout=60)
    _close(holder)
    manager = _manager(shared)
    path = manager.save()
    assert path is not None
    assert manager.latest_checkpoint == path
    manager.close()


def test_an_expired_lease_is_taken_over_and_a_live_one_is_not(backend: Backend) -> None:
    if backend.name == "local":
        pytest.skip("local files use the operating system's lock, never a lease")
    lease = ".checkpoint.lock"
    record = {"host": "elsewhere", "pid": 1, "owner": "x", "heartbeat": time.time(), "ttl": 60}
    backend.write(lease, json.dumps(record).encode())
    with pytest.raises(CheckpointLockedError, match="process 1 on host 'elsewhere'"):
        _manager(backend).save()
    record["heartbeat"] = time.time() - LEASE_TTL_S - 5
    backend.write(lease, json.dumps(record).encode())
    manager = _manager(backend)
    assert manager.save() is not None
    held = json.loads(backend.read(lease))
    assert held["pid"] == os.getpid()
    manager.close()
    assert lease not in backend.listdir()


def test_managers_of_one_process_share_the_lock(backend: Backend) -> None:
    first = _manager(backend)
    first.save()
    second = _manager(backend)
    assert second.save() is not None
    first.close()
    assert second.save() is not None  # still held for the second one
    second.close()


def test_lock_false_takes_no_lock(backend: Backend) -> None:
    ckpt = ps.Checkpoint(w=ps.Variable(np.ones(3)))
    manager = CheckpointManager(
        ckpt, backend.directory, 2, storage_options=backend.storage_options, lock=False
    )
    manager.save()
    assert ".checkpoint.lock" not in backend.listdir()
    with pytest.raises(TypeError, match="lock must be a bool"):
        CheckpointManager(ckpt, backend.directory, 2, lock=1)  # type: ignore[arg-type]


def test_a_manager_is_a_context_manager_releasing_the_lock(tmp_path: Path) -> None:
    backend = Backend("local", str(tmp_path / "run"))
    with _manager(backend) as manager:
        manager.save()
    holder = _holder(backend)  # another process can take it now
    holder.kill()
    holder.wait(timeout=60)
    _close(holder)


def test_a_holder_whose_lease_was_taken_over_stops_saving() -> None:
    from pipestate.checkpoint._lock import WriterLock
    from pipestate.checkpoint._storage import Storage

    directory = f"memory://lease-{uuid.uuid4().hex}"
    storage, fs_dir = Storage.for_path(directory)
    path = f"{fs_dir}/.checkpoint.lock"
    lock = WriterLock(storage, path, path, ttl=0.4)  # heartbeats every 0.1 s
    lock.acquire()
    try:
        lock.check()
        other = {"host": "elsewhere", "pid": 2, "owner": "y", "heartbeat": time.time(), "ttl": 60}
        storage.write_atomic(path, json.dumps(other).encode(), fsync=False)
        deadline = time.monotonic() + 60
        while lock.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(CheckpointLockedError, match="taken over by process 2 on host"):
            lock.check()
    finally:
        lock.release()
    # The lease is the other process's: releasing did not delete it.
    assert json.loads(storage.read_bytes(path))["owner"] == "y"
