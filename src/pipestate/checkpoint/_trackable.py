"""Trackables: objects with named dependencies and values to save.

A checkpoint is the graph of trackables reachable from a root through named
dependencies. Each trackable may save a few named values (see
:mod:`pipestate.checkpoint._values`) and restores them from a mapping of the
same shape. Restore matches objects by walking the graph from the root by
local names; a dependency that does not exist yet keeps its pending
restoration here until it is tracked.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol, runtime_checkable

from pipestate.checkpoint._values import Value

__all__ = ["DeferredRestoration", "Trackable", "TrackableProtocol"]


@runtime_checkable
class TrackableProtocol(Protocol):
    """The interface the checkpoint machinery uses on every object of the graph."""

    def _trackable_children(self) -> Mapping[str, Trackable]:
        """The object's dependencies by local name."""
        ...

    def _serialize_to_values(self) -> Mapping[str, Value]:
        """The values to save, by attribute name; may raise to refuse the save."""
        ...

    def _restore_from_values(self, values: Mapping[str, Value]) -> None:
        """Restore from the saved values of the attributes named by ``_value_names()``."""
        ...

    def _value_names(self) -> Collection[str] | None:
        """The attribute names restored, or ``None`` for "every saved attribute"."""
        ...


class DeferredRestoration(Protocol):
    """A restoration waiting for a dependency that does not exist yet."""

    @property
    def uid(self) -> int:
        """The restore's sequence number; a higher one is a newer restore."""
        ...

    def apply(self, trackable: Trackable) -> None:
        """Restore ``trackable`` (the new dependency) and its own dependencies."""
        ...


class Trackable:
    """Base class of objects that take part in object-graph checkpoints.

    A trackable has named dependencies (``_track(name, obj)``) and may save
    values. Subclasses override the value protocol:

    * ``_serialize_to_values()`` returns ``{attribute name: value}``; a value is
      plain Python data or NumPy arrays, nested in lists, tuples and dicts.
      It is called at save time, so it may raise to refuse a save.
    * ``_restore_from_values(values)`` receives the saved values.
    * ``_value_names()`` names the attributes restored; the default is every
      saved attribute when ``_restore_from_values`` is overridden, none otherwise.

    Example:
        >>> class Counter(Trackable):
        ...     def __init__(self) -> None:
        ...         self.count = 0
        ...     def _serialize_to_values(self):
        ...         return {"count": self.count}
        ...     def _restore_from_values(self, values):
        ...         self.count = values["count"]
        >>> parent = Trackable()
        >>> counter = parent._track("counter", Counter())
    """

    # Sequence number of the newest restore that assigned this object's values.
    _restore_uid: int = 0

    def _dependencies(self) -> dict[str, Trackable]:
        try:
            deps: dict[str, Trackable] = self.__dict__["_pipestate_deps"]
        except KeyError:
            deps = {}
            object.__setattr__(self, "_pipestate_deps", deps)
        return deps

    def _track(self, name: str, trackable: Trackable, *, overwrite: bool = False) -> Any:
        """Add ``trackable`` as the dependency ``name`` and return it.

        A restoration waiting for ``name`` is applied now.

        Args:
            name: The local name, unique among this object's dependencies.
            trackable: The dependency.
            overwrite: Replace an existing dependency of that name on purpose.

        Returns:
            ``trackable``.

        Raises:
            TypeError: When ``name`` is not a str or ``trackable`` is not a Trackable.
            ValueError: When ``name`` is empty, or already names another dependency
                and ``overwrite`` is false.
        """
        if not isinstance(name, str):
            raise TypeError(
                f"a dependency name must be a str, got {name!r} of type {type(name).__name__}"
            )
        if not name:
            raise ValueError(
                f"a dependency name must not be empty (adding {trackable!r} to {self!r})"
            )
        if not isinstance(trackable, Trackable):
            raise TypeError(
                f"dependency {name!r} of {self!r} must be a Trackable, got {trackable!r} of type "
                f"{type(trackable).__name__}"
            )
        deps = self._dependencies()
        existing = deps.get(name)
        if existing is not None and existing is not trackable and not overwrite:
            raise ValueError(
                f"{self!r} already has a dependency named {name!r} ({existing!r}); choose another "
                "name, or pass overwrite=True to replace it"
            )
        deps[name] = trackable
        self._apply_deferred(name, trackable)
        return trackable

    def _untrack(self, name: str) -> None:
        """Remove the dependency ``name`` if there is one."""
        self._dependencies().pop(name, None)

    def _lookup_dependency(self, name: str) -> Trackable | None:
        """The dependency called ``name``, or ``None``."""
        return self._trackable_children().get(name)

    def _trackable_children(self) -> Mapping[str, Trackable]:
        """The dependencies by local name, in the order they were added."""
        return self._dependencies()

    def _serialize_to_values(self) -> Mapping[str, Value]:
        """The values this object saves; none by default."""
        return {}

    def _restore_from_values(self, values: Mapping[str, Value]) -> None:
        """Restore this object's values; nothing to do by default."""

    def _restore_template(self) -> Mapping[str, Value]:
        """What this object holds now, where a restore needs it to shape saved values.

        A sharded tensor (DTensor) is restored with the sharding of the value
        this returns in its place. By default, the values it would save.
        """
        return self._serialize_to_values()

    def _value_names(self) -> Collection[str] | None:
        """Which saved attributes ``_restore_from_values`` takes (``None``: all of them)."""
        if type(self)._restore_from_values is Trackable._restore_from_values:
            return ()
        return None

    # -- deferred restoration ----------------------------------------------------
    def _deferred(self) -> dict[str, list[DeferredRestoration]]:
        try:
            pending: dict[str, list[DeferredRestoration]] = self.__dict__["_pipestate_deferred"]
        except KeyError:
            pending = {}
            object.__setattr__(self, "_pipestate_deferred", pending)
        return pending

    def _add_deferred(self, name: str, restoration: DeferredRestoration) -> None:
        """Keep ``restoration`` until a dependency called ``name`` is tracked."""
        waiting = self._deferred().setdefault(name, [])
        if all(r.uid != restoration.uid for r in waiting):
            waiting.append(restoration)

    def _apply_deferred(self, name: str, trackable: Trackable) -> None:
        """Apply the restorations waiting for ``name``, oldest first, so the newest wins."""
        pending = self.__dict__.get("_pipestate_deferred")
        if not pending or name not in pending:
            return
        for restoration in sorted(pending.pop(name), key=lambda r: r.uid):
            restoration.apply(trackable)

    def _apply_all_deferred(self) -> None:
        """Apply waiting restorations whose dependency now exists (for containers)."""
        pending = self.__dict__.get("_pipestate_deferred")
        if not pending:
            return
        children = self._trackable_children()
        for name in [n for n in pending if n in children]:
            self._apply_deferred(name, children[name])

    def __repr__(self) -> str:
        names = ", ".join(self._trackable_children())
        return f"{type(self).__name__}(dependencies=[{names}])"
