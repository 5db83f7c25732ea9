"""``Checkpoint`` and ``CheckpointableSaver``: saving and restoring an object graph."""

from __future__ import annotations

import dataclasses
import operator
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from pipestate._progress import Progress
from pipestate._validate import check_bool
from pipestate.checkpoint._adapters import adapt
from pipestate.checkpoint._async import AsyncWriter, HostBuffers
from pipestate.checkpoint._auto import AutoTrackable, can_track
from pipestate.checkpoint._dist_write import follow, lead_write
from pipestate.checkpoint._distributed import (
    DEFAULT_TIMEOUT,
    SaveRound,
    current_coordinator,
    lead,
    placement,
)
from pipestate.checkpoint._graph import GraphView, Sharded
from pipestate.checkpoint._locate import locate
from pipestate.checkpoint._names import NameBasedFile, restore_by_name
from pipestate.checkpoint._reader import CheckpointReader
from pipestate.checkpoint._restore import (
    CheckpointLoadStatus,
    InitializationOnlyStatus,
    LoadStatus,
    RestoreSession,
)
from pipestate.checkpoint._state_file import CheckpointState, write_state
from pipestate.checkpoint._storage import Storage, as_path
from pipestate.checkpoint._trackable import Trackable
from pipestate.checkpoint._variable import Variable
from pipestate.checkpoint._writer import DEFAULT_MAX_SHARD_BYTES, write_checkpoint, write_error
from pipestate.errors import CheckpointWriteError

__all__ = ["Checkpoint", "CheckpointOptions", "CheckpointableSaver", "TrackableSaver"]

_EXPECTED = (
    "a trackable object (a Trackable, a numpy.random.Generator / RandomState, a random.Random, "
    "an object with state_dict() and load_state_dict(), or a plain Python value)"
)


@dataclasses.dataclass(frozen=True)
class CheckpointOptions:
    """Options for writing checkpoints.

    Args:
        max_shard_bytes: Data shards hold at most this many bytes (an array
            larger than that gets a shard of its own). Defaults to 2 GiB.
        fsync: Sync files and directories to disk before the save commits.
        enable_async: Return from ``save()`` / ``write()`` once the values
            are copied to host memory, and write and commit them on a
            background thread (one save in flight; see ``Checkpoint.sync``).
        progress: Show the bytes written and the write speed (a tqdm bar
            when tqdm is installed, else a line on stderr) while saving.
        timeout: In a distributed job, the seconds a save waits for the
            slowest rank before it fails on every rank (``DistributedSaveError``
            naming the missing ranks). See ``docs/distributed.md``.
        distributed: ``None`` (the default): a save is distributed when the
            process belongs to a job of several ranks (``torch.distributed``
            initialized), and every rank must then make it; ``False``: this
            process saves alone (e.g. one file per rank, or rank 0 only).

    Raises:
        ValueError: For a non-positive ``max_shard_bytes`` or ``timeout``, or a non-bool flag.

    Example:
        >>> options = CheckpointOptions(max_shard_bytes=64 << 20, timeout=120)
        >>> options.max_shard_bytes, options.progress, options.distributed
        (67108864, False, None)
    """

    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
    fsync: bool = True
    enable_async: bool = False
    progress: bool = False
    timeout: float = DEFAULT_TIMEOUT
    distributed: bool | None = None

    def __post_init__(self) -> None:
        n = self.max_shard_bytes
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"max_shard_bytes must be a positive int, got {n!r}")
        t = self.timeout
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < float("inf"):
            raise ValueError(f"timeout must be a positive number of seconds, got {t!r}")
        if self.distributed is not None and not isinstance(self.distributed, bool):
            raise ValueError(f"distributed must be None or a bool, got {self.distributed!r}")
        for name in ("fsync", "enable_async", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")


def options_or_default(options: CheckpointOptions | None) -> CheckpointOptions:
    """``options``, or the defaults for ``None``; ``TypeError`` for anything else."""
    if options is None:
        return CheckpointOptions()
    if not isinstance(options, CheckpointOptions):
        raise TypeError(f"options must be a CheckpointOptions or None, got {options!r}")
    return options


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What one save writes: the index nodes and the prepared arrays.

    In a distributed save, ``round`` is this rank's part of it,
    ``per_rank`` the nodes whose values each rank saves for itself and
    ``sharded`` the DTensors of replicated nodes, whose chunks every rank writes.
    """

    nodes: list[dict[str, Any]]
    arrays: list[Any]
    per_rank: list[int] = dataclasses.field(default_factory=list)
    sharded: Sharded = dataclasses.field(default_factory=dict)
    round: SaveRound | None = None

    @classmethod
    def take(
        cls,
        graph: GraphView,
        *,
        buffers: HostBuffers | None = None,
        round_: SaveRound | None = None,
    ) -> Snapshot:
        """Serialize ``graph``; with ``buffers``, copy every array into them (an async save).

        A snapshot in ``buffers`` shares no memory with the live objects, and
        is valid until the next snapshot into the same buffers. With
        ``round_``, only what this rank saves is serialized; if that fails,
        the other ranks are told.
        """
        placement = round_.coordinator.placement if round_ is not None else None
        try:
            if buffers is None:
                return cls(*graph.serialize(placement=placement), round=round_)
            with buffers.snapshot() as copy:
                return cls(*graph.serialize(copy=copy, placement=placement), round=round_)
        except BaseException as err:
            if round_ is not None:
                round_.fail(round_.leader_step if round_.leader else "plan", err)
            raise

    def commit(
        self, storage: Storage, fs_prefix: str, display: str, options: CheckpointOptions
    ) -> None:
        """Write the shards, then the index (the commit); in a distributed save, rank 0's part.

        Raises:
            CheckpointWriteError: When the storage fails (full, read-only, ...).
            DistributedSaveError: When another rank is missing or failed.
        """
        bar = self._progress(display, options)
        on_bytes = bar.update if bar.enabled else None
        try:
            if self.round is None:
                write_checkpoint(
                    storage,
                    fs_prefix,
                    self.nodes,
                    self.arrays,
                    max_shard_bytes=options.max_shard_bytes,
                    fsync=options.fsync,
                    on_bytes=on_bytes,
                )
            else:
                lead_write(
                    self.round,
                    storage,
                    fs_prefix,
                    display,
                    self.nodes,
                    self.arrays,
                    self.per_rank,
                    self.sharded,
                    max_shard_bytes=options.max_shard_bytes,
                    fsync=options.fsync,
                    on_bytes=on_bytes,
                )
        except CheckpointWriteError:
            raise
        except OSError as err:
            raise write_error(err, display) from err
        finally:
            bar.close()

    def _progress(self, display: str, options: CheckpointOptions) -> Progress:
        total = sum(array.nbytes for array in self.arrays)
        return Progress(total, f"saving {display}", unit="B", enabled=options.progress)

    def follow(self, storage: Storage, display: str, options: CheckpointOptions) -> str:
        """A rank other than 0: write this rank's shards where rank 0 says; wait for the commit.

        Returns:
            The path of the checkpoint rank 0 committed.

        Raises:
            CheckpointWriteError: When the storage fails here.
            DistributedSaveError: When rank 0 or another rank failed or is missing.
        """
        assert self.round is not None
        assert not self.round.leader
        bar = self._progress(display, options)
        try:
            return follow(
                self.round,
                storage,
                display,
                self.nodes,
                self.arrays,
                self.per_rank,
                self.sharded,
                max_shard_bytes=options.max_shard_bytes,
                fsync=options.fsync,
                on_bytes=bar.update if bar.enabled else None,
            )
        except CheckpointWriteError:
            raise
        except OSError as err:
            raise write_error(err, display) from err
        finally:
            bar.close()


def save_rank(options: CheckpointOptions) -> int | None:
    """This process's rank in the job a save with ``options`` is made by, ``None`` alone."""
    if options.distributed is False:
        return None
    coordinator = current_coordinator()
    return None if coordinator is None else coordinator.rank


def failed_job(err: Exception) -> Callable[[], str]:
    """An async job that fails with ``err``: a snapshot's failure, reported as the
    other ranks report the save's (at the next save or sync)."""

    def job() -> str:
        raise err

    return job


def start_round(what: str, options: CheckpointOptions) -> SaveRound | None:
    """This rank's part of a distributed save of ``what``, or ``None`` when it saves alone."""
    if options.distributed is False:
        return None
    coordinator = current_coordinator()
    if coordinator is None:
        return None
    return SaveRound(coordinator, what, options.timeout)


def run_round(
    round_: SaveRound | None,
    snapshot: Snapshot,
    storage: Storage,
    display: str,
    options: CheckpointOptions,
    leader_part: Callable[[], str],
) -> str:
    """Run ``leader_part`` (the whole save, alone or on rank 0) or follow rank 0's save."""
    if round_ is None:
        return leader_part()
    if round_.leader:
        return lead(round_, leader_part)
    return snapshot.follow(storage, display, options)


def _write(
    graph: GraphView,
    prefix: str,
    options: CheckpointOptions | None,
    storage_options: Mapping[str, Any] | None,
    writer: AsyncWriter,
) -> str:
    opts = options_or_default(options)
    storage, fs_prefix = Storage.for_path(prefix, storage_options)
    with writer.saving:
        writer.wait()
        round_ = start_round(prefix, opts)
        buffers = writer.buffers if opts.enable_async else None
        try:
            snapshot = Snapshot.take(graph, buffers=buffers, round_=round_)
        except Exception as err:
            if not (opts.enable_async and round_ is not None):
                raise
            # Reported as the other ranks report the save: at the next save or sync.
            writer.submit(prefix, failed_job(err))
            return prefix

        def commit() -> str:
            snapshot.commit(storage, fs_prefix, prefix, opts)
            return prefix

        def job() -> str:
            return run_round(round_, snapshot, storage, prefix, opts, commit)

        if not opts.enable_async:
            return job()
        writer.submit(prefix, job)
    return prefix


def _restore(
    graph: GraphView,
    save_path: object,
    *,
    optional: Collection[Trackable] = (),
    optional_root_children: Collection[str] = (),
    optional_by_name: Collection[Trackable] = (),
    storage_options: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> LoadStatus:
    if save_path is None:
        return InitializationOnlyStatus(graph.root)
    found = locate(save_path, storage_options=storage_options)
    if found.kind == "names":
        file = NameBasedFile(found.storage, found.path, display=found.display)
        try:
            return restore_by_name(_flat_view(graph, file), file, (*optional, *optional_by_name))
        finally:
            file.close()  # name-based restores are not deferred: nothing reads it later
    reader = CheckpointReader(
        found.storage, found.path, display=found.display, placement=placement()
    )
    root_children = reader.nodes[0].children
    skip = {root_children[n] for n in optional_root_children if n in root_children}
    session = RestoreSession(reader, graph, optional_nodes=skip)
    total = sum(t.length for t in reader.tensors.values())
    bar = Progress(total, f"reading {found.display}", unit="B", enabled=progress)
    reader.on_bytes = bar.update if bar.enabled else None
    try:
        session.restore(graph.root, 0)
    except BaseException:
        session.expect_partial = True  # the error says it all; no warning about leftovers
        raise
    finally:
        # Deferred restorations read later, without the display.
        reader.on_bytes = None
        bar.close()
    return CheckpointLoadStatus(session, graph, optional)


def _flat_view(graph: GraphView, file: NameBasedFile) -> GraphView:
    """The graph a flat file restores: a lone dependency's own, when the file's names lack it.

    ``Checkpoint(model=module).restore("model.safetensors")`` then reads a
    state dict saved by anyone (``fc.weight``), as ``CheckpointableSaver(module)`` does.
    """
    children = {n: c for n, c in graph.children(graph.root).items() if n != "save_counter"}
    if len(children) != 1 or graph.root._serialize_to_values():
        return graph
    ((name, child),) = children.items()
    if any(t == name or t.startswith(f"{name}/") for t in file.tensors):
        return graph
    return GraphView(child)


class CheckpointableSaver:
    """Saves and restores the object graph reachable from ``root``.

    Args:
        root: A trackable, or an object an adapter makes trackable (a random
            generator, an object with ``state_dict()`` / ``load_state_dict()``).

    Raises:
        ValueError: When ``root`` is not trackable.

    Example:
        >>> import numpy as np
        >>> model = AutoTrackable()
        >>> model.kernel = Variable(np.ones(3))
        >>> saver = CheckpointableSaver(model)
        >>> path = saver.save("/tmp/doc-saver/model", checkpoint_number=7)
        >>> path
        '/tmp/doc-saver/model-7'
        >>> saver.restore(path).assert_consumed()
        CheckpointLoadStatus('/tmp/doc-saver/model-7', matched 2 of 2 objects)
    """

    def __init__(self, root: Any) -> None:
        trackable = adapt(root)
        if trackable is None:
            raise ValueError(
                f"CheckpointableSaver was expecting {_EXPECTED} as its root, got {root!r:.100} of "
                f"type {type(root).__name__}; plain values must live in a Checkpoint or an "
                "AutoTrackable attribute"
            )
        self._graph = GraphView(trackable)
        self._writer = AsyncWriter()

    def __repr__(self) -> str:
        return f"CheckpointableSaver(root={self._graph.root!r})"

    def save(
        self,
        file_prefix: Any,
        checkpoint_number: Any = None,
        *,
        options: CheckpointOptions | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> str:
        """Write a checkpoint at ``file_prefix``, with ``-N`` appended for ``checkpoint_number=N``.

        Args:
            file_prefix: A local path or fsspec URL prefix; directories are created.
            checkpoint_number: An int ``>= 0`` appended as ``-N``, or ``None``.
            options: Shard size, fsync and async settings.
            storage_options: Arguments of the fsspec filesystem (credentials,
                endpoint); see :meth:`Checkpoint.save`.

        Returns:
            The checkpoint's path, to pass to :meth:`restore`.

        Raises:
            TypeError, ValueError: For a bad prefix, number or value to save.
            CheckpointWriteError: When the storage fails; nothing is committed.
        """
        prefix = as_path(file_prefix, "file_prefix")
        if checkpoint_number is not None:
            if isinstance(checkpoint_number, bool):
                raise TypeError(
                    f"checkpoint_number must be an int or None, got {checkpoint_number!r}"
                )
            try:
                number = operator.index(checkpoint_number)
            except TypeError:
                raise TypeError(
                    f"checkpoint_number must be an int or None, got {checkpoint_number!r} of type "
                    f"{type(checkpoint_number).__name__}"
                ) from None
            if number < 0:
                raise ValueError(f"checkpoint_number must be >= 0, got {number}")
            prefix = f"{prefix}-{number}"
        return _write(self._graph, prefix, options, storage_options, self._writer)

    def restore(
        self, save_path: Any, *, storage_options: Mapping[str, Any] | None = None
    ) -> LoadStatus:
        """Restore from ``save_path`` (a checkpoint prefix, or a flat safetensors file by name).

        Waits for an async save in flight first.

        Returns:
            A :class:`CheckpointLoadStatus`, a :class:`NameBasedSaverStatus`, or
            an :class:`InitializationOnlyStatus` when ``save_path`` is ``None``.

        Raises:
            NotFoundError: When there is no checkpoint at ``save_path``.
            CorruptCheckpointError: When the files are damaged, or larger than the
                size limits (``CheckpointTooLargeError``, see ``PIPESTATE_MAX_INDEX_BYTES``).
            CheckpointMismatchError: When a value does not fit its object.
            CheckpointWriteError: When an earlier async save failed.
        """
        self._writer.wait()
        return _restore(self._graph, save_path, storage_options=storage_options)

    def sync(self) -> None:
        """Wait until an async save in flight has committed.

        Raises:
            CheckpointWriteError: When that save failed (raised once).
        """
        self._writer.wait()


TrackableSaver = CheckpointableSaver


class Checkpoint(AutoTrackable):
    """Groups trackable objects and saves them as one checkpoint.

    The keyword arguments become dependencies under their names. With
    ``root``, the root object is saved as the graph's root and the keyword
    arguments are attached to it (without changing ``root`` itself).

    Args:
        root: An optional root object.
        **kwargs: Trackables, adaptable objects or plain values.

    Raises:
        ValueError: When a value is not trackable, when a keyword shadows a
            ``Checkpoint`` method, or when ``root`` already has a dependency of
            that name.

    Example:
        >>> import numpy as np
        >>> ckpt = Checkpoint(step=0, weights=Variable(np.zeros(2)))
        >>> path = ckpt.save("/tmp/doc-ckpt/ckpt")
        >>> path.endswith("ckpt-1")
        True
        >>> ckpt.step = 5
        >>> status = ckpt.restore(path).assert_consumed()
        >>> ckpt.step
        0
    """

    def __init__(self, root: Any = None, **kwargs: Any) -> None:
        root_trackable: Trackable | None = None
        if root is not None:
            root_trackable = adapt(root)
            if root_trackable is None:
                raise ValueError(
                    f"Checkpoint was expecting {_EXPECTED} for 'root', got {root!r:.100} of type "
                    f"{type(root).__name__}"
                )
        self._root = root_trackable
        self._writer = AsyncWriter()
        for name in sorted(kwargs):
            value = kwargs[name]
            if name.startswith("_"):
                raise ValueError(
                    f"Checkpoint keyword argument {name!r} starts with '_', and such attributes "
                    "are never tracked; drop the underscore"
                )
            if hasattr(Checkpoint, name):
                raise ValueError(
                    f"Checkpoint keyword argument {name!r} would shadow Checkpoint.{name}; "
                    "choose another name"
                )
            if not can_track(value):
                raise ValueError(
                    f"Checkpoint was expecting {_EXPECTED} for keyword argument {name!r}, got "
                    f"{value!r:.100} of type {type(value).__name__}"
                )
            if root_trackable is not None:
                existing = root_trackable._lookup_dependency(name)
                if existing is not None and getattr(existing, "wrapped", existing) is not value:
                    raise ValueError(
                        f"cannot create a Checkpoint with keyword argument {name!r} because "
                        f"root.{name} already exists"
                    )
            setattr(self, name, value)

    def __repr__(self) -> str:
        names = ", ".join(self._trackable_children())
        if self._root is not None:
            return f"Checkpoint(root={self._root!r}, dependencies=[{names}])"
        return f"Checkpoint(dependencies=[{names}])"

    def _graph(self) -> GraphView:
        # Built on demand: a view stored on self would make every Checkpoint a reference cycle.
        return GraphView(self._root, self) if self._root is not None else GraphView(self)

    @property
    def save_counter(self) -> Variable:
        """The number of ``save()`` calls, an int64 :class:`Variable` created on first use."""
        counter = self._dependencies().get("save_counter")
        if counter is None:
            counter = self._track("save_counter", Variable(0, dtype=np.int64))
        assert isinstance(counter, Variable)
        return counter

    def save(
        self,
        file_prefix: Any,
        *,
        options: CheckpointOptions | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> str:
        """Save to ``<file_prefix>-<n>`` after incrementing ``save_counter`` to ``n``.

        The ``checkpoint`` state file in the prefix's directory is then
        replaced so that it names this checkpoint. With
        ``CheckpointOptions(enable_async=True)`` this returns once the values
        are copied to host memory; writing, the commit and the state file
        follow on a background thread (see :meth:`sync`).

        Args:
            file_prefix: A local path or fsspec URL prefix.
            options: Shard size, fsync and async settings.
            storage_options: Arguments of the fsspec filesystem, e.g.
                ``{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}``
                for an S3-compatible server.

        Returns:
            The checkpoint's path, e.g. ``ckpt/model-3``.

        Raises:
            TypeError, ValueError: For a bad prefix or a value that cannot be saved.
            CheckpointWriteError: When the storage fails (nothing is committed
                and ``save_counter`` keeps its value), or an earlier async save failed.
        """
        opts = options_or_default(options)
        prefix = as_path(file_prefix, "file_prefix")
        with self._writer.saving:
            self._writer.wait()
            return self._save(prefix, opts, storage_options)

    def _save(
        self, prefix: str, opts: CheckpointOptions, storage_options: Mapping[str, Any] | None
    ) -> str:
        counter = self.save_counter
        number = int(counter.numpy()) + 1
        path = f"{prefix}-{number}"
        storage, fs_path = Storage.for_path(path, storage_options)
        # The counter is part of the graph: it is saved with its new value.
        counter.assign(number)
        round_ = start_round(path, opts)
        try:
            buffers = self._writer.buffers if opts.enable_async else None
            snapshot = Snapshot.take(self._graph(), buffers=buffers, round_=round_)
        except Exception as err:
            if opts.enable_async and round_ is not None:
                # Reported as the other ranks report the save: at the next save or sync.
                self._writer.submit(path, failed_job(err))
                return path
            counter.assign(number - 1)
            raise
        except BaseException:
            counter.assign(number - 1)
            raise

        def commit() -> str:
            snapshot.commit(storage, fs_path, path, opts)
            directory, basename = storage.split(fs_path)
            try:
                write_state(
                    storage,
                    directory,
                    CheckpointState(basename, [basename], [time.time()]),
                    fsync=opts.fsync,
                )
            except OSError as err:
                raise write_error(err, path) from err
            return path

        def job() -> str:
            return run_round(round_, snapshot, storage, path, opts, commit)

        if opts.enable_async:
            self._writer.submit(path, job)
            return path
        try:
            job()
        except BaseException:
            counter.assign(number - 1)
            raise
        return path

    def write(
        self,
        file_prefix: Any,
        *,
        options: CheckpointOptions | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> str:
        """Write exactly ``file_prefix``: no counter, no state file.

        Args:
            file_prefix: A local path or fsspec URL prefix.
            options: Shard size, fsync and async settings (see :meth:`save`).
            storage_options: Arguments of the fsspec filesystem (see :meth:`save`).

        Returns:
            ``file_prefix``, to pass to :meth:`read`.

        Raises:
            TypeError, ValueError: For a bad prefix or a value that cannot be saved.
            CheckpointWriteError: When the storage fails, or an earlier async save failed.
        """
        return _write(
            self._graph(),
            as_path(file_prefix, "file_prefix"),
            options,
            storage_options,
            self._writer,
        )

    def restore(
        self,
        save_path: Any,
        *,
        storage_options: Mapping[str, Any] | None = None,
        progress: bool = False,
    ) -> LoadStatus:
        """Restore from ``save_path`` (as :meth:`save` returned it), ``save_counter`` included.

        Dependencies missing now are restored when they are added. Use
        :meth:`read` for checkpoints made by :meth:`write`, which have no
        save counter. Waits for an async save in flight first. ``progress=True``
        shows the bytes read and the read speed (tqdm, else a line on stderr).

        Returns:
            A status (see :class:`CheckpointLoadStatus`); ``restore(None)``
            returns an :class:`InitializationOnlyStatus`.

        Raises:
            NotFoundError: When there is no checkpoint at ``save_path``.
            CorruptCheckpointError: When the files are damaged, or larger than the
                size limits (``CheckpointTooLargeError``, see ``PIPESTATE_MAX_INDEX_BYTES``).
            CheckpointMismatchError: When a value does not fit its object.
            CheckpointWriteError: When an earlier async save failed.
        """
        show = check_bool("progress", progress, op="Checkpoint.restore") is True
        self._writer.wait()
        if save_path is None:
            return InitializationOnlyStatus(self._graph().root)
        # A flat name-based file never has a save counter, so it is optional there.
        return _restore(
            self._graph(),
            save_path,
            optional_by_name=(self.save_counter,),
            storage_options=storage_options,
            progress=show,
        )

    def read(
        self,
        save_path: Any,
        *,
        storage_options: Mapping[str, Any] | None = None,
        progress: bool = False,
    ) -> LoadStatus:
        """Restore from ``save_path`` without expecting a ``save_counter`` on either side.

        ``progress=True`` shows the bytes read, as :meth:`restore`.

        Returns:
            A status, as :meth:`restore`.

        Raises:
            NotFoundError, CorruptCheckpointError, CheckpointMismatchError,
            CheckpointWriteError: As :meth:`restore`.
        """
        show = check_bool("progress", progress, op="Checkpoint.read") is True
        self._writer.wait()
        counter = self._dependencies().get("save_counter")
        return _restore(
            self._graph(),
            save_path,
            optional=(counter,) if counter is not None else (),
            optional_root_children=("save_counter",),
            storage_options=storage_options,
            progress=show,
        )

    def sync(self) -> None:
        """Wait until an async save or write in flight has committed.

        A save with ``CheckpointOptions(enable_async=True)`` returns before
        its files are written; after ``sync()`` they are committed.

        Raises:
            CheckpointWriteError: When that save failed (each error is raised once).
        """
        self._writer.wait()
