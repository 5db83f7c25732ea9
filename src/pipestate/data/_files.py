"""The file sources' shared parts: file-name arguments, compression, and seekable reading.

``TextLineDataset`` and ``RecordDataset`` read their files one after another;
their iterator state is the current file (its index in a name list, or the
name read from a dataset of names) and the byte offset in it. A restore
opens that file and seeks to the offset: nothing before it is read again.
"""

from __future__ import annotations

import copy
import gzip
import io
import os
import posixpath
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

import numpy as np

from pipestate._validate import brief, check_int, check_parallelism
from pipestate.data import _fingerprint
from pipestate.data._engine import available_cores
from pipestate.data._remote import (
    DEFAULT_READ_OPTIONS,
    ReadOptions,
    check_read_options,
    open_input,
)
from pipestate.data._spec import TensorSpec
from pipestate.data.dataset import UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import DatasetIterator, State, StreamIterator, read_int
from pipestate.data.options import AUTOTUNE
from pipestate.errors import (
    DataLossError,
    InvalidArgumentError,
    NotFoundError,
    StateMismatchError,
)

DEFAULT_CYCLE_LENGTH = 4
"""Files read at once for ``num_parallel_reads=AUTOTUNE`` (interleave's default cycle, fixed so a
state restores identically on any machine)."""

COMPRESSION_TYPES = (None, "", "GZIP", "ZLIB")
"""The ``compression_type`` values the file sources accept (as tf.data)."""

_SKIP_CHUNK = 1 << 20
_ZLIB_CHUNK = 1 << 16
_DECOMPRESSION_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)
_UNREADABLE = (DataLossError, NotFoundError, InvalidArgumentError)
"""Errors that end the reading of a file (the next element comes from the next file)."""


def check_compression(value: Any, op: str) -> str | None:
    """Validates ``compression_type``: ``None`` / ``""`` (none), ``"GZIP"`` or ``"ZLIB"``."""
    if value not in COMPRESSION_TYPES or not isinstance(value, (str, type(None))):
        raise ValueError(
            f"{op}: compression_type must be None, '', 'GZIP' or 'ZLIB', got {value!r}"
        )
    return value or None


def check_buffer_size(value: Any, op: str) -> int | None:
    """Validates ``buffer_size``: bytes of read-ahead, ``0`` for none beyond the
    filesystem's own (as tf.data), or ``None`` for the default."""
    return None if value is None else check_int("buffer_size", value, minimum=0, op=op)


def to_path(value: Any, op: str) -> str:
    """A file name (str, bytes, ``os.PathLike``, NumPy string scalar) as a str."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "SU":
        value = value[()]
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bytes):  # np.bytes_ too
        return os.fsdecode(bytes(value))
    if isinstance(value, str):  # np.str_ too
        return str(value)
    raise TypeError(
        f"{op}: a file name must be a str, bytes or os.PathLike, got {type(value).__name__} "
        f"{brief(value, 80)}"
    )


def normalize_filenames(filenames: Any, op: str) -> tuple[str, ...] | Dataset:
    """``filenames`` as a tuple of names, or the dataset of names it is."""
    if isinstance(filenames, Dataset):
        return filenames
    if isinstance(filenames, np.ndarray) and filenames.ndim == 1:
        filenames = list(filenames)
    if isinstance(filenames, (list, tuple)):
        return tuple(to_path(name, op) for name in filenames)
    try:
        return (to_path(filenames, op),)
    except TypeError:
        raise TypeError(
            f"{op}: filenames must be a file name, a list or tuple of them, or a Dataset of "
            f"them, got {type(filenames).__name__} {brief(filenames, 80)}"
        ) from None


def describe_names(names: Sequence[str]) -> str | list[str]:
    """The names for ``repr`` (all of them when few) and fingerprints (with a digest)."""
    if len(names) <= 4:
        return list(names)
    first, last = (posixpath.basename(name.replace(os.sep, "/")) for name in (names[0], names[-1]))
    return f"{len(names)} files ({first} ... {last}, digest {_fingerprint.digest(list(names))})"


def open_file(
    path: str,
    compression: str | None,
    buffer_size: int | None,
    offset: int,
    op: str,
    read_options: ReadOptions = DEFAULT_READ_OPTIONS,
    storage_options: Mapping[str, Any] | None = None,
) -> BinaryIO:
    """Opens ``path`` (a local path or an fsspec URL) for reading at byte ``offset``.

    Uncompressed files seek there; compressed ones decompress and discard the
    ``offset`` bytes before it (O(offset)). Remote files are read in blocks
    fetched ahead, with retries (``pipestate.data._remote``).

    Raises:
      NotFoundError: the file does not exist.
      StateMismatchError: the file is shorter than ``offset`` (it changed since
        the position was saved).
      UnavailableError: a remote read kept failing with transient errors.
    """
    try:
        raw = open_input(
            path, read_options, op, storage_options=storage_options, block_size=buffer_size
        )
    except FileNotFoundError as err:
        raise NotFoundError(f"{op}: file {path!r} does not exist") from err
    except IsADirectoryError as err:
        raise NotFoundError(f"{op}: {path!r} is a directory, not a file") from err
    try:
        if compression is None:
            if offset:
                size = raw.seek(0, io.SEEK_END)
                if offset > size:
                    raise _shorter(path, offset, size, op)
                raw.seek(offset)
            return raw
        stream = _decompressing(raw, compression, buffer_size)
        remaining = offset
        while remaining:
            skipped = len(stream.read(min(remaining, _SKIP_CHUNK)))
            if not skipped:
                raise _shorter(path, offset, offset - remaining, op)
            remaining -= skipped
        return stream
    except BaseException:
        raw.close()
        raise


def _shorter(path: str, offset: int, size: int, op: str) -> StateMismatchError:
    return StateMismatchError(
        f"{op}: the saved position is at byte {offset} of {path!r}, but the file has only "
        f"{size} bytes (uncompressed); it changed since the position was saved."
    )


def _decompressing(raw: BinaryIO, compression: str, buffer_size: int | None) -> BinaryIO:
    size = buffer_size or io.DEFAULT_BUFFER_SIZE
    if compression == "GZIP":
        return _GzipReader(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return io.BufferedReader(_ZlibReader(raw), buffer_size=size)


class _GzipReader(gzip.GzipFile):
    """A ``GzipFile`` that also closes the file it reads (``GzipFile`` leaves it open)."""

    def close(self) -> None:
        raw: Any = self.fileobj
        try:
            super().close()
        finally:
            if raw is not None:
                raw.close()


class _ZlibReader(io.RawIOBase):
    """The decompressed bytes of a zlib stream (header included, as tf's ``"ZLIB"``)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._inflate = zlib.decompressobj()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        inflate = self._inflate
        while not inflate.eof:
            data = inflate.unconsumed_tail or self._raw.read(_ZLIB_CHUNK)
            if not data:
                raise EOFError("the ZLIB stream ended before its end-of-stream marker")
            out = inflate.decompress(data, len(buffer))  # bounded: no decompression bombs
            if out:
                buffer[: len(out)] = out
                return len(out)
        return 0

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


def check_parallel_reads(value: Any, op: str) -> int | None:
    """Validates ``num_parallel_reads``: files read at once (``AUTOTUNE``: the default cycle),
    or ``None`` (one after another); 1 is the same as ``None``."""
    if value is None:
        return None
    number = check_parallelism(value, "num_parallel_reads", op)
    if number == AUTOTUNE:
        return DEFAULT_CYCLE_LENGTH
    return None if number == 1 else number


class _OneFile:
    """``map_func`` of the interleave that reads several files at once: one file's dataset."""

    def __init__(self, dataset: FileDataset) -> None:
        self._dataset = dataset

    def __call__(self, name: Any) -> Dataset:
        return self._dataset._one_file(to_path(name, self._dataset._op_name))


class FileDataset(Dataset):
    """Base of the file sources: the files of a name list or of a dataset of names, in order.

    With ``num_parallel_reads`` of ``n > 1`` the files are read as tf.data reads
    them: an interleave of the files' datasets with ``cycle_length=n`` and
    ``block_length=1`` (in its deterministic order), each open file read ahead
    on a thread (as many as the cores available, at most ``n``); the iterator
    state is that interleave's (per open file, its offset).

    Subclasses set ``_op_name`` and implement ``_read``.
    """

    _keeps_random_access = False

    def __init__(
        self,
        filenames: Any,
        compression_type: Any,
        buffer_size: Any,
        num_parallel_reads: Any = None,
        read_options: Any = None,
    ) -> None:
        op = self._op_name
        names = normalize_filenames(filenames, op)
        if isinstance(names, Dataset):
            super().__init__([names])
            self._filenames: tuple[str, ...] | None = None
        else:
            super().__init__()
            self._filenames = names
        self._compression = check_compression(compression_type, op)
        self._buffer_size = check_buffer_size(buffer_size, op)
        self._parallel_reads = check_parallel_reads(num_parallel_reads, op)
        self._read_options = check_read_options(read_options, op)

    def _one_file(self, path: str) -> FileDataset:
        """This source over the single file ``path``, read alone."""
        single = copy.copy(self)
        single._parents = ()
        single._filenames = (path,)
        single._parallel_reads = None
        single._name = None
        single._fingerprint_cache = single._chain_cache = single._external_cache = None
        single._cardinality_cache = None
        return single

    def _interleaved(self) -> Dataset | None:
        """The interleave that reads ``num_parallel_reads`` files at once, or ``None``."""
        if self._parallel_reads is None or self._filenames == ():
            return None
        if self._parents:
            names = self._parents[0]
        else:
            assert self._filenames is not None
            names = Dataset.from_tensor_slices(list(self._filenames))
        return names.interleave(
            _OneFile(self),
            cycle_length=self._parallel_reads,
            block_length=1,
            num_parallel_calls=min(self._parallel_reads, available_cores()),
        )

    def _element_spec(self) -> Any:
        return TensorSpec((), "string")

    def _read(self, stream: BinaryIO, path: str, offset: int) -> tuple[Any, int] | None:
        """The element at ``offset`` of ``stream`` and the offset after it; ``None`` at the end."""
        raise NotImplementedError

    def _open(self, path: str, offset: int) -> BinaryIO:
        """``path`` opened for ``_read`` at byte ``offset`` (see :func:`open_file`)."""
        return open_file(
            path, self._compression, self._buffer_size, offset, self._op_name, self._read_options
        )

    def _cardinality(self) -> int:
        if self._filenames == () or (self._parents and self._parents[0].cardinality() == 0):
            return 0
        return UNKNOWN_CARDINALITY

    def _params(self) -> dict[str, Any]:
        # buffer_size is left out: it changes speed, not elements, so a saved
        # position restores into a pipeline with another buffer size.
        params: dict[str, Any] = {}
        if self._filenames is not None:
            params["filenames"] = describe_names(self._filenames)
        params["compression_type"] = self._compression
        if self._parallel_reads is not None:
            params["num_parallel_reads"] = self._parallel_reads
        return params

    def _make_iterator(self, entropy: int | None, epoch: int = 0) -> DatasetIterator:
        interleaved = self._interleaved()
        if interleaved is not None:
            return interleaved._make_iterator(entropy, epoch)
        if self._parents:
            return _NamesDatasetIterator(self, entropy, epoch)
        return _NameListIterator(self, entropy, epoch)


class _FilesIterator(StreamIterator["FileDataset"]):
    """Reads the current file from a saved byte offset; subclasses pick the files."""

    _OFFSET = "offset"

    def _start(self) -> None:
        super()._start()
        self._path: str | None = None  # the file being read, None between files
        self._stream: BinaryIO | None = None  # opened lazily, at the saved offset
        self._offset = 0

    def _next_path(self) -> str:
        """The next file's name; StopIteration after the last."""
        raise NotImplementedError

    def _finish_file(self) -> None:
        """Moves past the current file, which has no more elements."""
        self._close_stream()
        self._path = None
        self._offset = 0

    def _next(self) -> Any:
        dataset = self._source
        while True:
            if self._path is None:
                self._path = self._next_path()
                self._offset = 0
            path = self._path
            try:
                try:
                    if self._stream is None:
                        self._stream = dataset._open(path, self._offset)
                    result = dataset._read(self._stream, path, self._offset)
                except _DECOMPRESSION_ERRORS as err:
                    raise DataLossError(
                        f"{self._op}: {path!r} is not valid {dataset._compression} data near "
                        f"uncompressed byte offset {self._offset}: {type(err).__name__}: {err}"
                    ) from err
            except _UNREADABLE:
                # As every failing element in pipestate, the failing rest of the file counts
                # as consumed: a next call (or a restore) continues with the next file.
                self._finish_file()
                raise
            except BaseException:
                # Any other failure (a remote read that kept failing): the offset stays at
                # the element being read; a next call (or a restore) reopens the file there
                # and reads it again.
                self._close_stream()
                raise
            if result is None:
                self._finish_file()
                continue
            element, self._offset = result
            return element

    def _close_stream(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.close()

    def _close(self) -> None:
        self._close_stream()
        super()._close()


class _NameListIterator(_FilesIterator):
    """Files of a name list; state: the current file's index and the offset in it."""

    _FILE_INDEX = "file_index"
    _STATE_KEYS = (_FILE_INDEX, _FilesIterator._OFFSET)

    def _start(self) -> None:
        super()._start()
        self._index = 0

    def _names(self) -> tuple[str, ...]:
        names = self._source._filenames
        assert names is not None  # this iterator reads a name list, not a dataset of names
        return names

    def _next_path(self) -> str:
        names = self._names()
        if self._index >= len(names):
            raise StopIteration
        return names[self._index]

    def _finish_file(self) -> None:
        super()._finish_file()
        self._index += 1

    def _op_state(self) -> State:
        return {self._FILE_INDEX: self._index, self._OFFSET: self._offset}

    def _restore(self, state: State) -> None:
        names = self._names()
        index = read_int(state, self._FILE_INDEX, self._op, maximum=len(names))
        offset = read_int(state, self._OFFSET, self._op, maximum=0 if index == len(names) else None)
        self._index, self._offset = index, offset
        self._path = names[index] if index < len(names) else None


class _NamesDatasetIterator(_FilesIterator):
    """Files named by a dataset's elements; state: its position, the current name and offset."""

    _FILE = "file"
    _STATE_KEYS = (StreamIterator._PARENT, _FILE, _FilesIterator._OFFSET)

    def _next_path(self) -> str:
        return to_path(self._inputs[0]._next(), self._op)

    def _op_state(self) -> State:
        return {
            self._PARENT: self._inputs[0]._get_state(),
            self._FILE: self._path,
            self._OFFSET: self._offset,
        }

    def _restore(self, state: State) -> None:
        path = state[self._FILE]
        if path is not None and not isinstance(path, str):
            raise StateMismatchError(
                f"{self._op}: state['file'] must be a file name or None, got {brief(path, 80)}"
            )
        offset = read_int(state, self._OFFSET, self._op, maximum=None if path else 0)
        super()._restore({self._PARENT: state[self._PARENT]})
        self._path, self._offset = path, offset
