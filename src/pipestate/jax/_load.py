"""``restore_pytree``: one object of a checkpoint, read as a new pytree."""

from __future__ import annotations

import os
from typing import Any

from pipestate.checkpoint._adapters import VALUE
from pipestate.checkpoint._index import Node, node_paths
from pipestate.checkpoint._locate import locate
from pipestate.checkpoint._paths import index_path
from pipestate.checkpoint._pytree_form import (
    PYTREE,
    check_structure,
    flatten_plain,
    nested_from_paths,
    structure_text,
)
from pipestate.checkpoint._reader import CheckpointReader
from pipestate.checkpoint._state_api import latest_checkpoint
from pipestate.checkpoint._storage import Storage, as_path
from pipestate.checkpoint._values import attribute_key, escape_name, node_key
from pipestate.errors import CheckpointKeyError, CheckpointMismatchError, NotFoundError
from pipestate.jax._arrays import restore_leaf
from pipestate.jax._pytree import rebuild

__all__ = ["restore_pytree"]

_MAX_LISTED = 20
_PLAIN_TAGS = frozenset({"dict", "tuple", "items", "array", "scalar", "sharded"})


def restore_pytree(
    path: str | os.PathLike[str], target: Any = None, *, key: str | None = None
) -> Any:
    """Read one object of a checkpoint as a new pytree, of ``target``'s structure and placement.

    The object is a pytree saved by ``Checkpoint(params=tree)`` or a plain
    value (a dict or list of NumPy arrays, a ``Variable``), so a NumPy-only
    checkpoint's dict can be read as a pytree too. Nothing else in the
    checkpoint is read; of a sharded array, each device reads only the saved
    chunks its shard overlaps.

    Args:
        path: A checkpoint prefix (``"ckpt/ckpt-3"``), or a directory whose
            state file names the latest checkpoint (a ``CheckpointManager``'s).
        target: The pytree to restore into: its structure, and each leaf's
            shape, dtype and placement. ``jax.Array`` leaves give arrays of their
            sharding (uncommitted ones: uncommitted, on the default device);
            ``jax.ShapeDtypeStruct`` leaves of their sharding, or uncommitted on
            the default device when they have none; NumPy leaves NumPy arrays;
            Python scalars Python scalars. Values of another dtype are cast to
            the target's. ``None``: the saved leaves as NumPy arrays, in nested
            dicts (dict keys and attributes) and lists (sequence indices).
        key: The ``/``-separated name path of the object in the checkpoint
            (``"params"``, ``"model/params"``), each name escaped as in the
            checkpoint's keys: ``.`` written ``..`` and ``/`` written ``./``
            (the object ``"enc/dec"`` of ``state`` is ``"state/enc./dec"``;
            messages show names so). ``None``: the only pytree or plain
            container value in the checkpoint.

    Returns:
        The new pytree.

    Raises:
        TypeError: For a ``path`` or ``key`` of the wrong type.
        ValueError: For a ``key`` that names no object (empty), or has a
            ``.`` not followed by ``.`` or ``/``.
        NotFoundError: When there is no checkpoint at ``path``.
        CheckpointKeyError: When no object has the name ``key``, or ``key`` is
            ``None`` and the checkpoint holds no pytree or several (the
            message lists their names).
        CheckpointMismatchError: When the target's structure differs from the
            saved one (naming missing and extra key paths) or a leaf's shape does.
        CorruptCheckpointError: When the checkpoint is damaged.

    Example:
        >>> rows = NamedSharding(mesh, P("data"))  # doctest: +SKIP
        >>> target = {"w": jax.ShapeDtypeStruct((8, 4), "float32", sharding=rows)}  # doctest: +SKIP
        >>> params = restore_pytree("runs/exp1", target, key="params")  # doctest: +SKIP
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"path must be a checkpoint prefix or directory (str or os.PathLike), got {path!r:.80} "
            f"of type {type(path).__name__}"
        )
    if key is not None and not isinstance(key, str):
        raise TypeError(f"key must be a str such as 'params' or None, got {key!r:.80}")
    names = None if key is None else split_key(key)
    reader = _open(path)
    try:
        return _restore(reader, target, names)
    finally:
        reader.close()


def split_key(key: str) -> tuple[str, ...]:
    """The names of an object's key (``"state/enc./dec"``: ``("state", "enc/dec")``), split on
    the ``/`` that are not escaped and unescaped (``..`` is ``.``, ``./`` is ``/``); ``/`` at
    either end is ignored.

    Raises:
        ValueError: When ``key`` names no object, or has a ``.`` that escapes nothing.
    """
    names: list[str] = []
    name: list[str] = []
    i = 0
    while i < len(key):
        char = key[i]
        if char == "/":
            names.append("".join(name))
            name = []
        elif char == ".":
            following = key[i + 1 : i + 2]
            if following not in (".", "/"):
                raise ValueError(
                    f"key {key!r:.200} has a '.' at position {i} that escapes nothing: names in "
                    "a key are escaped as in the checkpoint's keys, '.' written '..' and '/' "
                    f"written './' (e.g. {key[: i + 1] + '.' + key[i + 1 :]!r:.200})"
                )
            name.append(following)
            i += 1
        else:
            name.append(char)
        i += 1
    names.append("".join(name))
    while names and not names[0]:
        names.pop(0)
    while names and not names[-1]:
        names.pop()
    if not names:
        raise ValueError(f"key must name an object such as 'params', got {key!r:.200}")
    return tuple(names)


def _open(path: str | os.PathLike[str]) -> CheckpointReader:
    display = as_path(path, "path")
    storage, fs_path = Storage.for_path(display)
    if not storage.isfile(index_path(fs_path)) and storage.isdir(fs_path):
        latest = latest_checkpoint(display)
        if latest is None:
            raise NotFoundError(
                f"no checkpoint in directory {display!r}: it has no state file naming one; pass "
                "a checkpoint prefix such as 'ckpt/ckpt-1'"
            )
        display = latest
    found = locate(display, "path")
    if found.kind != "object":
        raise NotFoundError(
            f"{found.display!r} is a flat safetensors file, not an object-graph checkpoint; "
            "read it with safetensors.numpy.load_file"
        )
    return CheckpointReader(found.storage, found.path, display=found.display)


def _is_pytree_like(node: Node) -> bool:
    if PYTREE in node.attributes:
        return True
    if set(node.attributes) != {VALUE}:
        return False
    encoded = node.attributes[VALUE]
    return isinstance(encoded, list) or (
        isinstance(encoded, dict) and len(encoded) == 1 and next(iter(encoded)) in _PLAIN_TAGS
    )


def _listed(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    if len(names) > _MAX_LISTED:
        shown += f", ... ({len(names) - _MAX_LISTED} more)"
    return shown or "(none)"


def _find(reader: CheckpointReader, key: tuple[str, ...] | None) -> tuple[int, tuple[str, ...]]:
    paths = node_paths(reader.nodes)
    if key is None:
        found = [i for i, node in enumerate(reader.nodes) if _is_pytree_like(node)]
        names = sorted(node_key(paths[i]) for i in found)
        if len(found) != 1:
            raise CheckpointKeyError(
                f"checkpoint {reader.display!r} holds {len(found)} pytrees ({_listed(names)}); "
                "pass key= to choose one"
            )
        return found[0], paths[found[0]]
    nid = 0
    walked: list[str] = []
    for name in key:
        children = reader.nodes[nid].children
        if name not in children:
            raise CheckpointKeyError(
                f"checkpoint {reader.display!r} has no object {node_key((*walked, name))!r}; "
                f"{node_key(tuple(walked)) or 'the root'} holds "
                f"{_listed(sorted(escape_name(c) for c in children))}"
            )
        walked.append(name)
        nid = children[name]
    node = reader.nodes[nid]
    if not _is_pytree_like(node) and len(node.attributes) != 1:
        raise CheckpointMismatchError(
            f"the object {node_key(key)!r} of checkpoint {reader.display!r} is a "
            f"{node.kind:.100}, not a pytree or a value"
        )
    return nid, paths[nid]


def _restore(reader: CheckpointReader, target: Any, key: tuple[str, ...] | None) -> Any:
    nid, path = _find(reader, key)
    node = reader.nodes[nid]
    where = f"{node_key(path)!r} of checkpoint {reader.display!r}"

    def decode(name: str, lazy: bool = True) -> Any:
        return reader.decode(
            node.attributes[name],
            where=attribute_key(path, name),
            copy=not lazy,
            lazy_arrays=lazy,
        )

    if PYTREE in node.attributes:
        leaves = {name: decode(name) for name in node.attributes if name != PYTREE}
        structure = decode(PYTREE, lazy=False)
        paths = check_structure(structure, leaves, f"checkpoint {reader.display!r}")
        if target is None:
            return nested_from_paths(
                paths, leaves, where, lambda value: restore_leaf(value, None, "a leaf", where)
            )
        return rebuild(target, leaves, where, structure_text(structure))
    (name,) = node.attributes
    if target is None:
        return decode(name, lazy=False)
    leaves = flatten_plain(decode(name))
    return rebuild(target, leaves, where, f"a saved {node.kind:.100}")
