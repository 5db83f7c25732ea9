"""Reading materialised elements at random: the manifest, the index, and ranged reads.

See ``_element_store`` for the files. Every record's checksums are verified as
it is read; a damaged or hostile manifest, index or record raises
``DataLossError`` naming the file (and the byte offset).
"""

from __future__ import annotations

import json
import os
import struct
import threading
from collections.abc import Sequence
from typing import Any, BinaryIO

import google_crc32c
import numpy as np

from pipestate._validate import brief, is_int
from pipestate.data import _element_codec, _record_format, _structure
from pipestate.data._element_store import (
    _INDEX_COLUMNS,
    _INDEX_ITEM,
    _MAX_MANIFEST_BYTES,
    _SHARD,
    COMPRESSIONS,
    FORMAT,
    MANIFEST,
    MAX_SHARD,
    VERSION,
    Location,
    check_signature,
    spec_from_signature,
)
from pipestate.data._structure import Element
from pipestate.errors import DataLossError, NotFoundError


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
            if dtype.kind == "S" and not shape and nbytes and (block[:, -1] == 0).any():
                # A bytes value ending in NUL: read one by one (an S array drops them).
                return None
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
        # At interpreter exit module globals may already be gone: a plain try, no helpers.
        try:  # noqa: SIM105 - contextlib itself may be gone
            self.close()
        except Exception:
            pass

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
    check_signature(manifest.get("spec"), where)
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
