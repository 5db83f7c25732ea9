"""The on-disk format of an object-graph checkpoint.

A checkpoint ``<prefix>`` is ``<prefix>.index`` plus data shards
``<prefix>.data-00000-of-0000N``. Shards are safetensors files whose tensor
names are the values' keys; the index is a JSON document::

    {"format": "pipestate-checkpoint", "version": 1, "crc32c": <of the body>,
     "checkpoint": {
        "num_shards": N,
        "nodes": [{"kind": "Checkpoint", "children": {"model": 1}, "attributes": {...}}, ...],
        "tensors": {"<key>": {"dtype": "<f4", "shape": [2, 3], "shard": 0,
                              "offset": 128, "length": 24, "crc32c": 1234}}}}

Node 0 is the root. ``offset`` is absolute in the shard file. Shards are
written first under their final names; the index is written last and
atomically, so a checkpoint without its index does not exist.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import json
import math
import queue
import re
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, NamedTuple, NoReturn

import google_crc32c
import numpy as np

from pipestate._validate import is_int
from pipestate.checkpoint._limits import INDEX_LIMIT, read_limited
from pipestate.checkpoint._safetensors import (
    TensorInfo,
    build_header,
    empty_shape_fits,
    parse_header,
    safetensors_dtype,
    shape_is_valid,
    strict_json_loads,
)
from pipestate.checkpoint._storage import RandomAccessFile, Storage, temporary_pattern
from pipestate.checkpoint._values import Value, decode_value
from pipestate.errors import (
    CheckpointError,
    CheckpointWriteError,
    CorruptCheckpointError,
    NotFoundError,
)

__all__ = [
    "DEFAULT_MAX_SHARD_BYTES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CheckpointReader",
    "Node",
    "TensorEntry",
    "check_graph_size",
    "gc_paused",
    "index_path",
    "missing_checkpoint_error",
    "node_paths",
    "prepare_array",
    "remove_interrupted_saves",
    "shard_name",
    "write_checkpoint",
    "write_error",
]

FORMAT_NAME = "pipestate-checkpoint"
FORMAT_VERSION = 1
DEFAULT_MAX_SHARD_BYTES = 2 << 30
MAX_SHARDS = 99_999
# Every object's first path from the root is materialised (for keys and messages), so
# the graph's depth and the summed length of those paths are bounded: a hostile index
# of a long chain of objects must not take quadratic time and memory.
MAX_GRAPH_DEPTH = 1000
MAX_PATH_COMPONENTS = 8_000_000
# ... and so is the length of the keys built from those paths (an object's, and one per
# saved attribute): long names deep in a graph must not multiply into terabytes of keys.
MAX_KEY_CHARS = 1 << 28
_CHUNK = 4 << 20
# Below this many bytes a shard is written inline; above, on a writer thread.
_THREADED_WRITE_BYTES = 4 * _CHUNK
_DTYPE_RE = re.compile(r"^[<>|][biufcSUVmM][0-9]{1,5}(\[[0-9]{0,6}[a-zA-Z]{1,2}\])?$")
_SHARD_RE = r"\.data-([0-9]{5})-of-([0-9]{5})$"
_FULL_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", None)) if code
)


def index_path(prefix: str) -> str:
    """The index file of a checkpoint prefix."""
    return prefix + ".index"


def shard_name(basename: str, shard: int, num_shards: int) -> str:
    """The file name of one data shard of the checkpoint ``basename``."""
    return f"{basename}.data-{shard:05d}-of-{num_shards:05d}"


class Node(NamedTuple):
    """One object of the saved graph (a tuple: a reader builds one per object, quickly)."""

    kind: str
    children: dict[str, int]
    attributes: dict[str, Any]


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


# -- writing -------------------------------------------------------------------


@dataclass(frozen=True)
class _Pending:
    key: str
    array: np.ndarray
    st_dtype: str

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)

    @property
    def st_shape(self) -> tuple[int, ...]:
        if self.st_dtype == "U8" and self.array.dtype != np.uint8:
            return (self.nbytes,)
        return tuple(self.array.shape)

    @property
    def alignment(self) -> int:
        return 1 if self.st_dtype == "U8" else min(self.array.dtype.itemsize, 8)


def prepare_array(
    key: str, array: np.ndarray, *, copy: Callable[[str, np.ndarray], np.ndarray] | None = None
) -> _Pending:
    """Check that ``array`` can be saved; bring it to little-endian C order (copying if needed).

    With ``copy`` (``copy(key, array)`` returns a copy in C order), the result
    never shares memory with ``array``: an async save must not see later
    changes to the saved objects.

    Raises:
        TypeError: For object, structured and sub-array dtypes, which have no byte layout to save.
    """
    dtype = array.dtype
    if (
        dtype.kind == "O"
        or dtype.fields is not None
        or dtype.subdtype is not None
        or dtype.itemsize == 0
    ):
        raise TypeError(
            f"cannot save the array at {key!r}: dtype {dtype} has no fixed byte layout; "
            "convert it to a numeric, bool, bytes (S) or str (U) dtype"
        )
    copied = False
    if dtype.byteorder == ">" or (dtype.byteorder == "=" and sys.byteorder == "big"):
        array, copied = array.astype(dtype.newbyteorder("<")), True
    if not array.flags.c_contiguous:
        array, copied = array.copy(order="C"), True
    if copy is not None and not copied:
        array = copy(key, array)
    return _Pending(key, array, safetensors_dtype(array.dtype))


def _plan(arrays: list[_Pending], max_shard_bytes: int) -> list[list[_Pending]]:
    shards: list[list[_Pending]] = [[]]
    size = 0
    for item in arrays:
        if shards[-1] and size + item.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += item.nbytes
    # Falling alignment keeps each tensor aligned to its item size in the file.
    return [sorted(s, key=lambda a: (-a.alignment, a.key)) for s in shards]


def _write_all(f: BinaryIO, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[f.write(view) :]


class _ChunkWriter:
    """Writes chunks on a background thread, so checksumming the next chunk overlaps the write."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name="pipestate-shard-writer", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"_ChunkWriter({self._f!r}, alive={self._thread.is_alive()})"

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    _write_all(self._f, chunk)
                except BaseException as err:  # surfaced on the producer's next call
                    self._error = err

    def write(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def close(self) -> None:
        """Wait for the queued chunks; re-raise the writer's error, if any."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def _write_shard(
    storage: Storage, path: str, items: list[_Pending], fsync: bool
) -> dict[str, tuple[int, int]]:
    header = build_header(
        [(a.key, a.st_dtype, a.st_shape, a.nbytes) for a in items], {"format": FORMAT_NAME}
    )
    placed: dict[str, tuple[int, int]] = {}
    offset = len(header)
    with storage.open_write(path, fsync=fsync) as f:
        _write_all(f, header)
        big = sum(a.nbytes for a in items) >= _THREADED_WRITE_BYTES
        writer = _ChunkWriter(f) if big else None
        write = writer.write if writer is not None else functools.partial(_write_all, f)
        try:
            for item in items:
                flat = item.array.reshape(-1).view(np.uint8).data
                crc = 0
                for start in range(0, len(flat), _CHUNK):
                    # google_crc32c takes only immutable bytes: one chunk-sized copy, also written.
                    chunk = flat[start : start + _CHUNK].tobytes()
                    crc = google_crc32c.extend(crc, chunk)
                    write(chunk)
                placed[item.key] = (offset, crc)
                offset += item.nbytes
        finally:
            if writer is not None:
                writer.close()
    return placed


def write_checkpoint(
    storage: Storage,
    prefix: str,
    nodes: list[dict[str, Any]],
    arrays: list[_Pending],
    *,
    max_shard_bytes: int,
    fsync: bool,
) -> None:
    """Write shards, then the index atomically; remove leftovers of an older save at ``prefix``."""
    directory, basename = storage.split(prefix)
    storage.makedirs(directory)
    # An older checkpoint at this very prefix is being replaced: drop its index
    # first, so that a crash leaves no checkpoint rather than one whose index
    # points at rewritten shards.
    if storage.remove(index_path(prefix)) and fsync:
        storage.fsync_dir(directory)
    shards = _plan(arrays, max_shard_bytes)
    num_shards = len(shards)
    if num_shards > MAX_SHARDS:
        raise ValueError(
            f"the checkpoint needs {num_shards} shards, more than {MAX_SHARDS}; "
            "raise CheckpointOptions.max_shard_bytes"
        )
    paths = [
        storage.join(directory, shard_name(basename, i, num_shards)) for i in range(num_shards)
    ]
    try:
        _write_shards_and_index(storage, prefix, nodes, shards, paths, fsync)
    except BaseException:
        # Nothing commits these shards now; free their space (a full disk is the usual cause).
        for path in paths:
            with contextlib.suppress(OSError):
                storage.remove(path)
        raise
    # The checkpoint is committed: stale files that cannot be removed now are removed later.
    with contextlib.suppress(OSError):
        _remove_leftovers(storage, directory, basename, num_shards)


def _write_shards_and_index(
    storage: Storage,
    prefix: str,
    nodes: list[dict[str, Any]],
    shards: list[list[_Pending]],
    paths: list[str],
    fsync: bool,
) -> None:
    num_shards = len(shards)
    if num_shards == 1:
        placements = [_write_shard(storage, paths[0], shards[0], fsync)]
    else:
        with ThreadPoolExecutor(max_workers=min(num_shards, 4)) as pool:
            placements = list(
                pool.map(
                    lambda i: _write_shard(storage, paths[i], shards[i], fsync), range(num_shards)
                )
            )
    tensors: dict[str, Any] = {}
    for shard, (items, placed) in enumerate(zip(shards, placements)):
        for item in items:
            offset, crc = placed[item.key]
            tensors[item.key] = {
                "dtype": item.array.dtype.str,
                "shape": list(item.array.shape),
                "shard": shard,
                "offset": offset,
                "length": item.nbytes,
                "crc32c": crc,
            }
    body = {"num_shards": num_shards, "nodes": nodes, "tensors": tensors}
    document = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "crc32c": _body_crc(body),
        "checkpoint": body,
    }
    if fsync:
        # The shards' directory entries must be durable before the index that commits them.
        storage.fsync_dir(storage.split(prefix)[0])
    storage.write_atomic(index_path(prefix), json.dumps(document).encode("utf-8"), fsync=fsync)


def _remove_leftovers(storage: Storage, directory: str, basename: str, num_shards: int) -> None:
    """Remove shards of an older save at this prefix, and index temporaries of crashed saves."""
    shards = re.compile(re.escape(basename) + _SHARD_RE)
    temporaries = re.compile(temporary_pattern(index_path(basename)))
    for name in storage.listdir(directory):
        match = shards.match(name)
        if (match and int(match.group(2)) != num_shards) or temporaries.fullmatch(name):
            storage.remove(storage.join(directory, name))


def remove_interrupted_saves(
    storage: Storage, directory: str, checkpoint_name: str, state_filename: str
) -> list[str]:
    """Remove what interrupted saves of ``<checkpoint_name>-<N>`` checkpoints left in ``directory``.

    That is data shards without an index, shards of another shard count than
    their index names (a save over an older checkpoint, interrupted after its
    commit), index temporaries, and temporaries of the state file
    ``state_filename``. Committed checkpoints and files of other names are
    never touched.

    Returns:
        The names of the files removed.
    """
    shard_re = re.compile(re.escape(checkpoint_name) + r"-([0-9]+)" + _SHARD_RE)
    temporary_re = re.compile(
        temporary_pattern(re.escape(checkpoint_name) + r"-[0-9]+\.index", escaped=True)
        + "|"
        + temporary_pattern(state_filename)
    )
    names = storage.listdir(directory)
    present = set(names)
    doomed = [name for name in names if temporary_re.fullmatch(name)]
    shards: dict[str, list[tuple[str, int]]] = {}
    for name in names:
        match = shard_re.match(name)
        if match is not None:
            basename = f"{checkpoint_name}-{match.group(1)}"
            shards.setdefault(basename, []).append((name, int(match.group(3))))
    for basename, found in shards.items():
        counts = {count for _, count in found}
        if index_path(basename) not in present:
            keep: set[int] = set()
        elif len(counts) > 1:
            keep = _indexed_count(storage, storage.join(directory, index_path(basename)), counts)
        else:
            keep = counts
        doomed += [name for name, count in found if count not in keep]
    for name in doomed:
        storage.remove(storage.join(directory, name))
    return doomed


def _indexed_count(storage: Storage, index: str, counts: set[int]) -> set[int]:
    """``{num_shards}`` of the index; all of ``counts`` when the index cannot be read."""
    try:
        num_shards, _, _ = _parse_index(
            read_limited(storage, index, INDEX_LIMIT), f"checkpoint index {index!r}"
        )
    except (CheckpointError, OSError):
        return counts
    return {num_shards}


def write_error(err: OSError, display: str) -> CheckpointWriteError:
    """A :class:`CheckpointWriteError` for a failed save of ``display``, with ``err``'s errno."""
    if err.errno in _FULL_ERRNOS:
        cause = (
            "The storage is full or a file-size limit was reached. Free some space (e.g. "
            "delete old checkpoints or lower max_to_keep) and save again."
        )
    else:
        cause = "Fix the storage problem and save again."
    reason = err.strerror or str(err) or type(err).__name__
    if err.filename is not None:
        reason += f" ({err.filename!r})"
    message = (
        f"could not write checkpoint {display!r}: {reason}. The checkpoint was not saved; "
        f"earlier checkpoints and the state file are intact. {cause}"
    )
    if err.errno is None:
        return CheckpointWriteError(message)
    return CheckpointWriteError(err.errno, message)


def _body_crc(body: object) -> int:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return int(google_crc32c.value(canonical.encode("ascii")))


# -- reading -------------------------------------------------------------------


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large graph is parsed or restored.

    Every few hundred containers allocated can start a collection, and the full
    ones walk the whole heap (the program's objects too): with millions of nodes
    they took most of the time of a restore. What is built here holds no
    reference cycles, so nothing is lost; collection resumes at the end.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class CheckpointReader:
    """Reads one checkpoint: the validated index, and arrays verified against their checksums.

    Arrays are read from memory-mapped shards (local files) or by ranged reads,
    and returned as fresh writable arrays.

    Raises:
        NotFoundError: When the index does not exist.
        CheckpointTooLargeError: When the index is larger than
            ``PIPESTATE_MAX_INDEX_BYTES`` (256 MiB by default); nothing of it is read.
        CorruptCheckpointError: When the index is malformed.
    """

    def __init__(self, storage: Storage, prefix: str, *, display: str | None = None) -> None:
        self.storage = storage
        self.prefix = prefix
        self.display = display or prefix
        self._index = index_path(prefix)
        data = read_limited(storage, self._index, INDEX_LIMIT)
        with gc_paused():
            self.num_shards, self.nodes, self.tensors = _parse_index(
                data, f"checkpoint index {self._index!r}"
            )
        self._shards: dict[int, tuple[RandomAccessFile, dict[str, TensorInfo]]] = {}

    def __repr__(self) -> str:
        return (
            f"CheckpointReader({self.display!r}, nodes={len(self.nodes)}, "
            f"tensors={len(self.tensors)}, shards={self.num_shards})"
        )

    def shard_path(self, shard: int) -> str:
        """The path of data shard number ``shard``."""
        directory, basename = self.storage.split(self.prefix)
        return self.storage.join(directory, shard_name(basename, shard, self.num_shards))

    def _shard(self, shard: int) -> tuple[RandomAccessFile, dict[str, TensorInfo]]:
        if shard not in self._shards:
            path = self.shard_path(shard)
            f = self.storage.open_random_access(path, what="checkpoint data shard")
            try:
                tensors, _ = parse_header(
                    f.read(0, min(8, f.size)), f.size, what=f"data shard {path!r}", read_more=f.read
                )
            except BaseException:
                f.close()
                raise
            self._shards[shard] = (f, tensors)
        return self._shards[shard]

    def entry(self, key: str) -> TensorEntry:
        """The index entry of tensor ``key``."""
        try:
            return self.tensors[key]
        except KeyError:
            raise CorruptCheckpointError(
                f"checkpoint {self.display!r} refers to tensor {key!r:.200}, which its index lacks"
            ) from None

    def read_tensor(self, key: str, *, copy: bool = True) -> np.ndarray:
        """Read tensor ``key`` and verify its checksum.

        Args:
            key: The tensor's key.
            copy: Return a fresh writable array; with ``False`` a local shard
                may return a read-only view of its memory map instead.

        Raises:
            CorruptCheckpointError: When the shard disagrees with the index, is
                truncated, or the bytes do not match the recorded crc32c.
        """
        entry = self.entry(key)
        f, header = self._shard(entry.shard)
        info = header.get(key)
        expected_dtype = safetensors_dtype(entry.dtype)
        where = f"value {key!r:.200} in data shard {f.path!r}"
        raw = expected_dtype == "U8" and entry.dtype != np.uint8
        if (
            info is None
            or info.offset != entry.offset
            or info.length != entry.length
            or info.dtype != expected_dtype
            or info.shape != ((entry.length,) if raw else entry.shape)
        ):
            raise CorruptCheckpointError(f"{where}: the shard's header does not match the index")
        view = None if copy else f.view(entry.offset, entry.length)
        out = np.empty(entry.shape, dtype=entry.dtype) if view is None else None
        flat = out.reshape(-1).view(np.uint8) if out is not None else None
        crc = 0
        for start in range(0, entry.length, _CHUNK):
            size = min(_CHUNK, entry.length - start)
            chunk = f.read(entry.offset + start, size)
            if len(chunk) != size:
                raise CorruptCheckpointError(f"{where}: the file is truncated")
            crc = google_crc32c.extend(crc, chunk)
            if flat is not None:
                flat[start : start + size] = np.frombuffer(chunk, dtype=np.uint8)
        if crc != entry.crc32c:
            raise CorruptCheckpointError(
                f"{where}: checksum mismatch (crc32c {crc:#010x}, index says "
                f"{entry.crc32c:#010x}); the checkpoint is corrupt"
            )
        if out is None:
            assert view is not None
            return np.frombuffer(view, dtype=entry.dtype).reshape(entry.shape)
        return out

    def decode(self, encoded: Any, *, where: str, copy: bool = True) -> Value:
        """Decode one attribute's JSON, reading its arrays (see :meth:`read_tensor`)."""
        read = self.read_tensor if copy else functools.partial(self.read_tensor, copy=False)
        return decode_value(encoded, read, where=where)

    def close(self) -> None:
        """Close the shards opened so far."""
        for f, _ in self._shards.values():
            f.close()
        self._shards.clear()

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _require(condition: bool, what: str, why: str) -> None:
    if not condition:
        raise CorruptCheckpointError(f"{what}: {why}")


def _fail(what: str, why: str) -> NoReturn:
    raise CorruptCheckpointError(f"{what}: {why}")


def _parse_index(data: bytes, what: str) -> tuple[int, list[Node], dict[str, TensorEntry]]:
    document = strict_json_loads(data, what)
    _require(isinstance(document, dict), what, "not a JSON object")
    _require(
        document.get("format") == FORMAT_NAME,
        what,
        f"not a pipestate checkpoint index (format {document.get('format')!r:.60})",
    )
    version = document.get("version")
    _require(
        version == FORMAT_VERSION and is_int(version),
        what,
        f"format version {version!r:.60} is not supported (this pipestate reads version "
        f"{FORMAT_VERSION}); use the pipestate release that wrote it",
    )
    _require(
        set(document) == {"format", "version", "crc32c", "checkpoint"}, what, "unexpected fields"
    )
    body = document["checkpoint"]
    _require(document["crc32c"] == _body_crc(body), what, "checksum mismatch; the index is corrupt")
    _require(
        isinstance(body, dict) and set(body) == {"num_shards", "nodes", "tensors"},
        what,
        "'checkpoint' must have exactly num_shards, nodes and tensors",
    )
    num_shards = body["num_shards"]
    _require(
        is_int(num_shards) and 1 <= num_shards <= MAX_SHARDS,
        what,
        f"bad num_shards {num_shards!r:.60}",
    )
    nodes = _parse_nodes(body["nodes"], what)
    tensors = _parse_tensors(body["tensors"], num_shards, what)
    return num_shards, nodes, tensors


_NODE_FIELDS = frozenset({"kind", "children", "attributes"})


def _parse_nodes(raw: object, what: str) -> list[Node]:
    _require(isinstance(raw, list) and len(raw) > 0, what, "'nodes' must be a non-empty list")
    assert isinstance(raw, list)
    count = len(raw)
    nodes = []
    # Messages are built only on failure: this loop runs once per object of the graph.
    for i, node in enumerate(raw):
        if not (isinstance(node, dict) and node.keys() == _NODE_FIELDS):
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
            _tensor_error(f"{what}: tensor {key!r:.200}", dtype, entry, num_shards)
        out[key] = TensorEntry(key, dtype, tuple(shape), shard, offset, length, crc)
    return out


def _tensor_error(
    where: str, dtype: np.dtype[Any], entry: dict[str, Any], num_shards: int
) -> NoReturn:
    """Raise the error for the first wrong field of a tensor entry known to be wrong."""
    shape, shard, offset, length, crc = (
        entry["shape"],
        entry["shard"],
        entry["offset"],
        entry["length"],
        entry["crc32c"],
    )
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


def missing_checkpoint_error(storage: Storage, prefix: str, display: str) -> NotFoundError:
    """A :class:`NotFoundError` for ``prefix``, suggesting numbered checkpoints that do exist."""
    directory, basename = storage.split(prefix)
    pattern = re.compile(re.escape(basename) + r"-([0-9]+)\.index$")
    numbers = sorted(
        int(m.group(1)) for m in map(pattern.match, storage.listdir(directory)) if m is not None
    )
    message = f"no checkpoint at {display!r}: {index_path(display)!r} does not exist"
    if numbers:
        shown = ", ".join(f"{display}-{n}" for n in numbers[-3:])
        message += (
            f". Checkpoint.save() appends a number to the prefix; did you mean "
            f"{display}-{numbers[-1]!s}? (found: {shown})"
        )
    else:
        message += ". Pass the path save() returned, e.g. 'ckpt-1' for prefix 'ckpt'"
    return NotFoundError(message)


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
