"""``RecordDataset`` and ``RecordWriter``: TFRecord files, read and written."""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from types import TracebackType
from typing import Any, BinaryIO

import fsspec
import numpy as np

from pipestate._validate import brief, check_bool
from pipestate.data import _record_format, _record_index
from pipestate.data._files import FileDataset, check_compression, open_file, to_path
from pipestate.data._record_index import RecordIndex, check_use_index, have_indexes, load_index
from pipestate.data._remote import ReadOptions, check_read_options
from pipestate.data.dataset import Dataset
from pipestate.data.iterator import DatasetIterator
from pipestate.errors import DataLossError, NotFoundError

_logger = logging.getLogger("pipestate.data")


class RecordDataset(FileDataset):
    """The records of one or more TFRecord files, as ``tf.data.TFRecordDataset``.

    Each element is a record's bytes as an ``np.bytes_`` scalar. Every
    record's length and data checksums are verified. Files are read one after
    another in the order of ``filenames``; the format is TensorFlow's, so
    files written by ``tf.io.TFRecordWriter`` (or :class:`RecordWriter`) read
    the same in both.

    With an index beside every file (``<file>.index``, written by
    :class:`RecordWriter` or :func:`write_record_index`), the dataset is
    random access: ``len()``, ``ds[i]``, ``global_shuffle``, and an iterator
    state that is one index (O(1) to save and restore). Without, it streams:
    the iterator state is the current file (its index in a list of names, or
    the name read from a dataset of names, with that dataset's state) and the
    byte offset of the next record in it. A restore opens that file and seeks
    to the offset, reading nothing before it. A compressed file can't seek:
    its restore decompresses and discards everything before the offset.

    Args:
      filenames: a file name (str, bytes or ``os.PathLike``; a local path or
        an fsspec URL), a list or tuple of them, or a Dataset of them.
      compression_type: ``None`` or ``""`` (none), ``"GZIP"`` or ``"ZLIB"``.
      buffer_size: bytes to read ahead from remote filesystems and buffer
        for decompression; ``None`` for the default.
      num_parallel_reads: files read at once, interleaved one element at a
        time in tf.data's order (``cycle_length=num_parallel_reads``,
        ``block_length=1``), each read ahead on a thread; ``AUTOTUNE`` reads
        4; ``None`` or 1 reads them one after another. Interleaved files are
        streamed, not read by index.
      name: a label for the op (``Dataset.name``), shown in ``repr``.
      read_options: read-ahead and retries for remote filesystems
        (:class:`ReadOptions`; ``None`` for the defaults). ``buffer_size``,
        when given, is the block size.
      use_index: ``"auto"`` (default): read by index when every file of a
        list of uncompressed files has a valid index (and files are not
        interleaved), else stream (a file gone or changed since its index
        was written logs a warning); ``True``: require the indexes; ``False``:
        always stream (the reading that states saved before the files had
        indexes restore into).

    Raises:
      TypeError: ``filenames`` is not a name, a sequence of names or a Dataset,
        ``buffer_size`` or ``num_parallel_reads`` is not an integer,
        ``read_options`` is not a ``ReadOptions``, or ``name`` is not a
        non-empty string.
      ValueError: an unknown ``compression_type``, a negative ``buffer_size``,
        ``num_parallel_reads < 1`` (other than ``AUTOTUNE``), a ``use_index``
        other than ``True``, ``False`` or ``"auto"``, or ``use_index=True``
        for compressed files, a Dataset of names or interleaved files.
      NotFoundError: ``use_index=True`` and a file has no index; or (while
        iterating) a file does not exist.
      DataLossError: (when made, with ``use_index=True``) an index is damaged or stale (the file
        changed after it was written); (while iterating) a truncated record,
        a checksum mismatch, damaged compressed data, or a record that does
        not end where its index says; the message names the file and offset.
      UnavailableError: (while iterating) a remote read kept failing with
        transient errors through every attempt ``read_options`` allows.

    Example:
      >>> import pipestate as ps
      >>> with ps.data.RecordWriter("memory://example.tfrecord") as writer:
      ...     writer.write(b"first")
      ...     writer.write(b"second")
      >>> [bytes(r) for r in ps.data.RecordDataset("memory://example.tfrecord")]
      [b'first', b'second']
    """

    _op_name = "record"

    def __init__(
        self,
        filenames: Any,
        compression_type: str | None = None,
        buffer_size: int | None = None,
        num_parallel_reads: int | None = None,
        name: str | None = None,
        *,
        read_options: ReadOptions | None = None,
        use_index: bool | str = "auto",
    ) -> None:
        super().__init__(filenames, compression_type, buffer_size, num_parallel_reads, read_options)
        self._use_index = check_use_index(use_index, self._op_name)
        self._index = self._open_index()
        self._named(name)

    def _open_index(self) -> RecordIndex | None:
        """The files' record index, if the dataset reads by index."""
        op, use, names = self._op_name, self._use_index, self._filenames
        if use is False:
            return None
        if names is None or self._compression is not None or self._parallel_reads is not None:
            if use is True:
                what = (
                    "a Dataset of file names"
                    if names is None
                    else "compressed files"
                    if self._compression is not None
                    else "files interleaved by num_parallel_reads"
                )
                raise ValueError(
                    f"{op}: use_index=True needs a list of uncompressed files; {what} can't be "
                    "read by index. Pass use_index='auto' or False to stream them."
                )
            return None
        options = self._read_options
        if use == "auto" and not (names and have_indexes(names, options, op)):
            return None
        try:
            loaded = [load_index(name, options, op) for name in names]
        except (NotFoundError, DataLossError) as err:
            if use is True:
                raise
            # "auto": a file gone or changed since its index was written streams, as
            # files without an index do, and fails (or not) when it is read.
            _logger.warning("%s; reading the files without their indexes", err)
            return None
        return RecordIndex(names, [o for o, _ in loaded], [s for _, s in loaded], op, options)

    @property
    def _random_access(self) -> bool:
        return self._index is not None

    @property
    def _vectorised(self) -> bool:
        # Records are read into a list: stacking them into one NumPy S array
        # would drop the trailing NUL bytes of each.
        return False

    def _cardinality(self) -> int:
        if self._index is not None:
            return len(self._index)
        return super()._cardinality()

    def _params(self) -> dict[str, Any]:
        params = super()._params()
        if self._index is not None:
            # A state of the streaming reader (file + offset) can't be read as
            # an index: the two differ in their fingerprints.
            params["indexed"] = f"{len(self._index)} records"
        return params

    def _make_iterator(self, entropy: int | None, epoch: int = 0) -> DatasetIterator:
        if self._index is not None:
            return Dataset._make_iterator(self, entropy, epoch)
        return super()._make_iterator(entropy, epoch)

    def _get(self, epoch: int, position: int) -> Any:
        assert self._index is not None  # the random-access path
        return np.bytes_(self._index.read([position])[0])

    def _get_list(self, epoch: int, positions: np.ndarray) -> list[Any]:
        assert self._index is not None  # the random-access path
        return [np.bytes_(record) for record in self._index.read(positions)]

    def _read(self, stream: BinaryIO, path: str, offset: int) -> tuple[Any, int] | None:
        result = _record_format.read_record(stream, path, offset, self._op_name)
        if result is None:
            return None
        data, end = result
        return np.bytes_(data), end


class RecordWriter:
    """Writes records to a TFRecord file, as ``tf.io.TFRecordWriter``.

    The file is created (or truncated) when the writer is made, and an index
    file left beside it by an earlier writer is removed. Use it as a context
    manager, or call :meth:`close`; data is complete on disk only after
    ``close``, which then writes the record index ``<path>.index`` (byte
    offset of every record; see :class:`RecordDataset`).

    Args:
      path: a local path or an fsspec URL (str or ``os.PathLike``).
      compression_type: ``None`` or ``""`` (none), ``"GZIP"`` or ``"ZLIB"``.
      index: write the index: ``None`` (default) for uncompressed files
        only, ``True`` (uncompressed files only), or ``False``.

    Raises:
      TypeError: ``path`` is not a str or ``os.PathLike``, or ``index`` is
        not a bool or ``None``.
      ValueError: an unknown ``compression_type``, or ``index=True`` with
        compression (a compressed file can't be read by offset).

    Example:
      >>> import pipestate as ps
      >>> with ps.data.RecordWriter("memory://out.tfrecord", "GZIP") as writer:
      ...     writer.write(b"payload")
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        compression_type: str | None = None,
        *,
        index: bool | None = None,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(
                f"RecordWriter: path must be a str or os.PathLike, got {type(path).__name__} "
                f"{brief(path, 80)}"
            )
        self._path = to_path(path, "RecordWriter")
        self._compression = check_compression(compression_type, "RecordWriter")
        check_bool("index", index, op="RecordWriter", allow_none=True)
        if index and self._compression is not None:
            raise ValueError(
                f"RecordWriter: index=True needs an uncompressed file, got compression_type="
                f"{self._compression!r}: a compressed file can't be read by offset"
            )
        self._offsets: list[int] | None = (
            [] if (self._compression is None if index is None else index) else None
        )
        self._written = 0
        _record_index.remove_index_file(self._path)  # it would describe the old file
        fs, fs_path = fsspec.core.url_to_fs(self._path)
        self._raw: BinaryIO = fs.open(fs_path, "wb")
        self._stream: Any = self._raw
        if self._compression == "GZIP":
            self._stream = gzip.GzipFile(fileobj=self._raw, mode="wb", filename="", mtime=0)
        elif self._compression == "ZLIB":
            self._stream = _ZlibWriter(self._raw)
        self._closed = False

    def write(self, record: Any) -> None:
        """Appends one record (any bytes-like object).

        Raises:
          TypeError: ``record`` is not bytes-like (a ``str`` must be encoded first).
          ValueError: the writer is closed.
        """
        self._check_open()
        if isinstance(record, str):
            raise TypeError(
                f"RecordWriter.write expects bytes, got str {brief(record, 80)}; encode it first "
                "(e.g. record.encode())"
            )
        try:
            data = bytes(memoryview(record))
        except TypeError as err:
            raise TypeError(
                f"RecordWriter.write expects a bytes-like object, got {type(record).__name__} "
                f"{brief(record, 80)}"
            ) from err
        header, footer = _record_format.frame(data)
        self._stream.write(header)
        self._stream.write(data)
        self._stream.write(footer)
        if self._offsets is not None:
            self._offsets.append(self._written)
        self._written += len(header) + len(data) + len(footer)

    def flush(self) -> None:
        """Pushes what was written so far to the file (and the compressor's pending output)."""
        self._check_open()
        self._stream.flush()
        if self._stream is not self._raw:
            self._raw.flush()

    def close(self) -> None:
        """Finishes the file and writes its index; further writes raise ``ValueError``.

        Closing twice is a no-op.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self._stream is not self._raw:
                self._stream.close()
        finally:
            self._raw.close()
        if self._offsets is not None:  # only once the data is complete
            _record_index.write_index_file(self._path, self._offsets, self._written)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self!r} is closed")

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"RecordWriter({self._path!r}, compression_type={self._compression!r}, "
            f"index={self._offsets is not None})"
        )


def write_record_index(
    path: str | os.PathLike[str], *, read_options: ReadOptions | None = None
) -> int:
    """Writes the index ``<path>.index`` of an existing uncompressed record file.

    Every record is read and its checksums verified; the index lets
    :class:`RecordDataset` read the file by record number. Files written by
    :class:`RecordWriter` have one already.

    Args:
      path: the record file (a local path or an fsspec URL).
      read_options: read-ahead and retries for remote filesystems.

    Returns:
      The number of records.

    Raises:
      TypeError: ``path`` is not a str or ``os.PathLike``.
      NotFoundError: the file does not exist.
      DataLossError: a damaged record (or a compressed file).

    Example:
      >>> import pipestate as ps
      >>> with ps.data.RecordWriter("memory://old.tfrecord", index=False) as writer:
      ...     writer.write(b"record")
      >>> ps.data.write_record_index("memory://old.tfrecord")
      1
    """
    op = "write_record_index"
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"{op}: path must be a str or os.PathLike, got {type(path).__name__} {brief(path, 80)}"
        )
    name = to_path(path, op)
    options = check_read_options(read_options, op)
    offsets: list[int] = []
    offset = 0
    with open_file(name, None, None, 0, op, options) as stream:
        while (result := _record_format.read_record(stream, name, offset, op)) is not None:
            offsets.append(offset)
            offset = result[1]
    _record_index.write_index_file(name, offsets, offset)
    return len(offsets)


class _ZlibWriter:
    """Compresses into a zlib stream (header included, as tf's ``"ZLIB"``)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._deflate = zlib.compressobj()

    def write(self, data: bytes) -> None:
        self._raw.write(self._deflate.compress(data))

    def flush(self) -> None:
        self._raw.write(self._deflate.flush(zlib.Z_SYNC_FLUSH))

    def close(self) -> None:
        self._raw.write(self._deflate.flush(zlib.Z_FINISH))
