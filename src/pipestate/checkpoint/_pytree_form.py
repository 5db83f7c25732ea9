"""The saved form of a JAX pytree, read without JAX (see :mod:`pipestate.jax._pytree`).

A pytree is saved as one object with one attribute per leaf, named by the
leaf's key path as ``jax.tree_util.keystr`` writes it, and the attribute
``PYTREE``: ``{"leaves": [[name, entries], ...], "treedef": text}``, each
leaf's key path as typed entries (``["key", k]``, ``["index", i]``,
``["attr", name]``, ``["flat", i]``). Checked here, and rebuilt into nested
dicts and lists for readers without a target (a plain dict restored from a
pytree, ``restore_pytree`` without one).

A structure is consistent when each leaf's name is the ``keystr`` text of
its entries, no leaf's path runs through or repeats another's, no node has
both indexed children (sequence or flattened indices) and named ones (dict
keys or attributes), and a leaf's value is an array or a scalar (or the
saved form of a PRNG key array). Sequence indices may skip positions: a
child without leaves (``None``, ``optax.EmptyState()``) saves none, and is
``None`` where it is rebuilt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from pipestate.checkpoint._reader import SavedArray
from pipestate.checkpoint._values import MAX_DEPTH
from pipestate.errors import CorruptCheckpointError

__all__ = [
    "PYTREE",
    "ROOT_LEAF",
    "check_structure",
    "flatten_plain",
    "is_saved_key",
    "nested_from_paths",
    "plain_from_saved",
    "structure_problem",
    "structure_text",
]

PYTREE = "PYTREE"
ROOT_LEAF = "LEAF"
TREEDEF_CHARS = 2000
# Positions of sequences rebuilt without a target that no saved leaf fills (children without
# leaves), at most: a hostile index cannot make a reader allocate an unbounded list.
MAX_SKIPPED = 1 << 20
_KEY_FIELDS = frozenset({"prng_impl", "key_data"})
_INDEXED = frozenset({"index", "flat"})


def bounded(text: str) -> str:
    """``text`` cut to at most ``TREEDEF_CHARS`` characters."""
    return text if len(text) <= TREEDEF_CHARS else text[: TREEDEF_CHARS - 3] + "..."


def structure_text(attribute: object) -> str:
    """The saved structure's text for messages (``"?"`` when the attribute lacks it)."""
    if isinstance(attribute, dict) and isinstance(attribute.get("treedef"), str):
        return bounded(attribute["treedef"])
    return "?"


def check_structure(attribute: object, leaves: Mapping[str, Any], where: str) -> list[Any]:
    """The saved leaves' paths (``[name, entries]`` pairs) of a ``PYTREE`` attribute, checked
    against the saved leaves (``leaves``: name to decoded value).

    Raises:
        CorruptCheckpointError: When it is malformed, names other leaves than
            saved, is inconsistent (see :func:`structure_problem`), or a leaf's
            value is a container rather than an array or a scalar.
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
                or (kind in _INDEXED and type(part) is int and part >= 0)
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
    problem = structure_problem(paths)
    if problem is not None:
        raise CorruptCheckpointError(f"{where}: the saved pytree structure is corrupt: {problem}")
    for name, value in leaves.items():
        if not _is_leaf_value(value):
            raise CorruptCheckpointError(
                f"{where}: saved pytree leaf {name!r:.100} holds {type(value).__name__} "
                f"{value!r:.100}, not an array, a scalar or a PRNG key array"
            )
    return paths


def is_saved_key(value: object) -> bool:
    """Whether ``value`` is the saved form of a PRNG key array (its implementation's name
    and its key data)."""
    return (
        isinstance(value, dict)
        and value.keys() == _KEY_FIELDS
        and isinstance(value["prng_impl"], str)
        and isinstance(value["key_data"], (np.ndarray, SavedArray))
    )


def _is_leaf_value(value: object) -> bool:
    if isinstance(value, dict):
        return is_saved_key(value)
    return value is not None and not isinstance(value, (list, tuple, bytes))


def _entry_text(kind: str, part: Any) -> str:
    """An entry as ``jax.tree_util.keystr`` writes it (``str`` of its key class)."""
    if kind == "key":
        return f"[{part!r}]"
    if kind == "attr":
        return f".{part}"
    if kind == "index":
        return f"[{part}]"
    return f"[<flat index {part}>]"


def _ascii(text: str) -> str:
    # Which characters repr() escapes follows the Unicode database of the Python that
    # wrote the name; compared with every non-ASCII character escaped, names match across
    # Python versions (repr() escapes with the same \x, \u and \U forms).
    return text.encode("ascii", "backslashreplace").decode("ascii")


class _Node:
    """A node of the tree the saved key paths draw."""

    __slots__ = ("children", "indexed", "leaf", "named")

    def __init__(self) -> None:
        self.children: dict[tuple[bool, Any], _Node] = {}
        self.leaf = False
        self.indexed = False
        self.named = False


def structure_problem(paths: list[Any]) -> str | None:
    """What makes well-formed ``[name, entries]`` leaf paths inconsistent, or ``None``.

    A leaf whose name is not the ``keystr`` text of its entries (``"LEAF"``
    for a tree that is one leaf), a leaf whose path runs through, or is,
    another's (an index and a flattened index of one node count as the same
    place, as do a dict key and an attribute of one name: nested dicts and
    lists cannot tell them apart), a node with both indexed and named
    children, or sequences with more than :data:`MAX_SKIPPED` positions
    without leaves in all.
    """
    root = _Node()
    for name, entries in paths:
        if not entries and len(paths) > 1:
            return f"the leaf {ROOT_LEAF!r} (the whole tree) is saved next to other leaves"
        try:
            expected = "".join(_entry_text(kind, part) for kind, part in entries) or ROOT_LEAF
        except ValueError:  # an int too long for its text
            return f"leaf {name!r:.100} has a key path entry too long to name"
        if _ascii(name) != _ascii(expected):
            return (
                f"leaf {name!r:.100} is saved under another name than its key path "
                f"{expected!r:.100}"
            )
        node = root
        for kind, part in entries:
            if node.leaf:
                return f"leaf {name!r:.100} has its path through another leaf"
            indexed = kind in _INDEXED
            node.indexed |= indexed
            node.named |= not indexed
            if node.indexed and node.named:
                return (
                    f"leaf {name!r:.100} is a named child of a node that has indexed children "
                    "too, or an indexed child of one that has named children"
                )
            node = node.children.setdefault((indexed, part), _Node())
        if node.leaf or node.children:
            return f"leaf {name!r:.100} is at the place of another leaf or above one"
        node.leaf = True
    skipped = 0
    pending = [root]
    while pending:
        node = pending.pop()
        pending.extend(node.children.values())
        if node.indexed:
            skipped += max(part for _, part in node.children) + 1 - len(node.children)
            if skipped > MAX_SKIPPED:
                return f"its sequences have more than {MAX_SKIPPED} positions without leaves"
    return None


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


class _Leaf:
    """A leaf among the nested dicts being built (its value may be a dict: a PRNG key's)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def nested_from_paths(
    paths: list[Any],
    leaves: Mapping[str, Any],
    where: str,
    own: Callable[[Any], Any] = lambda value: value,
) -> Any:
    """The saved leaves (each passed through ``own``) in nested dicts and lists, rebuilt from
    their key paths (checked by :func:`check_structure`): dict keys and attributes give
    dicts, indices lists, with ``None`` at positions no leaf fills.

    Raises:
        CorruptCheckpointError: When one leaf's path runs through another leaf.
    """
    if len(paths) == 1 and not paths[0][1]:
        return own(leaves[paths[0][0]])
    root: dict[Any, Any] = {}
    for name, entries in paths:
        if not entries:
            raise CorruptCheckpointError(f"{where}: saved pytree leaves overlap at {name!r}")
        node = root
        for kind, part in entries[:-1]:
            child = node.setdefault((kind in _INDEXED, part), {})
            if isinstance(child, _Leaf):
                raise CorruptCheckpointError(f"{where}: saved pytree leaves overlap at {name!r}")
            node = child
        last = (entries[-1][0] in _INDEXED, entries[-1][1])
        if last in node:
            raise CorruptCheckpointError(f"{where}: saved pytree leaves overlap at {name!r}")
        node[last] = _Leaf(own(leaves[name]))
    return _containers(root)


def _containers(node: Any) -> Any:
    if isinstance(node, _Leaf):
        return node.value
    if node and all(indexed for indexed, _ in node):
        out: list[Any] = [None] * (max(part for _, part in node) + 1)
        for (_, part), child in node.items():
            out[part] = _containers(child)
        return out
    return {part: _containers(child) for (_, part), child in node.items()}


def _key_data(value: Any) -> Any:
    if is_saved_key(value):
        data = value["key_data"]
        return data.full() if isinstance(data, SavedArray) else data
    return value


def plain_from_saved(values: Mapping[str, Any], where: str) -> Any:
    """A saved pytree's leaves (its attributes, ``PYTREE`` among them) in nested dicts and
    lists, for a plain value restored from it: a PRNG key array gives its key data.

    Raises:
        CorruptCheckpointError: When the saved structure is malformed or inconsistent.
    """
    leaves = {name: value for name, value in values.items() if name != PYTREE}
    paths = check_structure(values[PYTREE], leaves, where)
    return nested_from_paths(paths, leaves, where, _key_data)
