"""Removing checkpoint files: old checkpoints, and what interrupted saves left.

A save writes its shards under their final names before the index that commits
them, so a crash leaves shards that no index names; a save over an older
checkpoint at the same prefix leaves the older shards when their count differs;
and a manager's save over an existing number leaves its aside copy (see
``ASIDE_SUFFIX``) when it is interrupted.
"""

from __future__ import annotations

import re

from pipestate.checkpoint._index import parse_index
from pipestate.checkpoint._limits import INDEX_LIMIT, read_limited
from pipestate.checkpoint._paths import ASIDE_SUFFIX, SHARD_SUFFIX, index_path
from pipestate.checkpoint._storage import Storage, temporary_pattern
from pipestate.errors import CheckpointError

__all__ = [
    "abort_interrupted_uploads",
    "delete_checkpoint",
    "remove_aside_leftovers",
    "remove_interrupted_saves",
    "remove_stale_files",
]


def remove_stale_files(storage: Storage, directory: str, basename: str, num_shards: int) -> None:
    """Remove what older saves at the committed checkpoint ``basename`` left in ``directory``.

    That is shards of another shard count than ``num_shards`` (an older
    checkpoint at this prefix), and index temporaries of crashed saves.
    """
    shards = re.compile(re.escape(basename) + SHARD_SUFFIX + "$")
    temporaries = re.compile(temporary_pattern(index_path(basename)))
    for name in storage.listdir(directory):
        match = shards.match(name)
        if (match and int(match.group(2)) != num_shards) or temporaries.fullmatch(name):
            storage.remove(storage.join(directory, name))


def remove_interrupted_saves(
    storage: Storage, directory: str, checkpoint_name: str, state_filename: str
) -> list[str]:
    """Remove what interrupted saves of ``<checkpoint_name>-<N>`` checkpoints left in ``directory``.

    That is data shards without an index, shards of another shard count than
    their index names (a save over an older checkpoint, interrupted after its
    commit), index temporaries, and temporaries of the state file
    ``state_filename``. Committed checkpoints and files of other names are
    never touched.

    Returns:
        The names of the files removed.
    """
    shard_re = re.compile(re.escape(checkpoint_name) + r"-([0-9]+)" + SHARD_SUFFIX + "$")
    temporary_re = re.compile(
        temporary_pattern(re.escape(checkpoint_name) + r"-[0-9]+\.index", escaped=True)
        + "|"
        + temporary_pattern(state_filename)
    )
    names = storage.listdir(directory)
    present = set(names)
    doomed = [name for name in names if temporary_re.fullmatch(name)]
    shards: dict[str, list[tuple[str, int]]] = {}
    for name in names:
        match = shard_re.match(name)
        if match is not None:
            basename = f"{checkpoint_name}-{match.group(1)}"
            shards.setdefault(basename, []).append((name, int(match.group(3))))
    for basename, found in shards.items():
        counts = {count for _, count in found}
        if index_path(basename) not in present:
            keep: set[int] = set()
        elif len(counts) > 1:
            keep = _indexed_count(storage, storage.join(directory, index_path(basename)), counts)
        else:
            keep = counts
        doomed += [name for name, count in found if count not in keep]
    for name in doomed:
        storage.remove(storage.join(directory, name))
    return doomed


def _indexed_count(storage: Storage, index: str, counts: set[int]) -> set[int]:
    """``{num_shards}`` of the index; all of ``counts`` when the index cannot be read."""
    try:
        num_shards, _, _ = parse_index(
            read_limited(storage, index, INDEX_LIMIT), f"checkpoint index {index!r}"
        )
    except (CheckpointError, OSError):
        return counts
    return {num_shards}


def delete_checkpoint(storage: Storage, prefix: str) -> None:
    """Delete the checkpoint ``prefix`` (a path on ``storage``): its index, then its shards."""
    directory, basename = storage.split(prefix)
    storage.remove(index_path(prefix))
    shard = re.compile(re.escape(basename) + SHARD_SUFFIX)
    for name in storage.listdir(directory):
        if shard.fullmatch(name):
            storage.remove(storage.join(directory, name))


def remove_aside_leftovers(
    storage: Storage, directory: str, checkpoint_name: str, named: set[str]
) -> list[str]:
    """Remove the files of aside copies of ``<checkpoint_name>-<N>`` that ``named`` does not list.

    That is their indexes, shards and index temporaries.

    Args:
        storage: The storage of ``directory``.
        directory: The directory, a path on ``storage``.
        checkpoint_name: The checkpoints' name before ``-<N>``.
        named: The checkpoints the state file names, as it stores them.

    Returns:
        Checkpoints to delete, as the state file would store them: while the
        state file names an aside copy, a checkpoint of its number that it does
        not name is a copy whose move into place was interrupted.
    """
    aside = re.compile(
        rf"({re.escape(checkpoint_name)}-[0-9]+{ASIDE_SUFFIX})"
        rf"(\.index|{SHARD_SUFFIX}|\.index\.tmp-[0-9a-f]{{32}})"
    )
    temporary = re.compile(
        temporary_pattern(
            re.escape(checkpoint_name) + rf"-[0-9]+{ASIDE_SUFFIX}\.index", escaped=True
        )
    )
    names = storage.listdir(directory)
    for name in names:
        match = aside.fullmatch(name)
        if (match and match.group(1) not in named) or temporary.fullmatch(name):
            storage.remove(storage.join(directory, name))
    aside_end = re.compile(ASIDE_SUFFIX + "$")
    moved = {aside_end.sub("", p) for p in named if aside_end.search(p)}
    return [base for base in moved if base not in named and index_path(base) in names]


def abort_interrupted_uploads(
    storage: Storage, directory: str, checkpoint_name: str, state_filename: str
) -> None:
    """Abort the uploads of checkpoint and state files that interrupted saves could not abort.

    They could not when the store was unreachable; only multipart object stores have them.
    """
    storage.abort_uploads(
        directory,
        re.compile(
            rf"{re.escape(checkpoint_name)}-[0-9]+({ASIDE_SUFFIX})?(\.index|{SHARD_SUFFIX})"
            rf"|{re.escape(state_filename)}"
        ),
    )
