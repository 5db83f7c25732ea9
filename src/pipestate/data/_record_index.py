"""Record index files: where each record of a TFRecord file starts, so records read by number.

``RecordWriter`` writes ``<file>.index`` beside an uncompressed record file
when it closes it (``write_record_index`` makes one for an existing file)::

    8 bytes   magic b"PSRECIDX"
    uint32    format version (1)
    uint64    number of records n
    uint64    size of the record file in bytes
    uint64[n] byte offset of each record
    uint32    crc32c of everything before it

all little endian. An index is used only if it is whole (its length is the
one its header implies and its checksum matches), it describes a file of the
record file's current size, and its offsets are increasing and leave room
for a record's framing; anything else is :class:`~pipestate.errors.DataLossError`
(a stale or damaged index). Reading a record still verifies the record's own
checksums, so a file rewritten to the same size is caught at its first record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import google_crc32c
import numpy as np

from pipestate._validate import brief
from pipestate.data import _record_format
from pipestate.data._remote import RangeReader, ReadOptions, call_with_retries, filesystem
from pipestate.errors import DataLossError, NotFoundError

INDEX_SUFFIX = ".index"
_MAGIC = b"PSRECIDX"
_VERSION = 1
_HEADER = struct.Struct("<8sIQQ")
_CRC = struct.Struct("<I")
_MIN_RECORD = _record_format.HEADER_SIZE + _record_format.FOOTER_SIZE
_LENGTH_HEADER = struct.Struct("<QI")
_ASK_EACH = 4  # files of one directory asked for one by one; more: the directory is listed


def check_use_index(value: Any, op: str) -> bool | str:
    """Validates a ``use_index`` argument: ``True``, ``False`` or ``"auto"``."""
    if value is True or value is False or (isinstance(value, str) and value == "auto"):
        return value
    raise (TypeError if not isinstance(value, (bool, str, np.bool_)) else ValueError)(
        f"{op}: use_index must be True, False or 'auto', got {brief(value, 80)}"
    )


def index_path(path: str) -> str:
    """The index file of the record file ``path``."""
    return path + INDEX_SUFFIX


@dataclasses.dataclass(frozen=True)
class IndexFormat:
    """One kind of offset index: its magic number, its name in messages, how to rebuild it."""

    magic: bytes
    kind: str  # "record index"
    entries: str  # what its offsets count: "records"
    rebuild: str  # the call that writes it again


RECORD_INDEX = IndexFormat(_MAGIC, "record index", "records", "ps.data.write_record_index(path)")


def encode_index(
    offsets: Sequence[int] | np.ndarray, data_size: int, fmt: IndexFormat = RECORD_INDEX
) -> bytes:
    """The index of a file of ``data_size`` bytes with entries at ``offsets``."""
    array = np.asarray(offsets, dtype="<u8")
    body = _HEADER.pack(fmt.magic, _VERSION, len(array), data_size) + array.tobytes()
    return body + _CRC.pack(int(google_crc32c.value(body)))


def write_index_file(
    path: str,
    offsets: Sequence[int] | np.ndarray,
    data_size: int,
    fmt: IndexFormat = RECORD_INDEX,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Writes the index of ``path`` beside it."""
    fs, fs_path = filesystem(index_path(path), storage_options)
    with fs.open(fs_path, "wb") as f:
        f.write(encode_index(offsets, data_size, fmt))


def remove_index_file(path: str) -> None:
    """Removes the index of ``path`` if there is one (its record file is being rewritten)."""
    fs, fs_path = filesystem(index_path(path))
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(fs_path)


def have_indexes(
    paths: Sequence[str],
    options: ReadOptions,
    op: str,
    storage_options: Mapping[str, Any] | None = None,
) -> bool:
    """Whether every file of ``paths`` has an index file beside it (valid or not).

    Where many files share a directory, it is listed once rather than asking
    for every index (a request each on object stores); a few files are
    asked for one by one (a large directory is not listed for one file).
    """
    groups: dict[tuple[int, str], list[tuple[Any, str]]] = {}
    for path in paths:
        fs, fs_path = filesystem(index_path(path), storage_options)
        groups.setdefault((id(fs), fs._parent(fs_path)), []).append((fs, fs_path))
    for (_, parent), members in groups.items():
        fs = members[0][0]
        if len(members) <= _ASK_EACH:
            for _, fs_path in members:
                found = call_with_retries(
                    lambda: fs.exists(fs_path),  # noqa: B023 (called at once)
                    lambda: f"looking for {fs_path!r}",  # noqa: B023
                    options,
                    op,
                )
                if not found:
                    return False
            continue
        try:
            names = _list(fs, parent, options, op)
        except FileNotFoundError:
            return False
        listed = {fs._strip_protocol(name) for name in names}
        if not all(fs._strip_protocol(fs_path) in listed for _, fs_path in members):
            return False
    return True


def _list(fs: Any, directory: str, options: ReadOptions, op: str) -> list[str]:
    """The paths in ``directory``, listed with retries."""
    names = call_with_retries(
        lambda: fs.ls(directory, detail=False), lambda: f"listing {directory!r}", options, op
    )
    return list(names)


def read_index_file(
    path: str,
    options: ReadOptions,
    op: str,
    fmt: IndexFormat,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, int, Callable[[str], DataLossError]]:
    """The offsets of ``path``'s index (int64), checked whole and against the file's size;
    the file's size; and how to report the index damaged.

    Raises:
      NotFoundError: the index or the file does not exist.
      DataLossError: the index is damaged, truncated or stale.
    """
    where = index_path(path)
    fs, fs_path = filesystem(where, storage_options)
    try:
        data = call_with_retries(
            lambda: fs.cat_file(fs_path), lambda: f"reading {where!r}", options, op
        )
    except FileNotFoundError as err:
        raise NotFoundError(
            f"{op}: {path!r} has no {fmt.kind} {where!r}; write it with {fmt.rebuild}, or read "
            "the file without one (use_index=False)"
        ) from err
    file_fs, file_path = filesystem(path, storage_options)
    try:
        size = int(
            call_with_retries(
                lambda: file_fs.size(file_path), lambda: f"the size of {path!r}", options, op
            )
        )
    except FileNotFoundError as err:
        raise NotFoundError(f"{op}: file {path!r} does not exist (its index does)") from err

    def damaged(why: str) -> DataLossError:
        return DataLossError(
            f"{op}: the {fmt.kind} {where!r} is {why}; rebuild it with {fmt.rebuild} (or read "
            "without it: use_index=False)"
        )

    if len(data) < _HEADER.size + _CRC.size:
        raise damaged(f"truncated ({len(data)} bytes)")
    magic, version, count, data_size = _HEADER.unpack_from(data)
    if magic != fmt.magic:
        raise damaged(f"not a {fmt.kind} (wrong magic number)")
    if version != _VERSION:
        raise damaged(f"of format version {version}; this pipestate reads version {_VERSION}")
    if len(data) != _HEADER.size + 8 * count + _CRC.size:
        raise damaged(
            f"{len(data)} bytes long, but its header lists {count} {fmt.entries} "
            f"({_HEADER.size + 8 * count + _CRC.size} bytes): truncated or damaged"
        )
    if _CRC.unpack_from(data, len(data) - _CRC.size)[0] != google_crc32c.value(data[: -_CRC.size]):
        raise damaged("damaged (its checksum does not match)")
    if data_size != size:
        raise damaged(
            f"stale: it describes a file of {data_size} bytes, and {path!r} has {size} "
            "(the file changed after the index was written)"
        )
    offsets = np.frombuffer(data, dtype="<u8", count=count, offset=_HEADER.size).astype(np.int64)
    return offsets, size, damaged


def load_index(path: str, options: ReadOptions, op: str) -> tuple[np.ndarray, int]:
    """The record offsets of ``path``'s index (int64, one per record), checked against the
    file, and the file's size.

    Raises:
      NotFoundError: the index or the record file does not exist.
      DataLossError: the index is damaged, truncated or stale.
    """
    offsets, size, damaged = read_index_file(path, options, op, RECORD_INDEX)
    if len(offsets) and (
        offsets[0] != 0
        or np.any(np.diff(offsets) < _MIN_RECORD)
        or size - int(offsets[-1]) < _MIN_RECORD
    ):
        raise damaged("inconsistent: its offsets do not leave room for each record's framing")
    if not len(offsets) and size:
        raise damaged(f"inconsistent: it lists no records for a file of {size} bytes")
    return offsets, size


class RecordIndex:
    """Records of several indexed files, by global number: file ``i`` holds ``starts[i]`` on.

    Reads are thread-safe (prefetch and parallel map read from their threads),
    one read per run of consecutive records (``_remote.RangeReader``).
    """

    def __init__(
        self,
        paths: Sequence[str],
        offsets: Sequence[np.ndarray],
        sizes: Sequence[int],
        op: str,
        options: ReadOptions,
    ) -> None:
        self._paths = tuple(paths)
        self._op = op
        self._offsets = list(offsets)
        # per file: the byte offset where each record ends
        self._ends = [np.append(o[1:], np.int64(size)) for o, size in zip(offsets, sizes)]
        counts = [len(o) for o in offsets]
        self.starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)
        self._reader = RangeReader(paths, options, op)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, positions: Sequence[int] | np.ndarray) -> list[bytes]:
        """The records at global ``positions`` (each in range), as far as they can be read.

        Stops before the first record that fails, returning those before it;
        raises that record's error if it is the first.
        """
        out: list[bytes] = []
        positions = np.asarray(positions, dtype=np.int64)
        files = np.searchsorted(self.starts, positions, side="right") - 1
        k = 0
        while k < len(positions):
            # a run of consecutive records of one file is one read
            stop = k + 1
            while (
                stop < len(positions)
                and files[stop] == files[k]
                and positions[stop] == positions[stop - 1] + 1
            ):
                stop += 1
            file = int(files[k])
            first = int(positions[k] - self.starts[file])
            try:
                self._read_run(file, first, stop - k, out)
            except Exception:
                if not out:
                    raise
                return out
            k = stop
        return out

    def _read_run(self, file: int, first: int, count: int, out: list[bytes]) -> None:
        path = self._paths[file]
        start = int(self._offsets[file][first])
        end = int(self._ends[file][first + count - 1])
        data = self._read_bytes(file, start, end)
        if len(data) != end - start:
            raise DataLossError(
                f"{self._op}: {path!r} ended at byte {start + len(data)} inside record "
                f"{first} of its index (which ends at byte {end}): the file changed"
            )
        stream = io.BytesIO(data)
        for j in range(first, first + count):
            offset = int(self._offsets[file][j])
            end = int(self._ends[file][j])
            header = data[offset - start : offset - start + _record_format.HEADER_SIZE]
            length, length_crc = _LENGTH_HEADER.unpack(header)
            intact = _record_format.masked_crc(header[:8]) == length_crc
            if intact and length + _MIN_RECORD != end - offset:
                raise self._stale(path, offset, end)
            result = _record_format.read_record(stream, path, offset, self._op)
            assert result is not None  # the run's bytes were all read
            out.append(result[0])

    def _stale(self, path: str, offset: int, end: int) -> DataLossError:
        return DataLossError(
            f"{self._op}: the record at byte offset {offset} of {path!r} does not end where "
            f"its index says (byte {end}); the index is stale: rebuild it with "
            "ps.data.write_record_index(path)"
        )

    def _read_bytes(self, file: int, start: int, end: int) -> bytes:
        try:
            return self._reader.read(file, start, end)
        except FileNotFoundError as err:
            raise NotFoundError(f"{self._op}: file {self._paths[file]!r} does not exist") from err
