"""Automatic tracking: attributes, lists and dicts become dependencies.

``AutoTrackable`` tracks each public attribute whose value can be checkpointed:
trackables, adaptable objects (random generators, Stateful objects), plain
Python values and NumPy arrays. Lists and dicts assigned to attributes are
replaced by a ``TrackableList`` / ``TrackableDict``, which saves itself in one
of two ways, decided at save time from its contents:

* only plain values (or empty): one value, ``VALUE``, restored in place;
* otherwise: one dependency per element, named ``"0"``, ``"1"``, ... or by
  the dict's keys, with plain elements adapted one by one.

Where JAX is imported, a value that is a JAX pytree (it holds a ``jax.Array``,
or pytree nodes other than dict, list and tuple: named tuples such as optax
states, registered dataclasses) is not wrapped: it becomes one dependency, a
pytree slot (see :mod:`pipestate.jax._pytree`), restored by rebinding it to a
new pytree of the same structure.
"""

from __future__ import annotations

import functools
import sys
import weakref
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, SupportsIndex, TypeVar

from pipestate.checkpoint._adapters import VALUE, PythonValue, adapt
from pipestate.checkpoint._pytree_form import PYTREE, plain_from_saved
from pipestate.checkpoint._trackable import Trackable
from pipestate.checkpoint._values import Value, is_plain_value

__all__ = [
    "AutoTrackable",
    "TrackableDict",
    "TrackableList",
    "as_dependency",
    "can_track",
    "wrap_container",
]

_T = TypeVar("_T")


def _is_pytree(value: Any) -> bool:
    """Whether ``value`` is saved as a JAX pytree (never imports JAX: only where it is imported)."""
    if "jax" not in sys.modules or isinstance(value, Trackable):
        return False
    from pipestate.jax._pytree import is_pytree

    return is_pytree(value)


def _pytree_slot(slot: PythonValue) -> Trackable:
    from pipestate.jax._pytree import PyTreeSlot

    return PyTreeSlot(slot)


def wrap_container(value: Any) -> Any:
    """Replace a plain ``list`` / ``dict`` by its tracking wrapper (other values are unchanged;
    a JAX pytree stays as it is)."""
    if type(value) not in (list, dict) or _is_pytree(value):
        return value
    return _wrap_plain(value)


def _wrap_plain(value: Any) -> Any:
    if type(value) is list:
        return TrackableList(value)
    if type(value) is dict:
        return TrackableDict(value)
    return value


def _wrap_element(value: Any) -> Any:
    # Nested containers of plain values stay plain: they are saved inside their parent's value.
    return value if is_plain_value(value) else wrap_container(value)


def can_track(value: Any) -> bool:
    """Whether ``value`` can be a dependency (directly, wrapped, or through an adapter)."""
    value = wrap_container(value)
    return (
        isinstance(value, Trackable)
        or is_plain_value(value)
        or _is_pytree(value)
        or adapt(value) is not None
    )


def as_dependency(
    value: Any,
    current: Trackable | None,
    make_slot: Callable[[], PythonValue],
    *,
    pytree: bool | None = None,
) -> Trackable | None:
    """The dependency for a (wrapped) value held in a slot, reusing ``current`` when it still fits.

    ``pytree`` says whether the value is a JAX pytree, where the caller knows.
    Returns ``None`` when the value cannot be checkpointed.
    """
    if isinstance(value, Trackable):
        return value
    if pytree if pytree is not None else _is_pytree(value):
        if getattr(current, "_pipestate_pytree", False):
            return current
        return _pytree_slot(make_slot())
    if is_plain_value(value):
        return current if isinstance(current, PythonValue) else make_slot()
    if current is not None and getattr(current, "wrapped", None) is value:
        return current
    return adapt(value)


def _alive(ref: weakref.ref[_T]) -> _T:
    obj = ref()
    if obj is None:
        raise ReferenceError("the object holding this value no longer exists")
    return obj


def _attribute_slot(owner: Trackable, name: str) -> PythonValue:
    ref = weakref.ref(owner)

    def get() -> Value:
        return getattr(_alive(ref), name)

    def set_(value: Value) -> None:
        object.__setattr__(_alive(ref), name, value)

    return PythonValue(get, set_, name)


class AutoTrackable(Trackable):
    """A trackable whose public attributes are tracked on assignment.

    Attributes whose names start with ``_`` are never tracked. Assigning a
    value that cannot be checkpointed (a function, a lock, ...) stores it
    without tracking; reassigning or deleting an attribute updates the
    dependency. Restoring a plain value rebinds the attribute; lists and
    dicts are restored in place.

    Example:
        >>> import numpy as np
        >>> from pipestate.checkpoint import Variable
        >>> model = AutoTrackable()
        >>> model.kernel = Variable(np.zeros((2, 2)))
        >>> model.layers = [Variable(1.0), Variable(2.0)]
        >>> model.epoch = 3
        >>> sorted(model._trackable_children())
        ['epoch', 'kernel', 'layers']
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or isinstance(getattr(type(self), name, None), property):
            object.__setattr__(self, name, value)
            return
        pytree = _is_pytree(value)
        if not pytree:
            value = _wrap_plain(value)
        object.__setattr__(self, name, value)
        current = self._dependencies().get(name)
        dependency = as_dependency(
            value, current, lambda: _attribute_slot(self, name), pytree=pytree
        )
        if dependency is None:
            self._untrack(name)
        elif dependency is not current:
            self._track(name, dependency, overwrite=True)

    def __delattr__(self, name: str) -> None:
        object.__delattr__(self, name)
        self._untrack(name)

    if TYPE_CHECKING:  # attributes are dynamic; let type checkers accept them

        def __getattr__(self, name: str) -> Any: ...


class _Container(Trackable):
    """Shared behaviour of ``TrackableList`` and ``TrackableDict``."""

    def _entries(self) -> Iterable[tuple[Any, Any]]:
        raise NotImplementedError

    _BASE: ClassVar[type[list[Any]] | type[dict[Any, Any]]]
    """The builtin container, whose methods read and write slots without re-wrapping."""

    def _slot(self, key: Any) -> PythonValue:
        """The entry at ``key`` as a plain value, held weakly so it never keeps ``self`` alive."""
        ref = weakref.ref(self)
        base: Any = self._BASE  # list or dict: their methods, not the wrapping overrides

        def get() -> Value:
            return base.__getitem__(_alive(ref), key)

        def set_(value: Value) -> None:
            base.__setitem__(_alive(ref), key, value)

        return PythonValue(get, set_, f"[{key!r}]")

    def _replace_contents(self, value: Any) -> None:
        raise NotImplementedError

    def _is_plain(self) -> bool:
        return all(is_plain_value(v) and not _is_pytree(v) for _, v in self._entries())

    def _trackable_children(self) -> Mapping[str, Trackable]:
        if self._is_plain():
            return {}
        cache: dict[Any, Trackable] = self.__dict__.setdefault("_pipestate_adapters", {})
        children: dict[str, Trackable] = {}
        for key, value in self._entries():
            if not isinstance(key, str) and isinstance(self, dict):
                raise TypeError(
                    f"a TrackableDict holding trackables needs str keys (they name the "
                    f"dependencies), got {key!r} of type {type(key).__name__}"
                )
            dependency = as_dependency(value, cache.get(key), functools.partial(self._slot, key))
            if dependency is None:
                raise TypeError(
                    f"{type(self).__name__} entry {key!r} is {value!r:.80} of type "
                    f"{type(value).__name__}, which cannot be checkpointed; store trackables, "
                    "random generators, Stateful objects or plain values"
                )
            if not isinstance(value, Trackable):
                cache[key] = dependency
            children[str(key)] = dependency
        return children

    def _serialize_to_values(self) -> Mapping[str, Value]:
        if not self._is_plain():
            return {}
        return {VALUE: self._plain_copy()}

    def _plain_copy(self) -> Value:
        raise NotImplementedError

    def _value_names(self) -> Collection[str] | None:
        # Holding trackables, a saved plain value would drop them: leave it unused instead.
        return None if self._is_plain() else ()

    def _restore_from_values(self, values: Mapping[str, Value]) -> None:
        if VALUE in values:
            self._replace_contents(values[VALUE])
        elif PYTREE in values:
            # Saved as a JAX pytree (it held jax arrays then): its leaves, nested again,
            # a PRNG key array as its key data.
            where = f"the {type(self).__name__} restored from a saved pytree"
            self._replace_contents(plain_from_saved(values, where))
        elif values:
            raise TypeError(
                f"a {type(self).__name__} cannot be restored from saved attributes "
                f"{sorted(values)[:5]}"
            )

    def _changed(self) -> None:
        # A restore may be waiting for the index or key that was just filled.
        self._apply_all_deferred()


class TrackableList(_Container, list):  # type: ignore[type-arg]
    """A list tracked as a dependency: saved as one value, or element by element."""

    _BASE = list

    def __init__(self, values: Iterable[Any] = ()) -> None:
        list.__init__(self, (_wrap_element(v) for v in values))

    def _entries(self) -> Iterable[tuple[Any, Any]]:
        return enumerate(self)

    def _plain_copy(self) -> Value:
        return list(self)

    def _replace_contents(self, value: Any) -> None:
        if not isinstance(value, list):
            raise TypeError(
                f"a TrackableList cannot be restored from a saved {type(value).__name__}"
            )
        list.__setitem__(self, slice(None), value)

    def append(self, value: Any) -> None:
        list.append(self, _wrap_element(value))
        self._changed()

    def extend(self, values: Iterable[Any]) -> None:
        list.extend(self, (_wrap_element(v) for v in values))
        self._changed()

    def insert(self, index: SupportsIndex, value: Any) -> None:
        list.insert(self, index, _wrap_element(value))
        self._changed()

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            list.__setitem__(self, index, [_wrap_element(v) for v in value])
        else:
            list.__setitem__(self, index, _wrap_element(value))
        self._changed()

    def __iadd__(self, values: Iterable[Any]) -> TrackableList:  # type: ignore[misc]
        self.extend(values)
        return self

    def __repr__(self) -> str:
        return f"TrackableList({list.__repr__(self)})"


class TrackableDict(_Container, dict):  # type: ignore[type-arg]
    """A dict tracked as a dependency: saved as one value, or entry by entry (str keys)."""

    _BASE = dict

    def __init__(self, values: Mapping[Any, Any] | Iterable[tuple[Any, Any]] = ()) -> None:
        dict.__init__(self, values)
        for key, value in dict.items(self):
            dict.__setitem__(self, key, _wrap_element(value))

    def _entries(self) -> Iterable[tuple[Any, Any]]:
        return dict.items(self)

    def _plain_copy(self) -> Value:
        return dict(self)

    def _replace_contents(self, value: Any) -> None:
        if not isinstance(value, dict):
            raise TypeError(
                f"a TrackableDict cannot be restored from a saved {type(value).__name__}"
            )
        dict.clear(self)
        dict.update(self, value)

    def __setitem__(self, key: Any, value: Any) -> None:
        dict.__setitem__(self, key, _wrap_element(value))
        self._changed()

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            dict.__setitem__(self, key, _wrap_element(value))
        self._changed()

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return dict.__getitem__(self, key)

    def __repr__(self) -> str:
        return f"TrackableDict({dict.__repr__(self)})"
