"""The on-disk layout of an object-graph checkpoint, and the parser of its index.

A checkpoint ``<prefix>`` is ``<prefix>.index`` plus data shards
``<prefix>.data-00000-of-0000N``. Shards are safetensors files whose tensor
names are the values' keys; the index is a JSON document::

    {"format": "pipestate-checkpoint", "version": 1, "crc32c": <of the body>,
     "checkpoint": {
        "num_shards": N,
        "nodes": [{"kind": "Checkpoint", "children": {"model": 1}, "attributes": {...}}, ...],
        "tensors": {"<key>": {"dtype": "<f4", "shape": [2, 3], "shard": 0,
                              "offset": 128, "length": 24, "crc32c": 1234}}}}

A tensor's ``dtype`` is a NumPy dtype string, or the safetensors code of a
type NumPy lacks (``"BF16"``, ``"F8_E4M3"``, ``"F8_E5M2"``, ...): such a
tensor is stored as that type in its shard.

A sharded torch tensor (``DTensor``) is an attribute value
``{"dtensor": {"shape": [...], "dtype": "float32", "chunks": [{"offsets": [...],
"shape": [...], "of": "<tensor key>"}, ...]}}``: the global shape and torch
dtype, and each chunk its ranks wrote, a box at ``offsets`` of ``shape``
whose array is tensor ``of`` (see :mod:`._values`; chunks never overlap and
cover the tensor). A sharded ``jax.Array`` is the same body under the tag
``"sharded"``, with a NumPy or ml_dtypes dtype name.

Node 0 is the root. ``offset`` is absolute in the shard file. Shards are
written first under their final names; the index is written last and
atomically, so a checkpoint without its index does not exist.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn

import google_crc32c
import numpy as np

from pipestate._validate import is_int
from pipestate.checkpoint._safetensors import (
    NATIVE_CARRIERS,
    empty_shape_fits,
    shape_is_valid,
    strict_json_loads,
)
from pipestate.errors import CorruptCheckpointError

__all__ = [
    "DISTRIBUTED_FORMAT_VERSION",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_SHARDS",
    "MAX_WORLD_SIZE",
    "Node",
    "TensorEntry",
    "body_crc",
    "check_graph_size",
    "node_paths",
    "parse_index",
]

FORMAT_NAME = "pipestate-checkpoint"
FORMAT_VERSION = 1
# A checkpoint saved by several ranks: the body also has "world_size", and the node of a
# per-rank object also has "ranks", each rank's attributes ("attributes" are rank 0's).
DISTRIBUTED_FORMAT_VERSION = 2
MAX_WORLD_SIZE = 1 << 20
MAX_SHARDS = 99_999
# Every object's first path from the root is materialised (for keys and messages), so
# the graph's depth and the summed length of those paths are bounded: a hostile index
# of a long chain of objects must not take quadratic time and memory.
MAX_GRAPH_DEPTH = 1000
MAX_PATH_COMPONENTS = 8_000_000
# ... and so is the length of the keys built from those paths (an object's, and one per
# saved attribute): long names deep in a graph must not multiply into terabytes of keys.
MAX_KEY_CHARS = 1 << 28
_DTYPE_RE = re.compile(r"^[<>|][biufcSUVmM][0-9]{1,5}(\[[0-9]{0,6}[a-zA-Z]{1,2}\])?$")


class Node(NamedTuple):
    """One object of the saved graph (a tuple: a reader builds one per object, quickly)."""

    kind: str
    children: dict[str, int]
    attributes: dict[str, Any]
    # A per-rank object of a distributed checkpoint: every rank's attributes.
    ranks: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class TensorEntry:
    """Where one array lives and how to check it."""

    key: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    shard: int
    offset: int
    length: int
    crc32c: int
    # For a type NumPy lacks: its safetensors code; ``dtype`` is then its unsigned carrier.
    native: str | None = None


def node_paths(nodes: list[Node]) -> list[tuple[str, ...]]:
    """The first path from the root to every node (``("<node N>",)`` for unreachable ones)."""
    paths: list[tuple[str, ...] | None] = [None] * len(nodes)
    paths[0] = ()
    queue = deque([0])
    while queue:
        nid = queue.popleft()
        for name, child in nodes[nid].children.items():
            if paths[child] is None:
                paths[child] = (*(paths[nid] or ()), name)
                queue.append(child)
    return [p if p is not None else (f"<node {i}>",) for i, p in enumerate(paths)]


def body_crc(body: object) -> int:
    """The crc32c of an index body (its ``"checkpoint"`` field), over its canonical JSON."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return int(google_crc32c.value(canonical.encode("ascii")))


def _require(condition: bool, what: str, why: str) -> None:
    if not condition:
        raise CorruptCheckpointError(f"{what}: {why}")


def _fail(what: str, why: str) -> NoReturn:
    raise CorruptCheckpointError(f"{what}: {why}")


def parse_index(data: bytes, what: str) -> tuple[int, list[Node], dict[str, TensorEntry]]:
    """Parse and check an index: ``(num_shards, nodes, tensors)``.

    See :func:`parse_index_world` for the world size of a distributed checkpoint.

    Raises:
        CorruptCheckpointError: Naming ``what`` and the first thing that is wrong.
    """
    num_shards, nodes, tensors, _ = parse_index_world(data, what)
    return num_shards, nodes, tensors


def parse_index_world(
    data: bytes, what: str
) -> tuple[int, list[Node], dict[str, TensorEntry], int]:
    """Parse and check an index: ``(num_shards, nodes, tensors, world_size)``.

    ``world_size`` is 1 for a checkpoint saved by one process.

    Raises:
        CorruptCheckpointError: Naming ``what`` and the first thing that is wrong.
    """
    document = strict_json_loads(data, what)
    _require(isinstance(document, dict), what, "not a JSON object")
    _require(
        document.get("format") == FORMAT_NAME,
        what,
        f"not a pipestate checkpoint index (format {document.get('format')!r:.60})",
    )
    version = document.get("version")
    _require(
        version in (FORMAT_VERSION, DISTRIBUTED_FORMAT_VERSION) and is_int(version),
        what,
        f"format version {version!r:.60} is not supported (this pipestate reads versions "
        f"{FORMAT_VERSION} and {DISTRIBUTED_FORMAT_VERSION}); use the pipestate release that "
        "wrote it",
    )
    _require(
        set(document) == {"format", "version", "crc32c", "checkpoint"}, what, "unexpected fields"
    )
    body = document["checkpoint"]
    _require(document["crc32c"] == body_crc(body), what, "checksum mismatch; the index is corrupt")
    fields = {"num_shards", "nodes", "tensors"}
    if version == DISTRIBUTED_FORMAT_VERSION:
        fields.add("world_size")
    _require(
        isinstance(body, dict) and set(body) == fields,
        what,
        f"'checkpoint' must have exactly {', '.join(sorted(fields))}",
    )
    world_size = body.get("world_size", 1)
    _require(
        is_int(world_size) and 1 <= world_size <= MAX_WORLD_SIZE,
        what,
        f"bad world_size {world_size!r:.60}",
    )
    num_shards = body["num_shards"]
    _require(
        is_int(num_shards) and 1 <= num_shards <= MAX_SHARDS,
        what,
        f"bad num_shards {num_shards!r:.60}",
    )
    nodes = _parse_nodes(body["nodes"], what, world_size)
    tensors = _parse_tensors(body["tensors"], num_shards, what)
    return num_shards, nodes, tensors, world_size


_NODE_FIELDS = frozenset({"kind", "children", "attributes"})
_RANKED_NODE_FIELDS = frozenset({"kind", "children", "attributes", "ranks"})


def _parse_nodes(raw: object, what: str, world_size: int = 1) -> list[Node]:
    _require(isinstance(raw, list) and len(raw) > 0, what, "'nodes' must be a non-empty list")
    assert isinstance(raw, list)
    count = len(raw)
    nodes = []
    # Messages are built only on failure: this loop runs once per object of the graph.
    for i, node in enumerate(raw):
        if not (isinstance(node, dict) and node.keys() == _NODE_FIELDS):
            if world_size > 1 and isinstance(node, dict) and node.keys() == _RANKED_NODE_FIELDS:
                nodes.append(_parse_ranked_node(node, i, count, what, world_size))
                continue
            _fail(what, f"node {i} must have exactly kind, children and attributes")
        kind, children, attributes = node["kind"], node["children"], node["attributes"]
        if type(kind) is not str:
            _fail(what, f"node {i}: kind must be a string")
        if type(children) is not dict:
            _fail(what, f"node {i}: children must be an object")
        if type(attributes) is not dict:
            _fail(what, f"node {i}: attributes must be an object")
        for name, child in children.items():
            if type(child) is not int or not 0 <= child < count:
                _fail(
                    what,
                    f"node {i}: child {name!r:.100} points at node {child!r:.60}, "
                    f"not one of 0..{count - 1}",
                )
        nodes.append(Node(kind, children, attributes))
    depths = [-1] * count
    depths[0] = 0
    queue = deque([0])
    chars = [0] * count
    while queue:
        nid = queue.popleft()
        depth, prefix = depths[nid] + 1, chars[nid] + 1
        for name, child in nodes[nid].children.items():
            if depths[child] < 0:
                depths[child] = depth
                chars[child] = prefix + len(name)
                queue.append(child)
    try:
        check_graph_size(
            depths, [c * max(len(node.attributes), 1) for c, node in zip(chars, nodes)]
        )
    except ValueError as err:
        raise CorruptCheckpointError(f"{what}: {err}") from None
    return nodes


def _parse_ranked_node(
    node: dict[str, Any], i: int, count: int, what: str, world_size: int
) -> Node:
    """A per-rank object's node: each rank's attributes, rank 0's also as its own."""
    (plain,) = _parse_nodes([{**{k: node[k] for k in _NODE_FIELDS}, "children": {}}], what)
    children = node["children"]
    if type(children) is not dict or not all(
        type(c) is int and 0 <= c < count for c in children.values()
    ):
        _fail(what, f"node {i}: children must be an object of node numbers")
    ranks = node["ranks"]
    if (
        type(ranks) is not list
        or len(ranks) != world_size
        or not all(type(r) is dict for r in ranks)
    ):
        _fail(what, f"node {i}: ranks must be a list of {world_size} objects, one per rank")
    if ranks[0] != plain.attributes:
        _fail(what, f"node {i}: attributes must be rank 0's")
    return Node(plain.kind, children, plain.attributes, ranks)


def check_graph_size(depths: list[int], key_chars: list[int] | None = None) -> None:
    """Refuse graphs too deep or too large to name every object by its path.

    Args:
        depths: Each object's distance from the root.
        key_chars: For each object, the length of its first path in characters
            times the number of its saved attributes (at least one): what naming
            the object and its values costs.

    Raises:
        ValueError: Naming the limit that was exceeded.
    """
    deepest = max(depths, default=0)
    if deepest > MAX_GRAPH_DEPTH:
        raise ValueError(
            f"the object graph is {deepest} levels deep, more than the {MAX_GRAPH_DEPTH} allowed"
        )
    total = sum(max(d, 1) for d in depths)
    if total > MAX_PATH_COMPONENTS:
        raise ValueError(
            f"the paths from the root to the graph's {len(depths)} objects have {total} "
            f"components in all, more than the {MAX_PATH_COMPONENTS} allowed"
        )
    chars = sum(key_chars or ())
    if chars > MAX_KEY_CHARS:
        raise ValueError(
            f"the keys naming the graph's {len(depths)} objects and their values would have "
            f"{chars} characters in all, more than the {MAX_KEY_CHARS} allowed; use shorter "
            "names for objects deep in the graph"
        )


def _parse_dtype(text: object, where: str) -> np.dtype[Any]:
    _require(
        isinstance(text, str) and _DTYPE_RE.match(text) is not None,
        where,
        f"bad dtype {text!r:.60}",
    )
    try:
        dtype = np.dtype(str(text))
    except TypeError:
        raise CorruptCheckpointError(f"{where}: bad dtype {text!r:.60}") from None
    _require(dtype.itemsize > 0 and dtype.kind != "O", where, f"bad dtype {text!r:.60}")
    return dtype


_TENSOR_FIELDS = frozenset({"dtype", "shape", "shard", "offset", "length", "crc32c"})


def _parse_tensors(raw: object, num_shards: int, what: str) -> dict[str, TensorEntry]:
    _require(isinstance(raw, dict), what, "'tensors' must be an object")
    assert isinstance(raw, dict)
    dtypes: dict[str, np.dtype[Any]] = {}
    out = {}
    # Messages are built only on failure: this loop runs once per array in the checkpoint.
    for key, entry in raw.items():
        if not (isinstance(entry, dict) and entry.keys() == _TENSOR_FIELDS):
            _fail(f"{what}: tensor {key!r:.200}", f"must have exactly {sorted(_TENSOR_FIELDS)}")
        text = entry["dtype"]
        dtype = dtypes.get(text) if type(text) is str else None
        if dtype is None:
            dtype = NATIVE_CARRIERS.get(text) if type(text) is str else None
            if dtype is None:
                dtype = _parse_dtype(text, f"{what}: tensor {key!r:.200}")
            dtypes[text] = dtype
        shape, shard, offset, length, crc = (
            entry["shape"],
            entry["shard"],
            entry["offset"],
            entry["length"],
            entry["crc32c"],
        )
        if not (
            shape_is_valid(shape)
            and is_int(shard)
            and 0 <= shard < num_shards
            and is_int(offset)
            and offset >= 0
            and is_int(length)
            and length >= 0
            and is_int(crc)
            and 0 <= crc < 2**32
            and math.prod(shape) * dtype.itemsize == length
            and empty_shape_fits(shape, dtype.itemsize)
        ):
            fields = (shape, shard, offset, length, crc)
            _tensor_error(f"{what}: tensor {key!r:.200}", dtype, fields, num_shards)
        native = text if text in NATIVE_CARRIERS else None
        out[key] = TensorEntry(key, dtype, tuple(shape), shard, offset, length, crc, native)
    return out


def _tensor_error(
    where: str, dtype: np.dtype[Any], fields: tuple[Any, ...], num_shards: int
) -> NoReturn:
    """Raise the error for the first wrong one of a tensor entry's fields, known to be wrong.

    ``fields`` are its shape, shard, offset, length and crc32c.
    """
    shape, shard, offset, length, crc = fields
    _require(shape_is_valid(shape), where, f"bad shape {shape!r:.200}")
    _require(is_int(shard) and 0 <= shard < num_shards, where, f"bad shard {shard!r:.60}")
    _require(is_int(offset) and offset >= 0, where, f"bad offset {offset!r:.60}")
    _require(is_int(length) and length >= 0, where, f"bad length {length!r:.60}")
    _require(is_int(crc) and 0 <= crc < 2**32, where, f"bad crc32c {crc!r:.60}")
    needed = math.prod(shape) * dtype.itemsize
    _require(
        needed == length,
        where,
        f"dtype {dtype.str} and shape {shape!r:.200} need {needed} bytes, length says {length}",
    )
    _fail(where, f"shape {shape!r:.200} is too large")
