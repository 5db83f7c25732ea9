"""``FixedLengthRecordDataset``: records of a fixed size in binary files."""

from __future__ import annotations

import itertools
from typing import Any, BinaryIO

import fsspec
import numpy as np

from pipestate._validate import check_int
from pipestate.data._files import FileDataset
from pipestate.data.dataset import Dataset
from pipestate.data.iterator import DatasetIterator
from pipestate.errors import DataLossError, InvalidArgumentError, NotFoundError

_READ_CHUNK = 1 << 16


class FixedLengthRecordDataset(FileDataset):
    """Records of ``record_bytes`` bytes from binary files, as ``tf.data.FixedLengthRecordDataset``.

    Each file is ``header_bytes``, then records of ``record_bytes`` each, then
    ``footer_bytes``; each element is one record as an ``np.bytes_`` scalar
    (every byte kept). Files are read one after another in the order of
    ``filenames``, or ``num_parallel_reads`` at a time in tf.data's order.

    Uncompressed files named by a list (and read one after another) are
    random access: record ``i`` is found by arithmetic from the files' sizes,
    so ``len()``, ``ds[i]``, ``global_shuffle`` and sharding work, and the
    iterator state is one index. The sizes are looked up once per dataset,
    when the length is first needed (``cardinality()``, ``len()``, ``iter()``).
    Compressed files, a Dataset of names, or ``num_parallel_reads > 1`` make
    the source streaming; its state is the current file and the offset in it
    (a compressed file is decompressed up to the offset on restore).

    Args:
      filenames: a file name (str, bytes or ``os.PathLike``; a local path or
        an fsspec URL), a list or tuple of them, or a Dataset of them.
      record_bytes: the size of a record (>= 1).
      header_bytes: bytes skipped at the start of each file (``None``: 0).
      footer_bytes: bytes ignored at the end of each file (``None``: 0).
      buffer_size: bytes to read ahead from remote filesystems and buffer for
        decompression when streaming; ``None`` for the default.
      compression_type: ``None`` or ``""`` (none), ``"GZIP"`` or ``"ZLIB"``.
      num_parallel_reads: files read at once, interleaved one record at a
        time in tf.data's order, each read ahead on a thread; ``AUTOTUNE``
        reads 4; ``None`` or 1 reads them one after another.
      name: a label for the op (``Dataset.name``), shown in ``repr``.

    Raises:
      TypeError: a non-integer size, a bad ``filenames`` or ``name``.
      ValueError: ``record_bytes < 1``, a negative header, footer or buffer
        size, an unknown ``compression_type``, ``num_parallel_reads < 1``.
      InvalidArgumentError: (when the length is first needed, or while
        reading) a file whose body, without header and footer, is not a
        multiple of ``record_bytes``; the message names the file.
      NotFoundError: (likewise) a file does not exist.
      DataLossError: (while iterating) damaged compressed data, or a file
        that shrank since its size was looked up.

    Example:
      >>> import pipestate as ps
      >>> ds = ps.data.FixedLengthRecordDataset("data.bin", record_bytes=16, header_bytes=4)
    """

    _op_name = "fixed_length_record"

    def __init__(
        self,
        filenames: Any,
        record_bytes: int,
        header_bytes: int | None = None,
        footer_bytes: int | None = None,
        buffer_size: int | None = None,
        compression_type: str | None = None,
        num_parallel_reads: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(filenames, compression_type, buffer_size, num_parallel_reads)
        op = self._op_name
        self._record_bytes = check_int("record_bytes", record_bytes, minimum=1, op=op)
        self._header_bytes = check_int(
            "header_bytes", 0 if header_bytes is None else header_bytes, minimum=0, op=op
        )
        self._footer_bytes = check_int(
            "footer_bytes", 0 if footer_bytes is None else footer_bytes, minimum=0, op=op
        )
        self._layout_cache: np.ndarray | None = None
        self._named(name)

    # --------------------------------------------------------------- settings
    def _params(self) -> dict[str, Any]:
        return {
            **super()._params(),
            "record_bytes": self._record_bytes,
            "header_bytes": self._header_bytes,
            "footer_bytes": self._footer_bytes,
        }

    @property
    def _random_access(self) -> bool:
        return (
            self._filenames is not None
            and self._compression is None
            and self._parallel_reads is None
        )

    @property
    def _vectorised(self) -> bool:
        # Records are read per file run into a list: an S array would drop trailing NULs.
        return False

    def _one_file(self, path: str) -> FileDataset:
        single = super()._one_file(path)
        assert isinstance(single, FixedLengthRecordDataset)
        single._layout_cache = None
        return single

    def _make_iterator(self, entropy: int | None, epoch: int = 0) -> DatasetIterator:
        if self._random_access:
            return Dataset._make_iterator(self, entropy, epoch)
        return super()._make_iterator(entropy, epoch)

    # ---------------------------------------------------------- random access
    def _body_error(self, path: str, body: int) -> InvalidArgumentError:
        header, footer = self._header_bytes, self._footer_bytes
        if body < 0:
            return InvalidArgumentError(
                f"{self._op_name}: input file {path!r} has {body + header + footer} bytes, "
                f"fewer than the header ({header} bytes) and footer ({footer} bytes) together. "
                "Check header_bytes and footer_bytes."
            )
        return InvalidArgumentError(
            f"{self._op_name}: Excluding the header ({header} bytes) and footer ({footer} "
            f'bytes), input file "{path}" has body length {body} bytes, which is not an exact '
            f"multiple of the record length ({self._record_bytes} bytes). Check record_bytes, "
            "header_bytes and footer_bytes, or whether the file is complete."
        )

    def _layout(self) -> np.ndarray:
        """The index of each file's first record, and the total, as ``n_files + 1`` int64s."""
        if self._layout_cache is None:
            assert self._filenames is not None
            counts = []
            for path in self._filenames:
                fs, fs_path = fsspec.core.url_to_fs(path)
                try:
                    size = int(fs.size(fs_path))
                except FileNotFoundError as err:
                    raise NotFoundError(f"{self._op_name}: file {path!r} does not exist") from err
                body = size - self._header_bytes - self._footer_bytes
                if body < 0 or body % self._record_bytes:
                    raise self._body_error(path, body)
                counts.append(body // self._record_bytes)
            self._layout_cache = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        return self._layout_cache

    def _cardinality(self) -> int:
        if self._random_access:
            return int(self._layout()[-1])
        return super()._cardinality()

    def _read_run(self, file: int, first: int, count: int) -> list[Any]:
        """``count`` consecutive records of file ``file`` from its record ``first``."""
        assert self._filenames is not None
        path = self._filenames[file]
        size = self._record_bytes
        start = self._header_bytes + first * size
        fs, fs_path = fsspec.core.url_to_fs(path)
        try:
            data = fs.cat_file(fs_path, start, start + count * size)
        except FileNotFoundError as err:
            raise NotFoundError(f"{self._op_name}: file {path!r} does not exist") from err
        if len(data) != count * size:
            raise DataLossError(
                f"{self._op_name}: {path!r} ended at byte {start + len(data)} while reading "
                f"{count} records from byte {start}; it changed since its size was looked up."
            )
        return [np.bytes_(data[k * size : (k + 1) * size]) for k in range(count)]

    def _get(self, epoch: int, position: int) -> Any:
        layout = self._layout()
        file = int(np.searchsorted(layout, position, side="right")) - 1
        return self._read_run(file, position - int(layout[file]), 1)[0]

    def _get_list(self, epoch: int, positions: np.ndarray) -> list[Any]:
        layout = self._layout()
        files = np.searchsorted(layout, positions, side="right") - 1
        # One read per run of consecutive positions within one file.
        breaks = np.flatnonzero((np.diff(files) != 0) | (np.diff(positions) != 1)) + 1
        bounds = [0, *breaks.tolist(), len(positions)]
        out: list[Any] = []
        for low, high in itertools.pairwise(bounds):
            file = int(files[low])
            try:
                out.extend(self._read_run(file, int(positions[low] - layout[file]), high - low))
            except Exception:
                if not out:
                    raise
                break
        return out

    # -------------------------------------------------------------- streaming
    def _open(self, path: str, offset: int) -> BinaryIO:
        return _Lookahead(super()._open(path, offset))  # type: ignore[return-value]

    def _read(self, stream: BinaryIO, path: str, offset: int) -> tuple[Any, int] | None:
        assert isinstance(stream, _Lookahead)
        header, size, footer = self._header_bytes, self._record_bytes, self._footer_bytes
        if offset == 0 and header:
            skipped = len(stream.read(header))
            if skipped < header:
                raise self._body_error(path, skipped - header - footer)
            offset = header
        left = stream.fill(size + footer)
        if left >= size + footer:
            return np.bytes_(stream.read(size)), offset + size
        if left == footer:
            return None
        raise self._body_error(path, offset - header + left - footer)


class _Lookahead:
    """A stream read with a lookahead buffer, so a record is known not to be the footer."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._buffer = bytearray()

    def fill(self, count: int) -> int:
        """Buffers up to ``count`` bytes ahead; returns how many are buffered (fewer at the end)."""
        buffer = self._buffer
        while len(buffer) < count:
            chunk = self._stream.read(max(count - len(buffer), _READ_CHUNK))
            if not chunk:
                break
            buffer += chunk
        return len(buffer)

    def read(self, count: int) -> bytes:
        self.fill(count)
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def close(self) -> None:
        self._stream.close()
