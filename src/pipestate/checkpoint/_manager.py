"""``CheckpointManager``: numbered checkpoints in a directory, the newest kept, as in TensorFlow."""

from __future__ import annotations

import contextlib
import errno
import operator
import re
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import numpy as np

from pipestate.checkpoint._checkpoint import (
    Checkpoint,
    CheckpointOptions,
    Snapshot,
    failed_job,
    run_round,
    save_rank,
    start_round,
)
from pipestate.checkpoint._checkpoint import options_or_default as _options
from pipestate.checkpoint._cleanup import (
    abort_interrupted_uploads,
    delete_checkpoint,
    remove_aside_leftovers,
    remove_interrupted_saves,
)
from pipestate.checkpoint._lock import WriterLock, lock_filename
from pipestate.checkpoint._paths import (
    SHARD_SUFFIX,
    aside_name,
    index_path,
    is_inside,
    relative_checkpoint_path,
    resolve_checkpoint_path,
    state_filename,
)
from pipestate.checkpoint._retention import RetainedCheckpoints
from pipestate.checkpoint._state_api import read_resolved_state
from pipestate.checkpoint._state_file import write_state
from pipestate.checkpoint._storage import Storage, as_path, check_storage_options, check_timeout
from pipestate.checkpoint._writer import copy_checkpoint, write_error
from pipestate.errors import CheckpointLockedError, CheckpointWriteError, CorruptCheckpointError

__all__ = ["CheckpointManager"]

# Errors after which a write certainly did not happen (and will not happen later).
_DEFINITE_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EACCES", "EPERM")
    if hasattr(errno, name)
)


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
    A number saved again is written aside first and switched to, so that the
    old checkpoint stays valid until the new one is. Before its first save a
    manager takes the directory's writer lock (see ``lock``).

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
        timeout: Seconds any single storage operation of a save may take
            (``None``: no limit). One that takes longer fails the save with
            :class:`~pipestate.errors.StorageTimeoutError`.
        lock: Take the directory's writer lock before the first save, so that
            a second process saving under the same state file fails at once
            with :class:`~pipestate.errors.CheckpointLockedError`. Released by
            :meth:`close` or when the program ends.
        allow_paths_outside_directory: Accept a state file that names
            checkpoints outside ``directory`` (restore them and delete them
            when they leave the kept set). By default such a state file is
            refused, so that a hostile one cannot make the manager delete or
            load files elsewhere.

    Raises:
        TypeError: For arguments of the wrong type.
        ValueError: For a non-positive ``max_to_keep``, ``checkpoint_interval``
            without ``step_counter``, and other bad values.
        CorruptCheckpointError: When the directory's state file is damaged or
            names checkpoints outside the directory.

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
        timeout: float | None = None,
        lock: bool = True,
        allow_paths_outside_directory: bool = False,
    ) -> None:
        if not isinstance(checkpoint, Checkpoint):
            raise TypeError(
                f"checkpoint must be a pipestate Checkpoint, got {checkpoint!r:.100} of type "
                f"{type(checkpoint).__name__}; wrap your objects: Checkpoint(model=model, ...)"
            )
        kept = RetainedCheckpoints(max_to_keep, keep_checkpoint_every_n_hours)
        self._directory = as_path(directory, "directory")
        _check_checkpoint_name(checkpoint_name)
        if checkpoint_interval is not None:
            _check_interval(step_counter, checkpoint_interval)
        if init_fn is not None and not callable(init_fn):
            raise TypeError(f"init_fn must be callable or None, got {init_fn!r:.100}")
        filename = _state_filename_for(latest_filename, checkpoint_name)
        for name, flag in (
            ("enable_async", enable_async),
            ("lock", lock),
            ("allow_paths_outside_directory", allow_paths_outside_directory),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")

        self._checkpoint = checkpoint
        self._checkpoint_name = checkpoint_name
        self._prefix = resolve_checkpoint_path(self._directory, checkpoint_name)
        self._step_counter = step_counter if checkpoint_interval is not None else None
        self._checkpoint_interval = checkpoint_interval
        self._last_checkpoint_step: int | None = None
        self._init_fn = init_fn
        self._latest_filename = filename
        self._enable_async = enable_async
        self._storage_options = check_storage_options(storage_options)
        self._timeout = check_timeout(timeout)
        self._allow_outside = allow_paths_outside_directory
        self._storage, self._fs_dir = Storage.for_path(
            self._directory, self._storage_options, timeout=self._timeout
        )
        # The list and the latest path change on the background thread of an async save.
        self._lock = threading.RLock()
        self._kept = kept
        self._recover()
        self._writer_lock: WriterLock | None = None
        if lock:
            self._writer_lock = WriterLock(
                self._storage,
                self._storage.join(self._fs_dir, lock_filename(filename)),
                resolve_checkpoint_path(self._directory, lock_filename(filename)),
            )
            weakref.finalize(self, self._writer_lock.release_soon)

    def _recover(self, *, warn: bool = True) -> None:
        """Take over the checkpoints, save times and preservation clock of the state file."""
        state = read_resolved_state(
            self._storage, self._fs_dir, self._directory, self._latest_filename
        )
        now = time.time()
        if state is None:
            self._kept.start(now)
            return
        if not self._allow_outside:
            for path in [state.model_checkpoint_path, *state.all_model_checkpoint_paths]:
                self._check_inside(path)
        behind = self._kept.recover(state, now)
        if behind and warn:
            warnings.warn(
                f"time.time() returned a value {behind:f} seconds behind the last "
                f"preserved checkpoint timestamp in {self._directory!r}; save times are "
                "capped at the current time so that no checkpoint is deleted early",
                RuntimeWarning,
                stacklevel=3,
            )

    def _check_inside(self, path: str) -> None:
        """Refuse a checkpoint path of the state file that lies outside the directory."""
        if is_inside(self._directory, path):
            return
        raise CorruptCheckpointError(
            f"the state file {self._latest_filename!r} in {self._directory!r} names the "
            f"checkpoint {path!r}, which lies outside the directory; the manager neither "
            "restores nor deletes files outside its directory. Fix the state file (its paths "
            "are relative to the directory, e.g. 'ckpt-3'), or pass "
            "allow_paths_outside_directory=True if the paths are meant"
        )

    def __repr__(self) -> str:
        return (
            f"CheckpointManager(directory={self._directory!r}, "
            f"checkpoint_name={self._checkpoint_name!r}, max_to_keep={self._kept.max_to_keep}, "
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
            return self._kept.latest

    @property
    def checkpoints(self) -> list[str]:
        """The managed checkpoints, oldest first (those preserved for good are not listed)."""
        with self._lock:
            return list(self._kept.times)

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
        if save_rank(opts) in (None, 0):
            self._take_writer_lock()  # rank 0 records the state file for the job
        previous_step = self._last_checkpoint_step
        if not self._step_is_due(check_interval):
            return None
        enable_async = self._enable_async or opts.enable_async
        writer = self._checkpoint._writer
        counter = self._checkpoint.save_counter
        with writer.saving:
            try:
                writer.wait()
                old = int(counter.numpy())
                n = old + 1 if number is None else number
                basename, prefix = f"{self._checkpoint_name}-{n}", f"{self._prefix}-{n}"
                # After the wait: a rank whose earlier async save failed raises here, before
                # taking part in a round, as every rank of that save does.
                round_ = start_round(prefix, opts)
                counter.assign(old + 1)
                try:
                    buffers = writer.buffers if enable_async else None
                    snapshot = Snapshot.take(
                        self._checkpoint._graph(), buffers=buffers, round_=round_
                    )
                except Exception as err:
                    if enable_async and round_ is not None:
                        # The other ranks learn of it on their writer threads: this rank
                        # reports it as they do, at its next save or sync.
                        writer.submit(prefix, failed_job(err))
                        return prefix
                    counter.assign(old)
                    raise
                except BaseException:
                    counter.assign(old)
                    raise
            except BaseException:
                self._last_checkpoint_step = previous_step
                raise

            def commit() -> str:
                return run_round(
                    round_,
                    snapshot,
                    self._storage,
                    prefix,
                    opts,
                    lambda: self._commit(snapshot, prefix, basename, opts),
                )

            def job() -> str:
                try:
                    return commit()
                finally:
                    if round_ is not None and not round_.leader:
                        # Rank 0 recorded the save (or not): take its view of the directory.
                        with self._lock, contextlib.suppress(OSError, ValueError):
                            self._recover(warn=False)

            if enable_async:
                writer.submit(prefix, job)
                return prefix
            try:
                return job()
            except BaseException as err:
                if not getattr(err, _UNKNOWN_OUTCOME, False):
                    # Nothing was committed: the same save can be retried under the same number.
                    counter.assign(old)
                    self._last_checkpoint_step = previous_step
                raise

    def _step_is_due(self, check_interval: bool) -> bool:
        """Whether the step counter allows a save now; if so, its step counts as saved."""
        if self._checkpoint_interval is None:
            return True
        current = _read_int(self._step_counter, "step_counter")
        previous = self._last_checkpoint_step
        if previous is not None:
            if current == previous:
                return False
            if check_interval and current < previous + self._checkpoint_interval:
                return False
        self._last_checkpoint_step = current
        return True

    def _take_writer_lock(self) -> None:
        """Take the directory's writer lock before the first save; then re-read the state file.

        Raises:
            CheckpointLockedError: When another process holds the lock, or this
                manager lost it.
        """
        lock = self._writer_lock
        if lock is None:
            return
        if not lock.held:
            try:
                lock.acquire()
                try:
                    # Another process may have saved since this manager read the state file.
                    with self._lock:
                        self._recover(warn=False)
                except BaseException:
                    lock.release()
                    raise
            except CheckpointLockedError:
                raise
            except OSError as err:
                raise CheckpointWriteError(
                    *((err.errno,) if err.errno is not None else ()),
                    f"could not take the writer lock of {self._directory!r} or read its state "
                    f"file: {err}. Nothing was saved; earlier checkpoints and the state file are "
                    "intact. Fix the storage problem and save again",
                ) from err
        lock.check()

    def close(self) -> None:
        """Wait for an async save in flight, then release the directory's writer lock.

        The manager can save again afterwards (it takes the lock again).

        Raises:
            CheckpointWriteError: When the async save in flight failed.
        """
        try:
            self._checkpoint._writer.wait()
        finally:
            if self._writer_lock is not None:
                self._writer_lock.release()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _commit(
        self, snapshot: Snapshot, prefix: str, basename: str, options: CheckpointOptions
    ) -> str:
        """Clean up, write and commit one checkpoint, record it, and delete old ones.

        Returns:
            The path the checkpoint is the latest under: ``prefix``, or its
            aside name when a checkpoint saved again could not be moved into place.
        """
        if self._writer_lock is not None:
            self._writer_lock.check()
        self._remove_leftovers()
        fs_prefix = self._storage.join(self._fs_dir, basename)
        try:
            # A checkpoint of this number exists (saved before, or an unrecorded one).
            replacing = self._storage.isfile(index_path(fs_prefix))
        except OSError as err:
            raise write_error(err, prefix) from err
        if not replacing:
            snapshot.commit(self._storage, fs_prefix, prefix, options)
            self._record_new(prefix, prefix, options.fsync)
            latest = prefix
        else:
            latest = self._replace(snapshot, prefix, basename, options)
        self._sweep()
        try:
            self._record_state(options.fsync)
        except OSError as err:
            warnings.warn(
                f"checkpoint {latest!r} is saved, but the state file could not be updated "
                f"after deleting old checkpoints: {err}; it still lists them until the next "
                "save",
                RuntimeWarning,
                stacklevel=2,
            )
        return latest

    def _replace(
        self, snapshot: Snapshot, prefix: str, basename: str, options: CheckpointOptions
    ) -> str:
        """Save over an existing checkpoint: write aside, record that, then move it into place.

        The state file names the old checkpoint until the aside one is
        complete, then the aside one until the move is complete, then the
        moved one: a crash at any moment leaves the latest checkpoint loadable.
        """
        name = aside_name(basename)
        aside = resolve_checkpoint_path(self._directory, name)
        fs_aside = self._storage.join(self._fs_dir, name)
        fs_prefix = self._storage.join(self._fs_dir, basename)
        snapshot.commit(self._storage, fs_aside, aside, options)
        self._record_new(aside, prefix, options.fsync)
        try:
            # The old checkpoint is no longer named by the state file: replace it.
            copy_checkpoint(self._storage, fs_aside, fs_prefix, options.fsync)
            with self._lock:
                before = self._kept.snapshot()
                self._kept.rename(aside, prefix)
                try:
                    self._record_state(options.fsync)
                except BaseException:
                    self._kept.rollback(before)
                    raise
        except OSError as err:
            warnings.warn(
                f"checkpoint {prefix!r} was saved again and is the latest, but under the name "
                f"{aside!r}: it could not be moved into place ({err}). It restores like any "
                "other; the manager deletes it like any other",
                RuntimeWarning,
                stacklevel=3,
            )
            return aside
        self._delete(aside)
        return prefix

    def _remove_leftovers(self) -> None:
        """Remove what interrupted saves left: shards without index, temporaries, stale asides."""
        try:
            remove_interrupted_saves(
                self._storage, self._fs_dir, self._checkpoint_name, self._latest_filename
            )
            with self._lock:
                named = {
                    relative_checkpoint_path(self._directory, p)
                    for p in [*self._kept.times, self._kept.latest]
                    if p is not None
                }
            moved = remove_aside_leftovers(
                self._storage, self._fs_dir, self._checkpoint_name, named
            )
            abort_interrupted_uploads(
                self._storage, self._fs_dir, self._checkpoint_name, self._latest_filename
            )
            for base in moved:
                self._delete(resolve_checkpoint_path(self._directory, base))
        except OSError as err:
            warnings.warn(
                f"could not remove the leftovers of interrupted saves in {self._directory!r}: "
                f"{err}; the next save tries again",
                RuntimeWarning,
                stacklevel=3,
            )

    def _record_new(self, path: str, replaces: str, fsync: bool) -> None:
        """Make the committed checkpoint ``path`` the latest in the state file.

        When the state file cannot be written, it is read back: a write that
        happened after all makes the save a success (with a warning). Otherwise
        the save fails; the new checkpoint is deleted again only when the
        write certainly failed (a full disk), never when it may still land.

        Raises:
            CheckpointWriteError: When the state file does not name ``path``.
        """
        with self._lock:
            before = self._kept.snapshot()
            self._kept.add(path, replaces, time.time())
            try:
                # Recorded before anything is deleted, so that a crash while deleting
                # still finds the new checkpoint.
                self._record_state(fsync)
                return
            except OSError as err:
                failure = err
            recorded = self._recorded(path)
            if recorded:
                warnings.warn(
                    f"checkpoint {path!r} is saved and recorded, but writing the state file "
                    f"reported an error: {failure}",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return
            self._kept.rollback(before)
        error = write_error(failure, path)
        if recorded is None:
            error = CheckpointWriteError(
                *((failure.errno,) if failure.errno is not None else ()),
                f"checkpoint {path!r} was written, but the state file could not be updated "
                f"({failure}) and could not be read back to see whether the update happened: "
                f"latest_checkpoint({self._directory!r}) says which checkpoint is the latest. "
                "Fix the storage problem and save again",
            )
            setattr(error, _UNKNOWN_OUTCOME, True)
        elif failure.errno in _DEFINITE_ERRNOS:
            self._delete(path)  # committed but not recorded: free its space
        raise error from failure

    def _recorded(self, path: str) -> bool | None:
        """Whether the state file names ``path`` as the latest; ``None`` when it can't be read."""
        try:
            state = read_resolved_state(
                self._storage, self._fs_dir, self._directory, self._latest_filename
            )
        except (OSError, CorruptCheckpointError):
            return None
        return state is not None and state.model_checkpoint_path == path

    def _record_state(self, fsync: bool) -> None:
        """Replace the state file with the current list."""
        state = self._kept.state(lambda p: relative_checkpoint_path(self._directory, p))
        write_state(self._storage, self._fs_dir, state, self._latest_filename, fsync=fsync)

    def _sweep(self) -> None:
        """Delete the oldest checkpoints beyond ``max_to_keep`` (or preserve them for good)."""
        for path in self._kept.expired():
            self._delete(path)

    def _delete(self, path: str) -> None:
        """Delete one checkpoint's index, then its shards; failures are warnings."""
        try:
            delete_checkpoint(*self._locate(path))
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
        if not self._allow_outside:
            self._check_inside(path)
        return Storage.for_path(path, self._storage_options, timeout=self._timeout)

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


_UNKNOWN_OUTCOME = "_pipestate_outcome_unknown"


def _check_checkpoint_name(checkpoint_name: object) -> None:
    """Refuse a ``checkpoint_name`` that is not a plain, non-empty file name."""
    if not isinstance(checkpoint_name, str) or not checkpoint_name:
        raise ValueError(
            f"checkpoint_name must be a non-empty str, got {checkpoint_name!r}; e.g. 'ckpt'"
        )
    if any(c in checkpoint_name for c in "/\\\0"):
        raise ValueError(
            f"checkpoint_name must be a file name without '/', '\\\\' or NUL, got "
            f"{checkpoint_name!r}; put subdirectories into `directory`"
        )


def _check_interval(step_counter: Any, checkpoint_interval: object) -> None:
    """Refuse a ``checkpoint_interval`` without a usable ``step_counter``."""
    if step_counter is None:
        raise ValueError("`step_counter` should be passed if `checkpoint_interval` is not None.")
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


def _state_filename_for(latest_filename: object, checkpoint_name: str) -> str:
    """The state file's name, refused when it is the name of one of the checkpoints' files."""
    filename = state_filename(latest_filename)
    if re.fullmatch(re.escape(checkpoint_name) + rf"-[0-9]+(\.index|{SHARD_SUFFIX})?", filename):
        raise ValueError(
            f"latest_filename {filename!r} has the name of a checkpoint file of "
            f"checkpoint_name {checkpoint_name!r}; choose another, e.g. 'checkpoint'"
        )
    return filename
