"""The object graph: walking it from the root, and turning it into index nodes and arrays."""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import numpy as np

from pipestate.checkpoint._distributed import Placement, is_per_rank
from pipestate.checkpoint._index import check_graph_size
from pipestate.checkpoint._trackable import DeferredRestoration, Trackable
from pipestate.checkpoint._values import (
    ShardedArray,
    attribute_key,
    contains_dtensor,
    contains_sharded,
    encode_value,
)
from pipestate.checkpoint._writer import prepare_array

__all__ = ["ARRAY_PREFIX", "GraphView", "Sharded", "format_path", "kind_of"]

Sharded: TypeAlias = dict[int, dict[str, dict[str, Any]]]
"""Per node number, each DTensor's (or sharded array's) value key and ``"dtensor"``
(``"sharded"``) body (see ``serialize``)."""
ARRAY_PREFIX = "array:"
"""Marks the keys of sharded arrays (not DTensors) in ``Sharded``."""
_SHARDED_DTYPES = frozenset(
    {"bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64"}
    | {"float16", "bfloat16", "float32", "float64", "complex64", "complex128"}
    | {"float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"}
)


def kind_of(obj: Trackable) -> str:
    """The type name recorded for an object (the wrapped type for adapters)."""
    kind = getattr(obj, "_checkpoint_kind", None)
    return str(kind()) if callable(kind) else type(obj).__name__


def format_path(path: tuple[str, ...]) -> str:
    """A readable object path: ``model/dense/kernel``, or ``(root)``."""
    return "/".join(path) if path else "(root)"


class GraphView:
    """The graph seen from a root, optionally with extra dependencies attached to the root.

    ``Checkpoint(root=obj, **kwargs)`` saves ``obj`` as the root with the
    keyword arguments attached, without adding them to ``obj`` itself.
    """

    def __init__(self, root: Trackable, attached: Trackable | None = None) -> None:
        self.root = root
        self.attached = attached

    def __repr__(self) -> str:
        return f"GraphView(root={self.root!r})"

    def children(self, obj: Trackable) -> Mapping[str, Trackable]:
        """``obj``'s dependencies, plus the attached ones when ``obj`` is the root."""
        children = obj._trackable_children()
        for name, child in children.items():
            if not isinstance(child, Trackable):
                raise TypeError(
                    f"{obj!r} lists dependency {name!r} = {child!r:.80}, which is not a Trackable"
                )
        if obj is not self.root or self.attached is None:
            return children
        merged = dict(children)
        for name, child in self.attached._trackable_children().items():
            if merged.get(name, child) is not child:
                raise ValueError(
                    f"the root {obj!r} already has a dependency named {name!r}; the checkpoint "
                    "cannot attach another one under that name, rename the keyword argument"
                )
            merged[name] = child
        return merged

    def defer(self, obj: Trackable, name: str, restoration: DeferredRestoration) -> None:
        """Keep a restoration for a missing dependency of ``obj`` until it is created."""
        obj._add_deferred(name, restoration)
        if obj is self.root and self.attached is not None:
            self.attached._add_deferred(name, restoration)

    def walk(self) -> list[tuple[Trackable, tuple[str, ...], Mapping[str, Trackable]]]:
        """Each object reachable from the root, breadth first, with its first path and children."""
        seen = {id(self.root)}
        queue: deque[tuple[Trackable, tuple[str, ...]]] = deque([(self.root, ())])
        out = []
        while queue:
            obj, path = queue.popleft()
            children = self.children(obj)
            out.append((obj, path, children))
            for name, child in children.items():
                if id(child) not in seen:
                    seen.add(id(child))
                    queue.append((child, (*path, name)))
        return out

    def serialize(
        self,
        *,
        copy: Callable[[str, np.ndarray], np.ndarray] | None = None,
        placement: Placement | None = None,
    ) -> tuple[list[dict[str, Any]], list[Any], list[int], Sharded]:
        """The index nodes, the arrays to write (keys unique, arrays prepared), per-rank nodes,
        and the sharded tensors (DTensors) of replicated nodes.

        Every object's ``_serialize_to_values()`` runs here, before anything is
        written, so an object can still refuse the save. With ``copy`` (see
        :func:`prepare_array`) the result is a snapshot: no array shares memory
        with the objects.

        With a distributed ``placement``, per-rank objects (and what they hold)
        are serialized on every rank, their array keys marked with the rank;
        the others (replicated) only on rank 0. The last list holds the numbers
        of the per-rank nodes (empty for one process).

        Raises:
            ValueError: When the graph is deeper or larger than readers accept,
                or one process alone saves a DTensor sharded over several.
            TypeError: When an object serializes something that is not a value,
                a DTensor with an unsupported placement, or a DTensor of a
                per-rank object.
        """
        objects = self.walk()
        # Never write a checkpoint that readers would refuse (checked again below, once
        # the number of values of each object is known).
        depths = [len(path) for _, path, _ in objects]
        check_graph_size(depths)
        path_chars = [sum(map(len, path)) + len(path) for _, path, _ in objects]
        check_graph_size(depths, path_chars)
        ids = {id(obj): i for i, (obj, _, _) in enumerate(objects)}
        distributed = placement is not None and placement.distributed
        per_rank: set[int] = set()
        if distributed:
            # Breadth first: a node's first parent (the first node listing it) comes before it.
            if is_per_rank(objects[0][0]):
                per_rank.add(0)
            placed = {0}
            for i, (_, _, children) in enumerate(objects):
                for child in children.values():
                    cid = ids[id(child)]
                    if cid not in placed:
                        placed.add(cid)
                        if i in per_rank or is_per_rank(child):
                            per_rank.add(cid)
        rank = placement.rank if placement is not None else 0
        nodes: list[dict[str, Any]] = []
        arrays: list[Any] = []
        keys: set[str] = set()

        def add_raw(key: str, array: np.ndarray, native: str | None) -> str:
            unique, n = key, 1
            while unique in keys:
                n += 1
                unique = f"{key}#{n}"
            keys.add(unique)
            arrays.append(prepare_array(unique, array, copy=copy, native=native))
            return unique

        def add_array(key: str, array: np.ndarray) -> str:
            return add_raw(key, array, None)

        encoder: Callable[[str, Any], Any] | None = None

        def add_tensor(key: str, tensor: Any) -> Any:
            # Torch is imported already (a tensor exists); one encoder per save shares storages.
            nonlocal encoder
            if encoder is None:
                from pipestate.torch._state import TensorEncoder

                encoder = TensorEncoder(add_raw)
            return encoder(key, tensor)

        sharded: Sharded = {}
        current = 0  # the node being serialized
        sharder: Callable[[str, Any], Any] | None = None

        def on_body(key: str, body: dict[str, Any]) -> None:
            bodies = sharded.setdefault(current, {})
            unique, n = key, 1
            while unique in bodies:
                n += 1
                unique = f"{key}#{n}"
            bodies[unique] = body

        def add_dtensor(key: str, tensor: Any) -> Any:
            nonlocal sharder
            if current in per_rank:
                raise TypeError(
                    f"cannot save the DTensor at {key!r}: it is held by an object saved per rank, "
                    "and a DTensor is one tensor of the whole job; keep it in a replicated "
                    "object (a model, an optimizer)"
                )
            if sharder is None:
                from pipestate.torch._dtensor import DTensorEncoder

                sharder = DTensorEncoder(
                    add_raw, distributed=distributed, on_body=on_body if distributed else None
                )
            return sharder(key, tensor)

        def add_sharded(key: str, array: ShardedArray) -> Any:
            if current in per_rank:
                raise TypeError(
                    f"cannot save the sharded array at {key!r}: it is held by an object saved "
                    "per rank, and a sharded array is one array of the whole job; keep it in a "
                    "replicated object"
                )
            if array.dtype.name not in _SHARDED_DTYPES:
                raise TypeError(
                    f"cannot save the sharded array at {key!r}: dtype {array.dtype.name} has no "
                    "safetensors type; cast it first, e.g. to float32"
                )
            if not distributed and not array.complete:
                raise ValueError(
                    f"cannot save the array at {key!r} from this process alone: it is "
                    f"{array.what}, and this process holds only part of it. Save from every "
                    "process (a distributed save), or gather the array first"
                )
            chunks = []
            # An array this process holds whole is one replicated value: rank 0 writes it.
            # Of one held in part, every rank writes its chunks and rank 0 merges them; a
            # rank that holds none of it (replicated on other processes' devices) sends none.
            holds = any(data.size for _, data in array.chunks)
            writes = rank == 0 or (holds and not array.complete)
            for offsets, data in array.chunks if writes else ():
                if data.size:
                    # The offsets make the key unique across ranks: each box has one writer.
                    written = add_raw(f"{key}@[{','.join(map(str, offsets))}]", data, None)
                    chunks.append(
                        {"offsets": list(offsets), "shape": list(data.shape), "of": written}
                    )
            body: dict[str, Any] = {
                "shape": list(array.shape),
                "dtype": array.dtype.name,
                "chunks": chunks,
            }
            if distributed and writes:
                on_body(ARRAY_PREFIX + key, body)
            return body

        def skip(key: str, array: Any) -> str:
            return ""

        # DTensors exist only once torch.distributed.tensor is imported, jax arrays once jax is.
        dtensors = distributed and rank != 0 and "torch.distributed.tensor" in sys.modules
        arrays_of_jax = distributed and rank != 0 and "jax" in sys.modules
        for i, (obj, path, children) in enumerate(objects):
            current = i
            if distributed and rank != 0 and i not in per_rank:
                # Replicated: rank 0 saves it, but each rank writes its chunks of DTensors
                # and sharded arrays.
                if dtensors or arrays_of_jax:
                    for name, value in _values_in_part(obj).items():
                        if (dtensors and contains_dtensor(value)) or (
                            arrays_of_jax and contains_sharded(value)
                        ):
                            encode_value(
                                value,
                                attribute_key(path, name),
                                skip,
                                skip,
                                add_dtensor,
                                add_sharded,
                            )
                nodes.append(
                    {
                        "kind": kind_of(obj),
                        "children": {name: ids[id(child)] for name, child in children.items()},
                        "attributes": {},
                    }
                )
                continue
            suffix = f"@rank{rank}" if i in per_rank else ""
            attributes = {
                name: encode_value(
                    value,
                    attribute_key(path, name) + suffix,
                    add_array,
                    add_tensor,
                    add_dtensor,
                    add_sharded,
                )
                for name, value in _values_of(obj).items()
            }
            nodes.append(
                {
                    "kind": kind_of(obj),
                    "children": {name: ids[id(child)] for name, child in children.items()},
                    "attributes": attributes,
                }
            )
        check_graph_size(
            depths, [c * max(len(node["attributes"]), 1) for c, node in zip(path_chars, nodes)]
        )
        return nodes, arrays, sorted(per_rank), sharded


def _values_in_part(obj: Trackable) -> Mapping[str, Any]:
    """What a rank other than 0 looks through for its chunks of a replicated object: the
    values that may hold arrays this process holds only part of (an object can name them
    with ``_values_held_in_part()``, sparing the copies of the rest to the host)."""
    held_in_part = getattr(obj, "_values_held_in_part", None)
    if held_in_part is None:
        return _values_of(obj)
    values = held_in_part()
    if not isinstance(values, Mapping):
        raise TypeError(f"{type(obj).__name__}._values_held_in_part() must return a mapping")
    return values


def _values_of(obj: Trackable) -> Mapping[str, Any]:
    values = obj._serialize_to_values()
    if not isinstance(values, Mapping) or not all(isinstance(k, str) for k in values):
        raise TypeError(
            f"{type(obj).__name__}._serialize_to_values() must return a mapping with str "
            f"keys, got {values!r:.100}"
        )
    return values
