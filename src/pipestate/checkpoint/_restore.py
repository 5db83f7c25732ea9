"""Restoring an object graph, deferred restoration, and the status objects ``restore()`` returns."""

from __future__ import annotations

import itertools
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Collection
from typing import Any

from pipestate.checkpoint._distributed import reshards
from pipestate.checkpoint._graph import GraphView, format_path, kind_of
from pipestate.checkpoint._index import node_paths
from pipestate.checkpoint._pytree_form import PYTREE
from pipestate.checkpoint._reader import CheckpointReader, gc_paused
from pipestate.checkpoint._trackable import Trackable
from pipestate.checkpoint._values import attribute_key
from pipestate.errors import CheckpointMismatchError

__all__ = [
    "CheckpointLoadStatus",
    "InitializationOnlyStatus",
    "LoadStatus",
    "RestoreSession",
    "next_restore_uid",
]

_uids = itertools.count(1)
_MAX_LISTED = 20
_JSON_SCALARS = frozenset({bool, int, float, str})

NO_CHECKPOINT_MESSAGE = "No checkpoint specified (save_path=None); nothing is being restored."


def next_restore_uid() -> int:
    """A sequence number for a new restore; later restores get higher numbers and win."""
    return next(_uids)


def _listing(lines: list[str]) -> str:
    # Names come from the checkpoint: a line is shortened, however long the name.
    shown = [line if len(line) <= 500 else line[:497] + "..." for line in lines[:_MAX_LISTED]]
    if len(lines) > _MAX_LISTED:
        shown.append(f"... and {len(lines) - _MAX_LISTED} more")
    return "\n".join(f"  {line}" for line in shown)


def _has_values(obj: Trackable) -> bool:
    names = obj._value_names()
    return names is None or len(names) > 0


def _resolve_sharded(obj: Trackable, values: dict[str, Any]) -> dict[str, Any]:
    """Read the sharded tensors of ``values`` for what ``obj`` holds in their places now."""
    from pipestate.torch._dtensor import resolve

    template = obj._restore_template()
    return {name: resolve(value, template.get(name)) for name, value in values.items()}


class _Restoration:
    """A deferred restoration of checkpoint node ``node_id`` (see ``Trackable._add_deferred``)."""

    def __init__(self, session: RestoreSession, node_id: int) -> None:
        self.session = session
        self.node_id = node_id

    @property
    def uid(self) -> int:
        return self.session.uid

    def apply(self, trackable: Trackable) -> None:
        self.session.restore(trackable, self.node_id)

    def __repr__(self) -> str:
        return f"_Restoration(node={self.node_id}, restore={self.uid})"


class RestoreSession:
    """One restore of a checkpoint into a graph: what matched, what was used, what waits.

    Deferred restorations hold the session; the session holds objects only
    weakly, so it lives exactly as long as its status or a pending restoration.
    """

    def __init__(
        self, reader: CheckpointReader, graph: GraphView, optional_nodes: Collection[int] = ()
    ) -> None:
        self.uid = next_restore_uid()
        self.reader = reader
        # Weak references only: pending restorations hold the session, and the
        # session must not keep the graph alive in turn.
        self._root = weakref.ref(graph.root)
        self._attached = weakref.ref(graph.attached) if graph.attached is not None else None
        self.matched: set[int] = set()
        self.consumed: set[tuple[int, str]] = set()
        self.optional_nodes = set(optional_nodes)
        self.expect_partial = False
        self._paths: list[tuple[str, ...]] | None = None

    def __repr__(self) -> str:
        return (
            f"RestoreSession({self.reader.display!r}, uid={self.uid}, "
            f"matched={len(self.matched)}/{len(self.reader.nodes)})"
        )

    def node_path(self, node_id: int) -> tuple[str, ...]:
        """The first path from the root to a checkpoint node."""
        if self._paths is None:
            self._paths = node_paths(self.reader.nodes)
        return self._paths[node_id]

    def _graph(self) -> GraphView:
        root = self._root()
        attached = self._attached() if self._attached is not None else None
        if root is None:  # the root is gone; its attachments no longer matter
            return GraphView(Trackable())
        return GraphView(root, attached)

    def restore(self, obj: Trackable, node_id: int) -> None:
        """Restore ``obj`` from node ``node_id``, then its dependencies, breadth first."""
        with gc_paused():
            self._restore(obj, node_id)

    def _restore(self, obj: Trackable, node_id: int) -> None:
        graph = self._graph()
        queue = deque([(obj, node_id)])
        while queue:
            obj, nid = queue.popleft()
            if nid in self.matched:
                continue
            self.matched.add(nid)
            self._restore_values(obj, nid)
            children = graph.children(obj)
            for name, child_id in self.reader.nodes[nid].children.items():
                child = children.get(name)
                if child is None:
                    graph.defer(obj, name, _Restoration(self, child_id))
                else:
                    queue.append((child, child_id))

    def _restore_values(self, obj: Trackable, node_id: int) -> None:
        attributes = self.reader.nodes[node_id].attributes
        if node_id in self.reader.foreign and attributes and not reshards(obj):
            raise CheckpointMismatchError(
                f"cannot restore {obj!r} from {format_path(self.node_path(node_id))!r} in "
                f"checkpoint {self.reader.display!r}: it was saved per rank by "
                f"{self.reader.world_size} ranks and this job has "
                f"{self.reader.placement.world_size}, and a {kind_of(obj)} has no rule for "
                "another world size (data iterators do). Restore on "
                f"{self.reader.world_size} ranks, or leave this object out of the checkpoint "
                "object you restore with and initialize it afresh"
            )
        if obj._restore_uid > self.uid:
            # A newer restore already set this object; its values win.
            self.consumed.update((node_id, name) for name in attributes)
            return
        expected = obj._value_names()
        if PYTREE in attributes and getattr(obj, "_restores_saved_pytrees", False):
            # A plain slot where a pytree was saved takes all of the pytree's attributes.
            expected = None
        if expected is None:
            # "Every saved attribute" is complete whatever was saved.
            names, complete = list(attributes), True
        else:
            wanted = expected if isinstance(expected, (set, frozenset)) else set(expected)
            names = [n for n in attributes if n in wanted]
            # Named attributes must all be there (names are distinct and all wanted).
            complete = len(names) == len(wanted)
        if names:
            # Objects that copy what they restore may get read-only views of the memory map.
            copy = not getattr(obj, "_copies_restored_values", False)
            # Objects that place arrays themselves (JAX pytrees) read boxes of sharded ones.
            lazy = bool(getattr(obj, "_reads_saved_arrays", False))
            values: dict[str, Any] = {}
            placeholders: list[Any] = []
            for n in names:
                encoded = attributes[n]
                if encoded is None or type(encoded) in _JSON_SCALARS:
                    values[n] = encoded  # stands for itself: no key to build, nothing to read
                else:
                    where = attribute_key(self.node_path(node_id), n)
                    values[n] = self.reader.decode(
                        encoded,
                        where=where,
                        copy=copy,
                        placeholders=placeholders,
                        lazy_arrays=lazy,
                    )
            if placeholders:
                values = _resolve_sharded(obj, values)
            try:
                obj._restore_from_values(values)
            except (KeyError, TypeError) as err:
                raise CheckpointMismatchError(
                    f"cannot restore {obj!r} from {format_path(self.node_path(node_id))!r} in "
                    f"checkpoint {self.reader.display!r}: {type(err).__name__}: {err}"
                ) from err
            self.consumed.update((node_id, n) for n in names)
        if complete:
            obj._restore_uid = self.uid

    # -- what is left over -------------------------------------------------------
    def unresolved(self) -> list[str]:
        """Checkpoint objects with saved values not bound to a Python object (yet).

        As in TensorFlow, objects that saved nothing are left out: either they do
        not matter or a dependency of theirs with values is listed.
        """
        return [
            f"Unresolved object in checkpoint: {format_path(self.node_path(nid))} "
            f"({node.kind:.100})"
            for nid, node in enumerate(self.reader.nodes)
            if node.attributes and nid not in self.matched and nid not in self.optional_nodes
        ]

    def unused_attributes(self) -> list[str]:
        """Saved attributes of bound objects that no object took."""
        return [
            f"Unused attribute in checkpoint: {attribute_key(self.node_path(nid), name)}"
            for nid in sorted(self.matched)
            for name in self.reader.nodes[nid].attributes
            if (nid, name) not in self.consumed
        ]

    def unassigned(self, graph: GraphView, is_optional: Callable[[Trackable], bool]) -> list[str]:
        """Python objects of ``graph`` that got no value from this restore (or a newer one).

        As in TensorFlow, objects that restore no values (``_value_names()`` empty)
        are left out.
        """
        return [
            f"Object not assigned a value from checkpoint: {format_path(path)} ({obj!r:.100})"
            for obj, path, _ in graph.walk()
            if obj._restore_uid < self.uid and not is_optional(obj) and _has_values(obj)
        ]

    def __del__(self) -> None:
        if self.expect_partial:
            return
        try:
            left = self.unresolved() + self.unused_attributes()
        except Exception:
            return
        if left:
            warnings.warn(
                f"Checkpoint {self.reader.display!r} was only partly restored; these saved values "
                f"were never used:\n{_listing(left)}\nCall expect_partial() on the status that "
                "restore() returned to silence this warning.",
                stacklevel=2,
            )


class LoadStatus:
    """What a restore did, and assertions about it (the interface of every status)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def assert_consumed(self) -> LoadStatus:
        """Raise ``AssertionError`` unless checkpoint and Python objects matched one to one."""
        raise NotImplementedError

    def assert_existing_objects_matched(self) -> LoadStatus:
        """Raise ``AssertionError`` unless every existing Python object got its value."""
        raise NotImplementedError

    def assert_nontrivial_match(self) -> LoadStatus:
        """Raise ``AssertionError`` unless something besides the root matched."""
        raise NotImplementedError

    def expect_partial(self) -> LoadStatus:
        """Silence the warning about unused checkpoint values."""
        return self

    def run_restore_ops(self, session: Any = None) -> None:
        """Nothing to run: values are restored eagerly (kept for TensorFlow's interface)."""

    def initialize_or_restore(self, session: Any = None) -> None:
        """Nothing to run: values are restored eagerly (kept for TensorFlow's interface)."""


class CheckpointLoadStatus(LoadStatus):
    """The status of restoring an object-graph checkpoint.

    Values are assigned when ``restore()`` runs, or, for dependencies created
    later, when they are added; the assertions reflect the state at the time
    they are called.

    Example:
        >>> status = ckpt.restore(path)  # doctest: +SKIP
        >>> status.assert_consumed()  # doctest: +SKIP
    """

    def __init__(
        self, session: RestoreSession, graph: GraphView, optional: Collection[Trackable] = ()
    ) -> None:
        self._session = session
        self._graph = graph
        self._optional = [weakref.ref(o) for o in optional]

    def __repr__(self) -> str:
        s = self._session
        return (
            f"CheckpointLoadStatus({s.reader.display!r}, matched {len(s.matched)} of "
            f"{len(s.reader.nodes)} objects)"
        )

    def _is_optional(self, obj: Trackable) -> bool:
        return any(ref() is obj for ref in self._optional)

    def assert_consumed(self) -> CheckpointLoadStatus:
        """Assert that every checkpoint value was used and every Python object got a value.

        Raises:
            AssertionError: Listing unresolved checkpoint objects, Python objects
                not assigned a value, and unused attributes.
        """
        s = self._session
        with gc_paused():
            problems = (
                s.unresolved()
                + s.unassigned(self._graph, self._is_optional)
                + s.unused_attributes()
            )
        if problems:
            raise AssertionError(
                f"Checkpoint {s.reader.display!r} was not fully consumed:\n{_listing(problems)}"
            )
        return self

    def assert_existing_objects_matched(self) -> CheckpointLoadStatus:
        """Assert that every Python object now in the graph got its value from the checkpoint.

        Checkpoint values still waiting for objects that do not exist yet are allowed.

        Raises:
            AssertionError: Listing the Python objects not assigned a value and
                the unused attributes of matched objects.
        """
        s = self._session
        with gc_paused():
            problems = s.unassigned(self._graph, self._is_optional) + s.unused_attributes()
        if problems:
            raise AssertionError(
                "Some Python objects were not bound to checkpointed values, likely due to "
                f"changes in the Python program; checkpoint {s.reader.display!r}:\n"
                f"{_listing(problems)}"
            )
        return self

    def assert_nontrivial_match(self) -> CheckpointLoadStatus:
        """Assert that at least one object besides the root (and a save counter) matched.

        Raises:
            AssertionError: When nothing but the root matched, listing the
                Python objects with no checkpointed value.
        """
        s = self._session
        trivial = {0} | s.optional_nodes
        save_counter = s.reader.nodes[0].children.get("save_counter")
        if save_counter is not None:
            trivial.add(save_counter)
        if not set(s.matched) - trivial:
            unmatched = s.unassigned(self._graph, lambda obj: False)
            raise AssertionError(
                f"Nothing except the root object matched a checkpointed value in "
                f"{s.reader.display!r}. Typically this means that the checkpoint does not match "
                "the Python program. The following objects have no matching checkpointed value:\n"
                f"{_listing(unmatched) or '  (none)'}"
            )
        return self

    def expect_partial(self) -> CheckpointLoadStatus:
        """Silence the warning about checkpoint values that are never used, and return ``self``."""
        self._session.expect_partial = True
        return self


class InitializationOnlyStatus(LoadStatus):
    """The status of ``restore(None)``: nothing is restored, every assertion fails."""

    def __init__(self, root: Trackable) -> None:
        self._root = root

    def __repr__(self) -> str:
        return f"InitializationOnlyStatus(root={self._root!r})"

    def assert_consumed(self) -> LoadStatus:
        """Raises ``AssertionError``: no checkpoint was specified."""
        raise AssertionError(NO_CHECKPOINT_MESSAGE)

    def assert_existing_objects_matched(self) -> LoadStatus:
        """Raises ``AssertionError``: no checkpoint was specified."""
        raise AssertionError(NO_CHECKPOINT_MESSAGE)

    def assert_nontrivial_match(self) -> LoadStatus:
        """Raises ``AssertionError``: no checkpoint was specified."""
        raise AssertionError(NO_CHECKPOINT_MESSAGE)

    def run_restore_ops(self, session: Any = None) -> None:
        """Raises ``AssertionError``: there is nothing to restore."""
        raise AssertionError(
            "No checkpoint specified, so no restore ops are available (save_path=None passed "
            "to restore())."
        )

    def initialize_or_restore(self, session: Any = None) -> None:
        """Keep the objects' initial values (there is nothing to restore)."""
