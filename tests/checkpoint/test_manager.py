"""CheckpointManager: TensorFlow's semantics, on a local directory, in memory and on S3."""

from __future__ import annotations

import contextlib
import errno
import re
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFile, MemoryFileSystem

import pipestate as ps
from pipestate.checkpoint import (
    Checkpoint,
    CheckpointManager,
    Variable,
    get_checkpoint_state,
    latest_checkpoint,
)
from pipestate.checkpoint import _manager as manager_module
from pipestate.errors import CheckpointWriteError, CorruptCheckpointError

from .conftest import BUCKET, Backend, S3Server

TMP = "0123456789abcdef0123456789abcdef"  # the random part of a temporary's name

pytestmark = pytest.mark.timeout(60)  # the S3 server runs in a thread: never hang on it


def make_checkpoint() -> Checkpoint:
    return Checkpoint(step=Variable(np.int64(0)), weights=Variable(np.zeros(5, np.float32)))


def set_step(ckpt: Any, step: int) -> None:
    ckpt.step.assign(step)
    ckpt.weights.assign(np.arange(5, dtype=np.float32) * step)


def make_manager(backend: Backend, ckpt: Checkpoint, max_to_keep: int | None = 3, **kwargs: Any):
    return CheckpointManager(
        ckpt, backend.directory, max_to_keep, storage_options=backend.storage_options, **kwargs
    )


def saved_numbers(backend: Backend, name: str = "ckpt") -> list[int]:
    """Numbers of the committed checkpoints (those with an index) in the directory."""
    pattern = re.compile(re.escape(name) + r"-([0-9]+)\.index$")
    return sorted(int(m.group(1)) for m in map(pattern.match, backend.listdir()) if m)


# -- on every backend ------------------------------------------------------------


def test_save_numbers_checkpoints_and_keeps_the_newest(backend: Backend) -> None:
    ckpt = make_checkpoint()
    manager = make_manager(backend, ckpt, max_to_keep=2)
    assert manager.latest_checkpoint is None
    assert manager.checkpoints == []
    paths = []
    for step in range(1, 5):
        set_step(ckpt, step)
        paths.append(manager.save())
    assert paths == [f"{backend.directory}/ckpt-{i}" for i in range(1, 5)]
    assert manager.checkpoints == paths[-2:]
    assert manager.latest_checkpoint == paths[-1]
    assert int(ckpt.save_counter.numpy()) == 4
    # Deleted: index and shards of the two oldest.
    assert saved_numbers(backend) == [3, 4]
    assert not [n for n in backend.listdir() if n.startswith(("ckpt-1.", "ckpt-2."))]
    # The state file holds relative paths in TensorFlow's text format.
    text = backend.read("checkpoint").decode()
    assert text.startswith('model_checkpoint_path: "ckpt-4"\n')
    assert 'all_model_checkpoint_paths: "ckpt-3"\nall_model_checkpoint_paths: "ckpt-4"\n' in text
    state = get_checkpoint_state(backend.directory, storage_options=backend.storage_options)
    assert state is not None
    assert state.model_checkpoint_path == paths[-1]
    assert state.all_model_checkpoint_paths == paths[-2:]
    stamps = state.all_model_checkpoint_timestamps
    assert len(stamps) == 2
    assert stamps[0] <= stamps[1]
    assert (
        latest_checkpoint(backend.directory, storage_options=backend.storage_options) == (paths[-1])
    )


def test_restore_or_initialize(backend: Backend) -> None:
    calls = []
    ckpt = make_checkpoint()
    manager = make_manager(backend, ckpt, init_fn=lambda: calls.append("init"))
    assert manager.restore_or_initialize() is None
    assert calls == ["init"]
    set_step(ckpt, 7)
    first = manager.save()
    set_step(ckpt, 8)
    second = manager.save()

    fresh = make_checkpoint()
    again = make_manager(backend, fresh, init_fn=lambda: calls.append("again"))
    assert again.latest_checkpoint == second
    assert again.checkpoints == [first, second]
    assert again.restore_or_initialize() == second
    assert calls == ["init"]
    assert int(fresh.step.numpy()) == 8
    np.testing.assert_array_equal(fresh.weights.numpy(), np.arange(5) * 8.0)
    # The restored save counter continues the numbering.
    assert again.save() == f"{backend.directory}/ckpt-3"


def test_a_new_manager_takes_over_the_list_and_the_save_times(backend: Backend) -> None:
    ckpt = make_checkpoint()
    manager = make_manager(backend, ckpt, max_to_keep=5)
    paths = [manager.save() for _ in range(4)]
    state = get_checkpoint_state(backend.directory, storage_options=backend.storage_options)
    assert state is not None

    successor = make_manager(backend, ckpt, max_to_keep=2)
    assert successor.checkpoints == paths
    assert successor.latest_checkpoint == paths[-1]
    newest = successor.save()
    # The recovered checkpoints are managed: the three oldest are deleted now.
    assert successor.checkpoints == [paths[-1], newest]
    assert saved_numbers(backend) == [4, 5]
    after = get_checkpoint_state(backend.directory, storage_options=backend.storage_options)
    assert after is not None
    assert after.all_model_checkpoint_timestamps[0] == state.all_model_checkpoint_timestamps[-1]
    assert after.last_preserved_timestamp == state.last_preserved_timestamp


def test_leftovers_are_never_listed_and_the_next_save_removes_them(backend: Backend) -> None:
    ckpt = make_checkpoint()
    manager = make_manager(backend, ckpt)
    manager.save()
    manager.save()
    leftovers = [
        "ckpt-3.data-00000-of-00002",  # shards of a save killed before its index
        "ckpt-3.data-00001-of-00002",
        "ckpt-2.data-00000-of-00007",  # another shard count than ckpt-2's index names
        f".ckpt-3.index.tmp-{TMP}",  # an index temporary
        f".checkpoint.tmp-{TMP}",  # a state file temporary
    ]
    foreign = [
        "notes.txt",
        "other-3.data-00000-of-00001",  # another checkpoint name
        "ckpt-final.data-00000-of-00001",
        f".checkpoint_input.tmp-{TMP}",  # another manager's state file temporary
        "ckpt-9.index",  # a committed checkpoint the list does not name (preserved for good)
        "ckpt-9.data-00000-of-00001",
    ]
    for name in leftovers + foreign:
        backend.write(name, b"partial")

    successor = make_manager(backend, make_checkpoint())
    assert successor.checkpoints == manager.checkpoints
    assert latest_checkpoint(backend.directory, storage_options=backend.storage_options) == (
        manager.latest_checkpoint
    )
    successor.restore_or_initialize()
    assert successor.save() == f"{backend.directory}/ckpt-3"
    names = backend.listdir()
    assert not set(leftovers) & set(names)
    assert set(foreign) <= set(names)
    assert saved_numbers(backend) == [1, 2, 3, 9]


def test_async_save(backend: Backend) -> None:
    ckpt = make_checkpoint()
    manager = make_manager(backend, ckpt, max_to_keep=2, enable_async=True)
    paths = []
    for step in range(1, 4):
        set_step(ckpt, step)
        paths.append(manager.save())
    manager.wait_until_finished()
    assert manager.latest_checkpoint == paths[-1]
    assert manager.checkpoints == paths[-2:]
    assert saved_numbers(backend) == [2, 3]
    fresh = make_checkpoint()
    fresh.restore(paths[-1], storage_options=backend.storage_options).assert_consumed()
    assert int(fresh.step.numpy()) == 3


def test_s3_options_from_the_fsspec_configuration(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without storage_options, fsspec's configuration reaches the filesystem.
    monkeypatch.setitem(fsspec.config.conf, "s3", s3_server.storage_options)
    directory = f"s3://{BUCKET}/{uuid.uuid4().hex}/configured"
    manager = CheckpointManager(make_checkpoint(), directory, 2)
    path = manager.save()
    assert latest_checkpoint(directory) == path
    assert latest_checkpoint(directory, storage_options=s3_server.storage_options) == path


# -- TensorFlow's semantics -------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param(
            {"max_to_keep": 0},
            ValueError,
            re.escape("Expected a positive integer or `None` for `max_to_keep`, got 0."),
            id="max_to_keep-zero",
        ),
        pytest.param({"max_to_keep": -2}, ValueError, "got -2", id="max_to_keep-negative"),
        pytest.param({"max_to_keep": "3"}, TypeError, "of type str", id="max_to_keep-str"),
        pytest.param({"max_to_keep": True}, TypeError, "max_to_keep", id="max_to_keep-bool"),
        pytest.param(
            {"checkpoint_interval": 5},
            ValueError,
            re.escape("`step_counter` should be passed if `checkpoint_interval` is not None."),
            id="interval-without-counter",
        ),
        pytest.param(
            {"checkpoint_interval": -1, "step_counter": Variable(np.int64(0))},
            ValueError,
            "non-negative int",
            id="interval-negative",
        ),
        pytest.param(
            {"checkpoint_interval": 2, "step_counter": 3},
            TypeError,
            "changes as training goes on",
            id="counter-int",
        ),
        pytest.param(
            {"checkpoint_interval": 2, "step_counter": Variable(np.float32(0))},
            TypeError,
            "step_counter must be an int",
            id="counter-float",
        ),
        pytest.param(
            {"keep_checkpoint_every_n_hours": 0}, ValueError, "positive number", id="hours-zero"
        ),
        pytest.param({"checkpoint_name": ""}, ValueError, "non-empty", id="name-empty"),
        pytest.param({"checkpoint_name": "a/b"}, ValueError, "without '/'", id="name-slash"),
        pytest.param({"init_fn": 3}, TypeError, "init_fn must be callable", id="init_fn"),
        pytest.param({"latest_filename": "a/b"}, ValueError, "plain file name", id="state-slash"),
        pytest.param({"latest_filename": 3}, TypeError, "latest_filename", id="state-int"),
        pytest.param(
            {"latest_filename": "ckpt-1.index"}, ValueError, "checkpoint file", id="state-clash"
        ),
        pytest.param({"enable_async": "yes"}, TypeError, "enable_async", id="async"),
        pytest.param({"storage_options": [1]}, TypeError, "storage_options", id="options"),
        pytest.param({"checkpoint": object()}, TypeError, "pipestate Checkpoint", id="not-ckpt"),
        pytest.param({"directory": 3}, TypeError, "directory must be a str", id="directory"),
    ],
)
def test_invalid_arguments(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    arguments: dict[str, Any] = {
        "checkpoint": make_checkpoint(),
        "directory": str(tmp_path),
        "max_to_keep": 3,
    }
    with pytest.raises(error, match=match):
        CheckpointManager(**{**arguments, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param({"checkpoint_number": -1}, ValueError, "must be >= 0", id="negative"),
        pytest.param({"checkpoint_number": "3"}, TypeError, "checkpoint_number", id="str"),
        pytest.param({"checkpoint_number": 1.5}, TypeError, "checkpoint_number", id="float"),
        pytest.param({"check_interval": "no"}, TypeError, "check_interval", id="check"),
        pytest.param({"options": {"fsync": False}}, TypeError, "CheckpointOptions", id="options"),
    ],
)
def test_invalid_save_arguments_change_nothing(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    ckpt = make_checkpoint()
    manager = CheckpointManager(ckpt, str(tmp_path), 3)
    with pytest.raises(error, match=match):
        manager.save(**kwargs)
    assert int(ckpt.save_counter.numpy()) == 0
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_number(tmp_path: Path) -> None:
    ckpt = make_checkpoint()
    manager = CheckpointManager(ckpt, str(tmp_path), None)
    assert manager.save(checkpoint_number=100) == f"{tmp_path}/ckpt-100"
    assert manager.save(checkpoint_number=Variable(np.int64(250))) == f"{tmp_path}/ckpt-250"
    assert manager.save(checkpoint_number=np.int32(7)) == f"{tmp_path}/ckpt-7"
    # save_counter still counts the saves; without a number it names the checkpoint.
    assert int(ckpt.save_counter.numpy()) == 3
    assert manager.save() == f"{tmp_path}/ckpt-4"
    # Saving a number again moves it to the end of the list.
    assert manager.save(checkpoint_number=100) == f"{tmp_path}/ckpt-100"
    assert [Path(p).name for p in manager.checkpoints] == [
        "ckpt-250",
        "ckpt-7",
        "ckpt-4",
        "ckpt-100",
    ]


def test_step_counter_and_checkpoint_interval(tmp_path: Path) -> None:
    ckpt = make_checkpoint()
    step = Variable(np.int64(0))
    manager = CheckpointManager(ckpt, str(tmp_path), 5, step_counter=step, checkpoint_interval=10)
    assert manager.checkpoint_interval == 10
    assert manager.save() is not None  # the first save always happens
    step.assign(5)
    assert manager.save() is None  # too soon
    step.assign(10)
    assert manager.save() is not None
    assert manager.save() is None  # this step is saved already
    assert manager.save(check_interval=False) is None  # ... even without the interval
    step.assign(12)
    assert manager.save(check_interval=False) is not None
    assert len(manager.checkpoints) == 3

    # A manager that restores learns the restored step from the counter.
    successor = CheckpointManager(ckpt, str(tmp_path), 5, step_counter=step, checkpoint_interval=10)
    assert successor.restore_or_initialize() == manager.latest_checkpoint
    assert successor.save() is None
    step.assign(22)
    assert successor.save() is not None


def test_a_failed_save_changes_nothing_and_can_be_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = make_checkpoint()
    step = Variable(np.int64(0))
    manager = CheckpointManager(ckpt, str(tmp_path), 5, step_counter=step, checkpoint_interval=1)
    first = manager.save()
    state = (tmp_path / "checkpoint").read_bytes()
    step.assign(1)

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("pipestate.checkpoint._checkpoint.write_checkpoint", full)
    with pytest.raises(CheckpointWriteError) as info:
        manager.save()
    assert info.value.errno == errno.ENOSPC
    assert isinstance(info.value, OSError)
    assert "The storage is full" in str(info.value)
    assert int(ckpt.save_counter.numpy()) == 1
    assert manager.checkpoints == [first]
    assert (tmp_path / "checkpoint").read_bytes() == state
    monkeypatch.undo()
    # The step did not count as saved: the retry saves it under the same number.
    assert manager.save() == f"{tmp_path}/ckpt-2"


def test_keep_checkpoint_every_n_hours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(manager_module, "time", types.SimpleNamespace(time=lambda: clock[0]))
    ckpt = make_checkpoint()
    manager = CheckpointManager(ckpt, str(tmp_path), 2, keep_checkpoint_every_n_hours=1)
    for now in (1000.0, 1001.0, 1002.0, 4700.0, 4701.0, 4702.0):
        clock[0] = now
        manager.save()
    # ckpt-4 left the kept set an hour after the manager started: preserved, not listed.
    assert [Path(p).name for p in manager.checkpoints] == ["ckpt-5", "ckpt-6"]
    assert saved_numbers_local(tmp_path) == [4, 5, 6]
    state = get_checkpoint_state(str(tmp_path))
    assert state is not None
    assert state.last_preserved_timestamp == 4700.0

    # A later manager never deletes the preserved checkpoint, whatever its settings.
    clock[0] = 4800.0
    successor = CheckpointManager(ckpt, str(tmp_path), 1)
    successor.save()
    assert saved_numbers_local(tmp_path) == [4, 7]


def saved_numbers_local(directory: Path) -> list[int]:
    return sorted(int(p.name[5:-6]) for p in directory.glob("ckpt-*.index"))


def test_max_to_keep_none_keeps_everything(tmp_path: Path) -> None:
    manager = CheckpointManager(make_checkpoint(), str(tmp_path), None)
    for _ in range(4):
        manager.save()
    assert len(manager.checkpoints) == 4
    assert saved_numbers_local(tmp_path) == [1, 2, 3, 4]


def test_a_clock_gone_backwards_deletes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = CheckpointManager(make_checkpoint(), str(tmp_path), 2)
    manager.save()
    manager.save()
    monkeypatch.setattr(manager_module, "time", types.SimpleNamespace(time=lambda: 10.0))
    with pytest.warns(RuntimeWarning, match="seconds behind the last preserved checkpoint"):
        successor = CheckpointManager(make_checkpoint(), str(tmp_path), 1)
    assert successor.checkpoints == []  # as in TensorFlow: kept, no longer managed
    successor.save(checkpoint_number=10)
    assert saved_numbers_local(tmp_path) == [1, 2, 10]


def test_managers_with_their_own_state_files_share_a_directory(tmp_path: Path) -> None:
    model, inputs = make_checkpoint(), make_checkpoint()
    model_manager = CheckpointManager(model, str(tmp_path), 2)
    input_manager = CheckpointManager(
        inputs, str(tmp_path), 2, checkpoint_name="input", latest_filename="checkpoint_input"
    )
    assert input_manager.latest_filename == "checkpoint_input"
    for _ in range(3):
        model_manager.save()
        input_manager.save()
    # Each manager's leftovers are its own to remove.
    for name in ("input-9.data-00000-of-00001", f".checkpoint_input.tmp-{TMP}"):
        (tmp_path / name).write_bytes(b"partial")
    model_manager.save()
    assert (tmp_path / "input-9.data-00000-of-00001").exists()
    assert (tmp_path / f".checkpoint_input.tmp-{TMP}").exists()
    input_manager.save()
    assert not (tmp_path / "input-9.data-00000-of-00001").exists()
    assert not (tmp_path / f".checkpoint_input.tmp-{TMP}").exists()

    assert saved_numbers_local(tmp_path) == [3, 4]
    assert sorted(p.name for p in tmp_path.glob("input-*.index")) == [
        "input-3.index",
        "input-4.index",
    ]
    assert latest_checkpoint(str(tmp_path)) == f"{tmp_path}/ckpt-4"
    assert latest_checkpoint(str(tmp_path), "checkpoint_input") == f"{tmp_path}/input-4"
    assert ps.latest_checkpoint(str(tmp_path), latest_filename="checkpoint_input") == (
        input_manager.latest_checkpoint
    )


def test_a_relative_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    manager = CheckpointManager(make_checkpoint(), "runs/x", 2)
    assert manager.save() == "runs/x/ckpt-1"
    assert (
        (tmp_path / "runs/x/checkpoint").read_text().startswith('model_checkpoint_path: "ckpt-1"')
    )
    assert latest_checkpoint("runs/x") == "runs/x/ckpt-1"
    assert CheckpointManager(make_checkpoint(), "runs/x", 2).checkpoints == ["runs/x/ckpt-1"]


def test_a_damaged_state_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\ngarbage\n')
    with pytest.raises(CorruptCheckpointError, match="line 2: cannot parse 'garbage'"):
        CheckpointManager(make_checkpoint(), str(tmp_path), 2)


def test_repr_and_properties(tmp_path: Path) -> None:
    ckpt = make_checkpoint()
    manager = CheckpointManager(ckpt, tmp_path, 2, checkpoint_name="model")
    assert manager.checkpoint is ckpt
    assert manager.directory == str(tmp_path)
    assert repr(manager) == (
        f"CheckpointManager(directory={str(tmp_path)!r}, checkpoint_name='model', "
        "max_to_keep=2, latest_filename='checkpoint', enable_async=False)"
    )


# -- storage failures on a non-local filesystem ------------------------------------


class _QuotaFile(MemoryFile):
    def write(self, data: Any) -> int:
        _QuotaFS.charge(self.path, len(memoryview(data).cast("B")))
        return super().write(data)


class _QuotaFS(MemoryFileSystem):
    """fsspec's in-memory filesystem with a byte budget, and files that refuse to be written."""

    protocol = "pipestate-quota"
    budget: ClassVar[list[int]] = [1 << 30]
    refuse: ClassVar[set[str]] = set()

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, str):
            path = path.removeprefix(f"{cls.protocol}://")
        return super()._strip_protocol(path)

    @classmethod
    def charge(cls, path: str, size: int) -> None:
        if path.rsplit("/", 1)[-1] in cls.refuse or size > cls.budget[0]:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        cls.budget[0] -= size

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if "w" not in mode and "x" not in mode:
            return super()._open(path, mode, **kwargs)
        path = self._strip_protocol(path)
        data = kwargs.get("data")
        if data:
            self.charge(path, len(data))
        f = _QuotaFile(self, path, data)
        f.commit()
        return f


@pytest.fixture
def quota_dir() -> Iterator[str]:
    fsspec.register_implementation(_QuotaFS.protocol, _QuotaFS, clobber=True)
    _QuotaFS.budget[0] = 1 << 30
    _QuotaFS.refuse.clear()
    name = f"quota-{uuid.uuid4().hex}"
    yield f"{_QuotaFS.protocol}://{name}/run"
    with contextlib.suppress(FileNotFoundError):
        fsspec.filesystem("memory").rm(f"/{name}", recursive=True)


def test_a_full_object_store_raises_a_typed_error_and_keeps_the_previous_checkpoint(
    quota_dir: str,
) -> None:
    ckpt = make_checkpoint()
    manager = CheckpointManager(ckpt, quota_dir, 2)
    set_step(ckpt, 1)
    first = manager.save()
    fs, path = fsspec.core.url_to_fs(quota_dir)
    state = fs.cat_file(f"{path}/checkpoint")
    files = sorted(fs.ls(path, detail=False))

    ckpt.big = Variable(np.ones(1 << 16, np.uint8))
    _QuotaFS.budget[0] = 1 << 15
    with pytest.raises(CheckpointWriteError, match=r"could not write checkpoint .*ckpt-2") as info:
        manager.save()
    assert info.value.errno == errno.ENOSPC
    assert "earlier checkpoints and the state file are intact" in str(info.value)
    assert fs.cat_file(f"{path}/checkpoint") == state
    assert sorted(fs.ls(path, detail=False)) == files
    assert manager.checkpoints == [first]
    assert latest_checkpoint(quota_dir) == first

    _QuotaFS.budget[0] = 1 << 30
    assert manager.save() == f"{quota_dir}/ckpt-2"


def test_a_state_file_that_cannot_be_written_fails_the_save(quota_dir: str) -> None:
    ckpt = make_checkpoint()
    manager = CheckpointManager(ckpt, quota_dir, 2)
    first = manager.save()
    _QuotaFS.refuse.add("checkpoint")
    with pytest.raises(CheckpointWriteError, match="ckpt-2"):
        manager.save()
    fs, path = fsspec.core.url_to_fs(quota_dir)
    # The new checkpoint was committed, then removed again: the save did not happen.
    assert not fs.exists(f"{path}/ckpt-2.index")
    assert manager.checkpoints == [first]
    assert manager.latest_checkpoint == first
    assert int(ckpt.save_counter.numpy()) == 1
    _QuotaFS.refuse.clear()
    assert manager.save() == f"{quota_dir}/ckpt-2"


def test_shards_next_to_an_unreadable_index_are_kept(tmp_path: Path) -> None:
    manager = CheckpointManager(make_checkpoint(), str(tmp_path), 5)
    manager.save()
    # Two shard counts for ckpt-7 and an index that cannot say which is right: keep both.
    names = ["ckpt-7.index", "ckpt-7.data-00000-of-00001", "ckpt-7.data-00000-of-00002"]
    for name in names:
        (tmp_path / name).write_bytes(b"not json")
    manager.save()
    assert all((tmp_path / name).exists() for name in names)
