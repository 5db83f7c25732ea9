"""Writing materialised elements: a data file of records, then the index and the manifest.

See ``_element_store`` for the files. A writer appends to its own data file;
on a local filesystem it holds an exclusive ``flock`` on it, so another
process can take over a file whose writer died, and only such a file.
"""

from __future__ import annotations

import json
import os
from typing import Any, BinaryIO

import google_crc32c
import numpy as np

from pipestate.data import _element_codec, _record_format
from pipestate.data._element_store import (
    _INDEX_COLUMNS,
    _SHARD,
    FORMAT,
    MANIFEST,
    VERSION,
    Location,
    _lock,
    data_name,
    index_name,
    json_signature,
    merge_signatures,
    new_token,
    spec_signature,
)
from pipestate.data._structure import Element
from pipestate.errors import DataLossError


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
