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
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import struct
import threading
from collections.abc import Sequence
from typing import Any, BinaryIO

import fsspec
import google_crc32c
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from pipestate._validate import brief, is_int
from pipestate.data import _element_codec, _record_format, _structure
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


def _check_signature(value: Any, where: str) -> None:
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


# ------------------------------------------------------------------------ writing
class ElementWriter:
    """Appends elements to a store's data file, keeping the index of what it wrote.

    ``flush()`` hands what was written to the operating system; ``sync()``
    makes it durable (a local file's fsync). ``finish()`` writes the index and
    the manifest (the commit). Elements written past a saved position are cut
    off when another writer takes the file over from that position.
    """

    def __init__(
        self, location: Location, compression: str | None, what: str, token: str | None = None
    ) -> None:
        self.location = location
        self.compression = compression
        self.what = what
        self.token = token or new_token()
        self.parts: list[tuple[str, int]] = []  # closed data files: name and size
        self.name = data_name(self.token, 0)  # the data file being written
        self.offsets: list[int] = []
        self.shards: list[int] = []
        self.part_of: list[int] = []
        self.bytes = 0  # of the data file being written
        self.signature: list[Any] | None = None
        self._last_signature: Any = None
        self._file: BinaryIO | None = None

    # -- opening
    def open_new(self) -> None:
        """Creates the data file being written (and its parent directories)."""
        self.location.makedirs()
        path = self.location.path(self.name)
        if self.location.local:
            self._file = open(path, "wb")  # noqa: SIM115 - kept open while writing
            _lock(self._file)
        else:
            self._file = self.location.fs.open(path, "wb")

    def take_over(self, size: int, count: int) -> bool:
        """Continues this token's file from byte ``size`` (``count`` elements before it).

        Local files only: locks the file (``False`` if its writer is alive),
        checks the records before ``size`` and cuts off what follows. ``False``
        where the file is gone, shorter, damaged, or not local.
        """
        if not self.location.local:
            return False
        path = self.location.path(self.name)
        try:
            handle = open(path, "r+b")  # noqa: SIM115 - kept open while writing
        except OSError:
            return False
        try:
            if not _lock(handle, block=False):
                handle.close()
                return False
            handle.seek(0, os.SEEK_END)
            if handle.tell() < size:
                handle.close()
                return False
            handle.seek(0)
            scanned = scan(
                handle, size, self.location.describe(self.name), self.what, self.compression
            )
        except (DataLossError, OSError):
            handle.close()
            return False
        offsets, shards, signature = scanned
        if len(offsets) != count:
            handle.close()
            return False
        handle.truncate(size)
        handle.seek(size)
        self._file = handle
        self.offsets, self.shards, self.signature = offsets, shards, signature
        self.part_of = [0] * len(offsets)
        self.bytes = size
        return True

    def resume_parts(self, parts: list[tuple[str, int]], count: int) -> bool:
        """Continues after the closed data files ``parts`` (``count`` elements in all).

        Each is checked (its size, every record) and indexed; the next element
        goes to a new data file. ``False`` where one is gone, of another size
        or damaged.
        """
        offsets: list[int] = []
        shards: list[int] = []
        part_of: list[int] = []
        signature: list[Any] | None = None
        for number, (name, size) in enumerate(parts):
            if name != data_name(self.token, number) or self.location.size(name) != size:
                return False
            try:
                with self.location.fs.open(self.location.path(name), "rb") as handle:
                    found = scan(
                        handle, size, self.location.describe(name), self.what, self.compression
                    )
            except (DataLossError, OSError):
                return False
            offsets += found[0]
            shards += found[1]
            part_of += [number] * len(found[0])
            if found[2] is not None:
                signature = merge_signatures(signature, found[2])
        if len(offsets) != count:
            return False
        self.parts = list(parts)
        self.offsets, self.shards, self.part_of, self.signature = (
            offsets,
            shards,
            part_of,
            signature,
        )
        self.name = data_name(self.token, len(parts))
        self.bytes = 0
        return True

    # -- writing
    def write(self, element: Element, shard: int = 0) -> None:
        payload, signature = _element_codec.encode(element, self.what)
        data = _SHARD.pack(shard) + _element_codec.compress(payload, self.compression)
        header, footer = _record_format.frame(data)
        if self._file is None:  # the first element after close_part()
            self.open_new()
        assert self._file is not None
        self._file.write(header + data + footer)
        self.offsets.append(self.bytes)
        self.shards.append(shard)
        self.part_of.append(len(self.parts))
        self.bytes += len(header) + len(data) + len(footer)
        if signature != self._last_signature:
            self._last_signature = signature
            self.signature = merge_signatures(self.signature, json_signature(signature))

    @property
    def count(self) -> int:
        return len(self.offsets)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def sync(self) -> None:
        self.flush()
        if self._file is not None and self.location.local:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            handle, self._file = self._file, None
            handle.close()

    def close_part(self) -> None:
        """Finishes the data file being written (an object store's upload completes) and
        starts a new one at the next element: what was written is then durable."""
        if self._file is None or not self.bytes:
            return
        self.close()
        self.parts.append((self.name, self.bytes))
        self.name = data_name(self.token, len(self.parts))
        self.bytes = 0

    def abandon(self) -> None:
        """Closes and deletes the data files (their elements are not wanted)."""
        self.close()
        for name in [*(name for name, _ in self.parts), self.name]:
            self.location.remove(name)

    def finish(self, fingerprint: str, extra: dict[str, Any] | None = None) -> None:
        """Writes the index, then the manifest (the commit), durably where local."""
        if self._file is None and not self.parts:
            self.open_new()  # no element at all: an empty data file
        parts = list(self.parts)
        if self._file is not None:
            self.sync()
            self.close()
            parts.append((self.name, self.bytes))
        index = np.empty((self.count, _INDEX_COLUMNS), "<i8")
        index[:, 0] = self.part_of
        index[:, 1] = self.offsets
        index[:, 2] = self.shards
        data = index.tobytes()
        self.location.write_atomic(index_name(self.token), data)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "count": self.count,
            "compression": self.compression,
            "fingerprint": fingerprint,
            "parts": [{"file": name, "bytes": size} for name, size in parts],
            "index": {
                "file": index_name(self.token),
                "bytes": len(data),
                "crc32c": int(google_crc32c.value(data)),
            },
            "shards": (max(self.shards) + 1) if self.shards else 0,
            "spec": self.signature,
            **(extra or {}),
        }
        self.location.write_atomic(MANIFEST, json.dumps(manifest, sort_keys=True).encode())
        self.parts = parts


def _lock(handle: BinaryIO, block: bool = True) -> bool:
    """An exclusive ``flock`` on an open local file; ``False`` if another holds it."""
    flags = fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB)
    try:
        fcntl.flock(handle.fileno(), flags)
    except BlockingIOError:
        return False
    return True


def scan(
    stream: BinaryIO, size: int, where: str, what: str, compression: str | None
) -> tuple[list[int], list[int], list[Any] | None]:
    """The offsets, shards and merged spec of the records in the first ``size`` bytes.

    Every record is checked (framing, checksums, payload).

    Raises:
      DataLossError: a damaged record, or a record cut at ``size``.
    """
    offsets: list[int] = []
    shards: list[int] = []
    signature: list[Any] | None = None
    offset = 0
    while offset < size:
        result = _record_format.read_record(stream, where, offset, what)
        if result is None or result[1] > size:
            raise DataLossError(f"{what}: {where!r} ends inside the record at byte {offset}")
        data, end = result
        if len(data) < _SHARD.size:
            raise DataLossError(f"{what}: {where!r}: the record at byte {offset} has no shard")
        element = _element_codec.decode(
            data[_SHARD.size :], compression, f"{where!r} at byte offset {offset}"
        )
        signature = merge_signatures(signature, spec_signature(element))
        offsets.append(offset)
        shards.append(_SHARD.unpack_from(data)[0])
        offset = end
    return offsets, shards, signature


# ------------------------------------------------------------------------ reading
class StoredElements:
    """A complete store, read at random: element ``i`` is one ranged read.

    Raises (from :meth:`open`):
      NotFoundError: no manifest (the store was never completed).
      DataLossError: a damaged, truncated or hostile manifest, index or data file.
    """

    def __init__(
        self, location: Location, manifest: dict[str, Any], index: np.ndarray, what: str
    ) -> None:
        self.location = location
        self.what = what
        self.manifest = manifest
        self.count: int = manifest["count"]
        self.compression: str | None = manifest["compression"]
        self.parts: list[str] = [part["file"] for part in manifest["parts"]]
        part_bytes = np.array([part["bytes"] for part in manifest["parts"]], np.int64)
        self.part_of = index[:, 0].copy()
        self.offsets = index[:, 1].copy()
        self.shards = index[:, 2].copy()
        # A record ends where the next one of its part starts, or at the part's end.
        ends = np.empty_like(self.offsets)
        if self.count:
            ends[:-1] = self.offsets[1:]
            last_in_part = np.ones(self.count, bool)
            last_in_part[:-1] = self.part_of[1:] != self.part_of[:-1]
            ends[last_in_part] = part_bytes[self.part_of[last_in_part]]
        self.ends = ends
        self._fds: dict[int, int] = {}
        self._handles: dict[int, BinaryIO] = {}  # remote files, read under the lock
        self._lock = threading.Lock()
        self.spec = spec_from_signature(manifest["spec"])

    @classmethod
    def open(cls, location: Location, what: str) -> StoredElements:
        raw = location.read_bytes(MANIFEST, _MAX_MANIFEST_BYTES, what)
        where = location.describe(MANIFEST)
        manifest = parse_manifest(raw, where, what)
        entry = manifest["index"]
        index_where = location.describe(entry["file"])
        data = location.read_bytes(entry["file"], entry["bytes"], what)
        if len(data) != entry["bytes"] or len(data) != manifest["count"] * _INDEX_ITEM:
            raise DataLossError(
                f"{what}: {index_where!r} has {len(data)} bytes, the manifest says "
                f"{entry['bytes']} for {manifest['count']} elements: truncated or damaged"
            )
        if int(google_crc32c.value(data)) != entry["crc32c"]:
            raise DataLossError(f"{what}: {index_where!r} does not match its checksum: damaged")
        index = np.frombuffer(data, "<i8").reshape(-1, _INDEX_COLUMNS).astype(np.int64)
        _check_index(index, manifest, index_where, what)
        return cls(location, manifest, index, what)

    def positions_of_shard(self, shard: int) -> np.ndarray:
        return np.flatnonzero(self.shards == shard)

    def _read(self, part: int, start: int, end: int) -> bytes:
        name = self.parts[part]
        if self.location.local:
            fd = self._fds.get(part)
            if fd is None:
                try:
                    fd = os.open(self.location.path(name), os.O_RDONLY)
                except FileNotFoundError as err:
                    raise NotFoundError(
                        f"{self.what}: {self.location.describe(name)!r} does not exist"
                    ) from err
                fd = self._fds.setdefault(part, fd)
            data = os.pread(fd, end - start, start)
        else:
            with self._lock:
                handle = self._handles.get(part)
                try:
                    if handle is None:
                        handle = self.location.fs.open(self.location.path(name), "rb")
                        self._handles[part] = handle
                    handle.seek(start)
                    data = handle.read(end - start)
                except FileNotFoundError as err:
                    raise NotFoundError(
                        f"{self.what}: {self.location.describe(name)!r} does not exist"
                    ) from err
        if len(data) != end - start:
            raise DataLossError(
                f"{self.what}: {self.location.describe(name)!r} is truncated: bytes "
                f"{start} to {end} were expected, it ends at {start + len(data)}"
            )
        return data

    def _decode(self, buffer: bytes, at: int, part: int, offset: int) -> Element:
        data = _parse_record(buffer, at)
        try:
            if isinstance(data, str):
                raise _element_codec._Malformed(data)
            return _element_codec.decode_payload(data[_SHARD.size :], self.compression)
        except _element_codec.MALFORMED as err:
            where = f"{self.location.describe(self.parts[part])!r} at byte offset {offset}"
            raise DataLossError(f"{self.what}: {where}: {err}") from None

    def get(self, position: int) -> Element:
        part, start, end = (
            int(self.part_of[position]),
            int(self.offsets[position]),
            int(self.ends[position]),
        )
        return self._decode(self._read(part, start, end), 0, part, start)

    def get_list(self, positions: Sequence[int] | np.ndarray) -> list[Element]:
        """The elements at ``positions``; runs of consecutive elements are one read."""
        positions = np.asarray(positions, np.int64)
        out: list[Element] = []
        i = 0
        while i < len(positions):
            j = i + 1
            part = self.part_of[positions[i]]
            while (
                j < len(positions)
                and positions[j] == positions[j - 1] + 1
                and self.part_of[positions[j]] == part
            ):
                j += 1
            first, last = int(positions[i]), int(positions[j - 1])
            start = int(self.offsets[first])
            buffer = self._read(int(part), start, int(self.ends[last]))
            uniform = self._decode_uniform(buffer, last - first + 1)
            if uniform is not None:
                out += uniform
            else:
                for k in range(first, last + 1):
                    offset = int(self.offsets[k])
                    out.append(self._decode(buffer, offset - start, int(part), offset))
            i = j
        return out

    def _decode_uniform(self, buffer: bytes, count: int) -> list[Element] | None:
        """``count`` records of one size and one layout (structure, dtypes, shapes), each
        leaf read for all of them as one array; ``None`` where they are not alike (or one
        is damaged: the element-by-element path then says which)."""
        if self.compression is not None or count < 2 or len(buffer) % count:
            return None
        size = len(buffer) // count
        head, foot = _record_format.HEADER_SIZE, _record_format.FOOTER_SIZE
        data_start = head + _SHARD.size
        if size < data_start + foot:
            return None
        rows = np.frombuffer(buffer, np.uint8).reshape(count, size)
        length, length_crc = _HEADER.unpack_from(buffer)
        if length != size - head - foot or _record_format.masked_crc(buffer[:8]) != length_crc:
            return None
        if not (rows[:, :head] == rows[0, :head]).all():
            return None
        found = _element_codec.layout(buffer[data_start : size - foot])
        if found is None:
            return None
        structure, headers, leaves = found
        for low, high in headers:
            low, high = low + data_start, high + data_start
            if not (rows[:, low:high] == rows[0, low:high]).all():
                return None
        crc = _record_format.masked_crc
        for row in range(count):
            at = row * size
            stored = _CRC.unpack_from(buffer, at + size - foot)[0]
            if crc(buffer[at + head : at + size - foot]) != stored:
                return None
        columns = []
        for offset, dtype, shape, nbytes in leaves:
            if not dtype.itemsize:
                return None
            low = data_start + offset
            block = np.ascontiguousarray(rows[:, low : low + nbytes])
            columns.append(block.view(dtype).reshape(count, *shape))
        batch = _element_codec.build(structure, iter(columns))
        return _structure.unstack(batch, count)

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)
        handles, self._handles = self._handles, {}
        for handle in handles.values():
            handle.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes open their own descriptors.
        state = self.__dict__.copy()
        state["_fds"], state["_handles"], state["_lock"] = {}, {}, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


_HEADER = struct.Struct("<QI")
_CRC = struct.Struct("<I")


def _parse_record(buffer: bytes, at: int) -> bytes | str:
    """The data of the record at ``at`` of ``buffer``, or what is wrong with it."""
    header = buffer[at : at + _record_format.HEADER_SIZE]
    if len(header) < _record_format.HEADER_SIZE:
        return "truncated record header"
    length, length_crc = _HEADER.unpack(header)
    if _record_format.masked_crc(header[:8]) != length_crc:
        return "corrupted record: its length's checksum differs"
    start = at + _record_format.HEADER_SIZE
    end = start + length
    if end + _record_format.FOOTER_SIZE > len(buffer):
        return "truncated record: it runs past its end"
    data = buffer[start:end]
    if _record_format.masked_crc(data) != _CRC.unpack_from(buffer, end)[0]:
        return "corrupted record: its data's checksum differs"
    if length < _SHARD.size:
        return "corrupted record: it has no shard number"
    return data


def parse_manifest(raw: bytes, where: str, what: str) -> dict[str, Any]:
    """A manifest's JSON, checked strictly.

    Raises:
      DataLossError: not a manifest of this format, or a field of the wrong type.
    """
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise DataLossError(f"{what}: {where!r} is not valid JSON ({err}): damaged") from None

    def bad(detail: str) -> DataLossError:
        return DataLossError(f"{what}: {where!r} is not a valid manifest: {detail}")

    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise bad(f"it has no 'format': {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise bad(
            f"version {brief(manifest.get('version'), 40)}, this pipestate reads version {VERSION}"
        )
    count = manifest.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise bad(f"'count' must be a non-negative int, got {brief(count, 40)}")
    if manifest.get("compression") not in COMPRESSIONS:
        raise bad(f"unknown compression {brief(manifest.get('compression'), 40)}")
    if not isinstance(manifest.get("fingerprint"), str):
        raise bad("'fingerprint' must be a str")
    parts = manifest.get("parts")
    if not isinstance(parts, list) or not parts:
        raise bad("'parts' must be a non-empty list")
    for part in parts:
        if (
            not isinstance(part, dict)
            or not _safe_name(part.get("file"))
            or not is_int(part.get("bytes"))
            or part["bytes"] < 0
        ):
            raise bad(f"malformed part {brief(part, 80)}")
    entry = manifest.get("index")
    if (
        not isinstance(entry, dict)
        or not _safe_name(entry.get("file"))
        or not is_int(entry.get("bytes"))
        or not is_int(entry.get("crc32c"))
    ):
        raise bad(f"malformed 'index' {brief(entry, 80)}")
    shards = manifest.get("shards")
    if not isinstance(shards, int) or isinstance(shards, bool) or not 0 <= shards <= MAX_SHARD + 1:
        raise bad(f"'shards' must be a non-negative int, got {brief(shards, 40)}")
    _check_signature(manifest.get("spec"), where)
    return manifest


def _safe_name(name: Any) -> bool:
    """A file name of the store itself: no directories, nothing outside it."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 200
        and "/" not in name
        and "\\" not in name
        and name not in (".", "..")
    )


def _check_index(index: np.ndarray, manifest: dict[str, Any], where: str, what: str) -> None:
    parts = manifest["parts"]
    if not len(index):
        return
    part_of, offsets, shards = index[:, 0], index[:, 1], index[:, 2]
    sizes = np.array([part["bytes"] for part in parts], np.int64)
    if part_of.min() < 0 or part_of.max() >= len(parts):
        raise DataLossError(f"{what}: {where!r} names a part the manifest does not have")
    if offsets.min() < 0 or np.any(offsets >= sizes[part_of]):
        raise DataLossError(f"{what}: {where!r} has an offset outside its data file")
    same = part_of[1:] == part_of[:-1]
    if np.any(np.diff(part_of) < 0) or np.any(np.diff(offsets)[same] <= 0):
        raise DataLossError(f"{what}: {where!r} is not in file order: damaged")
    if shards.min() < 0 or shards.max() >= manifest["shards"]:
        raise DataLossError(f"{what}: {where!r} has a shard number the manifest does not have")
