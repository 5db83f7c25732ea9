"""``Checkpoint`` and ``CheckpointableSaver``: saving and restoring an object graph."""

from __future__ import annotations

import dataclasses
import operator
import time
from collections.abc import Collection
from typing import Any

import numpy as np

from pipestate.checkpoint._adapters import adapt
from pipestate.checkpoint._auto import AutoTrackable, can_track
from pipestate.checkpoint._format import DEFAULT_MAX_SHARD_BYTES, CheckpointReader, write_checkpoint
from pipestate.checkpoint._graph import GraphView
from pipestate.checkpoint._locate import locate
from pipestate.checkpoint._names import NameBasedFile, restore_by_name
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
        fsync: Sync files and directories to disk before the save returns.

    Raises:
        ValueError: For a non-positive ``max_shard_bytes``.

    Example:
        >>> CheckpointOptions(max_shard_bytes=64 << 20)
        CheckpointOptions(max_shard_bytes=67108864, fsync=True)
    """

    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
    fsync: bool = True

    def __post_init__(self) -> None:
        n = self.max_shard_bytes
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"max_shard_bytes must be a positive int, got {n!r}")
        if not isinstance(self.fsync, bool):
            raise ValueError(f"fsync must be a bool, got {self.fsync!r}")


def _options(options: CheckpointOptions | None) -> CheckpointOptions:
    if options is None:
        return CheckpointOptions()
    if not isinstance(options, CheckpointOptions):
        raise TypeError(f"options must be a CheckpointOptions or None, got {options!r}")
    return options


def _write(graph: GraphView, prefix: str, options: CheckpointOptions | None) -> str:
    opts = _options(options)
    nodes, arrays = graph.serialize()
    storage, fs_prefix = Storage.for_path(prefix)
    write_checkpoint(
        storage, fs_prefix, nodes, arrays, max_shard_bytes=opts.max_shard_bytes, fsync=opts.fsync
    )
    return prefix


def _restore(
    graph: GraphView,
    save_path: object,
    *,
    optional: Collection[Trackable] = (),
    optional_root_children: Collection[str] = (),
    optional_by_name: Collection[Trackable] = (),
) -> LoadStatus:
    if save_path is None:
        return InitializationOnlyStatus(graph.root)
    found = locate(save_path)
    if found.kind == "names":
        file = NameBasedFile(found.storage, found.path, display=found.display)
        try:
            return restore_by_name(graph, file, (*optional, *optional_by_name))
        finally:
            file.close()  # name-based restores are not deferred: nothing reads it later
    reader = CheckpointReader(found.storage, found.path, display=found.display)
    root_children = reader.nodes[0].children
    skip = {root_children[n] for n in optional_root_children if n in root_children}
    session = RestoreSession(reader, graph, optional_nodes=skip)
    try:
        session.restore(graph.root, 0)
    except BaseException:
        session.expect_partial = True  # the error says it all; no warning about leftovers
        raise
    return CheckpointLoadStatus(session, graph, optional)


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

    def __repr__(self) -> str:
        return f"CheckpointableSaver(root={self._graph.root!r})"

    def save(
        self,
        file_prefix: Any,
        checkpoint_number: Any = None,
        *,
        options: CheckpointOptions | None = None,
    ) -> str:
        """Write a checkpoint at ``file_prefix``, with ``-N`` appended for ``checkpoint_number=N``.

        Args:
            file_prefix: A local path or fsspec URL prefix; directories are created.
            checkpoint_number: An int ``>= 0`` appended as ``-N``, or ``None``.
            options: Shard size and fsync settings.

        Returns:
            The checkpoint's path, to pass to :meth:`restore`.

        Raises:
            TypeError, ValueError: For a bad prefix, number or value to save.
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
        return _write(self._graph, prefix, options)

    def restore(self, save_path: Any) -> LoadStatus:
        """Restore from ``save_path`` (a checkpoint prefix, or a flat safetensors file by name).

        Returns:
            A :class:`CheckpointLoadStatus`, a :class:`NameBasedSaverStatus`, or
            an :class:`InitializationOnlyStatus` when ``save_path`` is ``None``.

        Raises:
            NotFoundError: When there is no checkpoint at ``save_path``.
            CorruptCheckpointError: When the files are damaged.
            CheckpointMismatchError: When a value does not fit its object.
        """
        return _restore(self._graph, save_path)


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

    def save(self, file_prefix: Any, *, options: CheckpointOptions | None = None) -> str:
        """Save to ``<file_prefix>-<n>`` after incrementing ``save_counter`` to ``n``.

        The ``checkpoint`` state file in the prefix's directory is then
        replaced so that it names this checkpoint.

        Args:
            file_prefix: A local path or fsspec URL prefix.
            options: Shard size and fsync settings.

        Returns:
            The checkpoint's path, e.g. ``ckpt/model-3``.

        Raises:
            TypeError, ValueError: For a bad prefix or a value that cannot be saved.
        """
        prefix = as_path(file_prefix, "file_prefix")
        counter = self.save_counter
        number = int(counter.numpy()) + 1
        # The counter is part of the graph: it is saved with its new value.
        counter.assign(number)
        path = f"{prefix}-{number}"
        try:
            _write(self._graph(), path, options)
        except BaseException:
            counter.assign(number - 1)
            raise
        storage, fs_path = Storage.for_path(path)
        directory, basename = storage.split(fs_path)
        write_state(
            storage,
            directory,
            CheckpointState(basename, [basename], [time.time()]),
            fsync=_options(options).fsync,
        )
        return path

    def write(self, file_prefix: Any, *, options: CheckpointOptions | None = None) -> str:
        """Write exactly ``file_prefix``: no counter, no state file.

        Returns:
            ``file_prefix``, to pass to :meth:`read`.

        Raises:
            TypeError, ValueError: For a bad prefix or a value that cannot be saved.
        """
        return _write(self._graph(), as_path(file_prefix, "file_prefix"), options)

    def restore(self, save_path: Any) -> LoadStatus:
        """Restore from ``save_path`` (as :meth:`save` returned it), ``save_counter`` included.

        Dependencies missing now are restored when they are added. Use
        :meth:`read` for checkpoints made by :meth:`write`, which have no
        save counter.

        Returns:
            A status (see :class:`CheckpointLoadStatus`); ``restore(None)``
            returns an :class:`InitializationOnlyStatus`.

        Raises:
            NotFoundError: When there is no checkpoint at ``save_path``.
            CorruptCheckpointError: When the files are damaged.
            CheckpointMismatchError: When a value does not fit its object.
        """
        if save_path is None:
            return InitializationOnlyStatus(self._graph().root)
        # A flat name-based file never has a save counter, so it is optional there.
        return _restore(self._graph(), save_path, optional_by_name=(self.save_counter,))

    def read(self, save_path: Any) -> LoadStatus:
        """Restore from ``save_path`` without expecting a ``save_counter`` on either side.

        Returns:
            A status, as :meth:`restore`.

        Raises:
            NotFoundError, CorruptCheckpointError, CheckpointMismatchError: As :meth:`restore`.
        """
        counter = self._dependencies().get("save_counter")
        return _restore(
            self._graph(),
            save_path,
            optional=(counter,) if counter is not None else (),
            optional_root_children=("save_counter",),
        )
