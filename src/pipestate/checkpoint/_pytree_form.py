"""The saved form of a JAX pytree, read without JAX (see :mod:`pipestate.jax._pytree`).

A pytree is saved as one object with one attribute per leaf, named by the
leaf's key path as ``jax.tree_util.keystr`` writes it, and the attribute
``PYTREE``: ``{"leaves": [[name, entries], ...], "treedef": text}``, each
leaf's key path as typed entries (``["key", k]``, ``["index", i]``,
``["attr", name]``, ``["flat", i]``). Checked here, and rebuilt into nested
dicts and lists for readers without a target (a plain dict restored from a
pytree, ``restore_pytree`` without one).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from pipestate.checkpoint._values import MAX_DEPTH
from pipestate.errors import CorruptCheckpointError

__all__ = [
    "PYTREE",
    "ROOT_LEAF",
    "check_structure",
    "flatten_plain",
    "nested_from_paths",
    "structure_text",
]

PYTREE = "PYTREE"
ROOT_LEAF = "LEAF"
TREEDEF_CHARS = 2000


def bounded(text: str) -> str:
    """``text`` cut to at most ``TREEDEF_CHARS`` characters."""
    return text if len(text) <= TREEDEF_CHARS else text[: TREEDEF_CHARS - 3] + "..."


def structure_text(attribute: object) -> str:
    """The saved structure's text for messages (``"?"`` when the attribute lacks it)."""
    if isinstance(attribute, dict) and isinstance(attribute.get("treedef"), str):
        return bounded(attribute["treedef"])
    return "?"


def check_structure(attribute: object, leaves: Collection[str], where: str) -> list[Any]:
    """The saved leaves' paths (``[name, entries]`` pairs) of a ``PYTREE`` attribute, checked.

    Raises:
        CorruptCheckpointError: When it is malformed or names other leaves than saved.
    """
    paths = attribute.get("leaves") if isinstance(attribute, dict) else None
    if not isinstance(paths, list) or not isinstance(attribute, dict):
        raise CorruptCheckpointError(f"{where}: the saved pytree structure is malformed")
    names = []
    for item in paths:
        ok = isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
        entries = item[1] if ok else None
        if not ok or not isinstance(entries, list) or len(entries) > MAX_DEPTH:
            raise CorruptCheckpointError(f"{where}: malformed saved pytree leaf {item!r:.200}")
        for e in entries:
            kind, part = e if isinstance(e, list) and len(e) == 2 else (None, None)
            if not (
                (kind == "key" and type(part) in (str, int))
                or (kind == "attr" and type(part) is str)
                or (kind in ("index", "flat") and type(part) is int and part >= 0)
            ):
                raise CorruptCheckpointError(
                    f"{where}: malformed key path entry {e!r:.100} of saved pytree leaf "
                    f"{item[0]!r:.100}"
                )
        names.append(item[0])
    if sorted(names) != sorted(leaves) or len(set(names)) != len(names):
        raise CorruptCheckpointError(
            f"{where}: the saved pytree structure names other leaves than the saved ones"
        )
    return paths


def flatten_plain(value: Any) -> dict[str, Any]:
    """A plain value's leaves (not dicts, lists, tuples or ``None``) by the names
    ``jax.tree_util.keystr`` gives their key paths (``"LEAF"`` for a value that is one leaf)."""
    out: dict[str, Any] = {}
    _flatten(value, "", out, 0)
    return out


def _flatten(value: Any, prefix: str, out: dict[str, Any], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CorruptCheckpointError(f"a saved value nests more than {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}[{k!r}]", out, depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}[{i}]", out, depth + 1)
    elif value is not None:
        out[prefix or ROOT_LEAF] = value


def nested_from_paths(
    paths: list[Any],
    leaves: dict[str, Any],
    where: str,
    own: Callable[[Any], Any] = lambda value: value,
) -> Any:
    """The saved leaves (each passed through ``own``) in nested dicts and lists, rebuilt from
    their key paths: dict keys and attributes give dicts, indices lists.

    Raises:
        CorruptCheckpointError: When one leaf's path runs through another leaf.
    """
    root: dict[Any, Any] = {}
    for name, entries in paths:
        value = own(leaves[name])
        if not entries:
            return value
        node = root
        for kind, part in entries[:-1]:
            child = node.setdefault((kind in ("index", "flat"), part), {})
            if not isinstance(child, dict):
                raise CorruptCheckpointError(f"{where}: saved pytree leaves overlap at {name!r}")
            node = child
        last = (entries[-1][0] in ("index", "flat"), entries[-1][1])
        if last in node:
            raise CorruptCheckpointError(f"{where}: saved pytree leaves overlap at {name!r}")
        node[last] = value
    return _containers(root)


def _containers(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(indexed for indexed, _ in node):
        return [_containers(node[k]) for k in sorted(node, key=lambda k: k[1])]
    return {part: _containers(v) for (_, part), v in node.items()}
