"""JAX pytrees as checkpoint dependencies: one object per pytree, one value per leaf.

``Checkpoint(params=tree, opt_state=optax_state)`` tracks each pytree as one
:class:`PyTreeSlot`. Its saved form is one attribute per leaf, named by the
leaf's key path as ``jax.tree_util.keystr`` writes it (``"['dense']['kernel']"``,
``"[0].mu['w']"``; a pytree that is one leaf names it ``"LEAF"``), plus the
attribute ``"PYTREE"``: the leaves' paths in flattening order, each a list of
typed entries (``["key", "w"]`` a dict key, ``["index", 0]`` a sequence index,
``["attr", "mu"]`` an attribute, ``["flat", 0]`` a flattened index), and a
bounded text of the tree's structure for messages::

    {"leaves": [["[0].mu['w']", [["index", 0], ["attr", "mu"], ["key", "w"]]], ...],
     "treedef": "PyTreeDef((CustomNode(namedtuple[ScaleByAdamState], ...)))"}

Leaves are NumPy arrays and scalars (ml_dtypes included), Python scalars and
strings, and ``jax.Array`` values (see :mod:`pipestate.jax._arrays`). A typed
PRNG key array (``jax.random.key``) is saved as ``{"prng_impl": "threefry2x32",
"key_data": <its key data>}``.

Restoring is functional: the attribute is rebound to a new pytree with the
structure, dtypes and shardings of the value it holds when restored (or when
it is assigned, for a restore deferred until then).
"""

from __future__ import annotations

import numbers
from collections.abc import Collection, Mapping
from typing import Any

import jax
import numpy as np
from jax.tree_util import DictKey, FlattenedIndexKey, GetAttrKey, SequenceKey, keystr

from pipestate.checkpoint._adapters import VALUE, PythonValue
from pipestate.checkpoint._pytree_form import (
    PYTREE,
    ROOT_LEAF,
    bounded,
    check_structure,
    flatten_plain,
    structure_problem,
    structure_text,
)
from pipestate.checkpoint._trackable import Trackable
from pipestate.checkpoint._values import MAX_DEPTH, Value
from pipestate.errors import CheckpointMismatchError
from pipestate.jax._arrays import is_key_array, restore_leaf, saved_key, saved_leaf

__all__ = ["PyTreeSlot", "is_pytree", "leaf_name", "rebuild", "saved_tree"]

_MAX_LISTED = 10
_LEAF_TYPES = (np.ndarray, np.generic, bool, numbers.Number, str)


# A ShapeDtypeStruct stands for an array to restore into (not one to save).
_JAX_LEAVES = (jax.Array, jax.ShapeDtypeStruct)


def _is_leaf_value(leaf: object) -> bool:
    if isinstance(leaf, _JAX_LEAVES):
        return True
    if isinstance(leaf, np.ndarray):
        return bool(leaf.dtype.kind != "O")
    return isinstance(leaf, _LEAF_TYPES)


def _builtin_only(value: object, depth: int = 0) -> bool:
    """Whether ``value`` is made of dicts, lists and tuples (exactly those types) and leaves."""
    if depth > MAX_DEPTH:
        return False
    kind = type(value)
    if kind is dict:
        return all(_builtin_only(v, depth + 1) for v in value.values())  # type: ignore[attr-defined]
    if kind is list or kind is tuple:
        return all(_builtin_only(v, depth + 1) for v in value)  # type: ignore[attr-defined]
    return value is None or _is_leaf_value(value)


def is_pytree(value: object) -> bool:
    """Whether ``value`` is saved as a pytree: it holds a ``jax.Array`` (or a
    ``jax.ShapeDtypeStruct``, to restore into), or its leaves are all
    arrays or scalars and it has pytree nodes other than dict, list and tuple (a named tuple,
    a registered dataclass). A dict or list with leaves of other kinds (trackables) is not:
    its entries are tracked one by one."""
    if isinstance(value, Trackable):
        return False
    try:
        leaves = jax.tree_util.tree_leaves(value)
    except Exception:  # a node that cannot be flattened is no pytree of ours
        return False
    has_jax = any(isinstance(leaf, _JAX_LEAVES) for leaf in leaves)
    if has_jax and type(value) not in (dict, list):
        return True
    if not all(_is_leaf_value(leaf) for leaf in leaves):
        # A dict or list of trackables and pytrees tracks each entry on its own; anything
        # else holding a jax array is a pytree that cannot be saved (the save says why).
        return has_jax and type(value) not in (dict, list)
    return has_jax or not _builtin_only(value)


def _entry(key: object, where: str) -> list[Any]:
    if isinstance(key, DictKey):
        if type(key.key) not in (str, int):
            raise TypeError(
                f"cannot save the pytree at {where!r}: dict key {key.key!r:.80} of type "
                f"{type(key.key).__name__} cannot be saved; use str or int keys"
            )
        return ["key", key.key]
    if isinstance(key, SequenceKey):
        return ["index", key.idx]
    if isinstance(key, GetAttrKey):
        return ["attr", key.name]
    if isinstance(key, FlattenedIndexKey):
        return ["flat", key.key]
    raise TypeError(
        f"cannot save the pytree at {where!r}: its key path entry {key!r:.80} is of an unknown "
        "kind (dict keys, sequence indices, attributes and flattened indices are saved)"
    )


def leaf_name(path: tuple[Any, ...]) -> str:
    """The attribute a leaf is saved under: its ``keystr``, or ``"LEAF"`` for a lone leaf."""
    return keystr(path) if path else ROOT_LEAF


def saved_tree(value: object, where: str) -> dict[str, Value]:
    """The attributes a pytree is saved as: one per leaf, and ``PYTREE``.

    Raises:
        TypeError: For a leaf that is not an array or a scalar, or a key path
            entry that cannot be saved.
        ValueError: When two leaves have the same key path text, the key paths
            cannot be rebuilt (see :func:`structure_problem`), or a leaf is a
            deleted (donated) array.
    """
    pairs, treedef = jax.tree_util.tree_flatten_with_path(value)
    out: dict[str, Value] = {}
    paths = []
    for path, leaf in pairs:
        name = leaf_name(path)
        if name in out or name == PYTREE:
            raise ValueError(
                f"cannot save the pytree at {where!r}: two leaves have the key path {name!r}"
            )
        if isinstance(leaf, jax.Array):
            out[name] = _saved_array(leaf, name, where)
        elif isinstance(leaf, jax.ShapeDtypeStruct):
            raise TypeError(
                f"cannot save the pytree at {where!r}: leaf {name} is a jax.ShapeDtypeStruct, "
                "which has no values; restore the checkpoint into it first (or assign arrays)"
            )
        elif _is_leaf_value(leaf):
            out[name] = leaf
        else:
            raise TypeError(
                f"cannot save the pytree at {where!r}: leaf {name} is {leaf!r:.80} of type "
                f"{type(leaf).__name__}; leaves must be jax or NumPy arrays, or scalars"
            )
        paths.append([name, [_entry(k, where) for k in path]])
    problem = structure_problem(paths)
    if problem is not None:
        # What a reader would refuse as corrupt is refused here (custom nodes' key paths).
        raise ValueError(
            f"cannot save the pytree at {where!r}: its key paths cannot be restored: {problem}"
        )
    out[PYTREE] = {"leaves": paths, "treedef": bounded(str(treedef))}
    return out


def _saved_array(leaf: jax.Array, name: str, where: str) -> Value:
    try:
        return saved_key(leaf) if is_key_array(leaf) else saved_leaf(leaf)
    except RuntimeError as err:
        if not leaf.is_deleted():
            raise
        raise ValueError(
            f"cannot save the pytree at {where!r}: leaf {name} is a deleted jax.Array (its "
            "buffer was donated to a jitted function, or deleted); save the arrays the step "
            "returned instead"
        ) from err


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    if len(names) > _MAX_LISTED:
        shown += f", ... ({len(names) - _MAX_LISTED} more)"
    return shown


def rebuild(target: object, saved: Mapping[str, Any], where: str, structure: str) -> Any:
    """A new pytree with ``target``'s structure, each leaf restored from ``saved[leaf name]``.

    Raises:
        CheckpointMismatchError: When the leaves differ (naming the missing
            and extra key paths) or a leaf's shape does (naming it and both shapes).
    """
    pairs, treedef = jax.tree_util.tree_flatten_with_path(target)
    names = [leaf_name(path) for path, _ in pairs]
    wanted = set(names)
    missing = [n for n in names if n not in saved]
    extra = [n for n in saved if n not in wanted]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"the checkpoint lacks {len(missing)} leaves: {_listed(missing)}")
        if extra:
            parts.append(f"the target lacks {len(extra)} saved leaves: {_listed(extra)}")
        raise CheckpointMismatchError(
            f"cannot restore {where}: the target's pytree structure differs from the saved "
            f"one; {'; '.join(parts)}. Saved structure: {structure}"
        )
    leaves = [restore_leaf(saved[n], leaf, n, where) for n, (_, leaf) in zip(names, pairs)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


class PyTreeSlot(Trackable):
    """A JAX pytree held in a slot of another object (an attribute, a list index, a dict key).

    Saved as one value per leaf (``jax.Array`` leaves from their devices, in
    chunks when sharded) and the tree's structure. Restoring rebinds the slot
    to a new pytree built for the value the slot holds then: its structure,
    and each leaf's shape, dtype and sharding (jax arrays are immutable; read
    the attribute again after a restore).
    """

    _pipestate_pytree = True
    # Arrays are copied to devices (or into NumPy arrays) as the tree is rebuilt.
    _copies_restored_values = True
    _reads_saved_arrays = True

    def __init__(self, slot: PythonValue) -> None:
        self._slot = slot

    def _checkpoint_kind(self) -> str:
        try:
            return f"PyTree({type(self._slot._get()).__name__})"
        except Exception:
            return "PyTree"

    def _serialize_to_values(self) -> Mapping[str, Value]:
        return saved_tree(self._slot._get(), self._slot._where)

    def _values_held_in_part(self) -> Mapping[str, Value]:
        """The leaves this process holds only part of (arrays on other processes' devices
        too): all a rank other than 0 writes of a pytree in a distributed save, under the
        names ``_serialize_to_values`` gives them. The other leaves are not copied to the host."""
        where = self._slot._where
        out: dict[str, Value] = {}
        for path, leaf in jax.tree_util.tree_flatten_with_path(self._slot._get())[0]:
            if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
                name = leaf_name(path)
                out[name] = _saved_array(leaf, name, where)
        return out

    def _value_names(self) -> Collection[str] | None:
        return None

    def _restore_from_values(self, values: Mapping[str, Value]) -> None:
        where = f"the pytree {self._slot._where}"
        target = self._slot._get()
        if PYTREE not in values and set(values) == {VALUE}:
            # Saved as a plain value (a dict of NumPy arrays, before it held a jax array).
            leaves = flatten_plain(values[VALUE])
            self._slot._set(rebuild(target, leaves, where, "a saved plain value"))
            return
        if PYTREE not in values:
            raise CheckpointMismatchError(
                f"cannot restore {where}: the checkpoint holds no pytree there (it was saved "
                f"as another kind of value, with attributes {sorted(values)[:5]})"
            )
        leaves = {name: value for name, value in values.items() if name != PYTREE}
        check_structure(values[PYTREE], leaves, where)
        self._slot._set(rebuild(target, leaves, where, structure_text(values[PYTREE])))

    def __repr__(self) -> str:
        return f"PyTreeSlot({self._slot._where})"
