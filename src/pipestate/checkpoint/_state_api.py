"""TensorFlow's functions over a directory's state file: ``latest_checkpoint`` and friends.

The state file (``checkpoint`` unless named otherwise) lists a directory's
checkpoints in TensorFlow's text format (see :mod:`._state_file`). Paths inside
the directory are stored relative to it and returned joined to the directory
as the caller spelled it (see :mod:`._paths`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from pipestate.checkpoint._paths import (
    index_path,
    relative_checkpoint_path,
    resolve_checkpoint_path,
    state_filename,
)
from pipestate.checkpoint._state_file import CheckpointState, read_state, write_state
from pipestate.checkpoint._storage import Storage, as_path
from pipestate.errors import CorruptCheckpointError

__all__ = [
    "get_checkpoint_state",
    "latest_checkpoint",
    "read_resolved_state",
    "update_checkpoint_state",
]


def read_resolved_state(
    storage: Storage, fs_dir: str, directory: str, filename: str
) -> CheckpointState | None:
    """The state file in ``directory`` with its paths joined to ``directory``; ``None`` if absent.

    Raises:
        CorruptCheckpointError: When the file is damaged or names no checkpoint.
    """
    for attempt in range(3):
        storage.refresh(fs_dir)
        try:
            state = read_state(storage, fs_dir, filename)
            break
        except OSError as err:
            # Replaced while being read (s3fs's FileExpired): read the new one, which is whole.
            if type(err).__name__ != "FileExpired" or attempt == 2:
                raise
    if state is None:
        return None
    if not state.model_checkpoint_path:
        raise CorruptCheckpointError(
            f"Invalid checkpoint state loaded from {directory!r}: its state file "
            f"{filename!r} names no model_checkpoint_path"
        )
    return CheckpointState(
        resolve_checkpoint_path(directory, state.model_checkpoint_path),
        [resolve_checkpoint_path(directory, p) for p in state.all_model_checkpoint_paths],
        list(state.all_model_checkpoint_timestamps),
        state.last_preserved_timestamp,
    )


def get_checkpoint_state(
    checkpoint_dir: Any,
    latest_filename: str | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> CheckpointState | None:
    """The :class:`CheckpointState` of ``checkpoint_dir``, as ``tf.train.get_checkpoint_state``.

    Relative paths in the file are joined to ``checkpoint_dir``.

    Args:
        checkpoint_dir: A local directory or an fsspec URL.
        latest_filename: The state file's name; ``"checkpoint"`` by default.
        storage_options: Arguments of the fsspec filesystem (credentials, endpoint).

    Returns:
        The state, or ``None`` when the directory has no state file.

    Raises:
        TypeError, ValueError: For a bad directory or file name.
        CorruptCheckpointError: When the state file is damaged (TensorFlow
            logs and returns ``None`` here; a damaged file is reported rather
            than silently starting training over).

    Example:
        >>> import pipestate as ps
        >>> ckpt = ps.Checkpoint(step=1)
        >>> path = ckpt.save("/tmp/doc-state/ckpt")
        >>> get_checkpoint_state("/tmp/doc-state").model_checkpoint_path == path
        True
    """
    directory = as_path(checkpoint_dir, "checkpoint_dir")
    filename = state_filename(latest_filename)
    storage, fs_dir = Storage.for_path(directory, storage_options)
    return read_resolved_state(storage, fs_dir, directory, filename)


def latest_checkpoint(
    checkpoint_dir: Any,
    latest_filename: str | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> str | None:
    """The newest checkpoint in ``checkpoint_dir``, as ``tf.train.latest_checkpoint``.

    Args:
        checkpoint_dir: A local directory or an fsspec URL.
        latest_filename: The state file's name; ``"checkpoint"`` by default.
        storage_options: Arguments of the fsspec filesystem (credentials, endpoint).

    Returns:
        The checkpoint's path (to pass to ``Checkpoint.restore``), or ``None``
        when there is no state file or its newest checkpoint has no index.

    Raises:
        TypeError, ValueError: For a bad directory or file name.
        CorruptCheckpointError: When the state file is damaged.

    Example:
        >>> import pipestate as ps
        >>> path = ps.Checkpoint(step=1).save("/tmp/doc-latest/ckpt")
        >>> ps.latest_checkpoint("/tmp/doc-latest") == path
        True
    """
    directory = as_path(checkpoint_dir, "checkpoint_dir")
    filename = state_filename(latest_filename)
    storage, fs_dir = Storage.for_path(directory, storage_options)
    state = read_resolved_state(storage, fs_dir, directory, filename)
    if state is None:
        return None
    path = state.model_checkpoint_path
    path_storage, fs_path = Storage.for_path(path, storage_options)
    return path if path_storage.isfile(index_path(fs_path)) else None


def _timestamps(value: object) -> list[float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            f"all_model_checkpoint_timestamps must be a sequence of numbers or None, got {value!r}"
        )
    out = []
    for t in value:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise ValueError(
                "all_model_checkpoint_timestamps must hold finite numbers (seconds since the "
                f"epoch), got {t!r}"
            )
        out.append(float(t))
    return out


def update_checkpoint_state(
    save_dir: Any,
    model_checkpoint_path: Any,
    all_model_checkpoint_paths: Iterable[Any] | None = None,
    latest_filename: str | None = None,
    all_model_checkpoint_timestamps: Iterable[float] | None = None,
    last_preserved_timestamp: float | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    fsync: bool = True,
) -> None:
    """Replace the state file of ``save_dir`` atomically, as ``tf.train.update_checkpoint_state``.

    Paths are local paths (relative ones to the working directory, as
    returned by ``save()``) or URLs; those inside ``save_dir`` are stored
    relative to it. ``model_checkpoint_path`` is appended to
    ``all_model_checkpoint_paths`` when it is not its last element.

    Args:
        save_dir: The directory (local or fsspec URL) holding the checkpoints.
        model_checkpoint_path: The newest checkpoint.
        all_model_checkpoint_paths: The checkpoints kept, oldest first.
        latest_filename: The state file's name; ``"checkpoint"`` by default.
        all_model_checkpoint_timestamps: Their save times, seconds since the epoch.
        last_preserved_timestamp: When the last checkpoint kept for good was saved.
        storage_options: Arguments of the fsspec filesystem.
        fsync: Sync the file and the directory before returning.

    Raises:
        TypeError: For arguments of the wrong type.
        ValueError: When the timestamps do not pair up with the paths.
        RuntimeError: When a checkpoint path is the state file itself.
        OSError: When the storage fails.
    """
    directory = as_path(save_dir, "save_dir")
    filename = state_filename(latest_filename)
    model_path = as_path(model_checkpoint_path, "model_checkpoint_path")
    if all_model_checkpoint_paths is None:
        paths: list[str] = []
    elif isinstance(all_model_checkpoint_paths, (str, bytes)) or not isinstance(
        all_model_checkpoint_paths, Iterable
    ):
        raise TypeError(
            "all_model_checkpoint_paths must be a sequence of paths or None, got "
            f"{all_model_checkpoint_paths!r}"
        )
    else:
        paths = [as_path(p, "all_model_checkpoint_paths[i]") for p in all_model_checkpoint_paths]
    if not paths or paths[-1] != model_path:
        paths.append(model_path)
    stamps = (
        []
        if all_model_checkpoint_timestamps is None
        else _timestamps(all_model_checkpoint_timestamps)
    )
    if stamps and len(stamps) != len(paths):
        raise ValueError(
            "Checkpoint timestamps, if provided, must match checkpoint paths (got paths "
            f"{paths} and timestamps {stamps})"
        )
    preserved = None
    if last_preserved_timestamp is not None:
        preserved = _timestamps([last_preserved_timestamp])[0]
    if not isinstance(fsync, bool):
        raise TypeError(f"fsync must be a bool, got {fsync!r}")
    storage, fs_dir = Storage.for_path(directory, storage_options)
    relative = relative_checkpoint_path(directory, model_path)
    if relative == filename:
        raise RuntimeError(
            f"Save path {model_path!r} conflicts with path used for checkpoint state. "
            "Please use a different save path."
        )
    state = CheckpointState(
        relative, [relative_checkpoint_path(directory, p) for p in paths], stamps, preserved
    )
    write_state(storage, fs_dir, state, filename, fsync=fsync)
