"""``RecordDataset`` and ``RecordWriter``: TFRecord files, read and written."""

from __future__ import annotations

import gzip
import os
import zlib
from types import TracebackType
from typing import Any, BinaryIO

import fsspec
import numpy as np

from pipestate._validate import brief
from pipestate.data import _record_format
from pipestate.data._files import FileDataset, check_compression, to_path
from pipestate.data._remote import ReadOptions


class RecordDataset(FileDataset):
    """The records of one or more TFRecord files, as ``tf.data.TFRecordDataset``.

    Each element is a record's bytes as an ``np.bytes_`` scalar. Every
    record's length and data checksums are verified. Files are read one after
    another in the order of ``filenames``; the format is TensorFlow's, so
    files written by ``tf.io.TFRecordWriter`` (or :class:`RecordWriter`) read
    the same in both.

    The iterator state is the current file (its index in a list of names, or
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
      read_options: read-ahead and retries for remote filesystems
        (:class:`ReadOptions`; ``None`` for the defaults). ``buffer_size``,
        when given, is the block size.

    Raises:
      TypeError: ``filenames`` is not a name, a sequence of names or a Dataset,
        or ``buffer_size`` is not an integer, or ``read_options`` is not a
        ``ReadOptions``.
      ValueError: an unknown ``compression_type``, or a negative ``buffer_size``.
      NotFoundError: (while iterating) a file does not exist.
      UnavailableError: (while iterating) a remote read kept failing with
        transient errors through every attempt ``read_options`` allows.
      DataLossError: (while iterating) a truncated record, a checksum mismatch
        or damaged compressed data; the message names the file and offset.

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
        *,
        read_options: ReadOptions | None = None,
    ) -> None:
        super().__init__(filenames, compression_type, buffer_size, read_options)

    def _read(self, stream: BinaryIO, path: str, offset: int) -> tuple[Any, int] | None:
        result = _record_format.read_record(stream, path, offset, self._op_name)
        if result is None:
            return None
        data, end = result
        return np.bytes_(data), end


class RecordWriter:
    """Writes records to a TFRecord file, as ``tf.io.TFRecordWriter``.

    The file is created (or truncated) when the writer is made. Use it as a
    context manager, or call :meth:`close`; data is complete on disk only
    after ``close``.

    Args:
      path: a local path or an fsspec URL (str or ``os.PathLike``).
      compression_type: ``None`` or ``""`` (none), ``"GZIP"`` or ``"ZLIB"``.

    Raises:
      TypeError: ``path`` is not a str or ``os.PathLike``.
      ValueError: an unknown ``compression_type``.

    Example:
      >>> import pipestate as ps
      >>> with ps.data.RecordWriter("memory://out.tfrecord", "GZIP") as writer:
      ...     writer.write(b"payload")
    """

    def __init__(self, path: str | os.PathLike[str], compression_type: str | None = None) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(
                f"RecordWriter: path must be a str or os.PathLike, got {type(path).__name__} "
                f"{brief(path, 80)}"
            )
        self._path = to_path(path, "RecordWriter")
        self._compression = check_compression(compression_type, "RecordWriter")
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

    def flush(self) -> None:
        """Pushes what was written so far to the file (and the compressor's pending output)."""
        self._check_open()
        self._stream.flush()
        if self._stream is not self._raw:
            self._raw.flush()

    def close(self) -> None:
        """Finishes the file; further writes raise ``ValueError``. Closing twice is a no-op."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._stream is not self._raw:
                self._stream.close()
        finally:
            self._raw.close()

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
        return f"RecordWriter({self._path!r}, compression_type={self._compression!r})"


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
