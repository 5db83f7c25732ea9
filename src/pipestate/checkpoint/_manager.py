"""``CheckpointManager``: numbered checkpoints in a directory, the newest kept, as in TensorFlow."""

from __future__ import annotations

import contextlib
import math
import operator
import re
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from pipestate.checkpoint._checkpoint import Checkpoint, CheckpointOptions, Snapshot
from pipestate.checkpoint._checkpoint import options_or_default as _options
from pipestate.checkpoint._format import index_path, remove_interrupted_saves, write_error
from pipestate.checkpoint._management import (
    read_resolved_state,
    relative_checkpoint_path,
    state_filename,
)
from pipestate.checkpoint._state_file import CheckpointState, resolve_checkpoint_path, write_state
from pipestate.checkpoint._storage import Storage, as_path, check_storage_options

__all__ = ["CheckpointManager"]

_SHARD = r"\.data-[0-9]{5}-of-[0-9]{5}"


def _read_int(value: Any, what: str) -> int:
    """An int from an int, a NumPy integer, a 0-d integer array or a ``Variable``."""
    raw = value.numpy() if callable(getattr(value, "numpy", None)) else value
    if isinstance(raw, np.ndarray) and raw.shape == ():
        raw = raw[()]
    if not isinstance(raw, (bool, np.bool_)):
        with contextlib.suppress(TypeError):
            return operator.index(raw)
    raise TypeError(
        f"{what} must be an int, or an integer Variable / 0-d integer array, got {value!r:.100} "
        f"of type {type(value).__name__}"
    )


class CheckpointManager:
    """Saves numbered checkpoints of a :class:`Checkpoint` in a directory and deletes old ones.

    As ``tf.train.CheckpointManager``: checkpoints are ``<directory>/<checkpoint_name>-<n>``;
    after each save the oldest beyond ``max_to_keep`` are deleted, except that
    one is preserved for good every ``keep_checkpoint_every_n_hours``. The
    list and the save times live in the directory's state file, so a manager
    created on an existing directory carries on where the last one stopped.

    Each save writes the data shards, then the index (the commit), then the
    state file; a crash at any moment leaves the previous checkpoints and the
    state file intact, and the next save removes what the interrupted one left.

    Args:
        checkpoint: The :class:`Checkpoint` to save.
        directory: A local directory or an fsspec URL (``s3://bucket/run``).
        max_to_keep: How many checkpoints to keep, or ``None`` to keep all.
        keep_checkpoint_every_n_hours: Preserve a checkpoint leaving the kept
            set when at least this many hours passed since the last preserved one.
        checkpoint_name: The checkpoints' name before ``-<n>``.
        step_counter: The training step (an integer :class:`Variable` or 0-d
            array); required with ``checkpoint_interval``.
        checkpoint_interval: With a step counter, ``save()`` skips steps less
            than this many steps after the last saved one.
        init_fn: Called by :meth:`restore_or_initialize` when there is no checkpoint.
        latest_filename: The state file's name (default ``"checkpoint"``), so
            that several managers can share a directory.
        enable_async: Save in the background (see :meth:`save`).
        storage_options: Arguments of the fsspec filesystem (credentials,
            ``{"client_kwargs": {"endpoint_url": ...}}``).

    Raises:
        TypeError: For arguments of the wrong type.
        ValueError: For a non-positive ``max_to_keep``, ``checkpoint_interval``
            without ``step_counter``, and other bad values.
        CorruptCheckpointError: When the directory's state file is damaged.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> import pipestate as ps
        >>> directory = tempfile.mkdtemp()
        >>> ckpt = ps.Checkpoint(weights=ps.Variable(np.zeros(3)))
        >>> manager = ps.CheckpointManager(ckpt, directory, max_to_keep=2)
        >>> manager.restore_or_initialize()  # nothing to restore yet: None
        >>> path = manager.save()
        >>> path == manager.latest_checkpoint == ps.latest_checkpoint(directory)
        True
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        directory: Any,
        max_to_keep: int | None,
        keep_checkpoint_every_n_hours: float | None = None,
        checkpoint_name: str = "ckpt",
        step_counter: Any = None,
        checkpoint_interval: int | None = None,
        init_fn: Callable[[], object] | None = None,
        *,
        latest_filename: str | None = None,
        enable_async: bool = False,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(checkpoint, Checkpoint):
            raise TypeError(
                f"checkpoint must be a pipestate Checkpoint, got {checkpoint!r:.100} of type "
                f"{type(checkpoint).__name__}; wrap your objects: Checkpoint(model=model, ...)"
            )
        if max_to_keep is not None:
            if isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int):
                raise TypeError(
                    f"Expected a positive integer or `None` for `max_to_keep`, got "
                    f"{max_to_keep!r} of type {type(max_to_keep).__name__}"
                )
            if max_to_keep <= 0:
                raise ValueError(
                    f"Expected a positive integer or `None` for `max_to_keep`, got {max_to_keep}."
                )
        hours = keep_checkpoint_every_n_hours
        if hours is not None and (
            isinstance(hours, bool)
            or not isinstance(hours, (int, float))
            or not math.isfinite(hours)
            or hours <= 0
        ):
            raise ValueError(
                "keep_checkpoint_every_n_hours must be a positive number of hours or None, got "
                f"{hours!r}"
            )
        self._directory = as_path(directory, "directory")
        if not isinstance(checkpoint_name, str) or not checkpoint_name:
            raise ValueError(
                f"checkpoint_name must be a non-empty str, got {checkpoint_name!r}; e.g. 'ckpt'"
            )
        if any(c in checkpoint_name for c in "/\\\0"):
            raise ValueError(
                f"checkpoint_name must be a file name without '/', '\\\\' or NUL, got "
                f"{checkpoint_name!r}; put subdirectories into `directory`"
            )
        if checkpoint_interval is not None:
            if step_counter is None:
                raise ValueError(
                    "`step_counter` should be passed if `checkpoint_interval` is not None."
                )
            if (
                isinstance(checkpoint_interval, bool)
                or not isinstance(checkpoint_interval, int)
                or checkpoint_interval < 0
            ):
                raise ValueError(
                    "checkpoint_interval must be a non-negative int (a number of steps) or None, "
                    f"got {checkpoint_interval!r}"
                )
            if isinstance(step_counter, int):
                raise TypeError(
                    f"step_counter must be a counter that changes as training goes on (an integer "
                    f"Variable or 0-d array), got the int {step_counter!r}"
                )
            _read_int(step_counter, "step_counter")
        if init_fn is not None and not callable(init_fn):
            raise TypeError(f"init_fn must be callable or None, got {init_fn!r:.100}")
        filename = state_filename(latest_filename)
        if re.fullmatch(re.escape(checkpoint_name) + rf"-[0-9]+(\.index|{_SHARD})?", filename):
            raise ValueError(
                f"latest_filename {filename!r} has the name of a checkpoint file of "
                f"checkpoint_name {checkpoint_name!r}; choose another, e.g. 'checkpoint'"
            )
        if not isinstance(enable_async, bool):
            raise TypeError(f"enable_async must be a bool, got {enable_async!r}")

        self._checkpoint = checkpoint
        self._max_to_keep = max_to_keep
        self._keep_checkpoint_every_n_hours = hours
        self._checkpoint_name = checkpoint_name
        self._prefix = resolve_checkpoint_path(self._directory, checkpoint_name)
        self._step_counter = step_counter if checkpoint_interval is not None else None
        self._checkpoint_interval = checkpoint_interval
        self._last_checkpoint_step: int | None = None
        self._init_fn = init_fn
        self._latest_filename = filename
        self._enable_async = enable_async
        self._storage_options = check_storage_options(storage_options)
        self._storage, self._fs_dir = Storage.for_path(self._directory, self._storage_options)
        # The list and the latest path change on the background thread of an async save.
        self._lock = threading.RLock()
        self._maybe_delete: dict[str, float] = {}
        self._latest_checkpoint: str | None = None
        self._recover()

    def _recover(self) -> None:
        """Take over the checkpoints, save times and preservation clock of the state file."""
        state = read_resolved_state(
            self._storage, self._fs_dir, self._directory, self._latest_filename
        )
        now = time.time()
        if state is None:
            # A little in the past, so that a manager re-created at once still preserves.
            self._last_preserved_timestamp = now - 1.0
            return
        self._latest_checkpoint = state.model_checkpoint_path
        preserved = state.last_preserved_timestamp or 0.0
        if now < preserved:
            warnings.warn(
                f"time.time() returned a value {preserved - now:f} seconds behind the last "
                f"preserved checkpoint timestamp in {self._directory!r}; save times are capped "
                "at the current time so that no checkpoint is deleted early",
                RuntimeWarning,
                stacklevel=3,
            )
            preserved = now
        self._last_preserved_timestamp = preserved
        paths = state.all_model_checkpoint_paths
        stamps = state.all_model_checkpoint_timestamps or [preserved] * len(paths)
        for path, stamp in zip(paths, stamps):
            stamp = min(stamp, now)
            if stamp > preserved:
                self._maybe_delete[path] = stamp

    def __repr__(self) -> str:
        return (
            f"CheckpointManager(directory={self._directory!r}, "
            f"checkpoint_name={self._checkpoint_name!r}, max_to_keep={self._max_to_keep}, "
            f"latest_filename={self._latest_filename!r}, enable_async={self._enable_async})"
        )

    # -- properties ------------------------------------------------------------
    @property
    def directory(self) -> str:
        """The directory the checkpoints are saved in, as given."""
        return self._directory

    @property
    def checkpoint(self) -> Checkpoint:
        """The :class:`Checkpoint` saved."""
        return self._checkpoint

    @property
    def checkpoint_interval(self) -> int | None:
        """The minimum number of steps between two saves, or ``None``."""
        return self._checkpoint_interval

    @property
    def latest_filename(self) -> str:
        """The name of the state file in :attr:`directory`."""
        return self._latest_filename

    @property
    def latest_checkpoint(self) -> str | None:
        """The newest checkpoint's path (``<directory>/<checkpoint_name>-<n>``), or ``None``.

        With async saving it names the newest *committed* checkpoint.
        """
        with self._lock:
            return self._latest_checkpoint

    @property
    def checkpoints(self) -> list[str]:
        """The managed checkpoints, oldest first (those preserved for good are not listed)."""
        with self._lock:
            return list(self._maybe_delete)

    # -- saving ----------------------------------------------------------------
    def save(
        self,
        checkpoint_number: Any = None,
        check_interval: bool = True,
        options: CheckpointOptions | None = None,
    ) -> str | None:
        """Save a new checkpoint, record it in the state file and delete old ones.

        ``save_counter`` is incremented; the checkpoint is numbered by
        ``checkpoint_number``, else by the new ``save_counter``. With async
        saving (``enable_async=True`` or ``options.enable_async``) this returns
        once the values are copied to host memory; the write, the commit and
        the clean-up follow on a background thread, one save at a time (the
        next save waits for the previous one).

        Args:
            checkpoint_number: An int ``>= 0`` (or an integer Variable) to
                number the checkpoint, or ``None``.
            check_interval: With ``checkpoint_interval``, save only when the
                step advanced by at least that much; with ``False``, save
                unless this step was saved already.
            options: Shard size, fsync and async settings.

        Returns:
            The new checkpoint's path, or ``None`` when nothing was saved
            because of the interval or because the step was saved already.

        Raises:
            TypeError, ValueError: For bad arguments or a value that cannot be saved.
            CheckpointWriteError: When the storage fails (nothing is committed,
                earlier checkpoints and the state file are intact), or an
                earlier async save failed.
        """
        self._checkpoint._writer.raise_if_failed()
        opts = _options(options)
        if not isinstance(check_interval, bool):
            raise TypeError(f"check_interval must be a bool, got {check_interval!r}")
        number = None
        if checkpoint_number is not None:
            number = _read_int(checkpoint_number, "checkpoint_number")
            if number < 0:
                raise ValueError(f"checkpoint_number must be >= 0, got {number}")
        previous_step = self._last_checkpoint_step
        if self._checkpoint_interval is not None:
            current = _read_int(self._step_counter, "step_counter")
            if previous_step is not None:
                if current == previous_step:
                    return None
                if check_interval and current < previous_step + self._checkpoint_interval:
                    return None
            self._last_checkpoint_step = current
        enable_async = self._enable_async or opts.enable_async
        writer = self._checkpoint._writer
        counter = self._checkpoint.save_counter
        with writer.saving:
            try:
                writer.wait()
                old = int(counter.numpy())
                counter.assign(old + 1)
                try:
                    buffers = writer.buffers if enable_async else None
                    snapshot = Snapshot.take(self._checkpoint._graph(), buffers=buffers)
                except BaseException:
                    counter.assign(old)
                    raise
            except BaseException:
                self._last_checkpoint_step = previous_step
                raise
            n = old + 1 if number is None else number
            basename, prefix = f"{self._checkpoint_name}-{n}", f"{self._prefix}-{n}"

            def commit() -> None:
                self._commit(snapshot, prefix, basename, opts)

            if enable_async:
                writer.submit(prefix, commit)
                return prefix
            try:
                commit()
            except BaseException:
                counter.assign(old)
                self._last_checkpoint_step = previous_step
                raise
            return prefix

    def _commit(
        self, snapshot: Snapshot, prefix: str, basename: str, options: CheckpointOptions
    ) -> None:
        """Clean up, write and commit one checkpoint, record it, and delete old ones."""
        try:
            remove_interrupted_saves(
                self._storage, self._fs_dir, self._checkpoint_name, self._latest_filename
            )
        except OSError as err:
            warnings.warn(
                f"could not remove the leftovers of interrupted saves in {self._directory!r}: "
                f"{err}; the next save tries again",
                RuntimeWarning,
                stacklevel=2,
            )
        fs_prefix = self._storage.join(self._fs_dir, basename)
        snapshot.commit(self._storage, fs_prefix, prefix, options)
        with self._lock:
            before = dict(self._maybe_delete), self._latest_checkpoint
            # A checkpoint saved again under the same name moves to the end of the list.
            self._maybe_delete.pop(prefix, None)
            self._maybe_delete[prefix] = time.time()
            self._latest_checkpoint = prefix
            try:
                # Recorded before anything is deleted, so that a crash while deleting
                # still finds the new checkpoint.
                self._record_state(options.fsync)
            except OSError as err:
                self._maybe_delete, self._latest_checkpoint = before
                self._delete(prefix)  # committed but not recorded: the save failed
                raise write_error(err, prefix) from err
            self._sweep()
            try:
                self._record_state(options.fsync)
            except OSError as err:
                warnings.warn(
                    f"checkpoint {prefix!r} is saved, but the state file could not be updated "
                    f"after deleting old checkpoints: {err}; it still lists them until the next "
                    "save",
                    RuntimeWarning,
                    stacklevel=2,
                )

    def _record_state(self, fsync: bool) -> None:
        """Replace the state file with the current list."""
        assert self._latest_checkpoint is not None
        relative = [relative_checkpoint_path(self._directory, p) for p in self._maybe_delete]
        state = CheckpointState(
            relative_checkpoint_path(self._directory, self._latest_checkpoint),
            relative,
            list(self._maybe_delete.values()),
            self._last_preserved_timestamp,
        )
        write_state(self._storage, self._fs_dir, state, self._latest_filename, fsync=fsync)

    def _sweep(self) -> None:
        """Delete or preserve the oldest checkpoints beyond ``max_to_keep``."""
        if not self._max_to_keep:
            return  # everything stays in the kept set; the preservation clock does not move
        hours = self._keep_checkpoint_every_n_hours
        while len(self._maybe_delete) > self._max_to_keep:
            path = next(iter(self._maybe_delete))
            stamp = self._maybe_delete.pop(path)
            # A preserved checkpoint leaves the list too, so that the list stays short.
            if hours and stamp - hours * 3600.0 >= self._last_preserved_timestamp:
                self._last_preserved_timestamp = stamp
                continue
            self._delete(path)

    def _delete(self, path: str) -> None:
        """Delete one checkpoint's index, then its shards; failures are warnings."""
        try:
            storage, fs_prefix = self._locate(path)
            directory, basename = storage.split(fs_prefix)
            storage.remove(index_path(fs_prefix))
            shard = re.compile(re.escape(basename) + _SHARD)
            for name in storage.listdir(directory):
                if shard.fullmatch(name):
                    storage.remove(storage.join(directory, name))
        except OSError as err:
            warnings.warn(
                f"could not delete old checkpoint {path!r}: {err}; delete its files by hand",
                RuntimeWarning,
                stacklevel=3,
            )

    def _locate(self, path: str) -> tuple[Storage, str]:
        """The storage and filesystem path of a checkpoint named in the list."""
        relative = relative_checkpoint_path(self._directory, path)
        if "/" not in relative and "\\" not in relative and relative not in (".", ".."):
            return self._storage, self._storage.join(self._fs_dir, relative)
        return Storage.for_path(path, self._storage_options)

    # -- waiting and restoring -------------------------------------------------
    def wait_until_finished(self) -> None:
        """Wait until an async save in flight has committed and old checkpoints are deleted.

        Raises:
            CheckpointWriteError: When that save failed (each error is raised once).
        """
        self._checkpoint._writer.wait()

    def sync(self) -> None:
        """Same as :meth:`wait_until_finished` (TensorFlow's name)."""
        self.wait_until_finished()

    def restore_or_initialize(self) -> str | None:
        """Restore the latest checkpoint, or call ``init_fn`` when there is none.

        Waits for an async save in flight first. As in TensorFlow, no status
        is returned; use ``checkpoint.restore(manager.latest_checkpoint)`` to
        run assertions.

        Returns:
            The restored checkpoint's path, or ``None`` when there was none.

        Raises:
            NotFoundError: When the state file names a checkpoint that is gone.
            CorruptCheckpointError, CheckpointMismatchError: As ``Checkpoint.restore``.
            CheckpointWriteError: When an earlier async save failed.
        """
        self._checkpoint._writer.wait()
        latest = self.latest_checkpoint
        if latest is not None:
            self._checkpoint.restore(latest, storage_options=self._storage_options)
            if self._checkpoint_interval is not None:
                self._last_checkpoint_step = _read_int(self._step_counter, "step_counter")
            return latest
        if self._init_fn is not None:
            self._init_fn()
        return None
