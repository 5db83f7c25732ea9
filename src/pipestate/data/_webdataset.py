"""WebDataset samples: tar members grouped into samples, and the shard index that finds them.

A sample is a run of consecutive members sharing a key, by the rules of the
``webdataset`` package (``webdataset.tariterators``): a member's key is its
name up to the first dot of its base name, the rest (lower-cased) is its
field; members that are not regular files and metadata (``__x__``) are
skipped.

``write_webdataset_index`` writes ``<shard>.index`` (the offset-index layout
of ``_record_index`` with the magic ``PSWDSIDX``): the byte offset of each
sample's first member, then that of the end-of-archive block.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

from pipestate._validate import brief
from pipestate.data import _tar
from pipestate.data._files import open_file, to_path
from pipestate.data._record_index import IndexFormat, read_index_file, write_index_file
from pipestate.data._remote import (
    ReadOptions,
    check_read_options,
    check_storage_options,
    filesystem,
    read_range,
)
from pipestate.errors import DataLossError

_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_META = re.compile(r"__[^/]*__($|/)")

SHARD_INDEX = IndexFormat(
    b"PSWDSIDX", "shard index", "offsets", "ps.data.write_webdataset_index(url)"
)


class ShardReader:
    """The samples of one open shard, read from a member's offset on.

    ``offset`` is where the next sample starts (its first member, or members
    skipped before it); it moves only when a sample is whole, so after an
    error it still points at the sample that failed. ``ended`` is set at the
    end-of-archive block, or at ``limit`` (a sample read alone by index).
    """

    def __init__(
        self, stream: BinaryIO, url: str, op: str, offset: int, limit: int | None = None
    ) -> None:
        self.stream = stream
        self.cursor = _tar.TarCursor(stream)
        self.url = url
        self.op = op
        self.offset = offset
        self.ended = False
        self._limit = limit
        self._pending: _tar.Member | None = None  # a header read, its member not yet used

    def next_sample(self) -> dict[str, Any] | None:
        """The next sample; ``None`` once the shard (or the limit) is reached without one."""
        if self.ended:
            return None
        url, op, stream = self.url, self.op, self.stream
        sample: dict[str, Any] | None = None
        current = ""  # the sample's key
        offset = self.offset
        while True:
            if self._pending is None and self._limit is not None and offset >= self._limit:
                self.ended = True
                self.offset = offset
                return sample
            member = self._pending or _tar.read_member(self.cursor, url, offset, op)
            self._pending = None
            if member is None:  # the end-of-archive block
                self.ended = True
                self.offset = offset
                return sample
            name = member.name
            if not member.regular or _META.match(name) is not None:
                _tar.skip(stream, member)
                offset = member.end
                if sample is None:
                    self.offset = offset
                continue
            match = _KEY.match(name)
            if match is None:
                raise DataLossError(
                    f"{op}: tar member {name!r} at byte offset {member.offset} of {url!r} has no "
                    "extension, so it belongs to no sample (webdataset skips such members); "
                    "rename it to <key>.<field> or remove it from the shard"
                )
            key, field = match.group(1), match.group(2).lower()
            if sample is not None and key != current:
                self._pending = member  # the next sample's first member: read it next time
                self.offset = member.offset
                return sample
            if sample is None:
                current = key
                sample = {
                    "__key__": np.bytes_(key.encode("utf-8", "surrogateescape")),
                    "__url__": np.bytes_(url.encode("utf-8", "surrogateescape")),
                }
            elif field in sample:
                raise DataLossError(
                    f"{op}: tar member {name!r} at byte offset {member.offset} of {url!r} "
                    f"repeats field {field!r} of sample {key!r}; each sample's fields must differ"
                )
            sample[field] = np.bytes_(_tar.read_data(stream, member, url, op))
            offset = member.end

    def close(self) -> None:
        self.stream.close()


class _Span(io.BytesIO):
    """Bytes read from ``base`` on, seekable and told at their offsets in the shard."""

    def __init__(self, data: bytes, base: int) -> None:
        super().__init__(data)
        self._base = base

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            offset -= self._base
        return super().seek(offset, whence) + self._base

    def tell(self) -> int:
        return super().tell() + self._base


def sample_at(
    data: bytes,
    url: str,
    op: str,
    start: int,
    end: int,
    *,
    last: bool = False,
    empty: bool = False,
) -> dict[str, Any] | None:
    """The one sample that the shard's bytes ``data``, from ``start`` to ``end``, hold.

    With ``last``, ``data`` also holds the block after ``end``, which must be
    the end-of-archive block (so an index can't end a shard early). With
    ``empty``, the bytes must hold no sample (an index of a shard without
    samples), and ``None`` is returned.

    Raises:
      DataLossError: the bytes hold no whole sample or more than one, or the
        end-of-archive block is not at ``end`` (the index is stale), or a
        damaged member.
    """
    trailer = data[end - start :]
    data = data[: end - start]
    reader = ShardReader(_Span(data, start), url, op, start, limit=end)
    sample = reader.next_sample()
    if last and trailer != bytes(_tar.BLOCK):
        raise _stale(url, op, f"the end-of-archive block is not at byte {end}")
    if (sample is None) != empty or reader.offset != end:
        raise _stale(url, op, f"the sample at byte offset {start} does not end at byte {end}")
    return sample


def _stale(url: str, op: str, what: str) -> DataLossError:
    return DataLossError(
        f"{op}: {url!r} does not match its shard index: {what}; the index is stale: rebuild "
        f"it with {SHARD_INDEX.rebuild}"
    )


def load_shard_index(
    url: str, options: ReadOptions, op: str, storage_options: Mapping[str, Any] | None
) -> np.ndarray:
    """The offsets of ``url``'s shard index: each sample's start, then the end-of-archive block.

    Raises:
      NotFoundError: the index or the shard does not exist.
      DataLossError: the index is damaged, truncated or stale.
    """
    offsets, size, damaged = read_index_file(url, options, op, SHARD_INDEX, storage_options)
    if (
        not len(offsets)
        or np.any(offsets % _tar.BLOCK)
        or np.any(np.diff(offsets) <= 0)
        or int(offsets[-1]) + _tar.BLOCK > size
    ):
        raise damaged("inconsistent: its offsets are not increasing tar member offsets")
    if len(offsets) > 1 and offsets[0] != 0:
        raise damaged("inconsistent: its first sample does not start the shard")
    if len(offsets) == 1:  # no samples: check that the shard has none indeed
        end = int(offsets[0])
        fs, fs_path = filesystem(url, storage_options)
        data = read_range(fs, fs_path, url, 0, end + _tar.BLOCK, options, op, exact=False)
        sample_at(data, url, op, 0, end, last=True, empty=True)
    return offsets


def write_webdataset_index(
    url: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    read_options: ReadOptions | None = None,
) -> int:
    """Writes the shard index ``<url>.index`` of a WebDataset tar shard.

    The shard is read whole (with the checks of ``Dataset.from_webdataset``);
    the index lets ``from_webdataset`` read its samples by number (``len``,
    ``ds[i]``, ``global_shuffle``, a one-index state).

    Args:
      url: the shard (a local path or an fsspec URL).
      storage_options: fsspec filesystem arguments.
      read_options: read-ahead and retries for remote filesystems.

    Returns:
      The number of samples.

    Raises:
      TypeError: an argument of the wrong type.
      ValueError: the shard has a global pax header (``g`` member), whose
        effect on later members a read by index would miss.
      NotFoundError: the shard does not exist.
      DataLossError: a damaged or truncated shard.

    Example:
      >>> import pipestate as ps
      >>> ps.data.write_webdataset_index("data/shard-000.tar")  # doctest: +SKIP
      1000
    """
    op = "write_webdataset_index"
    if not isinstance(url, (str, os.PathLike)):
        raise TypeError(
            f"{op}: url must be a str or os.PathLike, got {type(url).__name__} {brief(url, 80)}"
        )
    name = to_path(url, op)
    storage = check_storage_options(storage_options, op)
    options = check_read_options(read_options, op)
    reader = ShardReader(open_file(name, None, None, 0, op, options, storage), name, op, 0)
    starts: list[int] = []
    try:
        while not reader.ended:
            start = reader.offset
            sample = reader.next_sample()
            if reader.cursor.pax_headers:
                raise ValueError(
                    f"{op}: {name!r} has a global pax header (a 'g' member) before byte offset "
                    f"{reader.offset}; a sample read by index would not see it. Read the shard "
                    "without an index, or rewrite it without global headers."
                )
            if sample is not None:
                starts.append(start)
        size = reader.stream.seek(0, io.SEEK_END)
    finally:
        reader.close()
    write_index_file(name, [*starts, reader.offset], size, SHARD_INDEX, storage)
    return len(starts)
