"""Removing what interrupted saves left: data shards without an index, and temporaries.

A save writes its shards under their final names before the index that commits
them, so a crash leaves shards that no index names; and a save over an older
checkpoint at the same prefix leaves the older shards when their count differs.
"""

from __future__ import annotations

import re

from pipestate.checkpoint._index import parse_index
from pipestate.checkpoint._limits import INDEX_LIMIT, read_limited
from pipestate.checkpoint._paths import SHARD_SUFFIX, index_path
from pipestate.checkpoint._storage import Storage, temporary_pattern
from pipestate.errors import CheckpointError

__all__ = ["remove_interrupted_saves", "remove_leftovers"]


def remove_leftovers(storage: Storage, directory: str, basename: str, num_shards: int) -> None:
    """Remove shards of an older save at this prefix, and index temporaries of crashed saves."""
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
