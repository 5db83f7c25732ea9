"""Async saving: a host-memory snapshot, one save in flight, errors on the next call."""

from __future__ import annotations

import errno
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipestate.checkpoint import (
    AutoTrackable,
    Checkpoint,
    CheckpointableSaver,
    CheckpointManager,
    CheckpointOptions,
    Variable,
    latest_checkpoint,
)
from pipestate.checkpoint import _checkpoint as checkpoint_module
from pipestate.checkpoint._async import HostBuffers
from pipestate.checkpoint._checkpoint import Snapshot
from pipestate.errors import CheckpointWriteError

ASYNC = CheckpointOptions(enable_async=True)

pytestmark = pytest.mark.timeout(60)


class Gate:
    """Holds every background write until opened; counts the writes that started."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, error: OSError | None = None) -> None:
        self.open = threading.Event()
        self.started = threading.Semaphore(0)
        self.error = error
        real = checkpoint_module.write_checkpoint

        def gated(*args: Any, **kwargs: Any) -> None:
            self.started.release()
            assert self.open.wait(30), "the test never opened the gate"
            if self.error is not None:
                raise self.error
            real(*args, **kwargs)

        monkeypatch.setattr(checkpoint_module, "write_checkpoint", gated)

    def wait_started(self) -> None:
        assert self.started.acquire(timeout=30), "no background write started"


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    g = Gate(monkeypatch)
    yield g
    g.open.set()


def make_checkpoint() -> Checkpoint:
    return Checkpoint(weights=Variable(np.zeros(1000, np.float32)), epoch=0)


def test_the_snapshot_is_a_copy_in_reused_host_memory() -> None:
    ckpt = make_checkpoint()
    ckpt.model = AutoTrackable()
    ckpt.model.view = Variable(np.arange(12.0).reshape(3, 4))
    ckpt.model.transposed = np.arange(6.0).reshape(2, 3).T  # copied to C order anyway
    live = [np.asarray(ckpt.weights), np.asarray(ckpt.model.view), ckpt.model.transposed]
    buffers = HostBuffers()
    first = Snapshot.take(ckpt._graph(), buffers=buffers)
    assert len(first.arrays) == 3
    for item in first.arrays:
        assert not any(np.shares_memory(item.array, a) for a in live)
    np.testing.assert_array_equal(first.arrays[0].array, np.zeros(1000, np.float32))

    # The next snapshot copies into the same memory; an array that is gone frees its buffer.
    ckpt.weights.assign(np.ones(1000))
    del ckpt.model.transposed
    second = Snapshot.take(ckpt._graph(), buffers=buffers)
    assert len(second.arrays) == 2
    assert second.arrays[0].array is first.arrays[0].array
    np.testing.assert_array_equal(second.arrays[0].array, np.ones(1000, np.float32))
    assert "2 arrays" in repr(buffers)

    # A synchronous save writes straight from the objects.
    direct = Snapshot.take(ckpt._graph())
    assert all(any(np.shares_memory(i.array, a) for a in live) for i in direct.arrays)


def test_changes_after_save_returns_are_not_saved(tmp_path: Path, gate: Gate) -> None:
    ckpt = make_checkpoint()
    ckpt.weights.assign(np.full(1000, 1.0))
    ckpt.epoch = 1
    manager = CheckpointManager(ckpt, str(tmp_path), 3, enable_async=True)
    path = manager.save()
    gate.wait_started()
    # The training step goes on: in-place updates of the saved buffers.
    np.asarray(ckpt.weights)[:] = 2.0
    ckpt.epoch = 2
    assert manager.latest_checkpoint is None  # not committed yet
    assert latest_checkpoint(str(tmp_path)) is None
    gate.open.set()
    manager.wait_until_finished()
    assert manager.latest_checkpoint == path == latest_checkpoint(str(tmp_path))
    fresh = make_checkpoint()
    fresh.restore(path).assert_consumed()
    np.testing.assert_array_equal(fresh.weights.numpy(), np.full(1000, 1.0))
    assert fresh.epoch == 1


def test_a_second_save_waits_for_the_first(tmp_path: Path, gate: Gate) -> None:
    ckpt = make_checkpoint()
    manager = CheckpointManager(ckpt, str(tmp_path), 3, enable_async=True)
    ckpt.weights.assign(np.full(1000, 1.0))
    first = manager.save()
    gate.wait_started()
    ckpt.weights.assign(np.full(1000, 2.0))
    returned: list[str | None] = []
    second = threading.Thread(target=lambda: returned.append(manager.save()))
    second.start()
    second.join(0.3)
    assert second.is_alive()  # blocked: one save in flight
    assert int(ckpt.save_counter.numpy()) == 1
    gate.open.set()
    second.join(30)
    assert returned == [f"{tmp_path}/ckpt-2"]
    manager.wait_until_finished()
    assert manager.checkpoints == [first, returned[0]]
    # The second snapshot reused the host buffers only after the first save had committed.
    for path, value in ((first, 1.0), (returned[0], 2.0)):
        fresh = make_checkpoint()
        fresh.restore(path).assert_consumed()
        np.testing.assert_array_equal(fresh.weights.numpy(), np.full(1000, value))


def test_a_background_error_is_raised_by_the_next_call_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = make_checkpoint()
    manager = CheckpointManager(ckpt, str(tmp_path), 3, enable_async=True)
    first = manager.save()
    manager.wait_until_finished()
    state = (tmp_path / "checkpoint").read_bytes()

    gate = Gate(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    gate.open.set()
    assert manager.save() == f"{tmp_path}/ckpt-2"  # returns before the failure
    with pytest.raises(CheckpointWriteError, match="ckpt-2") as info:
        manager.wait_until_finished()
    assert info.value.errno == errno.ENOSPC
    manager.wait_until_finished()  # raised once
    assert manager.checkpoints == [first]
    assert (tmp_path / "checkpoint").read_bytes() == state

    # An error that happened in the background is raised by the next save, which saves nothing.
    manager.save()
    deadline = time.monotonic() + 30
    while ckpt._writer.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(CheckpointWriteError, match="ckpt-3"):
        manager.save()
    monkeypatch.undo()
    path = manager.save()
    manager.wait_until_finished()
    assert manager.checkpoints == [first, path]


def test_checkpoint_save_and_write_with_async_options(tmp_path: Path, gate: Gate) -> None:
    ckpt = make_checkpoint()
    ckpt.weights.assign(np.full(1000, 3.0))
    path = ckpt.save(str(tmp_path / "ckpt"), options=ASYNC)
    gate.wait_started()
    np.asarray(ckpt.weights)[:] = 4.0
    assert not Path(path + ".index").exists()
    gate.open.set()
    ckpt.sync()
    assert latest_checkpoint(str(tmp_path)) == path
    gate.open.clear()

    written = ckpt.write(str(tmp_path / "plain"), options=ASYNC)
    gate.wait_started()
    ckpt.weights.assign(np.full(1000, 9.0))
    threading.Timer(0.2, gate.open.set).start()
    # read() waits for the write in flight, then restores what it wrote.
    ckpt.read(written).assert_existing_objects_matched()
    np.testing.assert_array_equal(ckpt.weights.numpy(), np.full(1000, 4.0))
    ckpt.restore(path)
    np.testing.assert_array_equal(ckpt.weights.numpy(), np.full(1000, 3.0))


def test_checkpointable_saver_async(tmp_path: Path) -> None:
    model = AutoTrackable()
    model.kernel = Variable(np.ones(10))
    saver = CheckpointableSaver(model)
    path = saver.save(str(tmp_path / "model"), checkpoint_number=3, options=ASYNC)
    saver.sync()
    assert Path(path + ".index").exists()
    model.kernel.assign(np.zeros(10))
    saver.restore(path).assert_consumed()
    np.testing.assert_array_equal(model.kernel.numpy(), np.ones(10))


def test_restore_or_initialize_waits_for_the_save_in_flight(tmp_path: Path, gate: Gate) -> None:
    ckpt = make_checkpoint()
    ckpt.weights.assign(np.full(1000, 5.0))
    manager = CheckpointManager(ckpt, str(tmp_path), 3)
    path = manager.save(options=ASYNC)
    gate.wait_started()
    ckpt.weights.assign(np.zeros(1000))
    threading.Timer(0.2, gate.open.set).start()
    assert manager.restore_or_initialize() == path
    np.testing.assert_array_equal(ckpt.weights.numpy(), np.full(1000, 5.0))


def test_options_validation() -> None:
    with pytest.raises(ValueError, match="enable_async must be a bool, got 1"):
        CheckpointOptions(enable_async=1)  # type: ignore[arg-type]
    assert "enable_async=True" in repr(ASYNC)


EXIT_SCRIPT = """
import sys, time
import numpy as np
from pipestate.checkpoint import Checkpoint, CheckpointManager, CheckpointOptions, Variable
from pipestate.checkpoint import _checkpoint

real = _checkpoint.write_checkpoint

def slow(*args, **kwargs):
    time.sleep(0.5)  # the program ends while this save is in flight
    real(*args, **kwargs)

_checkpoint.write_checkpoint = slow
ckpt = Checkpoint(a=Variable(np.ones(100_000)), b=Variable(np.full(100_000, 2.0)))
manager = CheckpointManager(ckpt, sys.argv[1], 2, enable_async=True)
print(manager.save(options=CheckpointOptions(max_shard_bytes=500_000)))
"""


def test_a_save_in_flight_commits_when_the_program_ends(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    path = done.stdout.strip()
    assert latest_checkpoint(str(tmp_path)) == path
    ckpt = Checkpoint(a=Variable(np.zeros(100_000)), b=Variable(np.zeros(100_000)))
    ckpt.restore(path).assert_consumed()
    np.testing.assert_array_equal(ckpt.b.numpy(), np.full(100_000, 2.0))
    assert len(list(tmp_path.glob("ckpt-1.data-*"))) >= 2  # several shards, written by threads
