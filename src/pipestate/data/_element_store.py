"""Materialised elements on a filesystem: the files ``cache``, ``save`` and ``snapshot`` write.

A store is a set of files whose names share a ``root`` (a directory and a
``/``, or a file prefix and a ``.``), on any fsspec filesystem:

- ``data-<token>-<part>.records``: the elements, one record each, in the
  TFRecord framing (``_record_format``: length and data each with a crc32c).
  A record's data is a uint32 shard number and the element's payload
  (``_element_codec``), gzip-compressed when the store is.
- ``index-<token>.bin``: per element, in order, three little-endian int64:
  its part, its record's byte offset and its shard. It makes the store
  random access: element ``i`` is one read.
- ``manifest.json``: the counts, the parts with their sizes, the index's size
  and crc32c, the elements' spec and the input's fingerprint. It is written
  last, to a temporary name and renamed, so a store without its manifest does
  not exist, and one with a manifest is complete.

A writer appends to its own data file, named by a random token, so two
writers never share a file. On a local filesystem the writer holds an
exclusive ``flock`` on it; after a crash another process can take the file
over (truncating it to the length a saved position recorded) and continue.

This module holds the names, where the files are (``Location``), the argument
checks and the elements' spec; ``_element_writer`` writes a store and
``_element_reader`` reads one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import struct
from typing import Any, BinaryIO

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from pipestate._validate import brief, is_int
from pipestate.data import _element_codec
from pipestate.data._files import to_path
from pipestate.data._spec import TensorSpec
from pipestate.data._structure import Element
from pipestate.errors import DataLossError, NotFoundError

FORMAT = "pipestate.elements"
VERSION = 1
MANIFEST = "manifest.json"
COMPRESSIONS = (None, "GZIP")
_ARGUMENTS = (None, "", "GZIP")
_SHARD = struct.Struct("<I")
_INDEX_COLUMNS = 3
_INDEX_ITEM = 8 * _INDEX_COLUMNS
_MAX_MANIFEST_BYTES = 1 << 26
MAX_SHARD = (1 << 32) - 1


def new_token() -> str:
    """A random name part that no other writer uses."""
    return secrets.token_hex(8)


def data_name(token: str, part: int) -> str:
    return f"data-{token}-{part:05d}.records"


def index_name(token: str) -> str:
    return f"index-{token}.bin"


class Location:
    """Where a store's files are: a filesystem and the root their names follow."""

    def __init__(self, root: str) -> None:
        self.url = root
        self.fs, path = fsspec.core.url_to_fs(root)
        self.root: str = path
        if root.endswith("/") and not self.root.endswith("/"):
            self.root += "/"  # a directory: fsspec drops the separator
        self.local = isinstance(self.fs, LocalFileSystem)

    def path(self, name: str) -> str:
        return self.root + name

    def describe(self, name: str) -> str:
        return self.url + name

    def exists(self, name: str) -> bool:
        return bool(self.fs.exists(self.path(name)))

    def size(self, name: str) -> int | None:
        try:
            return int(self.fs.size(self.path(name)))
        except FileNotFoundError:
            return None

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(name))

    def makedirs(self) -> None:
        parent = self.root.rsplit("/", 1)[0] if "/" in self.root else ""
        if parent:
            self.fs.makedirs(parent, exist_ok=True)

    def remove_dead_writers(self, keep: set[str]) -> int:
        """Deletes the data files of writers that died (unlocked), except ``keep``; local only.

        Called once a store is complete: a dead writer's file is then of no use
        (a restore of its position finds the complete store and passes through).
        Returns how many files were deleted.
        """
        if not self.local:
            return 0
        directory, prefix = os.path.split(self.root)
        removed = 0
        for name in os.listdir(directory or "."):
            short = name[len(prefix) :]
            if not name.startswith(prefix) or short in keep:
                continue
            if not (short.startswith("data-") and short.endswith(".records")):
                continue
            path = os.path.join(directory, name)
            try:
                handle = open(path, "rb")  # noqa: SIM115 - closed below, after the unlink
            except OSError:
                continue
            with handle:
                if _lock(handle, block=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(path)
                        removed += 1
        return removed

    def write_atomic(self, name: str, data: bytes) -> None:
        """Writes ``name`` whole: a temporary file renamed over it (fsynced where local)."""
        temporary = f"{name}.tmp-{new_token()}"
        path = self.path(temporary)
        if self.local:
            with open(path, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(path, self.path(name))
            self.sync_directory()
            return
        with self.fs.open(path, "wb") as f:
            f.write(data)
        self.fs.mv(path, self.path(name))

    def sync_directory(self) -> None:
        if self.local:
            directory = os.path.dirname(self.root) or "."
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def read_bytes(self, name: str, limit: int, what: str) -> bytes:
        size = self.size(name)
        if size is None:
            raise NotFoundError(f"{what}: {self.describe(name)!r} does not exist")
        if size > limit:
            raise DataLossError(
                f"{what}: {self.describe(name)!r} has {size} bytes, more than the {limit} "
                "a file of this kind can have: it is damaged or not written by pipestate"
            )
        data: bytes = self.fs.cat_file(self.path(name))
        return data


def check_compression(value: Any, op: str, *, auto: bool = False) -> str | None:
    """A store's compression: ``None`` / ``""`` (none) or ``"GZIP"`` (and ``"AUTO"``: none)."""
    allowed = (*_ARGUMENTS, "AUTO") if auto else _ARGUMENTS
    if value == "SNAPPY":
        raise ValueError(
            f"{op}: compression 'SNAPPY' is not available in pipestate; use 'GZIP' or None"
        )
    if not isinstance(value, (str, type(None))) or value not in allowed:
        names = ", ".join(repr(v) for v in allowed)
        raise ValueError(f"{op}: compression must be one of {names}, got {brief(value, 60)}")
    return None if value in (None, "", "AUTO") else value


def directory_root(path: Any, op: str) -> str:
    """A store directory (a local path or an fsspec URL) as the root its file names follow."""
    if isinstance(path, (str, bytes, os.PathLike, np.ndarray)):
        text = to_path(path, op)
    else:
        raise TypeError(
            f"{op}: path must be a str or os.PathLike, got {type(path).__name__} {brief(path, 80)}"
        )
    if not text:
        raise ValueError(f"{op}: path must not be empty")
    return text.rstrip("/") + "/"


# ------------------------------------------------------------------ the elements' spec
def json_signature(signature: Any) -> list[Any]:
    """A signature from ``_element_codec.encode`` in its JSON form (lists, as in manifests)."""
    structure, leaves = signature
    loaded: list[Any] = json.loads(
        json.dumps([structure, [[dtype, list(shape)] for dtype, shape in leaves]])
    )
    return loaded


def spec_signature(element: Element) -> list[Any]:
    """The JSON-able spec of one element: its structure and each leaf's dtype and shape."""
    return json_signature(_element_codec.encode(element, "spec")[1])


def merge_signatures(a: list[Any] | None, b: list[Any]) -> list[Any] | None:
    """The spec of elements of spec ``a`` or ``b`` (``None``: they differ in structure or dtype)."""
    if a is None or a == b:
        return b if a is None else a
    if a[0] != b[0] or len(a[1]) != len(b[1]):
        return ["mixed", []]
    leaves = []
    for (dtype_a, shape_a), (dtype_b, shape_b) in zip(a[1], b[1]):
        same_kind = dtype_a == dtype_b or (dtype_a[1] == "S" and dtype_b[1] == "S")
        if not same_kind:
            return ["mixed", []]
        dtype = dtype_a if dtype_a == dtype_b else "|S"
        if shape_a is None or shape_b is None or len(shape_a) != len(shape_b):
            leaves.append([dtype, None])
        else:
            leaves.append([dtype, [p if p == q else None for p, q in zip(shape_a, shape_b)]])
    return [a[0], leaves]


def spec_from_signature(signature: Any) -> Any:
    """The ``TensorSpec`` structure of a signature, or ``None`` when unknown or mixed."""
    if signature is None or signature[0] == "mixed":
        return None
    leaves = iter(signature[1])

    def build(node: Any) -> Any:
        if node == "L":
            dtype, shape = next(leaves)
            return TensorSpec(shape, np.dtype(dtype) if dtype != "|S" else "string")
        if node[0] == "T":
            return tuple(build(item) for item in node[1])
        if node[0] == "D":
            return {key: build(item) for key, item in node[1]}
        cls = _element_codec._namedtuple(node[1], tuple(node[2]))
        return cls(*(build(item) for item in node[3]))

    return build(signature[0])


def check_signature(value: Any, where: str) -> None:
    try:
        if value is None:
            return
        if value == ["mixed", []]:
            return
        _element_codec._check_structure(value[0], 0)
        for dtype, shape in value[1]:
            if dtype != "|S":
                _element_codec.check_dtype(dtype)
            if shape is not None and not all(d is None or (is_int(d) and d >= 0) for d in shape):
                raise _element_codec._Malformed(f"bad shape {brief(shape, 60)}")
        count = sum(1 for _ in _signature_leaves(value[0]))
        if count != len(value[1]):
            raise _element_codec._Malformed("the spec's leaves do not match its structure")
    except (_element_codec._Malformed, TypeError, ValueError, IndexError) as err:
        raise DataLossError(f"{where}: malformed element spec {brief(value, 120)}: {err}") from None


def _signature_leaves(node: Any) -> Any:
    if node == "L":
        yield node
        return
    items = node[1] if node[0] == "T" else [v for _, v in node[1]] if node[0] == "D" else node[3]
    for item in items:
        yield from _signature_leaves(item)


def _lock(handle: BinaryIO, block: bool = True) -> bool:
    """An exclusive ``flock`` on an open local file; ``False`` if another holds it."""
    flags = fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB)
    try:
        fcntl.flock(handle.fileno(), flags)
    except BlockingIOError:
        return False
    return True
