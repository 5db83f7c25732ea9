"""Saved values: nested plain Python data with NumPy arrays inside.

A value saved by a trackable is ``None``, ``bool``, ``int``, ``float``,
``str``, ``bytes``, a NumPy array or scalar, or a ``list`` / ``tuple`` /
``dict`` of values. In the index it is encoded as JSON where plain JSON types
stand for themselves and everything else is a one-key tagged object::

    {"float": "nan" | "inf" | "-inf"}     non-finite floats
    {"bytes": "<base64>"}                 bytes
    {"tuple": [...]}                      tuples
    {"dict": {"key": ...}}                dicts whose keys are all str
    {"items": [[key, value], ...]}        dicts with other keys (int, tuple, ...)
    {"array": "<tensor key>"}             a NumPy array stored in a data shard
    {"scalar": "<tensor key>"}            a NumPy scalar stored in a data shard
    {"torch": "<tensor key>" | {...}}     a torch tensor (see ``pipestate.torch._state``)
    {"dtensor": {...}}                    a sharded torch tensor (DTensor), in chunks
    {"sharded": {...}}                    a sharded array (a JAX array over devices), in chunks

A ``"dtensor"`` body is the tensor's global shape and dtype and the chunks
its ranks wrote, each a box of the global tensor at ``offsets`` (one per
dimension) of ``shape``, stored as the array ``of``::

    {"shape": [8, 4], "dtype": "float32",
     "chunks": [{"offsets": [0, 0], "shape": [4, 4], "of": "<tensor key>"},
                {"offsets": [4, 0], "shape": [4, 4], "of": "<tensor key>"}]}

The chunks never overlap and together cover the tensor (an empty tensor has
none); ``dtype`` is a torch dtype name, and every chunk's array is of that
dtype.

A ``"sharded"`` body has the same form, with a NumPy or ml_dtypes dtype name
(``"float32"``, ``"bfloat16"``, ``"float8_e4m3fn"``); it is what a
:class:`ShardedArray` (built by :mod:`pipestate.jax` from a ``jax.Array``
sharded over several devices) is saved as, one chunk per distinct shard.
Readers get one NumPy array for it; restoring onto a sharding reads only the
chunks each device's shard overlaps.

NumPy arrays of the ml_dtypes types safetensors has (bfloat16 and the float8
types) are stored as those types and read back as such where ml_dtypes is
installed (it comes with JAX), else widened exactly to float32.

Torch tensors are values too (without importing torch here: they are
recognised when torch is already imported). They are stored in their own
dtype, bfloat16 and float8 included; tensors sharing storage are stored
once. A reader without torch gets NumPy arrays for them, with bfloat16 and
float8 widened exactly to float32.
"""

from __future__ import annotations

import base64
import binascii
import functools
import importlib.util
import math
import reprlib
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, NamedTuple, TypeAlias

import numpy as np

from pipestate.checkpoint import _safetensors
from pipestate.errors import CheckpointMismatchError, CorruptCheckpointError

__all__ = [
    "ATTRIBUTES",
    "MAX_CHUNKS",
    "MAX_DEPTH",
    "Chunk",
    "SavedSharding",
    "ShardedArray",
    "Value",
    "array_dtype",
    "assemble_array",
    "attribute_key",
    "box_overlap",
    "contains_dtensor",
    "contains_sharded",
    "decode_value",
    "encode_value",
    "escape_name",
    "is_dtensor",
    "is_plain_value",
    "is_torch_tensor",
    "node_key",
    "parse_sharding",
    "sharded_reader",
    "torch_reader",
]

Value: TypeAlias = Any
"""A nested structure of plain Python values and NumPy arrays (see the module docstring)."""

ATTRIBUTES = ".ATTRIBUTES"
MAX_DEPTH = 100
_TAGS = frozenset(
    {"float", "bytes", "tuple", "dict", "items", "array", "scalar", "torch", "dtensor", "sharded"}
)
# Chunks of one sharded tensor; those that are not cells of one grid (a sharding's
# always are) are checked pairwise for overlap, at most _MAX_PAIRWISE of them.
MAX_CHUNKS = 1 << 20
_MAX_PAIRWISE = 1 << 12
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def escape_name(name: str) -> str:
    """Escape one path component so that ``/`` only ever separates components."""
    return name.replace(".", "..").replace("/", "./")


def node_key(path: tuple[str, ...]) -> str:
    """The key of an object in the graph: its escaped local names joined by ``/``."""
    return "/".join(escape_name(p) for p in path)


def attribute_key(path: tuple[str, ...], attribute: str) -> str:
    """The key of one saved attribute, e.g. ``model/kernel/.ATTRIBUTES/VARIABLE_VALUE``."""
    prefix = node_key(path)
    tail = f"{ATTRIBUTES}/{escape_name(attribute)}"
    return f"{prefix}/{tail}" if prefix else tail


def is_torch_tensor(value: object) -> bool:
    """Whether ``value`` is a torch tensor (never imports torch: an object of it means it is)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def is_dtensor(value: object) -> bool:
    """Whether ``value`` is a sharded torch tensor (``torch.distributed.tensor.DTensor``)."""
    module = sys.modules.get("torch.distributed.tensor")
    dtensor = getattr(module, "DTensor", None) if module is not None else None
    return dtensor is not None and isinstance(value, dtensor)


class ShardedArray:
    """An array saved in chunks, each written from where it lives (no gathering).

    ``chunks`` are ``(offsets, array)`` pairs: boxes of the whole array at
    ``offsets``, none overlapping. ``complete`` says whether they cover the
    array: a process that holds only some of it saves it only as one rank of
    a distributed save, where the other ranks write the rest. ``what`` names
    the array's placement in error messages.
    """

    __slots__ = ("chunks", "complete", "dtype", "shape", "what")

    def __init__(
        self,
        shape: tuple[int, ...],
        dtype: np.dtype[Any],
        chunks: list[tuple[tuple[int, ...], np.ndarray]],
        *,
        complete: bool,
        what: str,
    ) -> None:
        self.shape = shape
        self.dtype = dtype
        self.chunks = chunks
        self.complete = complete
        self.what = what

    def __repr__(self) -> str:
        return (
            f"ShardedArray({self.dtype.name}{list(self.shape)}, chunks={len(self.chunks)}, "
            f"{self.what})"
        )


def _contains(value: object, test: Callable[[object], bool], depth: int = 0) -> bool:
    if test(value):
        return True
    if depth >= MAX_DEPTH:
        return False
    if isinstance(value, Mapping):
        return any(_contains(v, test, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_contains(v, test, depth + 1) for v in value)
    return False


def contains_dtensor(value: object) -> bool:
    """Whether a saved value holds a DTensor somewhere."""
    return _contains(value, is_dtensor)


def contains_sharded(value: object) -> bool:
    """Whether a saved value holds a :class:`ShardedArray` somewhere."""
    return _contains(value, lambda v: isinstance(v, ShardedArray))


def is_plain_value(value: object, depth: int = 0) -> bool:
    """Whether ``value`` can be saved as a value (no trackables, no arbitrary objects)."""
    if value is None or isinstance(value, (bool, int, float, str, bytes, np.generic)):
        return True
    if is_torch_tensor(value):
        return True
    if isinstance(value, np.ndarray):
        return bool(value.dtype.kind != "O")
    if depth >= MAX_DEPTH:
        return False
    if isinstance(value, (list, tuple)):
        return all(is_plain_value(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(
            is_plain_value(k, depth + 1) and is_plain_value(v, depth + 1) for k, v in value.items()
        )
    return False


def _nested_key(key: str, part: object) -> str:
    return f"{key}/{escape_name(str(part))}"


AddArray: TypeAlias = Callable[[str, np.ndarray], str]
AddTensor: TypeAlias = Callable[[str, Any], Any]


def encode_value(
    value: Value,
    key: str,
    add_array: AddArray,
    add_tensor: AddTensor | None = None,
    add_dtensor: AddTensor | None = None,
    add_sharded: AddTensor | None = None,
) -> Any:
    """Encode ``value`` as JSON, handing every array to ``add_array(key, array) -> tensor key``.

    Torch tensors go to ``add_tensor(key, tensor)``, which returns the body of
    their ``"torch"`` tag; without it they are saved as NumPy arrays. DTensors
    go to ``add_dtensor(key, tensor)``, which returns the body of their
    ``"dtensor"`` tag; :class:`ShardedArray` values to ``add_sharded(key,
    array)``, which returns the body of their ``"sharded"`` tag.

    Raises:
        TypeError: For a value of an unsupported type (named with its key), or
            a DTensor without ``add_dtensor``.
        ValueError: For a structure nested deeper than ``MAX_DEPTH`` (or containing itself).
    """
    if add_tensor is None:
        add_tensor = functools.partial(_tensor_as_array, add_array)
    if add_dtensor is None:
        add_dtensor = _no_dtensor
    if add_sharded is None:
        add_sharded = _no_sharded
    return _encode(value, key, add_array, _Adders(add_tensor, add_dtensor, add_sharded), 0)


class _Adders:
    """Where torch tensors, DTensors and sharded arrays go (one object for the recursion)."""

    __slots__ = ("dtensor", "sharded", "tensor")

    def __init__(self, tensor: AddTensor, dtensor: AddTensor, sharded: AddTensor) -> None:
        self.tensor = tensor
        self.dtensor = dtensor
        self.sharded = sharded

    def __call__(self, key: str, value: Any) -> Any:
        if is_dtensor(value):
            return {"dtensor": self.dtensor(key, value)}
        return {"torch": self.tensor(key, value)}


def _tensor_as_array(add_array: AddArray, key: str, tensor: Any) -> Any:
    return add_array(key, tensor.detach().cpu().numpy())


def _no_dtensor(key: str, tensor: Any) -> Any:
    raise TypeError(
        f"cannot save the DTensor at {key!r} here: only object-graph checkpoints save sharded "
        "tensors; save tensor.full_tensor() instead"
    )


def _no_sharded(key: str, array: Any) -> Any:
    raise TypeError(
        f"cannot save the sharded array at {key!r} here: only object-graph checkpoints save "
        "arrays in chunks"
    )


def _encode(value: Value, key: str, add_array: AddArray, add_tensor: _Adders, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError(
            f"value at {key!r} is nested more than {MAX_DEPTH} levels deep (or contains itself)"
        )
    if value is None or isinstance(value, (bool, str)):
        return str(value) if isinstance(value, str) and type(value) is not str else value
    if isinstance(value, np.ndarray):
        return {"array": add_array(key, value)}
    if isinstance(value, np.generic):
        return {"scalar": add_array(key, np.asarray(value))}
    if is_torch_tensor(value):
        return add_tensor(key, value)
    if isinstance(value, ShardedArray):
        return {"sharded": add_tensor.sharded(key, value)}
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        value = float(value)
        if math.isfinite(value):
            return value
        return {"float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, list):
        return [
            _encode(v, _nested_key(key, i), add_array, add_tensor, depth + 1)
            for i, v in enumerate(value)
        ]
    if isinstance(value, tuple):
        return {
            "tuple": [
                _encode(v, _nested_key(key, i), add_array, add_tensor, depth + 1)
                for i, v in enumerate(value)
            ]
        }
    if isinstance(value, Mapping):
        if all(type(k) is str for k in value):
            return {
                "dict": {
                    k: _encode(v, _nested_key(key, k), add_array, add_tensor, depth + 1)
                    for k, v in value.items()
                }
            }
        items = []
        for k, v in value.items():
            if (
                isinstance(k, (np.ndarray, list, dict))
                or is_torch_tensor(k)
                or not is_plain_value(k)
            ):
                raise TypeError(
                    f"dict key {k!r} at {key!r} cannot be saved; use str, int or tuple keys"
                )
            items.append(
                [
                    _encode(k, _nested_key(key, k), add_array, add_tensor, depth + 1),
                    _encode(v, _nested_key(key, k), add_array, add_tensor, depth + 1),
                ]
            )
        return {"items": items}
    raise TypeError(
        f"cannot save value {value!r} of type {type(value).__name__} at {key!r}; supported are "
        "None, bool, int, float, str, bytes, NumPy arrays and scalars, and lists, tuples and "
        "dicts of them"
    )


ReadArray: TypeAlias = Callable[[str], np.ndarray]
ReadTorch: TypeAlias = Callable[[Any], Any]


class Chunk(NamedTuple):
    """One saved box of a sharded tensor: where it starts, its shape, and its array's key."""

    offsets: tuple[int, ...]
    shape: tuple[int, ...]
    key: str


class SavedSharding(NamedTuple):
    """A ``"dtensor"`` or ``"sharded"`` body, checked: the global shape, the dtype name (a
    torch one, or a NumPy / ml_dtypes one) and the chunks; ``tag`` says which."""

    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[Chunk, ...]
    where: str
    tag: str = "dtensor"


ReadSharded: TypeAlias = Callable[[SavedSharding], Any]
_SHARDING_FIELDS = frozenset({"shape", "dtype", "chunks"})
_CHUNK_FIELDS = frozenset({"offsets", "shape", "of"})


def _dims(values: object, ndim: int | None) -> tuple[int, ...] | None:
    if (
        not isinstance(values, list)
        or len(values) > 64
        or (ndim is not None and len(values) != ndim)
    ):
        return None
    if not all(type(v) is int and 0 <= v < 2**62 for v in values):
        return None
    return tuple(values)


def box_overlap(
    offsets: tuple[int, ...], shape: tuple[int, ...], chunk: Chunk
) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """Where ``chunk`` meets the box at ``offsets`` of ``shape``: the slices of the box and of
    the chunk that hold the common part, or ``None`` when they don't meet."""
    low = [max(o, c) for o, c in zip(offsets, chunk.offsets)]
    high = [min(o + n, c + m) for o, n, c, m in zip(offsets, shape, chunk.offsets, chunk.shape)]
    if any(lo >= hi for lo, hi in zip(low, high)):
        return None
    box = tuple(slice(lo - o, hi - o) for lo, hi, o in zip(low, high, offsets))
    part = tuple(slice(lo - c, hi - c) for lo, hi, c in zip(low, high, chunk.offsets))
    return box, part


def parse_sharding(body: Any, where: str, tag: str = "dtensor") -> SavedSharding:
    """Check a ``"dtensor"`` (or ``"sharded"``) body: chunks inside the tensor, none
    overlapping, all of it covered, each stored in a tensor of its own.

    Raises:
        CorruptCheckpointError: Naming ``where`` and what is wrong (a range of
            the tensor no chunk covers, for one).
    """
    if not (isinstance(body, dict) and body.keys() == _SHARDING_FIELDS):
        raise _bad(where, f"'{tag}' must have exactly chunks, dtype and shape: {_brief(body)}")
    shape = _dims(body["shape"], None)
    dtype, raw_chunks = body["dtype"], body["chunks"]
    if shape is None or not isinstance(dtype, str) or not isinstance(raw_chunks, list):
        raise _bad(where, f"malformed '{tag}' {_brief(body)}")
    if dtype not in _TORCH_DTYPE_NAMES:
        kind = "a torch dtype" if tag == "dtensor" else "a NumPy or ml_dtypes dtype"
        raise _bad(where, f"'{tag}' has dtype {dtype!r:.60}, which is not {kind}")
    if len(raw_chunks) > MAX_CHUNKS:
        raise _bad(where, f"'{tag}' has {len(raw_chunks)} chunks, more than {MAX_CHUNKS}")
    chunks = []
    for raw in raw_chunks:
        if not (isinstance(raw, dict) and raw.keys() == _CHUNK_FIELDS):
            raise _bad(where, f"malformed '{tag}' chunk {_brief(raw)}")
        offsets, extent = _dims(raw["offsets"], len(shape)), _dims(raw["shape"], len(shape))
        if offsets is None or extent is None or not isinstance(raw["of"], str):
            raise _bad(where, f"malformed '{tag}' chunk {_brief(raw)}")
        if any(n == 0 or o + n > d for o, n, d in zip(offsets, extent, shape)):
            raise _bad(where, f"'{tag}' chunk {_brief(raw)} is empty or outside shape {shape}")
        chunks.append(Chunk(offsets, extent, raw["of"]))
    _check_cover(shape, chunks, where)
    # Each box is written to a tensor of its own: two chunks reading one tensor would give
    # one of them the other's values (with every shape and checksum right).
    stored: set[str] = set()
    for chunk in chunks:
        if chunk.key in stored:
            raise _bad(where, f"two '{tag}' chunks are stored in one tensor {chunk.key!r:.200}")
        stored.add(chunk.key)
    return SavedSharding(shape, dtype, tuple(chunks), where, tag)


def _check_cover(shape: tuple[int, ...], chunks: list[Chunk], where: str) -> None:
    """Refuse chunks that overlap, or leave a range of the tensor uncovered."""
    if len(chunks) > 1 and not _distinct_cells(shape, chunks):
        if len(chunks) > _MAX_PAIRWISE:
            raise _bad(
                where,
                f"the {len(chunks)} chunks of a sharded tensor are not the cells of one grid, "
                f"and more than {_MAX_PAIRWISE} such chunks are not read",
            )
        starts = np.array([c.offsets for c in chunks], dtype=np.int64).reshape(len(chunks), -1)
        ends = starts + np.array([c.shape for c in chunks], dtype=np.int64).reshape(starts.shape)
        for i in range(len(chunks) - 1):
            overlap = np.all((starts[i] < ends[i + 1 :]) & (starts[i + 1 :] < ends[i]), axis=1)
            if overlap.any():
                j = i + 1 + int(np.argmax(overlap))
                raise _bad(
                    where, f"'dtensor' chunks {chunks[i].key!r} and {chunks[j].key!r} overlap"
                )
    covered = sum(math.prod(c.shape) for c in chunks)
    total = math.prod(shape)
    if covered != total:
        raise _bad(
            where,
            f"the chunks of a sharded tensor of shape {list(shape)} cover {covered} of its "
            f"{total} elements: a range of it is missing",
        )


def _distinct_cells(shape: tuple[int, ...], chunks: list[Chunk]) -> bool:
    """Whether the chunks are distinct cells of the grid their edges draw (so none overlap).

    A sharding's chunks always are: checked in linear time, where pairs would
    take quadratic time on a job of thousands of ranks.
    """
    edges = []
    for d, size in enumerate(shape):
        cuts = {0, size}
        for c in chunks:
            cuts.add(c.offsets[d])
            cuts.add(c.offsets[d] + c.shape[d])
        edges.append({cut: i for i, cut in enumerate(sorted(cuts))})
    cells = set()
    for c in chunks:
        cell = []
        for d, index in enumerate(edges):
            first = index[c.offsets[d]]
            if index[c.offsets[d] + c.shape[d]] != first + 1:
                return False  # an edge of another chunk cuts through this one
            cell.append(first)
        cells.add(tuple(cell))
    return len(cells) == len(chunks)


def _numpy_dtype(name: str) -> np.dtype[Any]:
    try:
        dtype = np.dtype(name)
    except (TypeError, ValueError):
        return np.dtype(np.float32)  # bfloat16 and float8 are read widened to float32
    if dtype.kind not in "biufc" or dtype.subdtype is not None:
        return np.dtype(np.float32)  # not a torch dtype: only the chunks' own dtype counts
    return dtype


def _torch_dtype_as_numpy(name: str) -> np.dtype[Any] | None:
    """The NumPy dtype a torch dtype name (``"float32"``) reads as; ``None`` for types NumPy
    lacks (``"bfloat16"``: widened) or names that are not a torch dtype."""
    if name not in _TORCH_NUMPY_NAMES:
        return None
    return np.dtype(name)


def array_dtype(name: str) -> np.dtype[Any] | None:
    """The NumPy dtype of a ``"sharded"`` dtype name: an ml_dtypes one for ``"bfloat16"`` and
    the float8 names (``None`` where ml_dtypes is not installed: those are widened)."""
    if name in _ML_NAMES:
        module = _safetensors.ml_dtypes_module()
        if module is None:
            return None
        dtype: np.dtype[Any] = np.dtype(getattr(module, name))
        return dtype
    return np.dtype(name) if name in _TORCH_NUMPY_NAMES else None


_ML_NAMES = frozenset(
    {"bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"}
    | {"float8_e8m0fnu"}
)
_TORCH_DTYPE_NAMES = frozenset(
    {"bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64"}
    | {"float16", "bfloat16", "float32", "float64", "complex64", "complex128"}
    | {"float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"}
)
_TORCH_NUMPY_NAMES = frozenset(
    {"bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"}
    | {"complex64", "complex128", "uint16", "uint32", "uint64"}
)


def assemble_array(read_array: ReadArray, saved: SavedSharding) -> np.ndarray:
    """The whole of a sharded tensor as one NumPy array, from its chunks.

    Raises:
        CorruptCheckpointError: When a chunk's array does not have its chunk's shape,
            or chunks differ in dtype.
    """
    parts = [(chunk, read_array(chunk.key)) for chunk in saved.chunks]
    named = (
        _torch_dtype_as_numpy(saved.dtype) if saved.tag == "dtensor" else array_dtype(saved.dtype)
    )
    dtype = parts[0][1].dtype if parts else (named or _numpy_dtype(saved.dtype))
    if parts and named is not None and named != dtype:
        raise _bad(saved.where, f"the chunks hold {dtype}, but the tensor is {saved.dtype}")
    out = np.empty(saved.shape, dtype)
    for chunk, array in parts:
        if array.shape != chunk.shape or array.dtype != dtype:
            raise _bad(
                saved.where,
                f"chunk {chunk.key!r} holds {array.dtype}{list(array.shape)}, not "
                f"{dtype}{list(chunk.shape)}",
            )
        out[tuple(slice(o, o + n) for o, n in zip(chunk.offsets, chunk.shape))] = array
    return out


def decode_value(
    encoded: Any,
    read_array: ReadArray,
    *,
    where: str,
    read_torch: ReadTorch | None = None,
    read_dtensor: ReadSharded | None = None,
    read_sharded: ReadSharded | None = None,
) -> Value:
    """Decode JSON written by :func:`encode_value`, reading arrays with ``read_array(tensor key)``.

    A ``"torch"`` value is read with ``read_torch(body)``; without it, it is
    read as a NumPy array (its tensor, when it is not a view of another one).
    A ``"dtensor"`` value is checked and read with ``read_dtensor(sharding)``;
    without it, it is read as one NumPy array. A ``"sharded"`` value likewise,
    with ``read_sharded``.

    Raises:
        CorruptCheckpointError: For anything :func:`encode_value` cannot have written.
        CheckpointMismatchError: For a view of a torch tensor read without ``read_torch``.
    """
    if read_torch is None:
        read_torch = functools.partial(_torch_as_array, read_array, where)
    if read_dtensor is None:
        read_dtensor = functools.partial(assemble_array, read_array)
    if read_sharded is None:
        read_sharded = functools.partial(assemble_array, read_array)
    return _decode(encoded, read_array, _Readers(read_torch, read_dtensor, read_sharded), where, 0)


class _Readers:
    """How torch values and sharded values are read (one object for the recursion)."""

    __slots__ = ("dtensor", "sharded", "torch")

    def __init__(self, torch: ReadTorch, dtensor: ReadSharded, sharded: ReadSharded) -> None:
        self.torch = torch
        self.dtensor = dtensor
        self.sharded = sharded

    def __call__(self, body: Any) -> Any:
        return self.torch(body)


def _torch_as_array(read_array: ReadArray, where: str, body: Any) -> np.ndarray:
    if isinstance(body, str):
        return read_array(body)
    if isinstance(body, dict) and set(body) <= {"of", "device"} and isinstance(body.get("of"), str):
        return read_array(body["of"])
    raise CheckpointMismatchError(
        f"the value at {_brief(where)} is a view of a torch tensor; read it with torch installed"
    )


_BRIEF = reprlib.Repr()
_BRIEF.maxlevel = 3
_BRIEF.maxstring = _BRIEF.maxother = 100


def _brief(value: Any) -> str:
    """A bounded repr of a value read from a file, for messages."""
    text = _BRIEF.repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _bad(where: str, why: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"malformed value at {_brief(where)} in checkpoint index: {why}")


def _decode(
    encoded: Any, read_array: ReadArray, read_torch: _Readers, where: str, depth: int
) -> Value:
    if depth > MAX_DEPTH:
        raise _bad(where, f"nested more than {MAX_DEPTH} levels deep")
    if encoded is None or isinstance(encoded, (bool, int, str)):
        return encoded
    if isinstance(encoded, float):
        return encoded
    if isinstance(encoded, list):
        return [_decode(v, read_array, read_torch, where, depth + 1) for v in encoded]
    if not isinstance(encoded, dict) or len(encoded) != 1:
        raise _bad(
            where, f"expected a JSON value or a one-key tagged object, got {_brief(encoded)}"
        )
    ((tag, body),) = encoded.items()
    if tag not in _TAGS:
        raise _bad(where, f"unknown tag {_brief(tag)}")
    if tag == "float":
        if not isinstance(body, str) or body not in _NON_FINITE:
            raise _bad(where, f"'float' must be 'nan', 'inf' or '-inf', got {_brief(body)}")
        return _NON_FINITE[body]
    if tag == "bytes":
        if not isinstance(body, str):
            raise _bad(where, "'bytes' must be a base64 string")
        try:
            return base64.b64decode(body.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as err:
            raise _bad(where, f"'bytes' is not valid base64: {err}") from None
    if tag == "tuple":
        if not isinstance(body, list):
            raise _bad(where, "'tuple' must be a JSON array")
        return tuple(_decode(v, read_array, read_torch, where, depth + 1) for v in body)
    if tag == "dict":
        if not isinstance(body, dict):
            raise _bad(where, "'dict' must be a JSON object")
        return {k: _decode(v, read_array, read_torch, where, depth + 1) for k, v in body.items()}
    if tag == "items":
        if not isinstance(body, list):
            raise _bad(where, "'items' must be a JSON array of [key, value] pairs")
        out: dict[Any, Value] = {}
        for pair in body:
            if not isinstance(pair, list) or len(pair) != 2:
                raise _bad(where, f"'items' entry {_brief(pair)} is not a [key, value] pair")
            k = _decode(pair[0], read_array, read_torch, where, depth + 1)
            try:
                hash(k)
            except TypeError:
                raise _bad(where, f"dict key {_brief(k)} is not hashable") from None
            if isinstance(k, np.generic):
                raise _bad(where, "dict keys cannot be NumPy scalars")
            out[k] = _decode(pair[1], read_array, read_torch, where, depth + 1)
        return out
    if tag == "torch":
        if not isinstance(body, (str, dict)):
            raise _bad(where, f"'torch' must name a tensor, got {_brief(body)}")
        return read_torch(body)
    if tag == "dtensor":
        return read_torch.dtensor(parse_sharding(body, where))
    if tag == "sharded":
        return read_torch.sharded(parse_sharding(body, where, "sharded"))
    if not isinstance(body, str):
        raise _bad(where, f"{tag!r} must name a tensor, got {_brief(body)}")
    array = read_array(body)
    if tag == "scalar":
        if array.ndim != 0:
            raise _bad(where, f"scalar tensor {_brief(body)} has shape {array.shape}")
        return array[()]
    return array


def torch_reader(
    read_raw: Callable[[str], tuple[np.ndarray, str | None]],
    read_array: ReadArray,
    tensors: MutableMapping[Any, Any],
) -> ReadTorch:
    """A ``read_torch`` for :func:`decode_value` that imports torch only when a torch value is read.

    ``tensors`` keeps the tensors read, by key (a ``WeakValueDictionary``), so
    that values sharing storage share it again. Where torch is not installed,
    torch values are read as NumPy arrays.
    """
    decoder: ReadTorch | None = None

    def read(body: Any) -> Any:
        nonlocal decoder
        if decoder is None:
            if importlib.util.find_spec("torch") is None:
                decoder = functools.partial(_torch_as_array, read_array, "a torch value")
            else:
                from pipestate.torch._state import TensorDecoder

                decoder = TensorDecoder(read_raw, tensors)
        return decoder(body)

    return read


def sharded_reader(
    read_raw: Callable[[str], tuple[np.ndarray, str | None]],
    read_array: ReadArray,
    placeholders: list[Any] | None = None,
    *,
    copy: bool = True,
) -> ReadSharded:
    """A ``read_dtensor`` for :func:`decode_value` that imports torch only when one is read.

    With torch, a sharded value is read as a torch tensor; with
    ``placeholders``, as a ``SavedDTensor`` that reads only the chunks its
    target needs, also appended to that list. ``read_raw`` reads without a
    copy; without ``copy``, a value that is one chunk may be a read-only view
    of it. Without torch (or torch.distributed), it is read as one NumPy array.
    """
    reader: ReadSharded | None = None

    def read(saved: SavedSharding) -> Any:
        nonlocal reader
        if reader is None:
            try:
                from pipestate.torch._dtensor import ShardedReader
            except ImportError:
                reader = functools.partial(assemble_array, read_array)
            else:
                reader = ShardedReader(read_raw, placeholders, copy=copy)
        return reader(saved)

    return read
